"""The optimize flow end to end: scripted meta-agent + scripted executor through the real
sandbox (fast), and the real embedded SmolLM2 in both roles (slow, still run in CI)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from configs import run_config
from replies import GOOD, GOOD_CODE, RAISES

from w4s.flows.cli import main as cli
from w4s.flows.optimize import optimize
from w4s.models.factory import clear_model_cache
from w4s.storage.query import iteration_table
from w4s.storage.run_store import RunStore

NO_CODE = "I would use chain of thought here."


def _config(tmp_path, meta_replies, **extra):
    return run_config(tmp_path, meta_replies, "I am not sure, maybe 7.", **{
        "iterations": 2, "candidates": 3, "val_size": 6, "test_size": 8, "max_repairs": 1,
        **extra})


def test_flow_improves_logs_every_candidate_and_tests_once(tmp_path):
    # iteration 1: 3 sampled replies, then one repair each for the two failing ones
    # (both repairs get RAISES, whichever thread asks first); iteration 2: 3 good replies
    cfg = _config(tmp_path, [GOOD, NO_CODE, RAISES, RAISES, RAISES, GOOD, GOOD, GOOD])
    summary = optimize(cfg, run_id="run-a")
    store = RunStore(tmp_path / "runs" / "run-a")

    assert summary["status"] == "completed"
    assert summary["best_val_accuracy"] == 1.0 and summary["test_accuracy"] == 1.0
    assert summary["test_items"] == 8 and summary["best_iteration"] == 1
    assert "execute_code" in (store.root / "workflows" / "best.py").read_text()

    rows = [r for i in range(3) for r in pq.read_table(store.trajectory_path(i)).to_pylist()]
    assert [(r["iteration"], r["candidate"]) for r in rows][:4] == [(0, 0), (1, 0), (1, 1), (1, 2)]
    seed = rows[0]
    assert seed["kind"] == "seed" and seed["val_accuracy"] == 0.0 and seed["chosen"]
    it1 = [r for r in rows if r["iteration"] == 1]
    assert [r["status"] for r in it1] == ["ok", "skipped", "skipped"]
    assert [r["reward"] for r in it1] == [1.0, -0.1, -0.1]
    assert it1[0]["chosen"] and it1[0]["val_accuracy"] == 1.0
    assert all("boom" in r["error"] and r["repairs"] == 1 for r in it1[1:])
    assert "code block" in json.loads(it1[1]["repair_log_json"])[0]["error"]
    assert "boom" in json.loads(it1[2]["repair_log_json"])[0]["error"]
    # the state holds the seed's feedback; test items never appear in any prompt
    prompt = json.loads(it1[0]["prompt_json"])[1]["content"]
    test_questions = [q for q in _questions(store, "test")]
    assert "maybe 7" in prompt and not any(q in prompt for q in test_questions)

    cols, table = iteration_table(store.root)
    assert [r[0] for r in table] == [0, 1, 2]
    assert dict(zip(cols, table[1], strict=True))["chosen_val"] == 1.0


def _questions(store, which):
    from w4s.benchmarks import get_benchmark

    by_id = {it.id: it.question for it in get_benchmark("arithmetic").load()}
    return [by_id[i] for i in store.split_ids()[which]]


def test_rerun_with_same_run_id_skips_finished_stages(tmp_path):
    cfg = _config(tmp_path, [GOOD, GOOD, GOOD])
    first = optimize(cfg, run_id="run-b")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "run-b").rglob("*.parquet")}
    clear_model_cache()
    second = optimize(cfg, run_id="run-b")
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after  # no stage redone
    assert first["best_val_accuracy"] == second["best_val_accuracy"] == 1.0


def test_cli_runs_and_show(tmp_path, capsys):
    cfg = _config(tmp_path, [GOOD, GOOD, GOOD], iterations=1)
    optimize(cfg, run_id="run-c")
    capsys.readouterr()
    assert cli(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "run-c" in out and "completed" in out
    assert cli(["show", "run-c", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "chosen_val" in out and "test accuracy:      1.00 on" in out
    sql = "SELECT run_id, count(*) AS n, max(val_accuracy) AS best FROM candidates GROUP BY run_id"
    assert cli(["query", sql, "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "run-c" in out and "1.00" in out and " 4 " in out  # seed + 3 candidates
    assert cli(["query", "SELECT nope FROM candidates", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "`sql`" in capsys.readouterr().err


def test_cli_bad_inputs_are_one_line_errors(tmp_path, capsys):
    assert cli(["optimize", "--benchmark", "nope", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("w4s: error:") and "unknown benchmark 'nope'" in err
    assert len(err.splitlines()) == 1
    assert cli(["optimize", "--set", "iterations=many", "--runs-dir", str(tmp_path)]) == 2
    assert "`iterations`" in capsys.readouterr().err
    assert cli(["optimize", "--set", "executor.kind=gpt", "--runs-dir", str(tmp_path)]) == 2
    assert "`executor.kind`" in capsys.readouterr().err
    runs = tmp_path / "runs"
    assert cli(["optimize", "--seed-workflow", "magic", "--runs-dir", str(runs)]) == 2
    assert "`seed_workflow` 'magic'" in capsys.readouterr().err
    assert not runs.exists()  # refused before a run folder was made
    assert cli(["show", "missing", "--runs-dir", str(tmp_path)]) == 2
    assert "not a w4s run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_flow_on_the_real_embedded_model(tmp_path):
    """SmolLM2-135M as meta-agent (transformers, from the GGUF) and executor (llama.cpp, as in
    the demo): the loop runs and every candidate is logged."""
    cfg = run_config(
        tmp_path, seed_workflow="code", iterations=1, candidates=2, max_repairs=1,
        meta_agent={"kind": "embedded", "max_new_tokens": 160},
        executor={"kind": "llamacpp", "model": "smollm2-135m-instruct", "max_new_tokens": 32})
    summary = optimize(cfg, run_id="real")
    store = RunStore(tmp_path / "runs" / "real")
    rows = pq.read_table(store.trajectory_path(1)).to_pylist()
    assert len(rows) == 2
    assert all(r["meta_completion_tokens"] > 0 for r in rows)
    assert all(r["status"] in ("ok", "skipped") for r in rows)
    assert summary["executor_tokens"] > 0 and 0.0 <= summary["test_accuracy"] <= 1.0
    cols, table = iteration_table(store.root)
    assert [r[0] for r in table] == [0, 1]


def test_cli_evaluate_a_workflow_file(tmp_path, capsys):
    workflow = tmp_path / "wf.py"
    workflow.write_text(GOOD_CODE)
    code = cli(["evaluate", "--workflow", str(workflow), "--benchmark", "arithmetic",
                "--val-size", "4", "--executor", "{kind: scripted, replies: ['0']}", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["accuracy"] == 1.0 and len(doc["outcomes"]) == 4 and doc["reused_outcomes"] == 0
    args = ["evaluate", "--workflow", str(workflow), "--benchmark", "arithmetic", "--val-size",
            "4", "--executor", "{kind: scripted, replies: ['0']}", "--json"]
    assert cli(args) == 0  # the same workflow again: answered from the recorded outcomes
    again = json.loads(capsys.readouterr().out)
    assert again["reused_outcomes"] == 4 and again["executor_calls"] == 0
    assert [o["answer"] for o in again["outcomes"]] == [o["answer"] for o in doc["outcomes"]]
    assert cli([*args, "--rerun"]) == 0
    assert json.loads(capsys.readouterr().out)["reused_outcomes"] == 0
    assert cli(["evaluate", "--workflow", str(workflow), "--benchmark", "arithmetic",
                "--executor", "{kind: nope}"]) == 2
    assert "`executor.kind`: Input should be" in capsys.readouterr().err
    assert cli(["evaluate", "--workflow", str(workflow), "--benchmark", "arithmetic",
                "--executor", "{kind: ["]) == 2
    assert "`--executor` is not valid YAML" in capsys.readouterr().err


def test_missing_api_key_variable_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("W4S_TEST_MISSING_KEY", raising=False)
    code = cli(["optimize", "--runs-dir", str(tmp_path), "--set", "executor.kind=openai",
                "--set", "executor.model=gpt-4o-mini",
                "--set", "executor.api_key_env=W4S_TEST_MISSING_KEY"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "W4S_TEST_MISSING_KEY" in err and "api_key_env" in err


def test_budget_stop_keeps_everything_written(tmp_path, capsys):
    # the scripted executor counts words as tokens: the seed's 6 items need about 90
    cfg = _config(tmp_path, [GOOD], iterations=2, budget_tokens=40, max_failures_shown=6)
    summary = optimize(cfg, run_id="budget")
    store = RunStore(tmp_path / "runs" / "budget")
    assert summary["status"] == "budget exceeded" and summary["test_accuracy"] is None
    rows = pq.read_table(store.trajectory_path(0)).to_pylist()
    assert rows and rows[0]["kind"] == "seed"
    failures = json.loads(rows[0]["failures_json"])
    assert any("budget exceeded" in (f["error"] or "") for f in failures)
    assert cli(["show", "budget", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "not evaluated" in capsys.readouterr().out


def test_a_list_of_benchmarks_runs_one_optimization_each(tmp_path, capsys):
    for name, ops in (("a", "+"), ("b", "*")):
        rows = [{"q": f"What is {i}{ops}{i + 1}?", "a": eval(f"{i}{ops}{i + 1}")}
                for i in range(12)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    bench = f"file:{tmp_path / 'a.jsonl'},file:{tmp_path / 'b.jsonl'}"
    meta = f"meta_agent={{kind: scripted, replies: [{json.dumps(GOOD)}]}}"
    code = cli(["optimize", "--benchmark", bench, "--question-field", "q", "--answer-field", "a",
                "--scorer", "numeric", "--iterations", "1", "--candidates", "1", "--val-size", "4",
                "--test-size", "4", "--seed-workflow", "cot", "--runs-dir",
                str(tmp_path / "runs"), "--set", meta,
                "--set", "executor={kind: scripted, replies: ['9']}"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("test accuracy:      1.00 on 4") == 2
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all("file_" in r for r in runs)
