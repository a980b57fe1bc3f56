"""The adapters registry: one JSON file per fitted adapter under `$W4S_HOME/adapters/`.

A file per adapter (written to a temporary name, then renamed) means concurrent fits never
rewrite a shared index, and a listing is a directory scan. Configs name an adapter as
`latest`, an id, or a path; `resolve` turns each into a record or a one-line error.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from w4s.errors import ConfigError
from w4s.paths import w4s_home


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


def adapters_dir() -> Path:
    return w4s_home() / "adapters"


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
    """Record a fitted adapter folder; returns the record with its new id."""
    created = datetime.now(timezone.utc)
    record = AdapterRecord(
        id=adapter_id or _new_id(created),
        path=str(Path(path).resolve()),
        base_model=base_model,
        dataset_sha256=dataset_sha256,
        hyperparameters=dict(hyperparameters or {}),
        metrics=dict(metrics or {}),
        created_at=created.isoformat(timespec="microseconds"),
        dataset=dataset,
    )
    folder = adapters_dir()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{record.id}.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(asdict(record), indent=2, sort_keys=True))
    os.replace(tmp, folder / f"{record.id}.json")
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


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.startswith((".", "~"))


def resolve(spec: str | Path) -> AdapterRecord:
    """`latest`, a registered id, or a PEFT adapter folder -> its record. A folder that was
    never registered gets a record read from its adapter_config.json."""
    text = str(spec).strip()
    records = list_adapters()
    if text == "latest":
        if not records:
            raise AdapterError(
                f"`adapter: latest`: no adapter is registered in {adapters_dir()}; "
                "fit one with `w4s fit`"
            )
        return records[-1]
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
    for r in reversed(records):
        if Path(r.path) == folder:
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
