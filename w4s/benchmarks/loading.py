"""Reading benchmark rows from local files or the Hugging Face Hub, with one-line errors.

Local files keep each benchmark's native field names. `W4S_DATA_DIR` is read here and nowhere
else; without it a benchmark that ships no data needs an explicit `path=`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w4s.benchmarks.base import Benchmark, Item
from w4s.errors import BenchmarkError

DATA_DIR_ENV = "W4S_DATA_DIR"
SUFFIXES = (".jsonl", ".json", ".tsv", ".csv", ".parquet")


def data_dir() -> Path | None:
    """`$W4S_DATA_DIR`, or None when unset (there is no implicit default location)."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else None


@dataclass(frozen=True, slots=True)
class Row:
    """One record and where it came from, so errors can name the file and row."""

    source: str
    number: int  # 1-based
    data: Mapping[str, Any]


class FieldError(ValueError):
    """Raised by `make_item` when a field holds a value it cannot use."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def _format_of(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix[1:]
    raise BenchmarkError(
        f"`{path}`: unknown file type; use one of {', '.join(SUFFIXES)} (optionally .gz)"
    )


def read_rows(path: str | Path, *, columns: tuple[str, ...] | None = None) -> list[Row]:
    """Rows of a JSONL, JSON (array), TSV/CSV (header row unless `columns`) or Parquet file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchmarkError(f"`{path}`: file not found")
    kind = _format_of(path)
    raw = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise BenchmarkError(f"`{path}`: not a valid gzip file: {e}") from e
    source = str(path)
    if kind == "parquet":
        return _parquet_rows(raw, source)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BenchmarkError(f"`{path}`: not UTF-8 text: {e}") from e
    if kind == "jsonl":
        rows = []  # split on "\n" only: str.splitlines also breaks at U+0085 inside strings
        for n, line in enumerate(text.split("\n"), 1):
            if line.strip():
                rows.append(Row(source, n, _json_object(line, source, n)))
        return rows
    if kind == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BenchmarkError(f"`{path}`: not valid JSON: {e}") from e
        if isinstance(data, dict):  # {"data": [...]} or {id: record}
            data = data.get("data", list(data.values()))
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise BenchmarkError(f"`{path}`: expected a JSON array of objects")
        return [Row(source, n, r) for n, r in enumerate(data, 1)]
    delimiter = "\t" if kind == "tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    lines = [r for r in reader if r]
    if columns is None:
        if not lines:
            return []
        columns, lines = tuple(lines[0]), lines[1:]
        start = 2
    else:
        start = 1
    rows = []
    for n, values in enumerate(lines, start):
        if len(values) != len(columns):
            raise BenchmarkError(
                f"`{path}` row {n}: expected {len(columns)} columns "
                f"({', '.join(columns)}), found {len(values)}"
            )
        rows.append(Row(source, n, dict(zip(columns, values, strict=True))))
    return rows


def _json_object(line: str, source: str, n: int) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        raise BenchmarkError(f"`{source}` line {n}: not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise BenchmarkError(f"`{source}` line {n}: expected a JSON object")
    return value


def _parquet_rows(raw: bytes, source: str) -> list[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowInvalid, OSError) as e:
        raise BenchmarkError(f"`{source}`: not a valid Parquet file: {e}") from e
    return [Row(source, n, r) for n, r in enumerate(table.to_pylist(), 1)]


def hub_rows(dataset: str, *, config: str | None, split: str, revision: str | None) -> list[Row]:
    """Rows of a Hub dataset at a pinned revision; needs the optional `datasets` package."""
    if not revision:
        raise BenchmarkError(
            f"`revision` is required with hub=True: pin a commit of {dataset!r} "
            "(or pass revision='main' to accept whatever is current)"
        )
    try:
        import datasets
    except ImportError as e:
        raise BenchmarkError(
            "loading from the Hugging Face Hub needs `datasets`: pip install 'w4s[hub]'"
        ) from e
    try:
        ds = datasets.load_dataset(dataset, config, split=split, revision=revision)
    except Exception as e:  # noqa: BLE001 - datasets raises many unrelated types; keep one line
        raise BenchmarkError(f"`{dataset}`@{revision}: could not load from the Hub: {e}") from e
    source = f"hf://{dataset}" + (f"/{config}" if config else "") + f"@{revision}:{split}"
    return [Row(source, n, dict(r)) for n, r in enumerate(ds, 1)]


class DatasetBenchmark(Benchmark):
    """A benchmark read from a file in its native format (or the Hub), cached after first load.

    Subclasses set `default_file` (looked up in `$W4S_DATA_DIR`), the Hub coordinates, and
    implement `make_item` for one row. A missing field surfaces as one line naming file and field.
    """

    default_file: str = ""
    columns: tuple[str, ...] | None = None  # for header-less TSV files
    hub_id: str | None = None
    hub_config: str | None = None
    hub_split: str = "test"

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        hub: bool = False,
        revision: str | None = None,
        limit: int | None = None,
    ) -> None:
        if limit is not None and limit < 1:
            raise BenchmarkError(f"`limit` must be a positive number, but received {limit!r}")
        self.path = Path(path).expanduser() if path is not None else None
        self.hub = hub
        self.revision = revision
        self.limit = limit
        self._items: list[Item] | None = None

    def load(self) -> list[Item]:
        if self._items is None:
            items = [self._item(i, row) for i, row in enumerate(self.rows())]
            self._items = items[: self.limit] if self.limit else items
        return list(self._items)

    def _item(self, index: int, row: Row) -> Item:
        try:
            return self.make_item(index, row.data)
        except KeyError as e:
            fields = ", ".join(map(str, row.data)) or "none"
            raise BenchmarkError(
                f"`{row.source}` row {row.number}: missing field {e.args[0]!r} "
                f"for `{self.name}` (found: {fields})"
            ) from e
        except FieldError as e:
            raise BenchmarkError(
                f"`{row.source}` row {row.number}: field {e.field!r}: {e}"
            ) from e

    def rows(self) -> Iterator[Row]:
        if self.hub:
            if not self.hub_id:
                raise BenchmarkError(f"`{self.name}` has no Hub source; pass `path=` to a file")
            yield from hub_rows(
                self.hub_id, config=self.hub_config, split=self.hub_split, revision=self.revision
            )
            return
        yield from read_rows(self.resolve(self.path, self.default_file), columns=self.columns)

    def resolve(self, path: Path | None, default: str) -> Path:
        """An explicit path, else `default` inside `$W4S_DATA_DIR`; one-line error otherwise."""
        if path is not None:
            return path
        root = data_dir()
        if root is None:
            raise BenchmarkError(
                f"`{self.name}`: no data file given; pass `path=` (native file, e.g. "
                f"{default}) or set {DATA_DIR_ENV} to a folder holding {default}"
            )
        return root / default

    @abstractmethod
    def make_item(self, index: int, row: Mapping[str, Any]) -> Item:
        """One item from one row; `row[field]` raising KeyError names the missing field."""
