"""At the strong level a workflow reads only the interpreter and its own folder.

An attacker's workflow once read a world-readable file in /var/tmp and a checkout's `.env`
(mode 644, holding an API key), passed the text to `agent.llm` and returned it. Landlock
now confines reads as well as writes: the standard library and site-packages, system
libraries, a few devices and the worker's own /proc stay readable; the host does not.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from w4s.sandbox import Harness, MemoryCallCache, SandboxSettings, isolation_report, run_program

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def iso() -> dict:
    report = isolation_report()
    if report["level"] != "strong":
        pytest.skip(f"reads are confined at the strong level; this machine is {report['level']}")
    return report


@pytest.fixture
def canaries():
    """A mode-644 secret in /var/tmp and one in the checkout (a stand-in `.env`)."""
    made = []
    try:
        for folder, name in (("/var/tmp", "w4s-canary-{}.txt"), (REPO, ".env.w4s-canary-{}")):
            token = secrets.token_hex(8)
            path = Path(folder) / name.format(token)
            path.write_text(f"OPENAI_API_KEY=sk-canary-{token}\n")
            path.chmod(0o644)
            made.append((path, f"sk-canary-{token}"))
        yield made
    finally:
        for path, _ in made:
            path.unlink(missing_ok=True)


@pytest.fixture
def recording_harness(fake_cls):
    class Recording(fake_cls):
        def __init__(self) -> None:
            super().__init__()
            self.prompts: list[str] = []

        def complete(self, messages, **kw):
            self.prompts.extend(m["content"] for m in messages)
            return super().complete(messages, **kw)

    executor = Recording()
    settings = SandboxSettings(item_timeout_s=10.0, code_timeout_s=3.0, concurrency=1)
    with Harness(executor, settings=settings, cache=MemoryCallCache()) as h:
        yield h, executor


STEAL = '''
import os
PATHS = {paths!r}
def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return type(e).__name__
def solver(agent, task):
    got = [read(p) for p in PATHS]
    try:
        got.append(" ".join(os.listdir({repo!r})))
    except OSError as e:
        got.append(type(e).__name__)
    nested = "\\n".join(f"print(open({{p!r}}).read())" for p in PATHS)
    got.append(agent.execute_code(nested))
    return {{"answer": agent.llm("ECHO: " + " | ".join(got))}}
'''


def test_a_workflow_cannot_read_world_readable_files_outside_its_folder(
    iso, canaries, recording_harness, make_bench
):
    harness, executor = recording_harness
    paths = [str(p) for p, _ in canaries] + [str(REPO / "pyproject.toml")]
    bench = make_bench(1)
    out = harness.evaluate(STEAL.format(paths=paths, repo=str(REPO)), bench.load(),
                           bench).outcomes[0]
    assert out.error is None, out.error
    for _, secret in canaries:
        assert secret not in out.answer
        assert not any(secret in p for p in executor.prompts)  # it never reached the executor
    assert "[project]" not in out.answer and "pyproject.toml" not in out.answer
    parts = out.answer.split(" | ")
    assert parts[0] == "PermissionError", out.answer  # /var/tmp: Landlock says no
    # the checkout: Landlock says no, or it is not even there (a checkout under /tmp lies
    # beneath the job's private /tmp)
    assert all(p in ("PermissionError", "FileNotFoundError") for p in parts[1:4]), out.answer
    assert parts[4].startswith("Error: PermissionError"), parts[4]  # the nested process too


def test_a_test_program_cannot_read_them_either(iso, canaries):
    for (path, secret), denied in zip(canaries, (("PermissionError",),
                                                ("PermissionError", "FileNotFoundError")),
                                      strict=True):
        r = run_program(f"print(open({str(path)!r}).read())")
        assert not r.ok and any(d in (r.error or "") for d in denied), r.error
        assert secret not in r.stdout and secret not in (r.error or "")


LEGIT = '''
import os
def check(name, f):
    try:
        f()
        return name + ":ok"
    except BaseException as e:
        return f"{name}:{type(e).__name__}:{e}"
def own_folder():
    with open("notes.txt", "w") as f:
        f.write("x")
    assert open("notes.txt").read() == "x" and "notes.txt" in os.listdir(".")
def solver(agent, task):
    results = [
        check("devnull", lambda: open("/dev/null", "r+").write("x")),
        check("urandom", lambda: open("/dev/urandom", "rb").read(8)),
        check("proc_self", lambda: open("/proc/self/status").read()),
        check("proc_list", lambda: os.listdir("/proc")),
        check("cpu_count", lambda: os.cpu_count() or 1),
        check("own_folder", own_folder),
        check("stdlib_import", lambda: __import__("sqlite3").connect(":memory:")),
        check("stdlib_source", lambda: __import__("inspect").getsource(__import__("json"))),
        check("zoneinfo", lambda: __import__("zoneinfo").ZoneInfo("UTC")),
        check("execute_code", lambda: agent.execute_code("print(6 * 7)") == "42" or 1 / 0),
    ]
    return {"answer": " ".join(results)}
'''


def test_what_workflows_legitimately_read_still_works(iso, recording_harness, make_bench):
    harness, _ = recording_harness
    bench = make_bench(1)
    out = harness.evaluate(LEGIT, bench.load(), bench).outcomes[0]
    assert out.error is None, out.error
    assert all(r.endswith(":ok") for r in out.answer.split()), out.answer


def test_a_test_program_imports_from_site_packages(iso):
    """HumanEval/MBPP-style programs may use installed packages (here pytest's own)."""
    r = run_program("import _pytest, os\nassert os.path.exists(_pytest.__file__)\n")
    assert r.ok, r.error


def test_the_report_says_reads_are_confined_and_to_what(iso):
    assert iso["reads_confined"] is True
    readable = [Path(p) for p in iso["readable"]]
    real_repo = REPO.resolve()
    for p in readable:  # nothing at or above the checkout, nothing of it but its venv
        assert not (real_repo == p or real_repo.is_relative_to(p)), p
        if p.is_relative_to(real_repo):
            assert "site-packages" in p.parts or "dist-packages" in p.parts, p
    assert not any(Path("/var/tmp").is_relative_to(p) for p in readable)
    assert os.path.realpath(os.path.dirname(os.__file__)) in iso["readable"]
