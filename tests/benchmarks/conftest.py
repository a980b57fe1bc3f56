"""Shared fixtures: the real datasets folder (optional) and rows in each benchmark's fields.
Code scoring runs in the real sandbox (`w4s.sandbox.run_tests`)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def shared_datasets() -> Path | None:
    env = os.environ.get("W4S_SHARED_DATASETS")
    path = Path(env) if env else REPO / ".." / "shared" / "datasets"
    return path.resolve() if path.is_dir() else None


@pytest.fixture
def datasets() -> Path:
    path = shared_datasets()
    if path is None:
        pytest.skip("shared datasets folder not found (set W4S_SHARED_DATASETS)")
    return path


HE_ROW = {
    "task_id": "HumanEval/0",
    "prompt": 'def add(a, b):\n    """Add.\n    >>> add(1, 2)\n    3\n    """\n',
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    "entry_point": "add",
}
MBPP_ROW = {
    "task_id": 7,
    "prompt": "Write a function to add two numbers.\n\ndef add(a, b):",
    "code": "def add(a, b):\n    return a + b",
    "test_imports": [],
    "test_list": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"],
    "entry_point": "add",
    "test": "def check():\n    assert add(1, 2) == 3\n    assert add(2, 2) == 4\n",
}


def _write_jsonl(path: Path, rows: list[dict], *, gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.fixture
def write_jsonl():
    return _write_jsonl


@pytest.fixture
def he_row() -> dict:
    """A one-task HumanEval row in the native fields."""
    return dict(HE_ROW)


@pytest.fixture
def mbpp_row() -> dict:
    """A one-task MBPP row in the W4S fields."""
    return dict(MBPP_ROW)
