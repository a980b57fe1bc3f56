"""Hostile workflows: each is contained with a clear error, and the run goes on unharmed."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from w4s.sandbox import isolation_report

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def iso() -> dict:
    return isolation_report()


ECHO = 'def solver(agent, task):\n    return {"answer": agent.llm("ECHO: " + task)}\n'
HANG = 'def solver(agent, task):\n    return {"answer": agent.llm("HANG")}\n'
FAIL = 'def solver(agent, task):\n    return {"answer": agent.llm("FAIL")}\n'


def run_one(harness, code: str):
    (item,) = _ONE.load()
    return harness.evaluate(code, [item], _ONE).outcomes[0]


def assert_still_works(harness) -> None:
    result = harness.evaluate(ECHO, _TWO.load(), _TWO)
    assert result.accuracy == 1.0, [o.error for o in result.outcomes]


@pytest.fixture(autouse=True)
def _benches(make_bench):
    global _ONE, _TWO
    _ONE, _TWO = make_bench(1), make_bench(2)


def test_infinite_loop_times_out(hostile_harness):
    start = time.monotonic()
    out = run_one(hostile_harness, "def solver(agent, task):\n    while True:\n        pass\n")
    assert out.error == "timeout after 5s"
    assert out.score == 0.0 and out.answer is None
    assert time.monotonic() - start < 12
    assert_still_works(hostile_harness)


def test_hang_inside_executor_call_times_out(hostile_harness):
    start = time.monotonic()
    out = run_one(hostile_harness, HANG)
    assert out.error == "timeout after 5s"
    assert time.monotonic() - start < 12, "the item timeout must fire while the call is served"
    assert_still_works(hostile_harness)


def test_fork_bomb_is_capped_and_cleaned_up(hostile_harness, iso):
    code = (
        "import os\n"
        "def solver(agent, task):\n"
        "    while True:\n"
        "        try:\n"
        "            os.fork()\n"
        "        except OSError:\n"
        "            pass\n"
    )
    start = time.monotonic()
    out = run_one(hostile_harness, code)
    assert out.error == "timeout after 5s"
    assert time.monotonic() - start < 15
    if iso["cgroup_pids"]:  # only the (root) zygotes may remain in our workers' cgroups
        leftovers = [
            p for d in Path("/sys/fs/cgroup/pids/w4s").glob(f"{os.getpid()}-*")
            for p in (d / "cgroup.procs").read_text().split()
            if _uid_of(p) not in (0, None)
        ]
        assert leftovers == [], f"fork-bomb processes survived: {leftovers[:5]}"
    assert_still_works(hostile_harness)


def _uid_of(pid: str) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None  # already gone
    return int(next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1])


def test_uncaught_fork_bomb_fails_fast(hostile_harness, iso):
    if not (iso["cgroup_pids"] or iso["uid_drop"]):
        pytest.skip("no process cap on this machine (no cgroup, no uid drop)")
    out = run_one(hostile_harness, "import os\ndef solver(agent, task):\n"
                                   "    for _ in range(100_000):\n        os.fork()\n")
    assert out.error is not None
    assert "BlockingIOError" in out.error or out.error.startswith("timeout"), out.error
    assert_still_works(hostile_harness)


def test_allocating_50_gb_gives_memory_error(hostile_harness):
    out = run_one(hostile_harness,
                  "def solver(agent, task):\n    x = bytearray(50 * 1024**3)\n    return {}\n")
    assert out.error is not None and "MemoryError" in out.error
    assert_still_works(hostile_harness)


def test_writes_outside_the_temp_dir_are_denied(hostile_harness, tmp_path):
    target = tmp_path / "pwned.txt"
    os.chmod(tmp_path, 0o777)  # even a world-writable folder must stay out of reach
    code = f"""
import os
def solver(agent, task):
    results = []
    for path in [{str(target)!r}, {str(REPO / 'pwned.txt')!r}, "/tmp/pwned.txt",
                 "/var/tmp/pwned.txt", os.path.expanduser("~/../pwned.txt")]:
        try:
            with open(path, "w") as f:
                f.write("x")
            results.append("WROTE " + path)
        except OSError as e:
            results.append(type(e).__name__)
    with open("scratch.txt", "w") as f:  # its own temp dir is writable
        f.write("ok")
    return {{"answer": " ".join(results)}}
"""
    out = run_one(hostile_harness, code)
    assert out.error is None, out.error
    assert "WROTE" not in out.answer, out.answer
    assert not target.exists() and not (REPO / "pwned.txt").exists()


def test_parent_environment_secrets_are_not_visible(hostile_harness, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-456")
    code = """
import os
def solver(agent, task):
    seen = [repr(dict(os.environ))]
    try:
        pids = os.listdir("/proc")
    except OSError:  # Landlock hides /proc where the worker has no PID namespace of its own
        pids = []
    for pid in pids:
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    seen.append(f.read().decode(errors="replace"))
            except OSError:
                pass
    return {"answer": " ".join(seen)}
"""
    out = run_one(hostile_harness, code)
    assert out.error is None, out.error
    assert "sk-test-secret-123" not in out.answer
    assert "aws-secret-456" not in out.answer
    assert "OPENAI_API_KEY" not in out.answer


def test_network_connections_are_refused(hostile_harness, iso):
    if iso["namespaces"] == "none" and iso["landlock_abi"] < 4:
        pytest.skip("no network namespace and no Landlock network rules here")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept() -> None:
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    code = f"""
import socket
def solver(agent, task):
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=1).close()
        return {{"answer": "connected"}}
    except OSError as e:
        return {{"answer": "refused " + type(e).__name__}}
"""
    out = run_one(hostile_harness, code)
    t.join()
    server.close()
    assert out.error is None, out.error
    assert out.answer.startswith("refused"), out.answer
    assert accepted == []


def test_killing_the_parent_fails_and_parent_survives(hostile_harness, iso):
    code = f"""
import os, signal
def solver(agent, task):
    outcomes = []
    for pid in ({os.getpid()}, {os.getppid()}, 1, -1):
        try:
            os.kill(pid, signal.SIGKILL)
            outcomes.append(f"{{pid}}:sent")
        except OSError as e:
            outcomes.append(f"{{pid}}:{{type(e).__name__}}")
    return {{"answer": " ".join(outcomes)}}
"""
    out = run_one(hostile_harness, code)
    assert out.error is None, out.error
    if iso["pid_namespace"] or iso["uid_drop"]:
        assert f"{os.getpid()}:sent" not in out.answer, out.answer
    assert_still_works(hostile_harness)


def test_parent_pid_is_invisible_in_a_pid_namespace(hostile_harness, iso):
    if not iso["pid_namespace"]:
        pytest.skip("no PID namespace here")
    me = os.getpid()
    code = ("import os\ndef solver(agent, task):\n"
            f"    return {{'answer': os.path.exists('/proc/{me}') or os.getpid() == {me}}}\n")
    out = run_one(hostile_harness, code)
    assert out.error is None and out.answer == "False", (out.error, out.answer)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("import sys\n    sys.exit(3)", "solver called sys.exit(3)"),
        ("import os\n    os._exit(0)", "worker exited with code 0 before returning a result"),
        ("import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)",
         "worker crashed (signal 9)"),
    ],
)
def test_exiting_the_process_is_an_error(hostile_harness, body, expected):
    out = run_one(hostile_harness, f"def solver(agent, task):\n    {body}\n")
    assert out.error is not None and out.error.startswith(expected), out.error
    assert_still_works(hostile_harness)


def test_printing_a_gigabyte_is_discarded(hostile_harness):
    code = ("def solver(agent, task):\n    line = 'x' * (1 << 20)\n"
            "    for _ in range(1024):\n        print(line)\n    return {'answer': 'done'}\n")
    out = run_one(hostile_harness, code)
    assert out.error is None and out.answer == "done", out.error


def test_huge_answer_is_truncated(hostile_harness):
    out = run_one(hostile_harness,
                  "def solver(agent, task):\n    return {'answer': 'y' * 50_000_000}\n")
    assert out.error is None, out.error
    assert len(out.answer) <= hostile_harness.settings.max_output_chars
    assert out.answer.startswith("yyyy") and out.answer.endswith("chars truncated]")


def test_deep_recursion_is_a_recursion_error(hostile_harness):
    out = run_one(hostile_harness, "def f(n):\n    return f(n + 1)\n"
                                   "def solver(agent, task):\n    return {'answer': f(0)}\n")
    assert out.error is not None and "RecursionError" in out.error
    assert 'File "<workflow>", line 2, in f' in out.error
    assert "return f(n + 1)" in out.error  # the failing line of the workflow source


def test_stack_overflow_crash_is_recorded(hostile_harness):
    """C-level recursion past the stack (repr of a deeply nested list) kills the process."""
    code = ("import sys\ndef solver(agent, task):\n    sys.setrecursionlimit(10**8)\n"
            "    x = []\n    for _ in range(200_000):\n        x = [x]\n"
            "    return {'answer': repr(x)}\n")
    out = run_one(hostile_harness, code)
    assert out.error is not None and out.error.startswith("worker crashed (signal 11)"), out.error
    assert_still_works(hostile_harness)


def test_executor_failure_is_an_item_error(hostile_harness):
    out = run_one(hostile_harness, FAIL)
    assert out.error is not None and "BackendError" in out.error and "endpoint down" in out.error
    assert_still_works(hostile_harness)


def test_hostile_outcomes_do_not_affect_neighbours(hostile_harness, make_bench):
    """A crashing, a looping and a good workflow evaluated together: only the good scores."""
    bench = make_bench(3)
    codes = [
        "import os\ndef solver(agent, task):\n    os._exit(1)\n",
        "def solver(agent, task):\n    while True:\n        pass\n",
        ECHO,
    ]
    crashed, looped, good = hostile_harness.evaluate_many(codes, bench.load(), bench)
    assert all(o.error and "exited with code 1" in o.error for o in crashed.outcomes)
    assert all(o.error == "timeout after 5s" for o in looped.outcomes)
    assert good.accuracy == 1.0


FRAME = """
import json, struct, threading, time

def frame(agent, body):
    data = json.dumps({**body, "job": agent._channel.job}).encode()
    agent._channel.sock.sendall(struct.pack(">I", len(data)) + data)
"""

SPAMMER = FRAME + """
def solver(agent, task):
    def spam():
        while True:
            frame(agent, {"op": "result", "answer_str": "spam"})
            frame(agent, {"op": "call", "id": 99, "messages": [], "n": 1, "temperature": 0})
    threading.Thread(target=spam, daemon=True).start()
    time.sleep(0.05)
    return {"answer": "first"}
"""

FORGER = FRAME + """
def solver(agent, task):
    frame(agent, {"op": "result", "answer_str": "forged"})
    time.sleep(60)
"""


@pytest.fixture
def one_worker(fake_cls):
    from w4s.sandbox import Harness, SandboxSettings

    settings = SandboxSettings(item_timeout_s=5.0, code_timeout_s=1.0, concurrency=1)
    with Harness(fake_cls(), settings=settings) as h:
        yield h


def test_frames_left_by_an_earlier_job_never_reach_the_next(one_worker, make_bench):
    """A job that floods the socket with result frames: the next job on that worker ignores
    them (job ids are unguessable) and gets its own answers."""
    bench = make_bench(4)
    spammed = one_worker.evaluate(SPAMMER, bench.load()[:1], bench)
    assert spammed.outcomes[0].answer in ("first", "spam")
    after = one_worker.evaluate(ECHO, bench.load(), bench)
    assert after.accuracy == 1.0, [o.error or o.answer for o in after.outcomes]


def test_a_job_lingering_after_its_result_costs_the_next_item_nothing(
    one_worker, make_bench, monkeypatch
):
    """A forged early result, then a hang: the worker is released at the result, but the
    zygote is stuck, so the next item gives up on it after the grace and retries elsewhere."""
    from w4s.sandbox import harness

    monkeypatch.setattr(harness, "START_GRACE_S", 1.0)
    bench = make_bench(2)
    forged = one_worker.evaluate(FORGER, bench.load()[:1], bench)
    assert forged.outcomes[0].answer == "forged"
    start = time.monotonic()
    after = one_worker.evaluate(ECHO, bench.load(), bench)
    assert after.accuracy == 1.0, [o.error for o in after.outcomes]
    assert after.outcomes[0].seconds >= 1.0 and time.monotonic() - start < 4.5


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_spare_processes_do_not_pile_up(one_worker, make_bench):
    """Each job's process is forked ahead while the previous job waits on the executor;
    after many items and a job that kills what it can, one worker holds at most one spare."""
    bench = make_bench(12)
    slow = "import time\ndef solver(agent, t):\n    time.sleep(0.1)\n    return {'answer': t}\n"
    killer = "import os\ndef solver(agent, task):\n    os.kill(-1, 9)\n"
    one_worker.evaluate(ECHO, bench.load()[:1], bench)  # starts the worker
    (worker,) = one_worker._pool._all
    zygote = 1 if worker.isolation.get("pid_namespace") else 0  # under unshare --fork

    def settled() -> list[int]:
        time.sleep(0.3)  # the zygote ends the last job after the harness has its result
        return _descendants(worker.proc.pid)

    spares = 1 if worker.isolation.get("uid_drop") else 0  # only beside a dropped uid
    assert one_worker.evaluate(slow, bench.load(), bench).accuracy == 1.0
    assert len(settled()) == zygote + spares, "the last slow job should have left one spare"
    assert one_worker.evaluate(killer, bench.load()[:2], bench).errors == 2
    assert one_worker.evaluate(ECHO, bench.load(), bench).accuracy == 1.0
    assert len(settled()) <= zygote + spares, f"leftover processes: {settled()}"


def test_a_job_holding_every_pid_still_gets_its_own_outcome(hostile_harness, iso):
    """A job that fills the process cap it shares with its zygote still ends with its own
    answer (whether or not the next job's process was forked before the cap filled), and
    its processes are killed after it."""
    if not iso["cgroup_pids"]:
        pytest.skip("no cgroup pids cap on this machine")
    code = (
        "import os, time\n"
        "def solver(agent, task):\n"
        "    me = os.getpid()\n"
        "    for _ in range(9):  # doubling: the cap is full within a few milliseconds\n"
        "        try:\n"
        "            os.fork()\n"
        "        except OSError:\n"
        "            break\n"
        "    if os.getpid() != me:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    time.sleep(0.3)\n"
        "    return {'answer': 'held'}\n"
    )
    out = run_one(hostile_harness, code)
    assert out.error is None and out.answer == "held", out.error
    assert_still_works(hostile_harness)


def test_no_spare_when_the_zygote_cannot_fork(tmp_path, monkeypatch):
    """Forking ahead is best effort: a failed fork leaves no folder or socket behind and the
    zygote carries on (the next job forks its own process)."""
    import socket as socketlib

    from w4s.sandbox.worker import spare

    jobs = tmp_path / "jobs"
    jobs.mkdir()

    class OneDirJail:
        def dir_name(self) -> str:
            return str(jobs / "job-0")

        def make_dir(self, path: str | None = None) -> str:
            os.mkdir(path or self.dir_name())
            return path or self.dir_name()

    def no_pids() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(spare.os, "fork", no_pids)
    ctrl, _ = socketlib.socketpair()
    with ctrl, _:
        assert spare.Spare.ahead(ctrl, OneDirJail()) is None
    assert list(jobs.iterdir()) == []
