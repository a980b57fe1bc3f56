"""The RLAO dataset builder over real trajectory files written by RunStore."""

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from w4s.config import OptimizeConfig, build_config
from w4s.errors import W4SError
from w4s.mdp import Candidate, State
from w4s.reward import rwr_weight
from w4s.stage_config import DatasetConfig
from w4s.storage.dataset import DATASET_SCHEMA, build_dataset, card_path_for
from w4s.storage.run_store import RunStore

BENCH = "arithmetic (synthetic)"


def _state_prompt(tag: str) -> list[dict]:
    return State(f"task {tag}", "What is 1+1?", "2").messages()


def _cand(run, it, j, *, status="ok", reward=0.0, kind="action", created="2026-12-01T10:00:00"):
    return Candidate(
        run_id=run, iteration=it, index=j, kind=kind, prompt=_state_prompt(f"{run}/{it}"),
        reply=f"reply {run} {it} {j}", code="def solver(a, t):\n    return {'answer': 1}\n",
        status=status, accuracy=None if reward is None else 0.5, reward=reward,
        created_at=f"{created}.000+00:00",
    )


def _write_run(runs_dir, run, iterations, *, benchmark=BENCH):
    store = RunStore.create(runs_dir, OptimizeConfig(), run)
    for it, cands in iterations.items():
        store.write_trajectory(it, cands, benchmark=benchmark, meta_model="meta-m",
                               executor_model="exec-m")
    return store


@pytest.fixture
def runs(tmp_path):
    """Two runs: r1 (arithmetic, 1 Dec) with every status, r2 (humaneval, 5 Dec)."""
    runs_dir = tmp_path / "runs"
    _write_run(runs_dir, "r1", {
        0: [_cand("r1", 0, 0, kind="seed", reward=None)],
        1: [_cand("r1", 1, 0, reward=1.0), _cand("r1", 1, 1, reward=0.5),
            _cand("r1", 1, 2, status="skipped", reward=-0.1),
            _cand("r1", 1, 3, status="budget_exceeded", reward=None),
            _cand("r1", 1, 4, status="infra_error", reward=None)],
        2: [_cand("r1", 2, 0, reward=0.0, created="2026-12-02T10:00:00"),
            _cand("r1", 2, 1, reward=-0.1, created="2026-12-02T10:00:00")],
    })
    _write_run(runs_dir, "r2", {
        1: [_cand("r2", 1, 0, reward=1.0, created="2026-12-05T10:00:00"),
            _cand("r2", 1, 1, status="skipped", reward=-0.1, created="2026-12-05T10:00:00")],
    }, benchmark="HumanEval")
    return runs_dir


def _keys(path):
    return [(r["run_id"], r["turn"], r["candidate"]) for r in pq.read_table(path).to_pylist()]


def test_default_selection_is_ok_actions_with_rewards(runs, tmp_path):
    res = build_dataset(runs, tmp_path / "d.parquet")
    assert _keys(res.path) == [("r1", 1, 0), ("r1", 1, 1), ("r1", 2, 0), ("r1", 2, 1),
                               ("r2", 1, 0)]
    counts = res.card["counts"]
    assert counts == {"considered": 10, "included": 5, "excluded": {
        "budget_exceeded": 1, "infra_error": 1, "seed": 1, "skipped": 2}}
    assert res.card["reward_histogram"] == {"-0.1": 1, "0.0": 1, "0.5": 1, "1.0": 2}
    assert [s["run_id"] for s in res.card["source_runs"]] == ["r1", "r2"]
    assert res.card["source_runs"][0]["rows"] == 4 and res.card["source_runs"][0][
        "meta_model"] == "meta-m"


def test_skipped_only_with_the_flag_and_lost_rows_never(runs, tmp_path):
    res = build_dataset(runs, tmp_path / "d.parquet", DatasetConfig(include_skipped=True))
    rows = pq.read_table(res.path).to_pylist()
    assert ("r1", 1, 2) in _keys(res.path) and ("r2", 1, 1) in _keys(res.path)
    assert len(rows) == 7
    assert {r["reward"] for r in rows} == {1.0, 0.5, 0.0, -0.1}
    assert (1, 3) not in [(r["turn"], r["candidate"]) for r in rows if r["run_id"] == "r1"]
    assert (1, 4) not in [(r["turn"], r["candidate"]) for r in rows if r["run_id"] == "r1"]
    assert res.card["counts"]["excluded"] == {"budget_exceeded": 1, "infra_error": 1, "seed": 1}
    only_skipped = build_dataset(runs, tmp_path / "s.parquet",
                                 DatasetConfig(include_skipped=True, statuses=("skipped",)))
    assert _keys(only_skipped.path) == [("r1", 1, 2), ("r2", 1, 1)]


def test_selection_by_run_benchmark_date_and_reward(runs, tmp_path):
    out = tmp_path / "d.parquet"
    assert _keys(build_dataset(runs, out, DatasetConfig(runs=("r2",))).path) == [("r2", 1, 0)]
    res = build_dataset(runs, out, DatasetConfig(runs=("r1",)))
    assert res.card["counts"]["considered"] == 8
    by_bench = build_dataset(runs, out, DatasetConfig(benchmarks=("arithmetic",)))
    assert {k[0] for k in _keys(by_bench.path)} == {"r1"}
    assert by_bench.card["counts"]["excluded"]["benchmark"] == 2  # r2: ok + skipped
    assert _keys(build_dataset(runs, out, DatasetConfig(benchmarks=("HumanEval",))).path) == [
        ("r2", 1, 0)]
    day2 = build_dataset(runs, out, DatasetConfig(since="2026-12-02", until="2026-12-03"))
    assert _keys(day2.path) == [("r1", 2, 0), ("r1", 2, 1)]
    # half-open: until excludes its own instant; an offset is honoured
    assert _keys(build_dataset(runs, out, DatasetConfig(
        until="2026-12-02T11:00:00+01:00")).path) == [("r1", 1, 0), ("r1", 1, 1)]
    high = build_dataset(runs, out, DatasetConfig(min_reward=0.5))
    assert _keys(high.path) == [("r1", 1, 0), ("r1", 1, 1), ("r2", 1, 0)]
    assert high.card["counts"]["excluded"]["reward"] == 2
    mid = build_dataset(runs, out, DatasetConfig(min_reward=0.0, max_reward=0.5))
    assert _keys(mid.path) == [("r1", 1, 1), ("r1", 2, 0)]


def test_weights_are_rwr_and_one_for_sft(runs, tmp_path):
    rows = pq.read_table(build_dataset(runs, tmp_path / "d.parquet").path).to_pylist()
    for r in rows:
        assert r["weight"] == pytest.approx(rwr_weight(r["reward"], 0.4), rel=1e-12)
    assert round(next(r["weight"] for r in rows if r["reward"] == 1.0), 2) == 12.18
    tau1 = pq.read_table(build_dataset(runs, tmp_path / "t.parquet",
                                       DatasetConfig(tau=1.0)).path).to_pylist()
    assert [r["weight"] for r in tau1] == pytest.approx([math.exp(r["reward"]) for r in tau1])
    sft = build_dataset(runs, tmp_path / "s.parquet", DatasetConfig(sft=True))
    assert {r["weight"] for r in pq.read_table(sft.path).to_pylist()} == {1.0}
    assert sft.card["sft"] and sft.card["weights"] == {"min": 1.0, "max": 1.0}


def test_trl_layout_and_prompt_is_the_stored_state(runs, tmp_path):
    res = build_dataset(runs, tmp_path / "d.parquet")
    table = pq.read_table(res.path)
    msg = pa.struct([("role", pa.string()), ("content", pa.string())])
    for name in ("prompt", "completion"):
        t = table.schema.field(name).type
        assert pa.types.is_list(t) and t.value_type == msg
    assert table.schema.field("weight").type == pa.float64()
    assert table.schema.field("reward").type == pa.float64()
    assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in DATASET_SCHEMA]
    src = {(r["run_id"], r["iteration"], r["candidate"]): r for r in
           pq.read_table(str(runs / "r1" / "trajectories" / "iter-0001.parquet")).to_pylist()}
    row = table.to_pylist()[0]
    stored = src[("r1", 1, 0)]
    assert row["prompt"] == json.loads(stored["prompt_json"]) == _state_prompt("r1/1")
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert row["completion"] == [{"role": "assistant", "content": stored["reply"]}]
    assert row["episode"] == row["run_id"] == "r1" and row["benchmark"] == BENCH


def test_card_beside_the_file_with_hash_and_query(runs, tmp_path):
    import hashlib

    res = build_dataset(runs, tmp_path / "out" / "d.parquet", DatasetConfig(min_reward=0.0))
    assert res.card_path == tmp_path / "out" / "d.card.json" == card_path_for(res.path)
    card = json.loads(res.card_path.read_text())
    assert card == res.card
    assert card["sha256"] == hashlib.sha256(res.path.read_bytes()).hexdigest()
    assert card["tau"] == 0.4 and card["query"]["min_reward"] == 0.0
    assert card["query"]["statuses"] == ["ok"] and card["created_at"]
    assert sum(card["reward_histogram"].values()) == card["counts"]["included"] == 4
    assert card["counts"]["considered"] == card["counts"]["included"] + sum(
        card["counts"]["excluded"].values())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["d.card.json", "d.parquet"]


@pytest.mark.parametrize(("query", "match"), [
    (dict(tau=0), "`tau`: Input should be greater than 0"),
    (dict(tau=-1), "`tau`: Input should be greater than 0"),
    (dict(statuses=("done",)), "`status` 'done' is unknown"),
    (dict(statuses=("infra_error",), include_skipped=True), "never in a dataset"),
    (dict(statuses=("budget_exceeded",)), "never in a dataset"),
    (dict(statuses=("skipped",)), "needs include_skipped"),
    (dict(runs=("nope",)), "`run` 'nope' has no trajectory rows"),
    (dict(benchmarks=("gsm8k",)), "the selection is empty: 10 rows considered"),
    (dict(min_reward=2.0), "the selection is empty"),
    (dict(since="yesterday"), "`since` is not an ISO 8601"),
    (dict(since="2026-12-03", until="2026-12-01"), "is not before"),
    (dict(min_reward=1, max_reward=0), "is above"),
])
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, query, match):
    out = tmp_path / "o" / "d.parquet"
    with pytest.raises(W4SError, match=match) as e:  # the config's own checks, or the build's
        build_dataset(runs, out, build_config(query, DatasetConfig))
    assert "\n" not in str(e.value)
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_missing_or_empty_runs_dir(tmp_path):
    with pytest.raises(W4SError, match="does not exist"):
        build_dataset(tmp_path / "nowhere", tmp_path / "d.parquet")
    (tmp_path / "runs" / "r0").mkdir(parents=True)
    with pytest.raises(W4SError, match="holds no trajectory rows"):
        build_dataset(tmp_path / "runs", tmp_path / "d.parquet")
    assert not (tmp_path / "d.parquet").exists()


def test_only_seeds_is_an_empty_selection(tmp_path):
    _write_run(tmp_path / "runs", "r1", {0: [_cand("r1", 0, 0, kind="seed", reward=None)]})
    with pytest.raises(W4SError, match=r"selection is empty: 1 rows considered.*seed 1"):
        build_dataset(tmp_path / "runs", tmp_path / "d.parquet")


def _cli(argv):
    """The `w4s` command without main's error printing: its W4SError propagates."""
    from w4s.flows.cli import build_app

    command, bound, _ = build_app().parse_args(argv, exit_on_error=False, print_error=False)
    return command(*bound.args, **bound.kwargs)


def test_cli_writes_the_dataset_and_prints_a_summary(runs, tmp_path, capsys):
    out = tmp_path / "d.parquet"
    rc = _cli(["dataset", "--runs-dir", str(runs), "--out", str(out), "--run", "r1",
               "--run", "r2", "--benchmark", "arithmetic", "--min-reward", "0",
               "--include-skipped", "--since", "2026-12-01", "--tau", "0.4"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"3 rows, weights 1..12.18 (tau 0.4), {out}"
    assert lines[1] == f"card: {card_path_for(out)}"
    assert _keys(out) == [("r1", 1, 0), ("r1", 1, 1), ("r1", 2, 0)]
    assert _cli(["dataset", "--runs-dir", str(runs), "--out", str(out), "--sft",
                 "--status", "ok"]) == 0
    assert "weights 1..1 (sft)" in capsys.readouterr().out
    with pytest.raises(W4SError, match="`tau`: Input should be greater than 0"):
        _cli(["dataset", "--runs-dir", str(runs), "--out", str(out), "--tau", "0"])


def test_a_prompt_that_is_not_a_message_list_is_excluded(tmp_path):
    bad = _cand("r1", 1, 1, reward=1.0)
    bad.prompt = {"role": "user", "content": "not a list"}
    _write_run(tmp_path / "runs", "r1", {1: [_cand("r1", 1, 0, reward=0.5), bad]})
    res = build_dataset(tmp_path / "runs", tmp_path / "d.parquet")
    assert _keys(res.path) == [("r1", 1, 0)]
    assert res.card["counts"]["excluded"] == {"bad_text": 1}


# ------------------------------------------------------------------ issue 15


def _repaired_run(runs_dir):
    """r3: one candidate ok at once, one ok after two repairs (its conversation holds the
    failed attempts, their errors and the repair requests)."""
    from w4s.prompts import repair_messages

    plain = _cand("r3", 1, 0, reward=0.5)
    fixed = _cand("r3", 1, 1, reward=1.0)
    talk = repair_messages(fixed.prompt, "attempt 1", "NameError: x")
    fixed.conversation = repair_messages(talk, "attempt 2", "ZeroDivisionError")
    fixed.repairs = 2
    _write_run(runs_dir, "r3", {1: [plain, fixed]})
    return plain, fixed


def test_a_repaired_sample_carries_the_conversation_it_was_sampled_from(tmp_path):
    plain, fixed = _repaired_run(tmp_path / "runs")
    res = build_dataset(tmp_path / "runs", tmp_path / "d.parquet")
    rows = {r["candidate"]: r for r in pq.read_table(res.path).to_pylist()}
    assert rows[0]["prompt"] == plain.prompt
    assert rows[1]["prompt"] == fixed.conversation  # not the original state
    assert [m["role"] for m in rows[1]["prompt"]] == [
        "system", "user", "assistant", "user", "assistant", "user"]
    assert "ZeroDivisionError" in rows[1]["prompt"][-1]["content"]
    assert rows[1]["completion"] == [{"role": "assistant", "content": fixed.reply}]
    assert res.card["repaired"]["option"] == "conversation"
    assert res.card["repaired"]["included"] == 1


def test_repaired_samples_can_be_dropped_or_paired_with_the_state(tmp_path):
    plain, fixed = _repaired_run(tmp_path / "runs")
    from w4s.tasks.dataset import build

    assert _cli(["dataset", "--runs-dir", str(tmp_path / "runs"), "--out",
                 str(tmp_path / "a.parquet"), "--repaired", "drop"]) == 0
    assert _keys(tmp_path / "a.parquet") == [("r3", 1, 0)]
    card = json.loads(card_path_for(tmp_path / "a.parquet").read_text())
    assert card["counts"]["excluded"] == {"repaired": 1}
    state = build(str(tmp_path / "runs"), str(tmp_path / "b.parquet"), [],
                  DatasetConfig(repaired="state").model_dump())  # the nightly's option
    assert pq.read_table(state["path"]).to_pylist()[1]["prompt"] == fixed.prompt
    with pytest.raises(W4SError, match="`repaired`: Input should be 'conversation', 'drop' or "
                                       "'state', but received 'keep'"):
        build_config({"repaired": "keep"}, DatasetConfig)


def test_a_repaired_row_without_its_conversation_is_never_paired_with_the_state(tmp_path):
    """A trajectory file written before `conversation_json` existed."""
    _repaired_run(tmp_path / "runs")
    path = next((tmp_path / "runs" / "r3" / "trajectories").glob("iter-*.parquet"))
    pq.write_table(pq.read_table(path).drop_columns(["conversation_json"]), path)
    res = build_dataset(tmp_path / "runs", tmp_path / "d.parquet")
    assert _keys(res.path) == [("r3", 1, 0)]
    assert res.card["counts"]["excluded"]["no_conversation"] == 1


def test_the_weight_formula_has_one_source(runs, tmp_path, monkeypatch):
    """The dataset's weights are w4s.reward.rwr_weight's, not a copy of its formula."""
    import w4s.reward

    monkeypatch.setattr(w4s.reward, "rwr_weight", lambda r, tau: 100.0 + r + tau)
    rows = pq.read_table(build_dataset(runs, tmp_path / "d.parquet").path).to_pylist()
    assert [r["weight"] for r in rows] == pytest.approx([100.4 + r["reward"] for r in rows])
