"""Standalone programs (code-benchmark tests), the isolation report, and `w4s evaluate`."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from w4s.benchmarks.base import Benchmark, Item
from w4s.config import BackendConfig
from w4s.sandbox import Harness, SandboxSettings, isolation_report, run_program, run_programs


def test_run_programs_results_in_order():
    results = run_programs([
        "print('hello')",
        "assert 1 + 1 == 3, 'arithmetic is broken'",
        "import sys\nsys.exit(0)",
        "import sys\nsys.exit(2)",
        "def f():\n    return f()\nf()",
    ])
    assert [r.ok for r in results] == [True, False, True, False, False]
    assert results[0].stdout == "hello\n" and results[0].error is None
    assert results[1].error.endswith("AssertionError: arithmetic is broken")
    assert 'File "<program>", line 1' in results[1].error
    assert results[3].error == "SystemExit: program exited with code 2"
    assert "RecursionError" in results[4].error


def test_program_timeout_and_os_exit_are_failures():
    r = run_program("while True:\n    pass", timeout_s=0.5)
    assert not r.ok and r.error == "timeout after 0.5s" and r.seconds < 5
    r = run_program("import os\nos._exit(0)")
    assert not r.ok and r.error == "program exited (os._exit) before finishing"


def test_program_output_is_capped():
    settings = SandboxSettings(max_output_chars=1000)
    r = run_program("import sys\nfor _ in range(64):\n    sys.stdout.write('z' * (1 << 20))\n",
                    timeout_s=10, settings=settings)
    assert len(r.stdout) <= 1000 and r.stdout.startswith("zzz")
    assert not r.ok and "File too large" in r.error  # 16 MB file cap, then EFBIG


def test_programs_cannot_write_outside_or_see_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-program-secret")
    target = tmp_path / "out.txt"
    r = run_program(f"import os\nprint(os.environ.get('OPENAI_API_KEY'))\n"
                    f"open({str(target)!r}, 'w')")
    assert r.stdout == "None\n" and not r.ok
    # denied, or (with a private /tmp) the parent's temp folder is not even there
    assert "PermissionError" in r.error or "FileNotFoundError" in r.error, r.error
    assert not target.exists()


class _CodeBench(Benchmark):
    """Scores by running the answer as a program, as HumanEval's scorer does."""

    name = "code"

    def __init__(self, n: int) -> None:
        self.items = [Item(id=f"c{i}", question=str(i), gold=None) for i in range(n)]

    def load(self) -> list[Item]:
        return self.items

    def score(self, item: Item, answer: Any) -> float:
        return 1.0 if run_program(f"assert {answer} == {item.question}").ok else 0.0

    def seed_workflows(self) -> dict[str, str]:
        return {}


def test_scorer_can_run_programs_inside_a_busy_harness(fake):
    bench = _CodeBench(8)
    code = "def solver(agent, task):\n    return {'answer': task}\n"
    with Harness(fake, settings=SandboxSettings(concurrency=4)) as h:
        result = h.evaluate(code, bench.load(), bench)
    assert result.accuracy == 1.0, [o.error for o in result.outcomes]


def test_run_programs_from_many_threads():
    out: list[list[bool]] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        rs = run_programs([f"assert {k} == {k}", f"assert {k} == -1"])
        with lock:
            out.append([r.ok for r in rs])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == [[True, False]] * 6


def test_isolation_report_names_a_level():
    report = isolation_report()
    assert report["level"] in ("strong", "partial", "basic")
    assert "RLIMIT_AS" in report["rlimits"] and report["env"].startswith("allowlist")
    for key in ("namespaces", "landlock_abi", "uid_drop", "cgroup_pids", "private_tmp"):
        assert key in report


def test_evaluate_file_prints_a_table_and_json(tmp_path, monkeypatch, capsys, fake):
    from w4s.flows.evaluate_cmd import evaluate_file
    from w4s.models import factory as models_factory

    monkeypatch.setattr(models_factory, "build_chat_model", lambda cfg, role=None: fake)
    wf = tmp_path / "wf.py"
    wf.write_text("def solver(agent, task):\n    return {'answer': agent.llm('ECHO: 7')}\n")
    cfg = BackendConfig(kind="scripted", replies=["unused"])
    kw = dict(executor_cfg=cfg, val_size=3, test_size=2, split_seed=0, concurrency=2,
              use_cache=True)
    assert evaluate_file(wf, "arithmetic", "validation", json_out=False, **kw) == 0
    table = capsys.readouterr().out
    assert "accuracy:" in table and "cache:" in table and "arith-0-" in table
    assert evaluate_file(wf, "arithmetic", "test", json_out=True, **kw) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["split"] == "test" and len(doc["outcomes"]) == 2
    assert doc["outcomes"][0]["answer"] == "7" and doc["cost_usd"] == 0.0
    assert evaluate_file(wf, "arithmetic", "test", json_out=True, **kw) == 0
    assert json.loads(capsys.readouterr().out)["cache_misses"] == 0  # second run: all cached


def test_evaluate_file_rejects_an_invalid_workflow(tmp_path, capsys):
    from w4s.flows.evaluate_cmd import evaluate_file

    wf = tmp_path / "wf.py"
    wf.write_text("def solver(agent):\n    return {}\n")
    code = evaluate_file(wf, "arithmetic", "validation", executor_cfg=BackendConfig(),
                         val_size=3, test_size=None, split_seed=0, json_out=False,
                         concurrency=1, use_cache=False)
    assert code == 1 and "must take 2 positional" in capsys.readouterr().out


def test_settings_are_validated():
    with pytest.raises(ValueError, match="concurrency"):
        SandboxSettings(concurrency=0)
    with pytest.raises(ValueError, match="item_timeout_s"):
        SandboxSettings(item_timeout_s=0)
