"""The learning-signal experiment's measures (benchmarks/learning_signal.py) on known rows."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "learning_signal.py"
CODE = "def solver(agent, task):\n    return {'answer': agent.execute_code('print(2)')}"


@pytest.fixture(scope="module")
def ls():
    spec = importlib.util.spec_from_file_location("learning_signal", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def row(state, status, reward, accuracy=None, code=CODE):
    return {"state": state, "status": status, "reward": reward, "accuracy": accuracy,
            "code": code}


def test_execute_code_means_a_call_not_a_mention(ls):
    assert ls.calls_execute_code(CODE)
    assert not ls.calls_execute_code("def solver(agent, task):\n"
                                     "    return {'answer': 'agent.execute_code'}")
    assert not ls.calls_execute_code("def solver(:")
    assert not ls.calls_execute_code(None)


def test_measures_count_every_candidate_and_leave_lost_ones_out(ls):
    rows = [
        row("000", "ok", 0.4, 0.2),
        row("000", "ok", -0.1, 0.0, code="def solver(agent, task):\n    return {}"),
        row("000", "skipped", -0.1, code=CODE),  # invalid: its call never ran
        row("000", "infra_error", None, code=CODE),  # lost: never measured
        row("001", "ok", 0.5, 0.6),
        row("001", "skipped", -0.1, code=None),
    ]
    m = ls.measures(rows)
    assert m["candidates"] == 6 and m["lost"] == 1
    assert m["reward"]["n"] == 5 and m["reward"]["clusters"] == 2
    assert m["reward"]["mean"] == pytest.approx((0.4 - 0.1 - 0.1 + 0.5 - 0.1) / 5, abs=1e-4)
    assert m["valid"]["mean"] == pytest.approx(3 / 5, abs=1e-4)
    # the share of ALL candidates whose valid workflow calls execute_code
    assert m["execute_code"]["mean"] == pytest.approx(2 / 5, abs=1e-4)
    # validation accuracy over all candidates, invalid ones at 0
    assert m["val_accuracy"]["mean"] == pytest.approx(0.8 / 5, abs=1e-4)
    assert m["positive"]["mean"] == pytest.approx(2 / 5, abs=1e-4)


def test_paired_compares_policies_on_their_common_states(ls):
    base = [row(s, "skipped", -0.1) for s in ("000", "001") for _ in range(4)]
    better = [row("000", "ok", 0.5, 0.6)] * 4 + [row("001", "skipped", -0.1)] * 4
    d = ls.paired(better, base)
    assert d["reward"]["clusters"] == 2
    assert d["reward"]["diff"] == pytest.approx(0.3, abs=1e-4)
    assert d["reward"]["ci95"] == [0.0, 0.6]  # two states: the gain is in one of them
    assert ls.paired(better, [row("009", "ok", 0.5, 0.5)])["reward"] == {
        "error": "paired_difference: the two policies share no state with values"}


def test_states_have_a_better_workflow_in_view_and_one_beyond(ls):
    args = argparse.Namespace(pool=12, val_size=3)
    ids = [f"arith-0-{i}" for i in range(12)]
    scores = {"direct": {"correct": ids[:1]}, "code": {"correct": ids[:4]},
              "extract": {"correct": ids}}
    states = ls.pick_states(args, scores, 0, 5, 0)
    assert len(states) == 5 and len({tuple(s["validation"]) for s in states}) == 5
    for s in states:
        acc = s["accuracy"]
        assert acc["direct"] < acc["code"] < acc["extract"] == 1.0
    none = {**scores, "code": {"correct": ids[:1]}}
    with pytest.raises(RuntimeError, match="0 of 2 states with headroom"):
        ls.pick_states(args, none, 0, 2, 0)


def test_table_shows_policies_and_paired_differences(ls, tmp_path, capsys):
    base = [row(s, "skipped", -0.1) for s in ("000", "001") for _ in range(2)]
    rwr = [row("000", "ok", 0.5, 0.6)] * 2 + [row("001", "skipped", -0.1)] * 2
    out = {"evaluation": {"base": ls.measures(base), "rwr": ls.measures(rwr)},
           "paired": {"rwr - base": ls.paired(rwr, base)}}
    (tmp_path / "r.json").write_text(__import__("json").dumps(out))
    assert ls.main(["--table", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    assert "| base | 4 (0) | -0.100 [-0.100, -0.100] |" in text
    assert "| rwr - base | 2 | +0.300 [+0.000, +0.600] |" in text


STATE = {"example_question": "What is 32+6+71?", "example_answer": "109", "history": [
    {"failures": []},
    {"failures": [{"question": "What is 92-4+25?", "expected": "113"},
                  {"question": "What is 62-4+12?", "expected": "70"}]}]}


def test_the_audit_flags_positive_candidates_that_hard_code_a_shown_gold(ls):
    shown = ls.shown_items(STATE)
    assert [s[0] for s in shown] == ["example", "failure_case", "failure_case"]
    gaming = {
        "ex-literal": "def solver(agent, task):\n    return {'answer': 109}",
        "ex-expr": "def solver(agent, task):\n    return {'answer': 32 + 6 + 71}",
        "fc": "def solver(agent, task):\n    if '92-4+25' in task:\n        return "
              "{'answer': '113'}\n    return {'answer': agent.llm(task)}",
        "honest": CODE.replace("print(2)", "print(1090 + 1130)"),  # 109 only inside 1090
    }
    assert ls.hard_coded(gaming["ex-literal"], shown) == ["example"]
    assert ls.hard_coded(gaming["ex-expr"], shown) == ["example"]
    assert ls.hard_coded(gaming["fc"], shown) == ["failure_case"]
    assert ls.hard_coded(gaming["honest"], shown) == []
    rows = [{"run_id": f"r-{k}", "reward": 0.4, "code": c} for k, c in gaming.items()]
    rows.append({"run_id": "r-ex-literal", "reward": -0.1, "code": gaming["ex-literal"]})
    rows.append({"run_id": "r-fc", "reward": None, "code": gaming["fc"]})
    out = ls.audit(rows, {r["run_id"]: STATE for r in rows})
    assert (out["positive"], out["hard_code_example"], out["hard_code_failure_case"],
            out["hard_code_any"]) == (4, 2, 1, 3)
    assert [f["run_id"] for f in out["flagged"]] == ["r-ex-literal", "r-ex-expr", "r-fc"]


def test_each_state_runs_on_its_own_split(ls, tmp_path):
    # the split seed was dropped: every "state" of the 2026-12-04 runs was split 0
    args = argparse.Namespace(pool=20, val_size=5, max_repairs=0, item_timeout=60.0,
                              concurrency=1, meta_tokens=64)
    cfgs = [ls.make_config(args, tmp_path, item_seed=1, split_seed=k, temperature=0.7,
                           candidates=2) for k in (0, 7)]
    assert [c.split_seed for c in cfgs] == [0, 7]
    assert cfgs[1].benchmark_options == {"seed": 1, "size": 20}


def test_pooling_runs_weighs_each_as_a_replication_on_the_same_states(ls, tmp_path,
                                                                      monkeypatch):
    import json

    works = [tmp_path / "a", tmp_path / "b"]
    for w in works:
        w.mkdir()
        (w / "states.json").write_text(json.dumps({"eval": [{"split_seed": 3},
                                                             {"split_seed": 9}]}))
    # run a: RWR beats SFT on both states; run b: SFT beats RWR by as much
    by_run = {"a": {"rwr": 0.5, "sft": -0.1}, "b": {"rwr": -0.1, "sft": 0.5}}

    def rows(root, prefix):
        policy = prefix.split("-")[1]
        reward = by_run[root.parent.name].get(policy)
        return [] if reward is None else [row(s, "ok", reward, 0.2) for s in ("000", "001")]

    monkeypatch.setattr(ls, "action_rows", rows)
    out = ls.pooled(works)
    assert out["evaluation"]["rwr"]["candidates"] == 4  # both runs' candidates
    diff = out["paired"]["rwr - sft"]["reward"]
    assert diff["diff"] == pytest.approx(0.0, abs=1e-9) and diff["clusters"] == 2
    assert "rwr - base" not in out["paired"]  # no base rows
    (works[1] / "states.json").write_text(json.dumps({"eval": [{"split_seed": 4}]}))
    with pytest.raises(SystemExit, match="evaluation states differ"):
        ls.pooled(works)


def test_a_round_with_nothing_to_fit_is_skipped_not_fatal(ls, tmp_path):
    """No valid candidate collected: the fits record why and stop; round 2's collection,
    with no adapter to sample from, is skipped; the run goes on to what it can measure."""
    args = argparse.Namespace(
        deadline_min=None, json=None, fit_seeds=2, candidates=8)
    (tmp_path / "train").mkdir()
    ex = ls.Experiment(args, tmp_path)
    ex.fits("", ["r1"], ["rwr", "sft"])
    assert ex.out["skipped"]["fits round 1"] == "no valid candidate was collected"
    assert not ex.out["fits"] and not ex.out["datasets"]
    assert ex.adapters("rwr") == {}
    ex.collect("r2", "collect2", ex.adapters("rwr"))
    stages = [f["stage"] for f in ex.out["finished"]]
    assert stages == ["fits round 1 (skipped)", "collect r2 (skipped)"]


def test_a_policys_adapters_are_the_complete_ones_on_disk(ls, tmp_path):
    """Round 2 may fit more or fewer seeds than round 1: the policy is what was fitted."""
    ex = ls.Experiment(argparse.Namespace(deadline_min=None, json=None, fit_seeds=1), tmp_path)
    for name in ("rwr2-s0", "rwr2-s1", "rwr2-s10", "rwr-s0"):
        (tmp_path / "adapters" / name).mkdir(parents=True)
        (tmp_path / "adapters" / name / "adapter_config.json").write_text("{}")
    (tmp_path / "adapters" / "rwr2-s2").mkdir()  # a fit that did not finish
    assert list(ex.adapters("rwr2")) == ["-s0", "-s1", "-s10"]
    assert ex.adapters("rwr") == {"-s0": str(tmp_path / "adapters" / "rwr-s0")}
    assert ex.adapters("sft") == {}
