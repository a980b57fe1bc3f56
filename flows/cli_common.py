"""What every `w4s` subcommand shares: flags generated from a stage's config (with
`--config FILE` and dotted `--set`), one config loader, and the console tables. The
subcommand modules (`*_cmd.py`) import this; it imports none of them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from w4s.errors import W4SError

_CUSTOM_BENCHMARK_FLAGS = ("question_field", "answer_field", "scorer")  # -> benchmark_options
_NONE_WORDS = ("none", "null")


def _dest(name: str) -> str:
    return f"cfg_{name}"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_parser(annotation: Any) -> tuple[Any, str] | None:
    """(converter, metavar) for a field settable from one flag; None for nested fields, which
    stay reachable through `--set a.b=v`. `Optional` fields also take `none`."""
    import types
    from typing import Literal, Union, get_args, get_origin

    members = (get_args(annotation) if get_origin(annotation) in (Union, types.UnionType)
               else (annotation,))
    optional = type(None) in members
    members = tuple(m for m in members if m is not type(None))
    convert: Any
    if str in members and any(get_origin(m) is list for m in members) and len(members) == 2:
        def convert(text: str) -> str | list[str]:  # "a,b" -> a list, as `benchmark` takes
            parts = [p.strip() for p in text.split(",") if p.strip()]
            return parts if "," in text else text
        metavar = "NAME[,NAME...]"
    elif len(members) != 1:
        return None
    elif members[0] in (list[str], tuple[str, ...]):
        def convert(text: str) -> list[str]:  # "a,b" -> ["a", "b"], as `seeds` takes
            return [p.strip() for p in text.split(",") if p.strip()]
        metavar = "NAME[,NAME...]"
    elif get_origin(members[0]) is Literal:
        choices = [str(c) for c in get_args(members[0])]

        def convert(text: str) -> str:
            if text not in choices:
                raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
            return text
        metavar = "{" + ",".join(choices) + "}"
    elif members[0] in (int, float, str, bool):
        convert, metavar = members[0], members[0].__name__.upper()
    else:
        return None
    if not optional:
        return convert, metavar
    base = convert

    def convert_optional(text: str) -> Any:
        return None if text.strip().lower() in _NONE_WORDS else base(text)

    convert_optional.__name__ = getattr(base, "__name__", "value")  # argparse's error names it
    return convert_optional, metavar


def config_flags() -> dict[str, argparse.Action | None]:
    """Every OptimizeConfig field and its flag (None: set it with `--set`); for the tests."""
    parser = argparse.ArgumentParser(add_help=False)
    _add_config_flags(parser)
    by_dest: dict[str, argparse.Action] = {}
    for action in parser._actions:
        by_dest.setdefault(action.dest, action)  # the generated flag, not an alias after it
    from w4s.config import OptimizeConfig

    return {name: by_dest.get(_dest(name)) for name in OptimizeConfig.model_fields}


def _field_help(name: str, model: type | None = None, *, default: bool = True) -> str:
    from pydantic_core import PydanticUndefined

    from w4s.config import OptimizeConfig

    info = (model or OptimizeConfig).model_fields[name]
    text = info.description or name.replace("_", " ")
    if default and info.default not in (PydanticUndefined, None):
        text += f" (default: {info.default})"
    return text.replace("%", "%%")


def add_config_flags(p: argparse.ArgumentParser, model: type, *,
                     config_file: bool = True) -> None:
    """`--config FILE`, `--set a.b=VALUE` and one flag per scalar field of `model`, named,
    typed and described by the model."""
    if config_file:
        p.add_argument("--config", help=f"YAML or TOML file of {model.__name__} fields")
        p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                       help="any config field, dotted for nested ones, the value as YAML, e.g. "
                            "--set executor.kind=openai")
    _add_config_flags(p, model)


def _add_config_flags(p: argparse.ArgumentParser, model: type | None = None) -> None:
    from w4s.config import OptimizeConfig

    model = model or OptimizeConfig
    for name, info in model.model_fields.items():
        parsed = _scalar_parser(info.annotation)
        if parsed is None:
            continue
        convert, metavar = parsed
        if info.annotation in (bool, bool | None):
            p.add_argument(_flag(name), dest=_dest(name), action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=_field_help(name, model))
        else:  # not given: no attribute at all, so `--test-size none` can set None
            p.add_argument(_flag(name), dest=_dest(name), type=convert, metavar=metavar,
                           default=argparse.SUPPRESS, help=_field_help(name, model))
    if "use_cache" not in model.model_fields:
        return
    # the older spelling of --no-use-cache
    p.add_argument("--no-cache", dest=_dest("use_cache"), action="store_false",
                   default=argparse.SUPPRESS,
                   help="bypass the executor-call cache (same as --no-use-cache)")


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    keys = dotted.split(".")
    if not all(keys):
        raise W4SError(f"`--set` expects FIELD=VALUE with a dotted FIELD, but received {dotted!r}")
    out: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        out = {key: out}
    return out


def _overrides(args: argparse.Namespace, model: type | None = None) -> dict[str, Any]:
    """The config fields given on the command line; `--set` items last, merged deeply."""
    from w4s.config import OptimizeConfig, deep_merge

    given = vars(args)
    data = {name: given[_dest(name)] for name in (model or OptimizeConfig).model_fields
            if _dest(name) in given}
    opts = _custom_benchmark_options(args)
    if opts:
        data = deep_merge(data, {"benchmark_options": opts})
    for item in getattr(args, "set", None) or []:
        if "=" not in item:
            raise W4SError(f"`--set` expects FIELD=VALUE, but received {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise W4SError(f"`--set {key.strip()}`: not valid YAML/JSON: {raw!r}") from e
        data = deep_merge(data, _nested(key.strip(), value))
    return data


def load_config(args: argparse.Namespace, model: type, extra: dict[str, Any] | None = None
                ) -> Any:
    """The `--config` file (if any), the field flags and `--set` items over it, and `extra`
    over all: validated as `model`, one line naming the field when it is not."""
    from w4s.config import build_config, deep_merge, load_config_file

    data = deep_merge(_overrides(args, model), extra or {})
    path = getattr(args, "config", None)
    return load_config_file(path, data, model) if path else build_config(data, model)


def _custom_benchmark_options(args: argparse.Namespace) -> dict[str, Any]:
    return {field: getattr(args, field) for field in _CUSTOM_BENCHMARK_FLAGS
            if getattr(args, field, None) is not None}


# -------------------------------------------------------------- output


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
            else meta.model or "smollm2-135m-instruct")
    if meta.kind in ("embedded", "llamacpp", "transformers", "vllm"):
        check_base(record, base)
    # a registry at a URL: the adapter is downloaded once into this host's cache
    folder = str(local_folder(record))
    return cfg.model_copy(update={"meta_agent": meta.model_copy(update={"adapter": folder})})
