"""Memory is capped per job, not per process: one cap on the job's whole tree (a memory
cgroup), and the worker's private /tmp is bounded in bytes and in files."""

from __future__ import annotations

import pytest

from w4s.sandbox import Harness, SandboxSettings, isolation_report


@pytest.fixture(scope="module")
def iso() -> dict:
    return isolation_report()


@pytest.fixture(scope="module")
def roomy(hostile_harness):
    """1024 MB per job, and time to fill it on a loaded machine."""
    settings = SandboxSettings(item_timeout_s=30.0, code_timeout_s=1.0, concurrency=1,
                               memory_mb=1024)
    with Harness(type(hostile_harness.executor)(), settings=settings) as h:
        yield h


def _one(harness, make_bench, code: str):
    bench = make_bench(1)
    return harness.evaluate(code, bench.load(), bench).outcomes[0]


def _still_works(harness, make_bench) -> None:
    bench = make_bench(2)
    echo = 'def solver(agent, task):\n    return {"answer": agent.llm("ECHO: " + task)}\n'
    result = harness.evaluate(echo, bench.load(), bench)
    assert result.accuracy == 1.0, [o.error for o in result.outcomes]


def test_the_report_names_the_memory_cap_and_the_tmp_limits(iso):
    assert "cgroup_memory" in iso and "tmp_limits" in iso
    if iso["private_tmp"]:
        assert iso["tmp_limits"]["inodes"] > 0 and iso["tmp_limits"]["size_mb"] > 0


# three children, each within the per-process address-space limit, together far above it
FORKING = '''
import os, time

def solver(agent, task):
    pids = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            block = b"x" * (600 << 20)  # written, so really resident
            time.sleep(1.0)
            os._exit(0 if len(block) else 1)
        pids.append(pid)
    done = sum(os.waitpid(p, 0)[1] == 0 for p in pids)
    return {"answer": f"{done} of 3"}
'''


def test_a_jobs_children_share_one_memory_cap(roomy, make_bench, iso):
    if not iso["cgroup_memory"]:
        pytest.skip("no memory cgroup on this machine")
    assert roomy.settings.memory_mb == 1024  # 3 x 600 MB: over it together
    out = _one(roomy, make_bench, FORKING)
    assert out.answer != "3 of 3", "three 600 MB children of a 1024 MB job all ran"
    assert out.error is not None or out.answer in ("0 of 3", "1 of 3"), out
    _still_works(roomy, make_bench)


def test_tmp_files_count_against_the_jobs_memory(roomy, make_bench, iso):
    if not (iso["cgroup_memory"] and iso["private_tmp"]):
        pytest.skip("no memory cgroup or private /tmp on this machine")
    code = '''
import os

def solver(agent, task):
    block = b"x" * (8 << 20)
    written = 0
    try:
        for i in range(62):  # 496 MB of files: within the tmpfs's 512 MB
            with open(f"f{i}", "wb") as f:
                f.write(block)
            written += 8
        big = b"y" * (800 << 20)  # within the process's 1024 MB, not beside the files
        return {"answer": f"{written} MB on disk and {len(big) >> 20} MB in memory"}
    except (OSError, MemoryError) as e:
        return {"answer": f"stopped at {written} MB: {type(e).__name__}"}
'''
    out = _one(roomy, make_bench, code)
    assert out.answer is None, out.answer
    assert out.error is not None and "SIGKILL" in out.error, out.error
    _still_works(roomy, make_bench)


def test_creating_many_files_hits_the_inode_cap(roomy, make_bench, iso):
    if not iso["private_tmp"]:
        pytest.skip("no private /tmp on this machine")
    code = '''
import os

def solver(agent, task):
    made = 0
    try:
        for i in range(40000):
            os.close(os.open(f"e{i}", os.O_CREAT | os.O_WRONLY, 0o600))
            made += 1
    except OSError as e:
        return {"answer": f"{made} {e.errno}"}
    return {"answer": f"{made} none"}
'''
    out = _one(roomy, make_bench, code)
    import errno

    made, err = out.answer.split()
    assert int(made) < iso["tmp_limits"]["inodes"] and err == str(errno.ENOSPC), out.answer
    _still_works(roomy, make_bench)


def test_cgroup_v2_files_are_used_on_a_unified_hierarchy(tmp_path, monkeypatch):
    """On cgroup v2 the controllers are delegated to a `w4s` folder and the job's cap is
    written to memory.max (and swap to 0); checked on a fake hierarchy, as root only."""
    import os

    from w4s.sandbox import cgroups
    from w4s.sandbox.worker.jail import ZYGOTE_MEMORY_MB, Jail

    if os.geteuid() != 0:
        pytest.skip("worker cgroups are made as root only")
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    monkeypatch.setattr(cgroups, "ROOT", tmp_path)
    base = cgroups.detect()
    assert base is not None and base.version == 2 and base.has_memory
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+pids +memory"
    assert (tmp_path / "w4s" / "cgroup.subtree_control").read_text() == "+pids +memory"
    cfg = cgroups.create(base, "123-0", 64)
    worker = tmp_path / "w4s" / "123-0"
    assert cfg["dirs"] == {"pids": str(worker), "memory": str(worker)}
    assert (worker / "pids.max").read_text() == "64"
    jail = Jail.__new__(Jail)  # only the memory-cap part: no namespaces needed
    jail.cgroups, jail.memory_cgroup, jail.memory_cap_mb = cfg, str(worker), None
    jail.set_memory_cap(512)
    assert (worker / "memory.max").read_text() == str((512 + ZYGOTE_MEMORY_MB) << 20)
    assert (worker / "memory.swap.max").read_text() == "0"
    assert jail.memory_cap_mb == 512
    for f in worker.iterdir():
        f.unlink()
    cgroups.remove([str(worker)])
    assert not worker.exists()
