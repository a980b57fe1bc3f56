"""Whole-or-nothing writes, local or through fsspec, and DuckDB over either.

A reader never sees half a file, and a writer killed half way leaves the old content:
- local paths: a temp file beside the target, then `os.replace` (atomic on one filesystem);
  the temp file is removed when the write fails, and its name (`.NAME.<random>.tmp`) matches
  no reader's pattern if a SIGKILL leaves it behind;
- fsspec URLs (`s3://`, `gs://`, `memory://`): one upload per file; object stores publish
  an object only when its upload completes (multipart too), so there is nothing to rename.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

TMP_SUFFIX = ".tmp"


def is_local(path: Any) -> bool:
    """A plain local path (`w4s.paths.location` turns `file://` URLs into these too)."""
    return isinstance(path, Path) and not hasattr(path, "fs")


def _local_temp(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    return tmp


def atomic_write(path: Any, data: bytes | str) -> None:
    """Replace `path` with `data` whole, or leave it as it was."""
    raw = data.encode() if isinstance(data, str) else data
    if not is_local(path):
        path.fs.pipe_file(path.path, raw)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet(table: pa.Table, path: Any) -> None:
    """`table` as one Parquet file at `path`, atomically (see the module docstring)."""
    if not is_local(path):
        buf = io.BytesIO()
        pq.write_table(table, buf)
        path.fs.pipe_file(path.path, buf.getvalue())
        return
    tmp = _local_temp(path)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_file(local_tmp: str | Path, path: Any) -> None:
    """Move a finished local temp file to `path` (rename locally, one upload remotely)."""
    if is_local(path):
        os.replace(local_tmp, path)
        return
    try:
        path.fs.put_file(str(local_tmp), path.path)
    finally:
        Path(local_tmp).unlink(missing_ok=True)


def staging_file(path: Any) -> str:
    """A local temp file to build `path` in: beside it when local (so the rename is atomic),
    in the system temp dir when `path` is remote. Its name ends in `.tmp`, so a leftover
    matches no `*.parquet` or `*.json` reader."""
    if is_local(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    else:
        fd, tmp = tempfile.mkstemp(prefix=f"w4s-{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    return tmp


def upload_folder(local: Path, dest: Any, *, skip: tuple[str, ...] = ()) -> None:
    """Copy a local folder's files to a remote folder, file by file; hidden entries (temp
    files) and top-level entries named in `skip` stay behind."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(local.rglob("*")):
        rel = f.relative_to(local)
        if rel.parts[0] in skip:
            continue
        if f.is_file() and not any(part.startswith(".") for part in rel.parts):
            dest.fs.put_file(str(f), (dest / rel.as_posix()).path)


def connect(paths: Iterable[Any] = ()) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can read `paths`: fsspec filesystems are registered for the
    remote ones (DuckDB then opens `s3://...`, `memory://...` through fsspec)."""
    con = duckdb.connect()
    seen: set[str] = set()
    for p in paths:
        if not is_local(p):
            fs = p.fs
            protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
            if not seen.intersection(protocols):
                con.register_filesystem(fs)
                seen.update(protocols)
    return con
