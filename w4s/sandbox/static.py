"""Static checks of workflow source, done with `ast` in the parent: nothing is executed."""

from __future__ import annotations

import ast


def check_workflow_source(code: str) -> str | None:
    """None when `code` parses and defines `solver(agent, task)`; else a one-line reason."""
    if not isinstance(code, str) or not code.strip():
        return "workflow is empty: define `def solver(agent, task: str) -> dict`"
    try:
        tree = ast.parse(code, filename="<workflow>")
    except SyntaxError as e:
        where = f"line {e.lineno}" if e.lineno else "unknown line"
        text = (e.text or "").strip()
        return f"SyntaxError at {where}: {e.msg}" + (f": {text[:120]}" if text else "")
    except (ValueError, MemoryError, RecursionError) as e:
        return f"workflow cannot be parsed: {type(e).__name__}: {e}"
    solver: ast.AST | None = None
    for node in tree.body:  # the last top-level binding wins, as at run time
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "solver":
            solver = node
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "solver" for t in node.targets
        ):
            solver = node
    if solver is None:
        return "workflow defines no top-level `solver` function"
    if isinstance(solver, ast.AsyncFunctionDef):
        return "`solver` must be a plain `def`, not `async def`"
    if isinstance(solver, ast.Assign):
        return None  # e.g. solver = make_solver(); checked when it runs
    return _check_signature(solver.args)


def _check_signature(args: ast.arguments) -> str | None:
    positional = [*args.posonlyargs, *args.args]
    required = len(positional) - len(args.defaults)
    kw_pairs = zip(args.kwonlyargs, args.kw_defaults, strict=True)
    required_kw = [a.arg for a, d in kw_pairs if d is None]
    got = "(" + ", ".join(a.arg for a in positional) + ")"
    if required > 2:
        return f"`solver{got}` must take exactly 2 positional parameters (agent, task)"
    if len(positional) < 2 and args.vararg is None:
        return f"`solver{got}` must take 2 positional parameters (agent, task)"
    if required_kw:
        return f"`solver` has required keyword-only parameters {required_kw}; remove them"
    return None
