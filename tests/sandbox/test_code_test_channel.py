"""The code-test path made cheaper (issue 14, speed): the T <-> S channel reads a frame in
one system call and keeps its limits; the test server compiles each setup and test text
once; neither lets anything of one test reach the next."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from w4s.sandbox import CodeTest, run_tests
from w4s.sandbox.worker import framing, tester
from w4s.sandbox.worker.framing import FrameChannel, ProtocolError


def _frame(obj: dict) -> bytes:
    data = json.dumps(obj).encode()
    return framing.HEADER.pack(len(data)) + data


@pytest.mark.parametrize("timed", [False, True])
def test_frames_split_or_run_together_read_one_by_one(timed):
    a, b = socket.socketpair()
    with a, b:
        chan = FrameChannel(b, timed=timed)
        deadline = time.monotonic() + 5 if timed else None
        first, second = _frame({"n": 1}), _frame({"n": 2, "s": "x" * 100_000})

        def dribble() -> None:
            for i in range(len(first)):
                a.sendall(first[i:i + 1])
            a.sendall(second + _frame({"n": 3}))

        writer = threading.Thread(target=dribble)
        writer.start()
        got = [chan.recv(deadline)["n"] for _ in range(3)]
        writer.join()
        assert got == [1, 2, 3]
        chan.send({"reply": True}, deadline)
        assert framing.recv_frame(a) == {"reply": True}


def test_a_timed_channel_keeps_its_deadlines_and_limits():
    a, b = socket.socketpair()
    with a, b:
        chan = FrameChannel(b, max_bytes=1000, timed=True)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            chan.recv(time.monotonic() + 0.2)  # nothing comes
        assert 0.15 < time.monotonic() - start < 2
        with pytest.raises(TimeoutError):  # the peer never reads: no endless send
            chan.send({"x": "y" * 5_000_000}, time.monotonic() + 0.2)
    for bad in (framing.HEADER.pack(1001), framing.HEADER.pack(3) + b"NaN",
                framing.HEADER.pack(2) + b"\xff\xfe", framing.HEADER.pack(2) + b"[]"):
        a, b = socket.socketpair()
        with a, b:
            a.sendall(bad)
            with pytest.raises(ProtocolError):
                FrameChannel(b, max_bytes=1000, timed=True).recv(time.monotonic() + 5)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(framing.HEADER.pack(10) + b"{}")  # half a frame, then the peer is gone
        a.close()
        with pytest.raises(EOFError):
            FrameChannel(b).recv()


def test_the_test_server_compiles_each_text_once_and_bounds_what_it_keeps(monkeypatch):
    monkeypatch.setattr(tester, "_cache", tester._CodeCache(100))
    spec = {"setup": "X = 1\n", "test": "def check(c):\n    assert c(X) == Y\n"}
    setup, test = tester.compile_spec(spec)
    again = tester.compile_spec(dict(spec))
    assert again[0][0] is setup[0] and again[1][0] is test[0]
    assert {"check", "X", "Y"} <= test[1]
    broken = tester.compile_spec({"setup": "def (:\n", "test": "x = 1\n"})
    assert isinstance(broken[0][0], SyntaxError)
    tester.compile_spec({"setup": "Z = 2\n" * 10, "test": "W = 3\n" * 10})  # 60 + 60 chars
    assert tester._cache.chars <= 100 and ("X = 1\n", "<setup>") not in tester._cache.entries
    assert ("W = 3\n" * 10, "<tests>") in tester._cache.entries
    long = "V = 4\n" * 20
    assert tester.compile_spec({"test": long})[1][1] == {"V"}
    assert (long, "<tests>") not in tester._cache.entries  # longer than all it may keep


def test_a_test_compiled_once_runs_afresh_for_every_answer():
    """State the setup or the test builds lives in T's own globals: the fifth answer judged
    by the same (cached) test sees what the first did, and a wrong one still fails."""
    test = CodeTest(solution="def f(x):\n    return x\n", setup="SEEN = []\n",
                    test="def check(c):\n    SEEN.append(1)\n"
                         "    assert len(SEEN) == 1 and c(2) == 2\n", entry_point="f")
    wrong = CodeTest(solution="def f(x):\n    return 0\n", setup=test.setup,
                     test=test.test, entry_point="f")
    for _ in range(3):
        assert [r.ok for r in run_tests([test, test, wrong, test])] == [True, True, False,
                                                                          True]


def test_broken_test_texts_fail_their_answer_and_the_server_goes_on():
    ok = CodeTest(solution="def f(x):\n    return x\n",
                  test="def check(c):\n    assert c(1) == 1\n", entry_point="f")
    bad_setup = CodeTest(solution=ok.solution, setup="def (:\n", test=ok.test, entry_point="f")
    bad_test = CodeTest(solution=ok.solution, test="def check(c:\n", entry_point="f")
    raising = CodeTest(solution=ok.solution, setup="raise KeyError(5)\n", test=ok.test,
                       entry_point="f")
    for _ in range(2):  # the second time from the server's cache
        results = run_tests([ok, bad_setup, bad_test, raising, ok])
        assert [r.ok for r in results] == [True, False, False, False, True]
        assert results[1].error.startswith("test harness: SyntaxError")
        assert "<setup>" in results[1].error and "<tests>" in results[2].error
        assert results[3].error == "test harness: KeyError: 5"


def test_an_answers_standard_streams_lead_nowhere():
    """S no longer redirects fds 0-2 itself: it inherits the zygote's, set to /dev/null
    when the zygote starts. What an answer prints reaches nobody, and fails nothing."""
    probe = CodeTest(
        solution="import os, sys\ndef f(x):\n    print('noise' * 1000)\n"
                 "    os.write(2, b'more noise')\n"
                 "    return [os.readlink(f'/proc/self/fd/{fd}') for fd in (0, 1, 2)]\n",
        test="def check(c):\n    assert c(0) == ['/dev/null'] * 3\n", entry_point="f")
    assert [r.ok for r in run_tests([probe, probe])] == [True, True], \
        run_tests([probe])[0].error
