"""The nightly collections under a runs folder, and the window of the last N nights.

A collection leaves `<runs>/<id>.collection.json` (flows/collect.py) naming its completed
episodes (run ids). The nightly chain's collection ids are `nightly-YYYYMMDD-<hash>-collect`,
so a night is the date in the id: every collection of that date (several configs may run the
same night) belongs to it. Failed episodes are never in a window: only `completed` ones.
"""

from __future__ import annotations

import json
import re
from typing import Any

from w4s.errors import W4SError
from w4s.paths import location

NIGHTLY = re.compile(r"^nightly-(\d{8})-[0-9A-Za-z]+-collect$")


def _read(path: Any) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("collection_id"), str) else None


def _entry(doc: dict[str, Any]) -> dict[str, Any]:
    match = NIGHTLY.match(doc["collection_id"])
    return {"collection_id": doc["collection_id"], "night": match and match.group(1),
            "runs": list(doc.get("completed") or []), "status": doc.get("status")}


def nightly_collections(runs_dir: Any) -> list[dict[str, Any]]:
    """Every nightly collection under `runs_dir`, oldest night first."""
    root = location(runs_dir)
    docs = [_read(p) for p in root.glob("*.collection.json")] if root.is_dir() else []
    found = [_entry(d) for d in docs if d is not None and NIGHTLY.match(d["collection_id"])]
    return sorted(found, key=lambda c: (c["night"], c["collection_id"]))


def last_nights(runs_dir: Any, nights: int, *, through: str | None = None) -> dict[str, Any]:
    """The window: the collections of the last `nights` nights up to and including the night
    of the collection `through` (default: the newest night), and their runs. `through` is
    always in the window, also when its id names no night (a custom nightly id)."""
    if not isinstance(nights, int) or nights < 1:
        raise W4SError(f"`window_nights` must be a whole number >= 1, but received {nights!r}")
    found = nightly_collections(runs_dir)
    own = None
    if through is not None:
        own = next((c for c in found if c["collection_id"] == through), None)
        if own is None:
            doc = _read(location(runs_dir) / f"{through}.collection.json")
            if doc is None:
                raise W4SError(f"collection {through!r} has no summary "
                               f"({through}.collection.json) under {str(runs_dir)!r}")
            own = _entry(doc)
        if own["night"] is not None:
            found = [c for c in found if c["night"] <= own["night"]]
    if not found and own is None:
        raise W4SError(f"`last nights`: {str(runs_dir)!r} holds no nightly collection "
                       "(nightly-YYYYMMDD-<hash>-collect.collection.json)")
    days = sorted({c["night"] for c in found})[-nights:]
    if own is not None and own["night"] is None:
        days = days[-(nights - 1):] if nights > 1 else []
    chosen = [c for c in found if c["night"] in days]
    if own is not None and own not in chosen:
        chosen.append(own)
    runs = list(dict.fromkeys(r for c in chosen for r in c["runs"]))
    if not runs:
        raise W4SError(f"the last {nights} night(s) under {str(runs_dir)!r} hold no completed "
                       f"episode ({', '.join(c['collection_id'] for c in chosen)})")
    return {"nights": nights, "collections": chosen, "runs": runs}
