"""A writer killed half way (SIGKILL in a subprocess, or an exception between the temp write
and the rename) leaves the old content or the whole new one, and a rerun leaves no
duplicate rows, records or files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from w4s.config import OptimizeConfig
from w4s.mdp import Candidate, State
from w4s.storage import adapters
from w4s.storage.dataset import build_dataset
from w4s.storage.files import atomic_write, write_parquet
from w4s.storage.query import iteration_table, query_runs
from w4s.storage.run_store import RunStore

REPO = Path(__file__).resolve().parents[2]

# Run in the child before its writer: the first rename blocks (after the temp file is
# complete) and reports, so the parent can SIGKILL it exactly between write and rename.
STUCK_AT_RENAME = """
import os, pathlib, sys, time
_ready = pathlib.Path(sys.argv[1])
def _stuck(src, dst):
    _ready.write_text(str(src))
    time.sleep(120)
os.replace = _stuck
"""


def _child(code: str, ready: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(ready)],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def _kill_when_ready(proc: subprocess.Popen, ready: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            pytest.fail(f"the writer exited ({proc.returncode}) before it was killed")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the writer never reached the point to kill it at")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def _cands(run: str, it: int, n: int, *, tag: str = "", size: int = 0) -> list[Candidate]:
    return [Candidate(run_id=run, iteration=it, index=j, kind="action",
                      prompt=State("t", "q", "a").messages(), reply=f"reply {tag}{j}",
                      code=f"# {tag}\n" + "x" * size, status="ok", accuracy=0.5, reward=0.5)
            for j in range(n)]


def _write(store: RunStore, it: int, cands: list[Candidate]) -> None:
    store.write_trajectory(it, cands, benchmark="b", meta_model="m", executor_model="e")


def _rows(store: RunStore) -> list[tuple]:
    return query_runs(store.root.parent, "SELECT iteration, candidate, reply FROM candidates "
                                         "ORDER BY 1, 2")[1]


def test_killed_trajectory_rewrite_keeps_the_old_rows_and_a_rerun_has_no_duplicates(tmp_path):
    store = RunStore.create(tmp_path / "runs", OptimizeConfig(), "r1")
    _write(store, 1, _cands("r1", 1, 3, tag="old"))
    before = _rows(store)
    ready = tmp_path / "ready"
    proc = _child(STUCK_AT_RENAME + f"""
from w4s.storage.run_store import RunStore
from tests.storage.test_idempotent_writes import _cands, _write
_write(RunStore({str(store.root)!r}), 1, _cands("r1", 1, 5, tag="new"))
""", ready)
    _kill_when_ready(proc, ready)
    leftover = Path(ready.read_text())
    assert leftover.exists() and leftover.parent == store.trajectory_path(1).parent
    assert _rows(store) == before  # the reader sees the old file, not the temp one
    assert iteration_table(store.root)[1][0][1] == 3

    _write(store, 1, _cands("r1", 1, 5, tag="new"))  # the rerun
    _write(store, 1, _cands("r1", 1, 5, tag="new"))  # and once more: replaced, not appended
    rows = _rows(store)
    assert [(it, j) for it, j, _ in rows] == [(1, j) for j in range(5)]
    assert {r for _, _, r in rows} == {f"reply new{j}" for j in range(5)}


def test_sigkill_at_any_moment_of_a_rewrite_leaves_one_whole_file(tmp_path):
    """No hook: the child rewrites a large trajectory file in a loop, alternating two
    contents, and is killed wherever it happens to be (usually inside the Parquet write)."""
    store = RunStore.create(tmp_path / "runs", OptimizeConfig(), "r1")
    _write(store, 1, _cands("r1", 1, 2, tag="a", size=1 << 20))
    started = tmp_path / "started"
    proc = _child(f"""
import pathlib, sys
from w4s.storage.run_store import RunStore
from tests.storage.test_idempotent_writes import _cands, _write
store = RunStore({str(store.root)!r})
a = _cands("r1", 1, 2, tag="a", size=1 << 20)
b = _cands("r1", 1, 6, tag="b", size=1 << 20)
pathlib.Path(sys.argv[1]).write_text("")
while True:
    _write(store, 1, b)
    _write(store, 1, a)
""", started)
    while not started.exists():
        assert proc.poll() is None, "the writer died"
        time.sleep(0.05)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    table = pq.read_table(store.trajectory_path(1)).to_pylist()
    tags = {r["reply"].split()[1][0] for r in table}
    assert (len(table), tags) in ((2, {"a"}), (6, {"b"}))
    assert all(len(r["code"]) == len(table[0]["code"]) for r in table)
    assert iteration_table(store.root)[1][0][1] == len(table)


def test_killed_candidate_and_state_writes_keep_the_old_json(tmp_path):
    store = RunStore.create(tmp_path / "runs", OptimizeConfig(), "r1")
    old = _cands("r1", 1, 1, tag="old")[0]
    store.save_candidate(old)
    ready = tmp_path / "ready"
    proc = _child(STUCK_AT_RENAME + f"""
from w4s.storage.run_store import RunStore
from tests.storage.test_idempotent_writes import _cands
RunStore({str(store.root)!r}).save_candidate(_cands("r1", 1, 1, tag="new")[0])
""", ready)
    _kill_when_ready(proc, ready)
    assert Path(ready.read_text()).exists()
    assert [c.reply for c in store.candidates(1)] == ["reply old0"]  # one, and the old one


def test_an_error_before_the_rename_removes_the_temp_file(tmp_path, monkeypatch):
    folder = tmp_path / "d"
    target = folder / "f.json"
    atomic_write(target, "old")
    source = _parquet(folder)

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, "new" * 1000)
    with pytest.raises(OSError, match="disk full"):
        write_parquet(pq.read_table(source), folder / "t.parquet")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in folder.iterdir()) == ["f.json", "src.parquet"]


def _parquet(folder: Path) -> Path:
    import pyarrow as pa

    path = folder / "src.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    return path


def test_killed_dataset_build_keeps_the_old_pair_and_a_rerun_matches(tmp_path):
    runs = tmp_path / "runs"
    store = RunStore.create(runs, OptimizeConfig(), "r1")
    _write(store, 1, _cands("r1", 1, 3))
    out = tmp_path / "datasets" / "d.parquet"
    first = build_dataset(runs, out)
    old_bytes, old_card = out.read_bytes(), first.card_path.read_text()
    _write(store, 2, _cands("r1", 2, 4))  # more rows: the next build differs
    ready = tmp_path / "ready"
    proc = _child(STUCK_AT_RENAME + f"""
from w4s.storage.dataset import build_dataset
build_dataset({str(runs)!r}, {str(out)!r})
""", ready)
    _kill_when_ready(proc, ready)
    assert out.read_bytes() == old_bytes and first.card_path.read_text() == old_card
    assert sorted(p.name for p in out.parent.glob("*.parquet")) == ["d.parquet"]

    again = build_dataset(runs, out)
    assert again.rows == 7 and pq.read_table(out).num_rows == 7
    assert json.loads(again.card_path.read_text())["sha256"] == again.card["sha256"]


def _adapter(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"w")
    return folder


def test_killed_registration_lists_nothing_and_a_rerun_registers_once(tmp_path):
    folder = _adapter(tmp_path / "fit-out")
    ready = tmp_path / "ready"
    proc = _child(STUCK_AT_RENAME + f"""
from w4s.storage.adapters import register
register({str(folder)!r}, base_model="b")
""", ready)
    _kill_when_ready(proc, ready)
    assert adapters.list_adapters() == []
    first = adapters.register(folder, base_model="b", metrics={"steps": 1})  # the rerun
    second = adapters.register(folder, base_model="b", metrics={"steps": 2})  # a refit
    assert first.id == second.id
    assert [(r.id, r.metrics) for r in adapters.list_adapters()] == [(first.id, {"steps": 2})]
    other = adapters.register(_adapter(tmp_path / "other"), base_model="b")
    assert [r.id for r in adapters.list_adapters()] == [first.id, other.id]


class _FakePeft:
    """What `save_adapter` needs of a PEFT model: `save_pretrained(folder)`."""

    def __init__(self, weights: bytes) -> None:
        self.weights = weights

    def save_pretrained(self, folder: Path) -> None:
        (Path(folder) / "adapter_model.safetensors").write_bytes(self.weights)
        (Path(folder) / "adapter_config.json").write_text('{"r": 4}')


def test_fit_output_is_an_adapter_only_once_its_weights_are_whole(tmp_path, monkeypatch):
    from w4s.errors import ConfigError
    from w4s.models.lora_gguf import check_adapter_dir
    from w4s.tasks.fit import save_adapter

    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    real_replace, moved = os.replace, []

    def dies_after_first(src, dst):
        if moved:
            raise KeyboardInterrupt  # killed between the two renames
        moved.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dies_after_first)
    with pytest.raises(KeyboardInterrupt):
        save_adapter(_FakePeft(b"new weights"), out)
    monkeypatch.undo()
    assert moved == ["adapter_model.safetensors"]
    with pytest.raises(ConfigError, match="not a PEFT adapter folder"):
        check_adapter_dir(out)  # weights without a config: not mistaken for an adapter
    save_adapter(_FakePeft(b"new weights"), out)  # the rerun
    assert check_adapter_dir(out) == out
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "checkpoints"]
