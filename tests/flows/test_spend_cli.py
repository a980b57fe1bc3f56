"""`w4s evaluate` against a dead or refusing endpoint, and a first run with a PREFECT_HOME
whose parents do not exist (issue 14, items 10 and 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_openai import FakeOpenAIEndpoint

from w4s.flows.cli import main as cli

WORKFLOW = "def solver(agent, task):\n    return {'answer': agent.llm(task)}\n"


def _evaluate(tmp_path: Path, base_url: str, *extra: str) -> int:
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"q": f"{i}+1?", "a": str(i + 1)}) + "\n"
                            for i in range(3)))
    wf = tmp_path / "wf.py"
    wf.write_text(WORKFLOW)
    executor = json.dumps({"kind": "openai", "model": "m", "base_url": base_url,
                           "api_key_env": None, "max_retries": 0, "timeout_s": 5})
    return cli(["evaluate", "--workflow", str(wf), "--benchmark", f"file:{data}",
                "--question-field", "q", "--answer-field", "a", "--scorer", "numeric",
                "--executor", executor, "--no-cache", *extra])


@pytest.mark.parametrize("json_out", [False, True])
def test_evaluate_against_a_dead_endpoint_exits_non_zero_with_one_line(tmp_path, capsys,
                                                                       json_out):
    server = FakeOpenAIEndpoint(lambda body: None)
    server.stop()  # connection refused from now on
    code = _evaluate(tmp_path, server.url, *(["--json"] if json_out else []))
    out, err = capsys.readouterr()
    assert code == 2
    assert out == "" and "0.0000" not in err  # no table, no JSON document
    lines = [ln for ln in err.splitlines() if ln.startswith("w4s: error:")]
    assert len(lines) == 1 and "3 of 3 items lost to infrastructure" in lines[0]
    assert "unreachable" in lines[0]


def test_evaluate_against_an_endpoint_answering_401_exits_non_zero(tmp_path, capsys):
    server = FakeOpenAIEndpoint(lambda body: (401, {"error": {"message": "bad key"}}))
    try:
        code = _evaluate(tmp_path, server.url)
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert code == 2 and "authentication failed (401)" in err and "lost to infrastructure" in err


def _w4s(args: list[str], prefect_home: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=prefect_home, W4S_HOME=str(tmp_path / "w4s-home"))
    root = Path(__file__).resolve().parents[2]  # `w4s` from this checkout
    return subprocess.run([sys.executable, "-m", "w4s.flows.cli", *args], env=env, cwd=root,
                          capture_output=True, text=True, timeout=120)


def test_a_prefect_home_whose_parents_are_missing_is_created(tmp_path):
    home = tmp_path / "not" / "yet" / "prefect-home"
    done = _w4s(["runs", "--runs-dir", str(tmp_path / "runs")], str(home), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert home.is_dir()


def test_a_prefect_home_that_cannot_be_created_stops_at_once_with_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    start = time.monotonic()
    done = _w4s(["runs", "--runs-dir", str(tmp_path / "runs")], str(blocker / "home"),
                tmp_path)
    assert time.monotonic() - start < 60
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"w4s: error: `PREFECT_HOME` {str(blocker / 'home')!r} cannot be created: "
        "Not a directory"]
