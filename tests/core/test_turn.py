"""The optimize/collect turn sequence (tasks/turn.py) over the plain stages, without Prefect:
scripted meta-agent and executor through the real sandbox."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from configs import run_config
from replies import GOOD, NO_CODE

from w4s.errors import W4SError
from w4s.storage.run_store import RunStore
from w4s.tasks import runtime
from w4s.tasks.stages import prepare_run
from w4s.tasks.turn import Episodes, plain_submit, run_turns


@pytest.fixture(autouse=True)
def _fresh_harnesses():
    yield
    runtime.close_all()


def _runs(tmp_path: Path, names: list[str], **extra) -> list[str]:
    cfg = run_config(tmp_path, [GOOD, NO_CODE], **{
        "iterations": 2, "candidates": 2, "max_repairs": 0, "use_cache": False, **extra})
    return [prepare_run(cfg, tmp_path / "runs", name, names) for name in names]


def _rows(run_dir: str) -> list[dict]:
    files = sorted((Path(run_dir) / "trajectories").glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def test_turns_run_side_by_side_and_log_every_candidate(tmp_path):
    run_dirs = _runs(tmp_path, ["a", "b"])
    stages_seen = []
    with plain_submit() as submit:
        episodes = Episodes(run_dirs, submit, on_stage=lambda: stages_seen.append(1))
        status, done = run_turns(episodes, 2)
    assert (status, done) == ("completed", 2) and episodes.live == run_dirs
    assert len(stages_seen) == 2 + 5 * 2  # the seeds' two stages, five per turn
    for d in run_dirs:
        rows = _rows(d)
        assert [(r["iteration"], r["candidate"]) for r in rows] == [
            (0, 0), (1, 0), (1, 1), (2, 0), (2, 1)]
        it1 = [r for r in rows if r["iteration"] == 1]
        assert [r["status"] for r in it1] == ["ok", "skipped"]
        assert it1[0]["val_accuracy"] == 1.0 and it1[0]["chosen"] and it1[0]["reward"] > 0
        assert RunStore(d).has_state(2)

    with plain_submit() as submit:  # a rerun redoes nothing and logs nothing twice
        assert run_turns(Episodes(run_dirs, submit), 2) == ("completed", 2)
    assert len(_rows(run_dirs[0])) == 5


def test_a_failing_run_drops_out_when_isolated_and_raises_when_alone(tmp_path):
    good, broken = _runs(tmp_path, ["good", "broken"])
    (Path(broken) / "config.json").unlink()  # no longer a run folder: its seed stage fails
    with plain_submit() as submit:
        episodes = Episodes([good, broken], submit, isolate=True)
        assert run_turns(episodes, 1) == ("completed", 1)
        assert episodes.live == [good] and "not a w4s run folder" in episodes.failed["broken"]
        with pytest.raises(W4SError, match="not a w4s run folder"):
            run_turns(Episodes([broken], submit), 1)
    assert len(_rows(good)) == 3


def test_a_budget_stop_ends_the_turns_and_keeps_the_interrupted_rows(tmp_path):
    (run_dir,) = _runs(tmp_path, ["spent"], budget_tokens=1)
    with plain_submit() as submit:
        episodes = Episodes([run_dir], submit)
        assert run_turns(episodes, 2) == ("budget exceeded", 0)
    assert "budget" in str(episodes.budget_stop)
    rows = _rows(run_dir)  # the seed's rows are logged, none scored or rewarded
    assert [r["status"] for r in rows] == ["budget_exceeded"]
    assert rows[0]["val_accuracy"] is None and rows[0]["reward"] is None


def test_the_turn_imports_no_prefect():
    code = "import sys, w4s.tasks.turn; print(any(m.startswith('prefect') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
