"""Root never follows a job's paths (issue 14, item 4).

The zygote (root) used to open a program's output and result files by name after the
program ended; a program that swapped those names for symlinks made root read a mode-600
root file into the program's output, and FIFOs hung the worker. Output and result now go
through unnamed files opened before the fork, and cleanup never follows a link.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from w4s.sandbox import isolation_report, run_program

OLD_NAMES = (".w4s_stdout.txt", ".w4s_result.json")


@pytest.fixture(scope="module")
def dropped() -> dict:
    report = isolation_report()
    if not report.get("uid_drop"):
        pytest.skip("jobs keep the parent's uid here: root files are theirs to read anyway")
    return report


@pytest.fixture
def root_secret():
    """A mode-600 root file where the worker sees it (/var/tmp is not its private /tmp)."""
    token = f"root-only-{secrets.token_hex(8)}"
    path = Path("/var/tmp") / f"w4s-{token}.txt"
    path.write_text(token + "\n")
    path.chmod(0o600)
    yield path, token
    path.unlink(missing_ok=True)


def _swap(names: tuple[str, ...], how: str) -> str:
    return (
        "import os\n"
        f"for name in {list(names)!r} + ['stdout.txt', 'result.json']:\n"
        "    try:\n"
        "        os.unlink(name)\n"
        "    except OSError:\n"
        "        pass\n"
        f"    {how}\n"
        "print('swapped')\n"
    )


def test_output_names_swapped_for_symlinks_never_leak_a_root_file(dropped, root_secret):
    path, token = root_secret
    for names in (OLD_NAMES, OLD_NAMES[:1], OLD_NAMES[1:]):
        r = run_program(_swap(names, f"os.symlink({str(path)!r}, name)"), timeout_s=3.0)
        assert token not in r.stdout and token not in (r.error or ""), (names, r)
        assert r.ok and r.stdout.strip() == "swapped", r


def test_output_names_swapped_for_fifos_do_not_hang_the_worker(dropped):
    for names in (OLD_NAMES, OLD_NAMES[1:]):
        start = time.monotonic()
        r = run_program(_swap(names, "os.mkfifo(name)"), timeout_s=2.0)
        assert time.monotonic() - start < 6.0, r
        assert r.ok and r.stdout.strip() == "swapped", r
    assert run_program("print(6 * 7)").stdout.strip() == "42"  # the worker is still fine


def test_cleanup_never_follows_a_link_out_of_the_job_folder(dropped, tmp_path):
    victim = Path("/var/tmp") / f"w4s-victim-{secrets.token_hex(4)}"
    victim.mkdir()
    try:
        (victim / "keep.txt").write_text("x")
        code = ("import os\n"
                f"os.symlink({str(victim)!r}, 'link')\n"
                "os.mkdir('sub')\n"
                f"os.symlink({str(victim)!r}, 'sub/link')\n"
                f"os.symlink({str(victim / 'keep.txt')!r}, 'file_link')\n")
        assert run_program(code).ok
        assert (victim / "keep.txt").read_text() == "x"
    finally:
        (victim / "keep.txt").unlink(missing_ok=True)
        victim.rmdir()
