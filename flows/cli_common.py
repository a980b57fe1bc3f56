"""What the `w4s` subcommands print with: the console, its tables, the one printer of a run;
and the adapter spec a command resolves. The subcommand modules (`*_cmd.py`) import this; it
imports none of them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from w4s.embedded_model import EMBEDDED_MODEL_ID


def stdout_console(file: Any = None) -> Any:
    """A rich console on stdout; piped (not a terminal): no colour, no width limit, so
    tables keep one line per row."""
    from rich.console import Console

    out = file if file is not None else sys.stdout
    console = Console(file=out, highlight=False)
    if console.is_terminal:
        return console
    return Console(file=out, highlight=False, color_system=None, width=100_000)


def _head_rule() -> Any:
    from rich.box import Box

    # rich's SIMPLE_HEAD in ASCII: a rule under the header, nothing else
    return Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


def _score(v: float | None) -> str:
    """An accuracy to 2 places; None (never scored, e.g. a budget spent first) as `-`."""
    return "-" if v is None else f"{v:.2f}"


def _cell(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def table(cols: list[str], rows: list[tuple | list], *, title: str | None = None,
          wide: dict[str, int] | None = None) -> Any:
    """A rich table: numbers right-aligned, None as `-`, floats to 2 places; `wide` caps
    the named text columns to a width, cut with an ellipsis."""
    from rich.table import Table

    t = Table(box=_head_rule(), title=title, title_justify="left", header_style="bold",
              show_edge=False, pad_edge=False)
    for i, col in enumerate(cols):
        numeric = all(isinstance(r[i], int | float) or r[i] is None for r in rows)
        width = (wide or {}).get(col)
        t.add_column(col, justify="right" if numeric else "left", no_wrap=True,
                     max_width=width, overflow="ellipsis" if width else "fold")
    for r in rows:
        t.add_row(*(_cell(v) for v in r))
    return t


def print_run(run_dir: Any, run_id: str, summary: dict[str, Any] | None) -> None:
    """The one printer of a run (`w4s optimize`, `w4s show`): its per-iteration table and,
    once it has finished, its summary."""
    from w4s.storage.query import iteration_table

    cols, rows = iteration_table(run_dir)
    state = f"  ({summary['benchmark']}, status: {summary['status']})" if summary else ""
    print(f"run {run_id}{state}")
    print_table(cols, rows)
    if not summary:
        return
    print()
    print(f"best workflow:      {summary['best_workflow']}  (iteration {summary['best_iteration']},"
          f" validation {_score(summary['best_val_accuracy'])})")
    test = summary["test_accuracy"]
    if test is None:
        print("test accuracy:      not evaluated (the budget ran out first)")
    else:
        print(f"test accuracy:      {test:.2f} on {summary['test_items']} "
              "held-out items (never shown to the meta-agent)")
    print(f"executor tokens:    {summary['executor_tokens']} in {summary['executor_calls']} calls")
    print(f"meta-agent tokens:  {summary['meta_agent_tokens']}")
    cost = summary.get("cost_usd")
    print(f"cost:               {'unknown' if cost is None else f'${cost:.4f}'}")
    print(f"trajectories:       {run_dir / 'trajectories'}")


def print_table(cols: list[str], rows: list[tuple | list], **kw: Any) -> None:
    console = stdout_console()
    if console.is_terminal:
        console.print(table(cols, rows, **kw))
        return
    with console.capture() as captured:  # piped: the same text, without trailing padding
        console.print(table(cols, rows, **kw))
    lines = captured.get().splitlines()
    console.file.write("".join(line.rstrip() + "\n" for line in lines))




def with_resolved_adapter(cfg: Any) -> Any:
    """`meta_agent.adapter: latest|champion|ID|PATH` -> the adapter's folder, checked against
    the meta-agent's base, so the run's config records the adapter it really used.
    `champion` with none promoted serves the base model (adapter None)."""
    spec = cfg.meta_agent.adapter
    if spec is None:
        return cfg
    from w4s.storage.adapters import check_base, local_folder, resolve_spec

    record = resolve_spec(spec)
    meta = cfg.meta_agent
    if record is None:
        return cfg.model_copy(update={"meta_agent": meta.model_copy(update={"adapter": None})})
    base = (str(Path(meta.model).expanduser().resolve()) if meta.kind == "transformers"
            else meta.model or EMBEDDED_MODEL_ID)
    if meta.kind in ("embedded", "llamacpp", "transformers", "vllm"):
        check_base(record, base)
    # a registry at a URL: the adapter is downloaded once into this host's cache
    folder = str(local_folder(record))
    return cfg.model_copy(update={"meta_agent": meta.model_copy(update={"adapter": folder})})
