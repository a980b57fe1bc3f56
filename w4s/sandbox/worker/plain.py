"""Values that cross between a solution process and its test process: plain data only.

A tagged JSON tree of exact builtin types. The test process rebuilds every value itself
from JSON, so nothing the solution made (an object whose `__eq__` is always True, an int
subclass, a str with a rigged `__hash__`) ever reaches the official asserts: they compare
values, never the solution's objects. Encoding runs in the (untrusted) solution process and
may be lenient: whatever it sends, decoding yields builtin values or refuses.

Objects that are not data (an instance of a class the solution defines, as MBPP's `Pair`)
cross as opaque references: the test process can pass them back, never look inside.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 64  # nesting of lists/tuples/dicts; deeper values are refused
MAX_ITEMS = 1_000_000  # elements of one materialized iterator


class NotPlain(Exception):
    """A value that cannot cross (too deep, too long, or not a builtin data type)."""


class Ref:
    """The test side's handle on a solution object that is not plain data."""

    __slots__ = ("id",)

    def __init__(self, ref_id: int) -> None:
        self.id = ref_id

    def __repr__(self) -> str:
        return f"<solution object #{self.id}>"


class Iter:
    """Marks a materialized iterator (a generator, map, filter...) on the wire."""


_ITERATORS = (types.GeneratorType, map, filter, zip, enumerate, reversed,
              type(iter([])), type(iter(())), type(iter("")), type({}.keys()),
              type({}.values()), type({}.items()), type(iter(range(0))), type(iter(set())))


def encode(x: Any, refs: Callable[[Any], int] | None = None, depth: int = 0) -> Any:
    """A JSON-able tree for `x`. `refs(obj) -> id` turns other objects into references
    (solution side); without it they are refused (test side: arguments are data)."""
    if depth > MAX_DEPTH:
        raise NotPlain(f"value nested deeper than {MAX_DEPTH} levels")
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return ["i", hex(x)]
    if t is float:
        return ["f", float.hex(x)]
    if t is complex:
        return ["c", float.hex(x.real), float.hex(x.imag)]
    if t is bytes:
        return ["b", x.hex()]
    if t is Ref:
        return ["r", x.id]
    sub = depth + 1
    if t is list or t is tuple or t is set or t is frozenset:
        tag = {list: "l", tuple: "t", set: "s", frozenset: "z"}[t]
        return [tag, [encode(v, refs, sub) for v in x]]
    if t is dict:
        return ["d", [[encode(k, refs, sub), encode(v, refs, sub)] for k, v in x.items()]]
    if t is range:
        return ["g", [x.start, x.stop, x.step]]
    if refs is None:
        raise NotPlain(f"a {t.__name__} object is not plain data")
    # the solution side: stdlib containers that compare like their base type cross as it
    if isinstance(x, dict):  # Counter, OrderedDict, defaultdict
        return encode(dict(x), refs, depth)
    if isinstance(x, tuple) and hasattr(t, "_fields"):  # a namedtuple
        return encode(tuple(x), refs, depth)
    if isinstance(x, _ITERATORS):
        items = list(itertools.islice(x, MAX_ITEMS + 1))
        if len(items) > MAX_ITEMS:
            raise NotPlain(f"iterator longer than {MAX_ITEMS} items")
        return ["it", [encode(v, refs, sub) for v in items]]
    return ["r", refs(x)]


def decode(tree: Any, depth: int = 0) -> Any:
    """The builtin value for a tree from `encode`; NotPlain for anything else."""
    if depth > MAX_DEPTH + 1:
        raise NotPlain(f"value nested deeper than {MAX_DEPTH} levels")
    if tree is None or type(tree) is bool or type(tree) is str:
        return tree
    if type(tree) is not list or not tree or type(tree[0]) is not str:
        raise NotPlain(f"malformed value {str(tree)[:80]!r}")
    tag, *rest = tree
    try:
        if tag == "i":
            return int(rest[0], 16)
        if tag == "f":
            return float.fromhex(rest[0])
        if tag == "c":
            return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
        if tag == "b":
            return bytes.fromhex(rest[0])
        if tag == "r":
            if type(rest[0]) is not int:
                raise NotPlain("malformed reference")
            return Ref(rest[0])
        if tag == "g":
            start, stop, step = (_exact_int(v) for v in rest[0])
            return range(start, stop, step)
        items = rest[0]
        if type(items) is not list:
            raise NotPlain(f"malformed {tag!r} value")
        sub = depth + 1
        if tag == "d":
            out = {}
            for pair in items:
                if type(pair) is not list or len(pair) != 2:
                    raise NotPlain("malformed dict entry")
                out[decode(pair[0], sub)] = decode(pair[1], sub)
            return out
        values = [decode(v, sub) for v in items]
        if tag == "l":
            return values
        if tag == "t":
            return tuple(values)
        if tag == "s":
            return set(values)
        if tag == "z":
            return frozenset(values)
        if tag == "it":
            return iter(values)
    except (IndexError, TypeError, ValueError, OverflowError) as e:
        raise NotPlain(f"malformed {tag!r} value: {e}") from e
    raise NotPlain(f"unknown value tag {tag!r}")


def _exact_int(v: Any) -> int:
    if type(v) is not int:
        raise NotPlain("malformed range")
    return v
