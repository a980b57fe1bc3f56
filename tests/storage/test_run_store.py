import pyarrow.parquet as pq
import pytest

from w4s.config import OptimizeConfig
from w4s.errors import W4SError
from w4s.mdp import Candidate, State
from w4s.storage.query import iteration_table, list_runs
from w4s.storage.run_store import RunStore


def _cand(it, j, acc, status="ok", chosen=False):
    prompt = [{"role": "user", "content": f"state {it}"}]
    return Candidate(run_id="r1", iteration=it, index=j, kind="action", prompt=prompt,
                     reply=f"reply {j}", code=f"def solver(a, t):\n    return {{'answer': {j}}}\n",
                     status=status, accuracy=acc, reward=1.0 if chosen else 0.0, chosen=chosen,
                     meta_completion_tokens=7, executor_prompt_tokens=3,
                     executor_completion_tokens=2, failures=[{"question": "q", "answer": "1",
                                                              "expected": "2", "error": None}])


def test_parquet_rows_round_trip_and_iteration_table(tmp_path):
    cfg = OptimizeConfig(iterations=2)
    store = RunStore.create(tmp_path, cfg, "r1")
    store.save_state(0, State("d", "q", "a").advance(0, 0.1, "c", []))
    assert store.load_state(0).last_accuracy == 0.1
    for it in (1, 2):
        cands = [_cand(it, 0, 0.2), _cand(it, 1, 0.5 * it, chosen=True),
                 _cand(it, 2, None, status="skipped")]
        for c in cands:
            store.save_candidate(c)
        assert [c.index for c in store.candidates(it)] == [0, 1, 2]
        store.write_trajectory(it, store.candidates(it), benchmark="arithmetic (synthetic)",
                               meta_model="m", executor_model="e")

    table = pq.read_table(store.trajectory_path(1)).to_pylist()
    assert len(table) == 3
    row = table[1]
    assert row["chosen"] and row["val_accuracy"] == 0.5 and row["config_hash"] == cfg.config_hash()
    assert row["prompt_json"] == '[{"role": "user", "content": "state 1"}]'
    assert row["code_hash"] and row["benchmark"] == "arithmetic (synthetic)"
    assert table[2]["status"] == "skipped" and table[2]["val_accuracy"] is None

    cols, rows = iteration_table(store.root)
    by = [dict(zip(cols, r, strict=True)) for r in rows]
    assert [r["iteration"] for r in by] == [1, 2]
    assert by[1]["chosen_val"] == 1.0 and by[0]["skipped"] == 1 and by[0]["ran"] == 2
    assert by[0]["meta_tokens"] == 21 and by[0]["executor_tokens"] == 15

    runs = list_runs(tmp_path)
    assert runs[0]["run_id"] == "r1" and runs[0]["rows"] == 6


def test_reopening_a_run_with_another_config_is_refused(tmp_path):
    RunStore.create(tmp_path, OptimizeConfig(), "r1")
    assert RunStore.create(tmp_path, OptimizeConfig(), "r1").exists()
    with pytest.raises(W4SError, match="different config"):
        RunStore.create(tmp_path, OptimizeConfig(iterations=9), "r1")


def test_not_a_run_folder_is_one_line(tmp_path):
    with pytest.raises(W4SError, match="not a w4s run folder"):
        RunStore(tmp_path / "nothing").config()
    with pytest.raises(W4SError, match="no trajectory rows"):
        iteration_table(tmp_path)


def test_rows_carry_the_sampling_provenance(tmp_path):
    import json

    from w4s.prompts import PROMPT_VERSION

    cfg = OptimizeConfig(meta_temperature=0.8)
    store = RunStore.create(tmp_path, cfg, "r1")
    plain, repaired = _cand(1, 0, 0.2), _cand(1, 1, 0.5)
    repaired.conversation = [*repaired.prompt, {"role": "assistant", "content": "try 1"},
                             {"role": "user", "content": "it failed"}]
    store.write_trajectory(1, [plain, repaired], benchmark="b", meta_model="m",
                           executor_model="e")
    rows = pq.read_table(store.trajectory_path(1)).to_pylist()
    assert json.loads(rows[0]["conversation_json"]) == plain.prompt  # sampled from the state
    assert json.loads(rows[1]["conversation_json"])[-1]["content"] == "it failed"
    assert {r["meta_temperature"] for r in rows} == {0.8}
    assert {r["prompt_version"] for r in rows} == {PROMPT_VERSION}
    assert {r["meta_adapter"] for r in rows} == {None}
