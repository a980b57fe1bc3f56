"""The content hashes w4s keys things by: text, JSON values, files, local model weights.

Many of these digests are persisted (call-cache and outcome keys, config and prompt hashes
in run folders and trajectories, dataset cards), so their encodings never change: a changed
byte would orphan every cache entry and split old rows from new ones.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

_CHUNK = 1 << 20
_SAMPLE_BYTES = 1 << 20
# the files of a model folder that decide what it computes (weights, configs, tokenizer)
_WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".json", ".model")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def json_sha256(value: Any, *, compact: bool = True, ascii_only: bool = False) -> str:
    """sha256 of `value` as JSON with sorted keys (non-JSON values as their str), so equal
    values hash equal. `compact` and `ascii_only` pick the encoding a persisted key was
    first written with."""
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=ascii_only,
                      separators=(",", ":") if compact else None)
    return sha256_text(text)


def stream_sha256(stream: IO[bytes], digest: Any = None) -> Any:
    """Feed a binary stream to `digest` (a new sha256 if None) in 1 MiB chunks; returns it."""
    digest = digest if digest is not None else hashlib.sha256()
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        digest.update(chunk)
    return digest


def file_sha256(path: str | Path) -> str:
    """sha256 of a local file's bytes, read in chunks (datasets and weights can be large)."""
    with open(path, "rb") as f:
        return stream_sha256(f).hexdigest()


def local_model_identity(path: str | Path) -> str:
    """A digest of a local model file (or of a folder's weight and config files): sizes
    and three 1 MiB samples of each file (start, middle, end), so gigabytes are not read,
    yet another model under the same name differs (its header, its tensors)."""
    p = Path(path).expanduser().resolve()
    files = [p] if p.is_file() else sorted(
        f for f in p.rglob("*") if f.is_file() and f.suffix in _WEIGHT_SUFFIXES)
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        digest.update(_file_sample_digest(str(f), st.st_size, st.st_mtime_ns).encode())
        digest.update(f.name.encode())
    return "sha256:" + digest.hexdigest()[:16]


@lru_cache(maxsize=256)
def _file_sample_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - _SAMPLE_BYTES // 2),
                              max(0, size - _SAMPLE_BYTES)}):
            f.seek(offset)
            digest.update(f.read(_SAMPLE_BYTES))
    return digest.hexdigest()
