"""Candidates cannot touch each other, and what a job sends is its own business.

An honest candidate scores the same alone and beside hostile ones in one `evaluate_many`
(which shares workers between candidates); malformed frames are the sending item's error,
never infrastructure's; the caps on what comes back hold even for a forged result frame.
"""

from __future__ import annotations

import pytest

from w4s.sandbox import Harness, SandboxSettings

HONEST = '''
import os, time

def solver(agent, task):
    time.sleep(0.15)  # long enough for the next job's process to be forked ahead
    out = agent.execute_code("def solution():\\n    return 40 + 2\\n")
    if out != "42":
        return {"answer": "execute_code said " + out}
    with open("note.txt", "w") as f:
        f.write(task)
    with open("note.txt") as f:
        text = f.read()
    return {"answer": agent.llm("ECHO: " + text)}
'''

# writes into every job folder it can guess on its worker (its own name gives the pattern):
# the next job's, prepared ahead, included
INVADER = '''
import os, time

def solver(agent, task):
    time.sleep(0.3)  # the zygote has forked the next job's process by now
    here = os.getcwd()
    prefix, seq = here.rsplit("-", 1)
    hits = 0
    for n in range(int(seq) - 3, int(seq) + 6):
        path = f"{prefix}-{n}"
        if path == here:
            continue
        for attack in (lambda: open(os.path.join(path, "code-0"), "w").close(),
                       lambda: os.chmod(path, 0)):
            try:
                attack()
                hits += 1
            except OSError:
                pass
    return {"answer": hits}
'''

FRAME = '''
import json, os, struct, time

def frame(agent, body, cut=None):
    data = json.dumps({**body, "job": agent._channel.job}).encode()
    data = struct.pack(">I", len(data)) + data
    agent._channel.sock.sendall(data if cut is None else data[:cut])
'''

# a valid result of its own, then half a frame left on the channel for whoever is next
HALF_FRAME = FRAME + '''
def solver(agent, task):
    frame(agent, {"op": "result", "answer_str": "mine"})
    frame(agent, {"op": "call", "messages": [{"role": "user", "content": "x" * 500}],
                  "n": 1, "temperature": 0}, cut=40)
    os._exit(0)
'''

# frames claiming to be replies or results for other jobs, in a burst, then a real answer
FORGER = FRAME + '''
def solver(agent, task):
    for job in range(1, 200):
        body = json.dumps({"op": "result", "job": job, "answer_str": "forged"}).encode()
        agent._channel.sock.sendall(struct.pack(">I", len(body)) + body)
    return {"answer": "done"}
'''

# signals everything it can see, and fills its /tmp
SIGNALLER = '''
import os, signal

def solver(agent, task):
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in range(1, 200):
            if pid != os.getpid():
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
    block = b"x" * (1 << 20)
    try:
        for i in range(600):
            with open(f"fill-{i}", "wb") as f:
                for _ in range(16):
                    f.write(block)
    except OSError:
        pass
    return {"answer": "filled"}
'''


@pytest.fixture(scope="module")
def harness(hostile_harness):
    """Two workers, shared by every candidate of an `evaluate_many` (5-second items)."""
    return hostile_harness


@pytest.fixture(scope="module")
def one_worker(hostile_harness):
    """One worker: each candidate's job runs right after the previous candidate's."""
    fake_executor = type(hostile_harness.executor)  # conftest's FakeExecutor
    settings = SandboxSettings(item_timeout_s=8.0, code_timeout_s=2.0, concurrency=1,
                               memory_mb=1024)
    with Harness(fake_executor(), settings=settings) as h:
        yield h


@pytest.mark.parametrize("hostile", [INVADER, HALF_FRAME, FORGER, SIGNALLER],
                         ids=["invader", "half-frame", "forger", "signaller"])
def test_an_honest_candidate_scores_the_same_beside_hostile_ones(one_worker, make_bench,
                                                                 hostile):
    bench = make_bench(3)
    alone = one_worker.evaluate(HONEST, bench.load(), bench)
    assert alone.accuracy == 1.0, [o.error or o.answer for o in alone.outcomes]
    # item-major order on one worker: every honest job runs right after a hostile one
    honest = one_worker.evaluate_many([hostile, HONEST], bench.load(), bench)[1]
    assert honest.accuracy == alone.accuracy, [o.error or o.answer for o in honest.outcomes]
    assert honest.infra_errors == 0


def test_a_job_cannot_write_into_the_folder_of_the_job_after_it(one_worker, make_bench):
    bench = make_bench(3)
    results = one_worker.evaluate_many([INVADER, HONEST], bench.load(), bench)
    assert [o.answer for o in results[0].outcomes] == ["0"] * 3
    assert results[1].accuracy == 1.0


NESTED = FRAME + '''
def solver(agent, task):
    data = ('{"op": "call", "job": %d, "x": ' % agent._channel.job + "[" * 200000
            + "]" * 200000 + "}").encode()
    agent._channel.sock.sendall(struct.pack(">I", len(data)) + data)
    time.sleep(5)
'''

CALL = FRAME + '''
def solver(agent, task):
    data = ('{"op": "call", "job": %d, "id": 1, "n": 1, "temperature": 0,'
            ' "messages": [{"role": "user", "content": "ECHO: hi"}], "max_tokens": %s}'
            % (agent._channel.job, MAX_TOKENS)).encode()
    agent._channel.sock.sendall(struct.pack(">I", len(data)) + data)
    time.sleep(5)
'''


@pytest.mark.parametrize("code", [
    NESTED,
    CALL.replace("MAX_TOKENS", "'Infinity'"),
    CALL.replace("MAX_TOKENS", "'NaN'"),
    CALL.replace("MAX_TOKENS", "'1e400'"),
], ids=["deeply-nested", "Infinity", "NaN", "1e400"])
def test_a_malformed_frame_is_the_items_error_not_infrastructure(harness, make_bench, code):
    bench = make_bench(2)
    result = harness.evaluate(code, bench.load(), bench)
    for o in result.outcomes:
        assert o.infra_error is None, o.infra_error
        assert o.error is not None and o.score == 0.0
        assert o.seconds < 4, "the frame must fail the item at once, not at its timeout"
    after = harness.evaluate(HONEST, bench.load(), bench)
    assert after.accuracy == 1.0, [o.error for o in after.outcomes]


def test_a_forged_result_cannot_exceed_the_answer_cap(harness, make_bench):
    code = FRAME + '''
def solver(agent, task):
    frame(agent, {"op": "result", "answer_str": "7" * 7_000_001,
                  "answer_json": json.dumps("7" * 500_000)})
    time.sleep(5)
'''
    bench = make_bench(1)
    (out,) = harness.evaluate(code, bench.load(), bench).outcomes
    cap = harness.settings.max_output_chars
    assert out.answer is not None and len(out.answer) <= cap
    assert out.answer.endswith("chars truncated]")
    assert bench.scored == [out.answer], "an over-long raw answer is never scored"


def test_a_program_holds_no_socket_of_the_zygotes(one_worker, make_bench):
    """A program the zygote runs (a benchmark's test program) inherits neither the control
    socket nor the handoff socket of the next item's process waiting beside it."""
    import time

    from w4s.sandbox import worker as _w

    bench = make_bench(1)
    slow = "import time\ndef solver(agent, t):\n    time.sleep(0.2)\n    return {'answer': t}\n"
    assert one_worker.evaluate(slow, bench.load(), bench).accuracy == 1.0  # leaves a spare
    if not one_worker._pool._all or not next(iter(one_worker._pool._all)).isolation.get(
            "uid_drop"):
        pytest.skip("no spare is forked ahead without a uid drop")
    source = ("import os, stat\n"
              "fds = [int(fd) for fd in os.listdir('/proc/self/fd')]\n"
              "n = sum(stat.S_ISSOCK(os.fstat(fd).st_mode) for fd in fds\n"
              "        if fd > 2 and os.path.exists(f'/proc/self/fd/{fd}'))\n"
              "print('sockets', n)\n")
    with one_worker._pool.worker() as w:
        _w.send_frame(w.ctrl, {"op": "programs", "job": 7, "sources": [source],
                               "timeout_s": 2.0, "memory_mb": 256, "limit": 2000})
        deadline = time.monotonic() + 10
        while (done := _w.recv_frame(w.ctrl, deadline=deadline)).get("job") != 7:
            pass
    (result,) = done["results"]
    assert result["stdout"].strip() == "sockets 0", result
