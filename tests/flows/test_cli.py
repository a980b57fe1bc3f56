"""The `w4s` front door: flags generated from OptimizeConfig, deep `--set` merges, the run id
printed on Ctrl-C, `evaluate --split all`, its progress bar, and tables that stay plain text
when piped. The optimize flow itself is stubbed here (tests/flows/test_optimize_flow.py runs
it for real)."""

from __future__ import annotations

import json
import sys
import types
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from w4s.config import OptimizeConfig
from w4s.flows.cli import build_app
from w4s.flows.cli import main as cli
from w4s.flows.cli_common import print_table
from w4s.flows.config_cli import given_from


def _is_scalar(annotation: Any) -> bool:
    members = (get_args(annotation) if get_origin(annotation) in (Union, types.UnionType)
               else (annotation,))
    members = [m for m in members if m is not type(None)]
    if members == [str, list[str]] or members == [list[str], str]:
        return True  # `benchmark`: a name or a list (comma-separated on the command line)
    return len(members) == 1 and (members[0] in (int, float, str, bool, list[str])
                                  or get_origin(members[0]) is Literal)


def test_every_scalar_config_field_has_a_flag_with_its_description():
    import inspect

    from cyclopts import Parameter

    from w4s.flows.optimize_cmd import optimize

    params = inspect.signature(optimize).parameters
    for name, info in OptimizeConfig.model_fields.items():
        if _is_scalar(info.annotation):
            assert name in params, f"OptimizeConfig.{name} has no flag"
            spec = next(a for a in get_args(params[name].annotation) if isinstance(a, Parameter))
            assert info.description is None or info.description in spec.help
        else:  # nested: a model or a mapping, set with --set a.b=v
            assert name not in params
            ann = info.annotation
            assert get_origin(ann) is dict or (isinstance(ann, type) and issubclass(ann, BaseModel))


OPTIONS = ("run_id", "adapter", "task_runner")  # `w4s optimize`'s own, not config fields


def _parse(*argv: str) -> dict[str, Any]:
    _, bound, _ = build_app().parse_args(["optimize", *argv], exit_on_error=False,
                                         print_error=False)
    return dict(bound.arguments)


def _overrides(*argv: str) -> dict[str, Any]:
    given = {k: v for k, v in _parse(*argv).items() if k not in OPTIONS}
    return given_from(OptimizeConfig, given).overrides


def test_every_existing_flag_name_still_works_with_its_type():
    data = _overrides(
        "--benchmark", "gsm_plus,mgsm", "--iterations", "2", "--candidates", "1",
        "--val-size", "3", "--test-size", "none", "--seed-workflow", "cot",
        "--concurrency", "2", "--runs-dir", "r", "--budget-usd", "1.5", "--budget-tokens", "9",
        "--no-cache", "--question-field", "q", "--answer-field", "a", "--scorer", "numeric",
        "--meta-temperature", "0.25", "--no-reuse-outcomes", "--item-timeout-s", "7")
    assert data == {
        "benchmark": ["gsm_plus", "mgsm"], "iterations": 2, "candidates": 1, "val_size": 3,
        "test_size": None, "seed_workflow": "cot", "concurrency": 2, "runs_dir": "r",
        "budget_usd": 1.5, "budget_tokens": 9, "use_cache": False, "meta_temperature": 0.25,
        "reuse_outcomes": False, "item_timeout_s": 7.0,
        "benchmark_options": {"question_field": "q", "answer_field": "a", "scorer": "numeric"},
    }
    OptimizeConfig.model_validate(data)
    assert _overrides("--benchmark", "svamp") == {"benchmark": "svamp"}
    assert _overrides() == {}  # nothing given: the file's or the model's defaults hold
    args = _parse("--run-id", "r1", "--config", "c.yaml")
    assert args["run_id"] == "r1" and args["config"] == "c.yaml"


def test_a_bad_flag_value_is_one_line_and_exit_code_2(capsys):
    assert cli(["optimize", "--iterations", "three"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'w4s: error: Invalid value for --iterations: unable to convert "three" into int.'
    assert cli(["optimize", "--no-such-flag", "1"]) == 2
    assert capsys.readouterr().err.strip() == "w4s: error: Unknown option: --no-such-flag."
    assert cli(["optimize", "--iterations", "0"]) == 2  # the model's own check, named
    assert "`iterations`: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert cli([]) == 2 and "Usage: w4s COMMAND" in capsys.readouterr().out


def test_set_items_merge_deeply_and_win_over_flags():
    data = _overrides("--iterations", "2", "--set", "iterations=5",
                      "--set", "executor.kind=openai", "--set", "executor.model=gpt-4o-mini",
                      "--set", "executor={max_new_tokens: 9}")
    assert data == {"iterations": 5,
                    "executor": {"kind": "openai", "model": "gpt-4o-mini", "max_new_tokens": 9}}


@pytest.fixture
def fake_optimize(monkeypatch):
    """w4s.flows.optimize stubbed (the CLI imports it lazily): records each config and run id,
    returns no runs."""
    calls: list[tuple[OptimizeConfig, str | None]] = []
    behaviour: dict[str, Any] = {"raise": None}

    def optimize(cfg, run_id=None):
        calls.append((cfg, run_id))
        if behaviour["raise"] is not None:
            raise behaviour["raise"]
        return {"runs": []}

    monkeypatch.setitem(sys.modules, "w4s.flows.optimize", types.SimpleNamespace(optimize=optimize))
    return calls, behaviour


def test_set_on_a_config_file_keeps_the_rest_of_its_block(tmp_path, fake_optimize):
    calls, _ = fake_optimize
    run = tmp_path / "run.yaml"
    run.write_text("iterations: 4\nbenchmark_options: {path: data.jsonl}\n"
                   "executor: {kind: openai, model: gpt-4o-mini, api_key_env: KEY}\n")
    assert cli(["optimize", "--config", str(run), "--set", "executor.max_new_tokens=256",
                "--candidates", "2", "--scorer", "numeric", "--runs-dir", str(tmp_path)]) == 0
    cfg, _ = calls[0]
    assert cfg.executor.kind == "openai" and cfg.executor.model == "gpt-4o-mini"
    assert cfg.executor.api_key_env == "KEY" and cfg.executor.max_new_tokens == 256
    assert cfg.iterations == 4 and cfg.candidates == 2
    assert cfg.benchmark_options == {"path": "data.jsonl", "scorer": "numeric"}


def test_ctrl_c_prints_the_run_id_to_resume(tmp_path, fake_optimize, capsys):
    calls, behaviour = fake_optimize
    behaviour["raise"] = KeyboardInterrupt()
    assert cli(["optimize", "--benchmark", "svamp", "--runs-dir", str(tmp_path)]) == 130
    run_id = calls[-1][1]
    assert run_id and "svamp" in run_id  # drawn like RunStore.create draws it
    err = capsys.readouterr().err
    assert f"rerun with --run-id {run_id} to resume" in err
    # a given id is the one used and printed
    assert cli(["optimize", "--run-id", "mine", "--runs-dir", str(tmp_path)]) == 130
    assert calls[-1][1] == "mine" and "--run-id mine to resume" in capsys.readouterr().err
    # several benchmarks: one top-level id, which resumes every subflow
    assert cli(["optimize", "--benchmark", "gsm8k,svamp", "--runs-dir", str(tmp_path)]) == 130
    cfg, run_id = calls[-1]
    assert cfg.benchmark == ["gsm8k", "svamp"] and "/" not in run_id
    assert f"--run-id {run_id} to resume" in capsys.readouterr().err
    files = f"file:{tmp_path / 'a.jsonl'},file:{tmp_path / 'b.jsonl'}"
    assert cli(["optimize", "--benchmark", files, "--runs-dir", str(tmp_path)]) == 130
    run_id = calls[-1][1]
    assert "/" not in run_id and f"--run-id {run_id} to resume" in capsys.readouterr().err


def _write_items(path, n):
    rows = [{"q": f"What is {i}+{i}?", "a": 2 * i} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


WORKFLOW = """def solver(agent, task):
    a = int(task.split("What is ")[1].split("+")[0])
    return {"answer": str(2 * a)}
"""


def _evaluate(tmp_path, bench, *extra):
    wf = tmp_path / "wf.py"
    wf.write_text(WORKFLOW)
    return cli(["evaluate", "--workflow", str(wf), "--benchmark", bench, "--question-field", "q",
                "--answer-field", "a", "--scorer", "numeric", "--executor",
                "{kind: scripted, replies: ['0']}", "--json", *extra])


@pytest.mark.parametrize("n", [2, 10])
def test_evaluate_scores_every_item_of_a_file_by_default(tmp_path, capsys, n):
    data = _write_items(tmp_path / "items.jsonl", n)
    assert _evaluate(tmp_path, f"file:{data}") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["split"] == "all" and doc["items"] == n and doc["accuracy"] == 1.0
    assert doc["infra_errors"] == 0
    assert [o["item_id"] for o in doc["outcomes"]] == [f"file:items.jsonl-{i}" for i in range(n)]
    assert _evaluate(tmp_path, f"file:{data}", "--split", "all") == 0
    assert json.loads(capsys.readouterr().out)["items"] == n


def test_evaluate_split_defaults_and_the_hint_on_a_small_file(tmp_path, capsys):
    data = _write_items(tmp_path / "items.jsonl", 2)
    assert _evaluate(tmp_path, f"file:{data}", "--split", "validation") == 2
    err = capsys.readouterr().err
    assert "`val_size` 10 leaves no test items" in err and "`--split all`" in err
    wf = tmp_path / "wf.py"
    assert cli(["evaluate", "--workflow", str(wf), "--benchmark", "arithmetic", "--val-size", "3",
                "--executor", "{kind: scripted, replies: ['0']}", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["split"] == "validation" and doc["items"] == 3  # named benchmarks: validation


def test_evaluate_progress_goes_to_stderr_and_json_stays_clean(tmp_path, capsys):
    from w4s.config import BackendConfig
    from w4s.flows.evaluate_cmd import evaluate_file

    data = _write_items(tmp_path / "items.jsonl", 6)
    wf = tmp_path / "wf.py"
    wf.write_text(WORKFLOW)
    kw = dict(executor_cfg=BackendConfig(kind="scripted", replies=["0"]), concurrency=2,
              benchmark_options={"question_field": "q", "answer_field": "a",
                                 "scorer": "numeric"})
    assert evaluate_file(wf, f"file:{data}", json_out=True, progress=True, **kw) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["items"] == 6  # stdout holds the JSON document alone
    assert "6/6" in err and "accuracy 1.00" in err  # the bar, fed item by item
    assert _evaluate(tmp_path, f"file:{data}") == 0  # --json: no bar by default
    out, err = capsys.readouterr()
    assert json.loads(out)["items"] == 6 and "6/6" not in err


def test_tables_piped_are_plain_text_one_line_per_row(capsys):
    cols = ["iteration", "best_val", "note", *(f"column_{i}" for i in range(12))]
    rows = [(0, 0.5, "a long note " * 5, *range(12)), (10, None, "x", *range(12))]
    print_table(cols, rows)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "\x1b" not in out  # not a terminal: no colour codes
    assert len(lines) == 4 and set(lines[1]) == {"-"}  # header, rule, two rows; never wrapped
    assert lines[0].split() == cols
    assert lines[2].split()[:2] == ["0", "0.50"] and lines[3].split()[:2] == ["10", "-"]
    assert lines[2].index("0.50") + 4 == lines[3].index("-") + 1  # numbers right-aligned


def test_an_accuracy_never_scored_prints_as_a_dash():
    from w4s.flows.cli_common import _score

    assert _score(None) == "-" and _score(0.5) == "0.50"  # e.g. a budget spent before the seed


def test_evaluate_table_cuts_long_answers_and_keeps_the_exception_line(capsys):
    from w4s.flows.evaluate_cmd import _print_table
    from w4s.sandbox.types import ItemOutcome

    spend = dict(executor_calls=1, prompt_tokens=2, completion_tokens=3, cost_usd=0.0)
    long = ItemOutcome(item_id="a", answer="word " * 100, score=1.0, error=None, seconds=0.1,
                       **spend)
    bad = ItemOutcome(item_id="b", answer=None, score=0.0, seconds=0.2, **spend,
                      error="Traceback (most recent call last):\n  ...\nValueError: boom\n")
    lost = ItemOutcome(item_id="c", answer=None, score=0.0, seconds=0.2, **spend,
                       error="executor unreachable", infra_error="executor unreachable")
    result = types.SimpleNamespace(
        outcomes=[long, bad, lost], accuracy=0.5, executor_calls=2, prompt_tokens=4,
        completion_tokens=6, cost_usd=0.0, cache_hits=0, cache_misses=2, reused=0,
        budget_exceeded=False, infra_errors=1)
    _print_table({"benchmark": "x", "split": "all", "items": 3, "executor": "e"}, result, "basic")
    lines = capsys.readouterr().out.splitlines()
    row_a = next(ln for ln in lines if ln.startswith("a "))
    row_b = next(ln for ln in lines if ln.startswith("b "))
    assert row_a.endswith("…") and len(row_a.split("   ")[-1]) <= 60
    assert row_b.endswith("ERROR ValueError: boom")
    assert any(ln.startswith("lost:       1 items") for ln in lines)
    assert next(ln for ln in lines if ln.startswith("c ")).endswith("LOST executor unreachable")


def test_dataset_is_a_subcommand_with_one_line_errors(tmp_path, capsys):
    from w4s.flows.cli import main

    assert main(["dataset", "--out", str(tmp_path / "d.parquet"), "--runs-dir",
                 str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("w4s: error:") and "does not exist" in err and len(err.splitlines()) == 1


def test_adapter_specs_are_resolved_or_refused_in_one_line(tmp_path, capsys):
    import json

    from w4s.flows.cli import main
    from w4s.storage.adapters import register

    runs = ["--runs-dir", str(tmp_path / "runs")]
    assert main(["optimize", "--adapter", "latest", *runs]) == 2  # nothing fitted yet
    assert "no adapter is registered" in capsys.readouterr().err
    assert main(["optimize", "--adapter", "no-such-id", *runs]) == 2
    err = capsys.readouterr().err.strip()
    assert "no-such-id" in err and len(err.splitlines()) == 1
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    register(folder, base_model="Qwen/Qwen2.5-7B-Instruct")
    assert main(["optimize", "--adapter", "latest", *runs]) == 2
    err = capsys.readouterr().err.strip()
    assert "fitted on 'Qwen/Qwen2.5-7B-Instruct'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # refused before any run folder was made


def test_sigterm_unwinds_like_ctrl_c(tmp_path):
    """A stopped or cancelled `w4s` runs its cleanup (sandbox workers, Prefect's temporary
    server) instead of dying where it stands."""
    import os
    import subprocess

    script = (
        "import os, signal, sys, time, types\n"
        "def optimize(cfg, run_id=None):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(10)\n"
        "sys.modules['w4s.flows.optimize'] = types.SimpleNamespace(optimize=optimize)\n"
        "from flows.cli import main\n"
        f"sys.exit(main(['optimize', '--benchmark', 'svamp', '--runs-dir', {str(tmp_path)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__)))))
    assert done.returncode == 130, (done.returncode, done.stderr[-2000:])
    assert "to resume" in done.stderr
