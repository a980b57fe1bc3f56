"""The `agent` API a workflow sees, end to end through a worker."""

from __future__ import annotations

import json

import pytest

from w4s.sandbox.worker.agent import extract_json_object, strip_fences


def answer_of(harness, make_bench, code: str):
    bench = make_bench(1)
    out = harness.evaluate(code, bench.load(), bench).outcomes[0]
    assert out.error is None, out.error
    return out.answer, bench.scored[-1]


def test_llm_accepts_a_string_system_and_messages(quick_harness, make_bench):
    code = """
def solver(agent, task):
    a = agent.llm("UPPER: abc")
    b = agent.llm([{"role": "user", "content": "ECHO: from messages"}], system="be brief")
    return {"answer": [a, b]}
"""
    text, raw = answer_of(quick_harness, make_bench, code)
    assert raw == ["ABC", "from messages"]  # the raw answer reaches the scorer as JSON
    assert text == "['ABC', 'from messages']"


def test_sample_returns_n_distinct_replies(quick_harness, make_bench):
    code = "def solver(agent, task):\n    return {'answer': agent.sample('pick', n=4)}\n"
    _, raw = answer_of(quick_harness, make_bench, code)
    assert len(raw) == 4 and len(set(raw)) == 4


def test_call_json_format_llm_parses_prose_wrapped_json(quick_harness, make_bench):
    code = """
def solver(agent, task):
    out = agent.call_json_format_llm(
        [{"role": "user", "content": "JSON please"}], 0.0, 2, "math expert",
        ["thought", "answer", "confidence"], "Solve it.")
    return {"answer": out}
"""
    _, raw = answer_of(quick_harness, make_bench, code)
    assert raw == [{"thought": "easy", "answer": "42", "confidence": "<missing>"}] * 2


def test_call_json_format_llm_marks_unparseable_replies(quick_harness, make_bench):
    code = """
def solver(agent, task):
    out = agent.call_json_format_llm("ECHO: not json at all", 0.0, 1, "helper", ["answer"], "")
    return {"answer": out[0]["answer"]}
"""
    text, _ = answer_of(quick_harness, make_bench, code)
    assert text == "<unparseable JSON>"


def test_extract_json_object():
    assert extract_json_object('{"a": 1}') == {"a": 1}
    assert extract_json_object('Sure: {"a": {"b": 2}} ok') == {"a": {"b": 2}}
    assert extract_json_object("[1, 2] then {\"x\": 3}") == {"x": 3}
    assert extract_json_object("no json {here") is None


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("print(6 * 7)", "42"),
        ("```python\nprint('fenced')\n```", "fenced"),
        ("def solution():\n    return 40 + 2\n", "42"),
        ("x = 1 / 0", "Error: ZeroDivisionError: division by zero"),
        ("while True:\n    pass", "Error: TimeoutError: timeout after 1s"),
        ("import os\nos._exit(3)", "Error: program exited with code 3 before returning a result"),
    ],
)
def test_execute_code_runs_nested(quick_harness, make_bench, code, expected):
    wf = f"def solver(agent, task):\n    return {{'answer': agent.execute_code({code!r})}}\n"
    text, _ = answer_of(quick_harness, make_bench, wf)
    assert text == expected


def test_execute_code_cannot_reach_the_executor_channel(quick_harness, make_bench):
    code = "import gc\nprint(sum(1 for o in gc.get_objects() if type(o).__name__ == 'socket'))"
    wf = ("import socket\ndef solver(agent, task):\n"
          f"    return {{'answer': agent.execute_code({code!r})}}\n")
    text, _ = answer_of(quick_harness, make_bench, wf)
    # the grandchild closed the socket: any object left is unusable
    probe = ("import socket, gc\nfor o in gc.get_objects():\n"
             "    if isinstance(o, socket.socket):\n"
             "        try:\n            o.send(b'x'); print('SENT')\n"
             "        except OSError:\n            pass\n")
    wf2 = f"def solver(agent, task):\n    return {{'answer': agent.execute_code({probe!r})}}\n"
    text2, _ = answer_of(quick_harness, make_bench, wf2)
    assert "SENT" not in text2
    assert text.isdigit()


def test_strip_fences():
    assert strip_fences("```python\nprint(1)\n```") == "print(1)"
    assert strip_fences("```\nx = 1\n```\ntext") == "x = 1"
    assert strip_fences("print(2)") == "print(2)"


def test_workflow_threads_can_call_the_agent_concurrently(quick_harness, make_bench):
    code = """
from concurrent.futures import ThreadPoolExecutor
def solver(agent, task):
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda i: agent.llm(f"ECHO: {i}"), range(12)))
    return {"answer": ",".join(replies)}
"""
    text, _ = answer_of(quick_harness, make_bench, code)
    assert text == ",".join(str(i) for i in range(12))


def test_environment_is_an_allowlist(quick_harness, make_bench):
    code = "import os\ndef solver(agent, task):\n    return {'answer': sorted(os.environ)}\n"
    _, raw = answer_of(quick_harness, make_bench, code)
    allowed = {"HOME", "TMPDIR", "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED",
               "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING"}
    assert set(raw) <= allowed, set(raw) - allowed


def test_non_json_answers_arrive_as_text(quick_harness, make_bench):
    code = "def solver(agent, task):\n    return {'answer': {1, 2}}\n"
    text, raw = answer_of(quick_harness, make_bench, code)
    assert text == "{1, 2}" and raw == "{1, 2}"
    code = "def solver(agent, task):\n    return {'answer': 7}\n"
    _, raw = answer_of(quick_harness, make_bench, code)
    assert raw == 7 and json.dumps(raw) == "7"


def test_flooding_executor_calls_is_capped(fake_cls, make_bench):
    from w4s.sandbox import Harness
    from w4s.sandbox.harness import MAX_CALLS_IN_FLIGHT

    code = f"""
import threading
def solver(agent, task):
    out = []
    def call(i):
        try:
            agent.llm(f"ECHO: {{i}}")
            out.append("ok")
        except Exception as e:
            out.append(type(e).__name__ + ": " + str(e))
    threads = [threading.Thread(target=call, args=(i,)) for i in range({MAX_CALLS_IN_FLIGHT + 6})]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {{"answer": sorted(set(out))}}
"""
    bench = make_bench(1)
    with Harness(fake_cls(latency_s=1.0)) as h:
        out = h.evaluate(code, bench.load(), bench).outcomes[0]
    assert out.error is None, out.error
    assert bench.scored[-1] == [
        "ExecutorError: too many executor calls in flight (limit 64 per item)", "ok"]
    assert out.executor_calls <= MAX_CALLS_IN_FLIGHT
