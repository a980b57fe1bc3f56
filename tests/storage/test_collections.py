"""The dataset window: the last N nights' nightly collections, and the card naming them."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from w4s.config import OptimizeConfig
from w4s.errors import W4SError
from w4s.mdp import Candidate, State
from w4s.storage.collections import last_nights, nightly_collections
from w4s.storage.run_store import RunStore


def _collection(runs_dir, cid: str, runs: list[str], failed: dict | None = None) -> None:
    runs_dir.mkdir(parents=True, exist_ok=True)
    for run in runs:  # one trajectory row per episode, reward 1.0
        store = RunStore.create(runs_dir, OptimizeConfig(), run)
        store.write_trajectory(1, [Candidate(
            run_id=run, iteration=1, index=0, kind="action",
            prompt=State("task", "What is 1+1?", "2").messages(), reply=f"reply {run}",
            code="def solver(a, t):\n    return {'answer': 1}\n", status="ok", accuracy=1.0,
            reward=1.0, created_at="2026-12-01T10:00:00.000+00:00")],
            benchmark="arithmetic", meta_model="m", executor_model="e")
    (runs_dir / f"{cid}.collection.json").write_text(json.dumps({
        "collection_id": cid, "status": "completed", "episodes": runs + list(failed or {}),
        "completed": runs, "failed": failed or {}}))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    _collection(root, "nightly-20261201-aaaaaa-collect", ["n1-e000"])
    _collection(root, "nightly-20261202-aaaaaa-collect", ["n2-e000", "n2-e001"],
                failed={"n2-e002": "RuntimeError: lost"})
    _collection(root, "nightly-20261202-bbbbbb-collect", ["n2b-e000"])  # another config
    _collection(root, "nightly-20261203-aaaaaa-collect", ["n3-e000"])
    _collection(root, "by-hand", ["h-e000"])  # not a nightly collection
    return root


def test_the_window_takes_the_last_n_nights_up_to_tonight(runs):
    assert [c["night"] for c in nightly_collections(runs)] == [
        "20261201", "20261202", "20261202", "20261203"]
    window = last_nights(runs, 2)
    assert [c["collection_id"] for c in window["collections"]] == [
        "nightly-20261202-aaaaaa-collect", "nightly-20261202-bbbbbb-collect",
        "nightly-20261203-aaaaaa-collect"]
    assert window["runs"] == ["n2-e000", "n2-e001", "n2b-e000", "n3-e000"]  # no failed one
    window = last_nights(runs, 2, through="nightly-20261202-aaaaaa-collect")
    assert window["runs"] == ["n1-e000", "n2-e000", "n2-e001", "n2b-e000"]
    assert last_nights(runs, 1, through="nightly-20261203-aaaaaa-collect")["runs"] == [
        "n3-e000"]
    assert last_nights(runs, 30)["nights"] == 30  # fewer nights exist: all of them
    # a chain with its own id: its collection, plus the nights before it
    assert last_nights(runs, 2, through="by-hand")["runs"] == ["n3-e000", "h-e000"]


def test_window_errors_are_one_line(runs, tmp_path):
    for call, words in ((lambda: last_nights(runs, 0), "must be a whole number >= 1"),
                        (lambda: last_nights(tmp_path / "empty", 2), "no nightly collection"),
                        (lambda: last_nights(runs, 1, through="nope"), "has no summary")):
        with pytest.raises(W4SError, match=words) as e:
            call()
        assert "\n" not in str(e.value)


def test_w4s_dataset_last_nights_records_the_collections_in_its_card(runs, tmp_path, capsys):
    from w4s.flows.cli import main

    out = tmp_path / "d.parquet"
    assert main(["dataset", "--runs-dir", str(runs), "--out", str(out),
                 "--last-nights", "2"]) == 0
    assert "window: 3 collection(s) of the last 2 night(s)" in capsys.readouterr().out
    assert sorted({r["run_id"] for r in pq.read_table(out).to_pylist()}) == [
        "n2-e000", "n2-e001", "n2b-e000", "n3-e000"]
    card = json.loads((tmp_path / "d.card.json").read_text())
    assert card["window"]["nights"] == 2
    assert [(c["collection_id"], c["runs"]) for c in card["window"]["collections"]] == [
        ("nightly-20261202-aaaaaa-collect", ["n2-e000", "n2-e001"]),
        ("nightly-20261202-bbbbbb-collect", ["n2b-e000"]),
        ("nightly-20261203-aaaaaa-collect", ["n3-e000"])]
    assert main(["dataset", "--runs-dir", str(runs), "--out", str(out),
                 "--last-nights", "2", "--run", "n1-e000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("w4s: error: `--last-nights` and `--run` both choose the runs; give one")
