"""The adapters registry: one JSON file per fitted adapter under `<storage root>/adapters/`.

A file per adapter (written whole: `w4s.storage.files.atomic_write`) means concurrent fits never
rewrite a shared index, and a listing is a directory scan. Configs name an adapter as
`latest`, an id, a path, or `champion`; `resolve` turns each into a record or a one-line
error.

The champion is the adapter the gate (flows/gate.py) last promoted: each promotion is one
more file under `adapters/champion/` (never a rewrite of a shared file), and the newest one
names the champion. With none promoted, the champion is the base model itself.

The storage root is local, or an fsspec URL for several hosts (`w4s.paths.storage_root`).
There, `register` uploads the adapter folder beside its record (the record is written last,
so a half-uploaded folder is never listed), and `local_folder` downloads it once into the
host's cache, because model code loads adapters from local files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from w4s.errors import ConfigError
from w4s.paths import cache_dir, is_url, location, storage_root
from w4s.storage.files import atomic_write, is_local, upload_folder


class AdapterError(ConfigError):
    """An adapter spec names nothing usable, or an adapter meets the wrong base model."""


@dataclass
class AdapterRecord:
    id: str
    path: str  # the PEFT adapter folder, absolute
    base_model: str  # e.g. smollm2-135m-instruct, or the base folder's path
    dataset_sha256: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(
        default_factory=dict
    )  # a summary; the curve stays in metrics.json
    created_at: str = ""  # ISO 8601, UTC
    dataset: str | None = None
    source: str | None = None  # the local folder it was fitted into, when `path` is a URL


CHAMPION = "champion"
BASE = "base"  # the champion's id while no adapter has been promoted


def adapters_dir() -> Any:
    """`<storage root>/adapters`: a local folder, or a `upath.UPath` for a URL."""
    return storage_root() / "adapters"


def _new_id(created: datetime) -> str:
    return f"{created.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def register(
    path: str | Path,
    *,
    base_model: str,
    dataset_sha256: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    dataset: str | None = None,
    adapter_id: str | None = None,
) -> AdapterRecord:
    """Record a fitted adapter folder; returns its record.

    Idempotent: registering the same folder again (a rerun of a fit) replaces its record
    under the same id instead of adding a second one. With a remote registry the folder is
    uploaded to `adapters/<id>/` first, then the record is written.
    """
    created = datetime.now(timezone.utc)
    local = str(Path(path).resolve())
    folder = adapters_dir()
    if adapter_id is None:
        adapter_id = next((r.id for r in reversed(list_adapters())
                           if (r.source or r.path) == local), None)
    adapter_id = adapter_id or _new_id(created)
    stored, source = local, None
    if not is_local(folder):
        # the fit's resume checkpoints (optimizer state) stay on the fitting host
        upload_folder(Path(local), folder / adapter_id, skip=("checkpoints",))
        stored, source = str(folder / adapter_id), local
    record = AdapterRecord(
        id=adapter_id,
        path=stored,
        base_model=base_model,
        dataset_sha256=dataset_sha256,
        hyperparameters=dict(hyperparameters or {}),
        metrics=dict(metrics or {}),
        created_at=created.isoformat(timespec="microseconds"),
        dataset=dataset,
        source=source,
    )
    atomic_write(folder / f"{record.id}.json", json.dumps(asdict(record), indent=2,
                                                          sort_keys=True))
    return record


def list_adapters() -> list[AdapterRecord]:
    """Every registered adapter, oldest first; unreadable files are skipped."""
    records = []
    for file in adapters_dir().glob("*.json"):
        try:
            data = json.loads(file.read_text())
            records.append(AdapterRecord(**data))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(records, key=lambda r: (r.created_at, r.id))


def promote(record: AdapterRecord, *, previous: str | None = None,
            gate: dict[str, Any] | None = None) -> dict[str, Any]:
    """Make `record` the champion: one new file under `adapters/champion/` (the record of
    the promotion: when, which adapter, which champion it replaced, the gate's measures)."""
    now = datetime.now(timezone.utc)
    event = {"adapter_id": record.id, "path": record.path, "base_model": record.base_model,
             "promoted_at": now.isoformat(timespec="microseconds"),
             "previous": previous or BASE, "gate": gate or {}}
    name = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{record.id}.json"
    atomic_write(adapters_dir() / CHAMPION / name, json.dumps(event, indent=2, sort_keys=True))
    return event


def promotions() -> list[dict[str, Any]]:
    """Every promotion, oldest first; unreadable files are skipped."""
    events = []
    folder = adapters_dir() / CHAMPION
    for file in folder.glob("*.json") if folder.exists() else ():
        try:
            event = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(event, dict) and isinstance(event.get("adapter_id"), str):
            events.append(event)
    return sorted(events, key=lambda e: (str(e.get("promoted_at")), e["adapter_id"]))


def champion() -> AdapterRecord | None:
    """The last promoted adapter's record; None while the base model is the champion.
    A promoted adapter whose record is gone is an error, not a silent fall back to base."""
    events = promotions()
    if not events:
        return None
    last = events[-1]["adapter_id"]
    for r in list_adapters():
        if r.id == last:
            return r
    raise AdapterError(f"the champion {last!r} (last promoted) has no record in "
                       f"{adapters_dir()}; promote another with `w4s adapters --promote ID`")


def resolve_spec(spec: str | Path | None) -> AdapterRecord | None:
    """Like `resolve`, but `champion` with none promoted (and None) is the base model: None."""
    if spec is None:
        return None
    if str(spec).strip() == CHAMPION:
        return champion()
    return resolve(spec)


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.startswith((".", "~"))


def local_folder(record: AdapterRecord) -> Path:
    """The adapter's folder on this host: its own path when local (no copy), else a copy
    downloaded once into `<cache>/adapters/<id>` (into a temp folder, then renamed, so a
    killed download is never mistaken for an adapter)."""
    if not is_url(record.path):
        return Path(record.path)
    dest = cache_dir() / "adapters" / record.id
    if dest.is_dir():
        return dest
    remote = location(record.path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{record.id}.", suffix=".tmp"))
    try:
        base = remote.path.rstrip("/")
        files = remote.fs.find(base)
        if not files:
            raise AdapterError(f"`adapter` {record.id!r}: {record.path!r} holds no files")
        for f in files:
            target = tmp / f[len(base):].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            remote.fs.get_file(f, str(target))
        try:
            os.replace(tmp, dest)
        except OSError:  # another process finished the same download first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve(spec: str | Path) -> AdapterRecord:
    """`latest`, `champion`, a registered id, or a PEFT adapter folder -> its record. A
    folder that was never registered gets a record read from its adapter_config.json.
    `champion` with none promoted is an error here (see `resolve_spec`)."""
    text = str(spec).strip()
    if text == CHAMPION:
        record = champion()
        if record is None:
            raise AdapterError("`adapter: champion`: no adapter has been promoted yet, so the "
                               "champion is the base model (no adapter)")
        return record
    records = list_adapters()
    if text == "latest":
        if not records:
            raise AdapterError(
                f"`adapter: latest`: no adapter is registered in {adapters_dir()}; "
                "fit one with `w4s fit`"
            )
        return records[-1]
    if is_url(text):
        remote = location(text)
        for r in reversed(records):
            if r.path.rstrip("/") == text.rstrip("/"):
                return r
        if not (remote / "adapter_config.json").is_file():
            raise AdapterError(
                f"`adapter` URL {text!r} is not a PEFT adapter folder (no adapter_config.json)"
            )
        config = json.loads((remote / "adapter_config.json").read_text())
        return AdapterRecord(id=remote.name, path=text,
                             base_model=str(config.get("base_model_name_or_path") or ""))
    if not _looks_like_path(text):
        for r in records:
            if r.id == text:
                return r
        if not Path(text).exists():
            known = ", ".join(r.id for r in records[-3:]) or "none registered"
            raise AdapterError(
                f"`adapter` {text!r} is not a registered id (latest: {known}); see `w4s adapters`"
            )
    folder = Path(text).expanduser().resolve()
    if not (folder / "adapter_config.json").is_file():
        raise AdapterError(
            f"`adapter` path {text!r} is not a PEFT adapter folder (no adapter_config.json)"
        )
    for r in reversed(records):  # its record, also when it was uploaded from this folder
        if str(folder) in (r.path, r.source):
            return r
    config = json.loads((folder / "adapter_config.json").read_text())
    return AdapterRecord(
        id=folder.name,
        path=str(folder),
        base_model=str(config.get("base_model_name_or_path") or ""),
    )


def check_base(record: AdapterRecord, base_model: str) -> None:
    """An adapter only fits the base it was trained on: one-line error otherwise."""
    if record.base_model and record.base_model != base_model:
        raise AdapterError(
            f"`adapter` {record.id!r} was fitted on {record.base_model!r}, not on {base_model!r}"
        )
