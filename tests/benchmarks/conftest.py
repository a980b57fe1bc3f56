"""Shared fixtures: the real datasets folder (optional) and a subprocess stand-in for the
sandbox, used only by these tests until/unless the real `w4s.sandbox.run_programs` is wanted."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import dataclass
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


@dataclass
class FakeResult:
    ok: bool
    error: str | None
    stdout: str
    seconds: float = 0.0


def _run_subprocess(sources, *, timeout_s: float = 5.0):
    results = []
    for source in sources:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", source], capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            results.append(FakeResult(False, "timeout", ""))
            continue
        error = None if proc.returncode == 0 else proc.stderr.strip()[-300:]
        results.append(FakeResult(proc.returncode == 0, error, proc.stdout))
    return results


@pytest.fixture
def subprocess_sandbox(monkeypatch):
    """Replace `w4s.sandbox.run_programs` with plain subprocesses (tests only: trusted code)."""
    import w4s.sandbox

    calls: list[int] = []

    def run_programs(sources, *, timeout_s: float = 5.0):
        calls.append(len(sources))
        return _run_subprocess(sources, timeout_s=timeout_s)

    monkeypatch.setattr(w4s.sandbox, "run_programs", run_programs, raising=False)
    return calls


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


@pytest.fixture
def run_subprocess():
    return _run_subprocess
