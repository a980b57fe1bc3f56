"""A wrong code answer never scores, however it is written (issue 14, item 1).

Each class of attack once scored 1.0 with a wrong answer, when the answer and the tests ran
as one program and a printed marker meant "passed". Now the answer runs alone in its own
process and the official tests in another, which calls it and compares plain values; the
instances below are all wrong answers (none computes the right values honestly) and must
score 0, while the honest answers beside them in the same batch still score 1.
"""

from __future__ import annotations

import json

import pytest

from w4s.benchmarks import get_benchmark

EQ_TEST = """

METADATA = {}


def check(candidate):
    assert candidate(2, 3) == 5
    assert candidate('a', 'b') == 'ab'
    assert candidate([1], [2]) == [1, 2]
"""
FLOAT_TEST = """
import math


def check(candidate):
    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9
    assert math.isclose(candidate(1.5, 1.0), 2.5)
    assert all(candidate(i, i) == 2 * i for i in range(3)) or candidate(0, 0) == 0
"""
PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
HONEST = "    return a + b\n"


@pytest.fixture(scope="module")
def benches(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rows")
    rows = {"eq": EQ_TEST, "float": FLOAT_TEST}
    out = {}
    for name, test in rows.items():
        row = {"task_id": f"T/{name}", "prompt": PROMPT, "canonical_solution": HONEST,
               "test": test, "entry_point": "add"}
        path = folder / f"{name}.jsonl"
        path.write_text(json.dumps(row) + "\n")
        bench = get_benchmark("humaneval", path=path, timeout_s=3.0)
        out[name] = (bench, bench.load()[0])
    mbpp_row = {"task_id": 1, "prompt": "Add two things.\n\ndef add(a, b):", "code":
                "def add(a, b):\n    return a + b", "test_imports": [], "entry_point": "add",
                "test_list": ["assert add(2, 3) == 5", "assert add('a', 'b') == 'ab'"]}
    path = folder / "mbpp.jsonl"
    path.write_text(json.dumps(mbpp_row) + "\n")
    bench = get_benchmark("mbpp", path=path, timeout_s=3.0)
    out["mbpp"] = (bench, bench.load()[0])
    return out


def _scores(benches, name: str, answers: list[str]) -> list[float]:
    """Each attack scored in one batch with honest answers around it."""
    bench, item = benches[name]
    batch = [HONEST if name != "mbpp" else item.gold]
    for a in answers:
        batch += [a, HONEST if name != "mbpp" else item.gold]
    scores = bench.score_many([item] * len(batch), batch)
    assert scores[0::2] == [1.0] * (len(answers) + 1), scores  # honest neighbours pass
    return scores[1::2]


ALWAYS_EQUAL = [
    # an object equal to anything
    "    class Any:\n"
    "        def __eq__(self, other): return True\n"
    "        def __ne__(self, other): return False\n"
    "        __hash__ = object.__hash__\n"
    "    return Any()\n",
    # int, str and list subclasses with a rigged __eq__
    "    class I(int):\n"
    "        def __eq__(self, other): return True\n"
    "        __hash__ = int.__hash__\n"
    "    return I(0)\n",
    "    class S(str):\n"
    "        def __eq__(self, other): return True\n"
    "        __hash__ = str.__hash__\n"
    "    return S('')\n",
    "    class L(list):\n"
    "        def __eq__(self, other): return True\n"
    "    return L()\n",
]


def test_objects_that_equal_anything_do_not_pass(benches):
    assert _scores(benches, "eq", ALWAYS_EQUAL) == [0.0] * len(ALWAYS_EQUAL)
    mbpp = ["class Any:\n    def __eq__(self, o): return True\n"
            "    __hash__ = object.__hash__\ndef add(a, b):\n    return Any()\n",
            "class I(int):\n    def __eq__(self, o): return True\n"
            "    __hash__ = int.__hash__\ndef add(a, b):\n    return I(0)\n"]
    assert _scores(benches, "mbpp", mbpp) == [0.0, 0.0]


# Find the pass marker (or the tests) wherever the answer's process can reach, announce
# a pass on every channel it can write, then leave before the tests run.
_FIND = """
import gc, linecache, os, re, sys
def _secrets():
    texts = [''.join(v[2]) for v in list(linecache.cache.values()) if len(v) > 2]
    f = sys._getframe()
    while f is not None:
        texts += [c for c in f.f_code.co_consts if isinstance(c, str)]
        texts += [v for v in f.f_globals.values() if isinstance(v, str)]
        f = f.f_back
    for o in gc.get_objects():
        if hasattr(o, 'co_consts'):
            texts += [c for c in o.co_consts if isinstance(c, str)]
    found = set()
    for t in texts:
        found.update(re.findall(r'W4S-TESTS-PASSED-[0-9a-f]+', t))
    return sorted(found)
def _announce():
    line = ''.join(m + '\\n' for m in _secrets()) + '{"ok": true, "i": 0}\\n'
    for fd in range(0, 256):
        try:
            os.write(fd, line.encode())
        except OSError:
            pass
    try:
        with open('.w4s_result.json', 'w') as f:
            f.write('{"ok": true, "result": null}')
    except OSError:
        pass
"""
EARLY_EXIT = [
    _FIND + "_announce()\nraise SystemExit(0)\ndef add(a, b):\n    return None\n",
    _FIND + "_announce()\nimport sys\nsys.exit()\n",
    _FIND + "_announce()\nos._exit(0)\n",
    _FIND + "def add(a, b):\n    _announce()\n    os._exit(0)\n",
    _FIND + "def add(a, b):\n    _announce()\n    raise SystemExit(0)\n",
]


def test_finding_the_marker_and_exiting_early_does_not_pass(benches):
    assert _scores(benches, "eq", EARLY_EXIT) == [0.0] * len(EARLY_EXIT)


READ_TESTS = [
    # returns the right values only when it can read the tests (a lookup table would do)
    _FIND + "def add(a, b):\n"
    "    import gc, linecache, sys\n"
    "    texts = [''.join(v[2]) for v in linecache.cache.values() if len(v) > 2]\n"
    "    f = sys._getframe()\n"
    "    while f is not None:\n"
    "        texts += [c for c in f.f_code.co_consts if isinstance(c, str)]\n"
    "        f = f.f_back\n"
    "    texts += [c for o in gc.get_objects() if hasattr(o, 'co_consts')\n"
    "              for c in o.co_consts if isinstance(c, str)]\n"
    "    needle = ''.join(['assert cand', 'idate(2, 3) == 5'])  # not a constant of ours\n"
    "    return a + b if any(needle in t for t in texts) else None\n",
    # or when the test function itself is reachable from its globals
    "def add(a, b):\n"
    "    import sys\n"
    "    f = sys._getframe()\n"
    "    while f is not None:\n"
    "        if 'check' in f.f_globals or 'check' in f.f_locals:\n"
    "            return a + b\n"
    "        f = f.f_back\n"
    "    return None\n",
]


def test_the_tests_are_not_in_the_answers_process(benches):
    assert _scores(benches, "eq", READ_TESTS) == [0.0, 0.0]


SETTRACE = [
    # jump over the line that calls check(...)
    "import sys, linecache\n"
    "def _jump(frame, event, arg):\n"
    "    if event == 'line':\n"
    "        line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)\n"
    "        if line.startswith('check('):\n"
    "            frame.f_lineno = frame.f_lineno + 1\n"
    "    return _jump\n"
    "sys._getframe().f_trace = _jump\n"
    "sys.settrace(_jump)\n"
    "def add(a, b):\n    return None\n",
    # print the marker from the caller's constants and leave as check starts
    _FIND + "def _on_call(frame, event, arg):\n"
    "    if event == 'call' and frame.f_code.co_name == 'check':\n"
    "        _announce()\n"
    "        raise SystemExit(0)\n"
    "    return None\n"
    "sys.settrace(_on_call)\n"
    "import threading\nthreading.settrace(_on_call)\n"
    "def add(a, b):\n    return None\n",
]


def test_trace_functions_do_not_skip_the_tests(benches):
    assert _scores(benches, "eq", SETTRACE) == [0.0, 0.0]


DECORATOR = [
    "    return None\n@(lambda f: lambda candidate: None)\n",
    "    return None\n@(lambda f: bool)\n",
    "    return None\n\n\n@lambda check: (lambda *a, **k: True)\n",
]


def test_a_trailing_decorator_cannot_swallow_the_tests(benches):
    assert _scores(benches, "eq", DECORATOR) == [0.0] * len(DECORATOR)
    mbpp = ["def add(a, b):\n    return None\n@(lambda f: dict)\n",
            "def add(a, b):\n    return None\n@(lambda f: lambda: None)\n"]
    assert _scores(benches, "mbpp", mbpp) == [0.0, 0.0]


PATCHING = [
    # the asserts' helpers, patched to always agree
    "    import builtins, math\n"
    "    builtins.abs = lambda x: 0\n"
    "    builtins.all = lambda x: True\n"
    "    math.isclose = lambda *a, **k: True\n"
    "    return 0\n",
    "import builtins, math\n"
    "builtins.abs = lambda x: 0.0\n"
    "math.isclose = lambda *a, **k: True\n"
    "builtins.all = lambda it: True\n"
    "def add(a, b):\n    return 0\n",
    # a float whose arithmetic always lands on the expected side
    "    class F(float):\n"
    "        def __sub__(self, o): return 0.0\n"
    "        def __eq__(self, o): return True\n"
    "        __hash__ = float.__hash__\n"
    "    import math\n"
    "    math.isclose = lambda *a, **k: True\n"
    "    return F(0.0)\n",
]


def test_patching_builtins_and_assert_helpers_does_not_pass(benches):
    assert _scores(benches, "float", PATCHING) == [0.0] * len(PATCHING)


def test_hostile_answers_cannot_fail_their_neighbours(benches):
    """Killing what it can, flooding every descriptor, hanging or crashing: the honest
    answers in the same batch still pass (checked inside `_scores`)."""
    hostile = [
        "    import os, signal\n"
        "    for fd in range(3, 256):\n"
        "        try:\n"
        "            os.write(fd, b'\\x00\\x00\\x00\\x05{}{}{' * 100)\n"
        "        except OSError:\n"
        "            pass\n"
        "    try:\n"
        "        os.kill(-1, signal.SIGKILL)\n"
        "    except OSError:\n"
        "        pass\n"
        "    return None\n",
        "    while True:\n        pass\n",
        "    import os\n    os.abort()\n",
        "    def gen():\n        while True:\n            yield 1\n    return gen()\n",
    ]
    assert _scores(benches, "eq", hostile) == [0.0] * len(hostile)


def test_values_cross_as_their_exact_types(benches):
    """What the official tests compare is what the solution computed, by value and type:
    True is not 1, a tuple is not a list, floats keep every bit (nan and inf too), and
    arguments the solution mutates are mutated for the test as well."""
    bench, _ = benches["eq"]
    rows = [
        ("return (a, b)", "assert candidate(1, 2) == (1, 2) and type(candidate(1, 2)) is tuple"),
        ("return a == b", "assert candidate(1, 1) is True and candidate(1, 2) is False"),
        ("return float('nan') if a else float('-inf')",
         "import math\n    assert math.isnan(candidate(1, 0)) and candidate(0, 0) == -math.inf"),
        ("return 0.1 + 0.2", "assert candidate(0, 0) == 0.30000000000000004"),
        ("a.append(b)\n    return None", "x = [1]\n    candidate(x, 2)\n    assert x == [1, 2]"),
        ("return {frozenset({a}): {b: b'x'}}", "assert candidate(1, 2) == {frozenset({1}): "
         "{2: b'x'}}"),
        ("return 10 ** 5000 + a", "assert candidate(1, 0) == 10 ** 5000 + 1"),
        ("return (x * b for x in a)", "assert list(candidate([1, 2], 3)) == [3, 6]"),
        ("import collections\n    return collections.Counter(a)",
         "assert candidate('aab', 0) == {'a': 2, 'b': 1}"),
        ("return range(a, b)", "assert candidate(1, 4) == range(1, 4)"),
        ("raise ValueError('no')", "try:\n        candidate(1, 2)\n    except ValueError:\n"
         "        pass\n    else:\n        assert False"),
    ]
    items, answers = [], []
    for n, (body, test) in enumerate(rows):
        item = bench.make_item(n, {"task_id": f"T/v{n}", "prompt": PROMPT,
                                   "canonical_solution": "", "entry_point": "add",
                                   "test": f"def check(candidate):\n    {test}\n"})
        items.append(item)
        answers.append(f"    {body}\n")
    assert bench.score_many(items, answers) == [1.0] * len(rows)
    # and the same tests fail a near miss
    near = ["    return [a, b]\n", "    return int(a == b)\n", "    return 0.0\n",
            "    return 0.3\n", "    return a + [b]\n"]
    assert bench.score_many(items[:5], near) == [0.0] * 5


def test_a_dead_test_server_is_started_again():
    import os
    import signal

    import w4s.sandbox.programs as programs
    from w4s.sandbox import CodeTest, run_tests

    test = CodeTest(solution="def f(x):\n    return x\n",
                    test="def check(c):\n    assert c(1) == 1\n", entry_point="f")
    assert [r.ok for r in run_tests([test, test])] == [True, True]
    os.kill(programs._server.proc.pid, signal.SIGKILL)
    programs._server.proc.wait()
    assert [r.ok for r in run_tests([test, test])] == [True, True]
