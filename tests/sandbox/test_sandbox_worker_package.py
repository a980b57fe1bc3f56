"""The worker package runs in a scrubbed interpreter: standard library only, one concern
per module, started as a file without importing w4s."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import w4s.sandbox.worker as worker_pkg
from w4s.sandbox import pool

PKG = Path(worker_pkg.__file__).resolve().parent


def test_worker_imports_only_the_standard_library():
    """Every absolute import in the package names a standard-library module."""
    bad = []
    for path in sorted(PKG.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            bad += [f"{path.name}: {n}" for n in names
                    if n.split(".")[0] not in sys.stdlib_module_names
                    and not (path.name == "__main__.py" and n.startswith("worker."))]
    assert bad == []


def test_worker_loads_in_an_isolated_interpreter_without_w4s():
    """Imported the way the zygote is started (by its own name from its parent folder, in
    `python -I`), the package pulls in nothing but the standard library, the workflow
    side (`agent`) included, which a zygote for items loads before any job."""
    probe = (
        "import sys, json\n"
        f"sys.path.insert(0, {str(PKG.parent)!r})\n"
        "before = set(sys.modules)\n"
        "import worker, worker.zygote\n"
        "worker.zygote._load_items()\n"
        "new = sorted(set(sys.modules) - before)\n"
        "print(json.dumps(new))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True,
                         timeout=60, env=pool.worker_env(), cwd="/")
    assert out.returncode == 0, out.stderr
    new = json.loads(out.stdout)
    ours = {m for m in new if m == "worker" or m.startswith("worker.")}
    assert {"worker.zygote", "worker.jail", "worker.landlock", "worker.agent"} <= ours
    foreign = [m for m in new if m not in ours
               and m.split(".")[0] not in sys.stdlib_module_names]
    assert foreign == []
    assert not any(m == "w4s" or m.startswith("w4s.") for m in new)


def test_workers_for_programs_and_code_tests_do_not_import_threading():
    """The shared pool's zygotes (programs, code tests) never import `threading` (nor
    `subprocess`, which imports it): its after-fork hook would run in every process they
    fork, for nothing. The modules a program imports are its own to pay for."""
    from w4s.sandbox import run_program

    probe = ("import sys\n"
             "print(sorted(m for m in ('threading', 'subprocess', 'concurrent.futures',"
             " 'worker.agent') if m in sys.modules))\n")
    r = run_program(probe)
    assert r.ok, r.error
    assert r.stdout.strip() == "[]"
    r = run_program("import threading\nprint(threading.current_thread().name)\n")
    assert r.ok and r.stdout.strip() == "MainThread", r.error


def test_the_pool_starts_the_package_main_file():
    assert Path(pool.WORKER_MAIN) == PKG / "__main__.py"
    assert not (PKG.parent / "worker.py").exists()  # the package replaced the script


def test_jobs_do_not_see_the_sandbox_folders_on_the_import_path():
    """The zygote, started from the package's __main__.py, leaves neither the package's
    folder nor the sandbox folder above it on the import path its jobs inherit."""
    from w4s.sandbox import run_program

    r = run_program("import json, sys\nprint(json.dumps(sys.path))\n")
    assert r.ok, r.error
    path = json.loads(r.stdout)
    assert str(PKG) not in path and str(PKG.parent) not in path and "" not in path


def test_one_clip_and_distinct_program_runners():
    """w4s core uses the worker's `clip`; the zygote's forked runner is not a second
    `run_program` beside the public one."""
    import w4s.prompts
    import w4s.sandbox
    from w4s.sandbox import programs
    from w4s.sandbox.worker import program, text

    assert w4s.prompts.clip is text.clip is worker_pkg.clip
    assert len(text.clip("x" * 1000, 100)) <= 100
    assert w4s.sandbox.run_program is programs.run_program
    assert not hasattr(program, "run_program") and callable(program.run_forked_program)


def test_the_zygote_loads_libc_before_forking_jobs():
    """Without Landlock (basic level) nothing else loads libc in the zygote, and finding it
    runs ldconfig: each forked job would pay ~5 ms for its prctl."""
    probe = (
        "import sys, tempfile\n"
        f"sys.path.insert(0, {str(PKG.parent)!r})\n"
        "from worker import jail, libc\n"
        "jail.Jail({'tmp_root': tempfile.mkdtemp(), 'landlock': False})\n"
        "print(libc._libc is not None)\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True,
                         timeout=60, env=pool.worker_env(), cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("True" if sys.platform.startswith("linux") else "False")
