"""`w4s` subcommands generated from a stage's config (cyclopts): `--config FILE`, one flag
per scalar field (named, typed and described by the model), and dotted `--set a.b=VALUE`
for any field, nested ones included. The file comes first, the flags over it, the `--set`
items last, merged key by key, so `--set executor.max_new_tokens=256` keeps the file's
`executor.kind`. Only what the command line gave is passed on: a field left out keeps the
file's value or the model's default."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from cyclopts import Parameter

from w4s.errors import W4SError

CUSTOM_BENCHMARK_FLAGS = {  # -> benchmark_options, for a file: or custom benchmark
    "question_field": "custom file: benchmark, field holding the question",
    "answer_field": "custom file: benchmark, field holding the answer",
    "scorer": "custom benchmark scorer: numeric|exact|f1|choice|math|python:module:function",
}
_KW = inspect.Parameter.KEYWORD_ONLY


@dataclass
class Given:
    """What the command line gave: the config file and the fields set (flags, then `--set`
    items, merged deeply), not yet validated."""

    config_file: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def load(self, model: type, extra: dict[str, Any] | None = None) -> Any:
        """The file, the overrides over it and `extra` over all, validated as `model`: one
        line naming the field when a value is wrong."""
        from w4s.config import build_config, deep_merge, load_config_file

        data = deep_merge(self.overrides, extra or {})
        if self.config_file:
            return load_config_file(self.config_file, data, model)
        return build_config(data, model)


def _members(annotation: Any) -> tuple[bool, tuple[Any, ...]]:
    members = (get_args(annotation) if get_origin(annotation) in (Union, types.UnionType)
               else (annotation,))
    return type(None) in members, tuple(m for m in members if m is not type(None))


def field_kind(annotation: Any) -> str | None:
    """How a field is given on the command line: `flag` (a bool, --x / --no-x), `names` (a
    name or comma-separated names, as `benchmark` takes), `list` (repeatable, each item
    comma-separated), `value` (one scalar); None: nested, through `--set` only."""
    _, members = _members(annotation)
    if len(members) == 2 and str in members and any(get_origin(m) is list for m in members):
        return "names"
    if len(members) != 1:
        return None
    one = members[0]
    if one is bool:
        return "flag"
    if one in (list[str], tuple[str, ...]):
        return "list"
    if one in (int, float, str) or get_origin(one) is Literal:
        return "value"
    return None


def _cli_type(annotation: Any, kind: str) -> Any:
    _, members = _members(annotation)
    return {"flag": bool, "names": str, "list": list[str]}.get(kind, members[0]) | None


def field_help(model: type, name: str, *, default: bool = True) -> str:
    from pydantic_core import PydanticUndefined

    info = model.model_fields[name]
    text = info.description or name.replace("_", " ")
    value = info.default
    if default and value not in (PydanticUndefined, None) and info.default_factory is None:
        shown = ",".join(value) if isinstance(value, tuple) else value
        text += f" (default: {shown})"
    return text


def option(param: str, annotation: Any, help: str, *, default: Any = None,
           required: bool = False, **parameter: Any) -> inspect.Parameter:
    """A command-specific parameter (not a config field), e.g. `--run-id`; `parameter`:
    cyclopts settings such as `name` (the flag's spelling)."""
    default = inspect.Parameter.empty if required else default
    return inspect.Parameter(param, _KW, default=default,
                             annotation=Annotated[annotation, Parameter(help=help, **parameter)])


def field_parameters(model: type, *, skip: Sequence[str] = (),
                     names: dict[str, dict[str, Any]] | None = None) -> list[inspect.Parameter]:
    """One keyword parameter per scalar field of `model`, defaulting to None (not given);
    `names`: extra cyclopts settings per field (aliases, the negative spelling)."""
    out = []
    for name, info in model.model_fields.items():
        kind = field_kind(info.annotation)
        if kind is None or name in skip:
            continue
        settings = {"help": field_help(model, name), **(names or {}).get(name, {})}
        if kind == "list":
            settings.setdefault("negative", "")
        out.append(inspect.Parameter(name, _KW, default=None, annotation=Annotated[
            _cli_type(info.annotation, kind), Parameter(**settings)]))
    return out


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def given_from(model: type, values: dict[str, Any]) -> Given:
    """The Given of the generated parameters' values (`config`, `set`, fields, benchmark
    flags); only the ones the command line held are in `values`."""
    from w4s.config import deep_merge

    values = dict(values)
    config_file, items = values.pop("config", None), values.pop("set", None) or []
    bench = {k: values.pop(k) for k in CUSTOM_BENCHMARK_FLAGS if k in values}
    data: dict[str, Any] = {}
    for name, value in values.items():
        kind = field_kind(model.model_fields[name].annotation)
        if kind == "names" and isinstance(value, str) and "," in value:
            value = _split(value)
        elif kind == "list" and value is not None:
            value = [part for item in value for part in _split(item)]
        data[name] = value
    bench = {k: v for k, v in bench.items() if v is not None}
    if bench:
        data = deep_merge(data, {"benchmark_options": bench})
    for item in items:
        data = deep_merge(data, set_item(item))
    return Given(str(config_file) if config_file else None, data)


def set_item(item: str) -> dict[str, Any]:
    """`a.b=VALUE` -> {"a": {"b": VALUE}}, the value read as YAML."""
    if "=" not in item:
        raise W4SError(f"`--set` expects FIELD=VALUE, but received {item!r}")
    dotted, raw = item.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise W4SError(f"`--set` expects FIELD=VALUE with a dotted FIELD, but received {dotted!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise W4SError(f"`--set {dotted.strip()}`: not valid YAML/JSON: {raw!r}") from e
    out: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        out = {key: out}
    return out


def config_command(model: type, run: Callable[..., int], *, help: str,
                   options: Sequence[inspect.Parameter] = (), skip: Sequence[str] = (),
                   names: dict[str, dict[str, Any]] | None = None,
                   benchmark_flags: bool = False) -> Callable[..., int]:
    """A cyclopts command: `options` (passed to `run` by name), `--config`, `--set` and a
    flag per scalar field of `model` (gathered into a Given, `run`'s first argument)."""
    params = [
        *options,
        option("config", str | None, f"YAML or TOML file of {model.__name__} fields"),
        option("set", list[str] | None, "any config field, dotted for nested ones, the value "
               "as YAML, e.g. --set executor.kind=openai (repeatable)", negative=""),
        *field_parameters(model, skip=skip, names=names),
    ]
    if benchmark_flags:
        params += [option(k, str | None, text) for k, text in CUSTOM_BENCHMARK_FLAGS.items()]
    own = {p.name for p in options}

    def command(**values: Any) -> int:
        given = given_from(model, {k: v for k, v in values.items() if k not in own})
        return run(given, **{k: v for k, v in values.items() if k in own})

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": int}
    command.__doc__ = help
    command.config_model = model  # type: ignore[attr-defined]
    return command
