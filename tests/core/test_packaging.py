"""The wheel installs one namespace: flows/, tasks/, models/ and storage/ of the repository
land under w4s/, so nothing named `models` or `storage` reaches a user's site-packages."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs the git checkout to list its files")
def test_the_wheel_installs_only_w4s(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    tree = tmp_path / "tree"
    for name in files:  # a copy: building in place would leave build/ in the checkout
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", str(tree), "-w", str(tmp_path / "dist")], check=True)
    wheel, = (tmp_path / "dist").glob("w4s-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if ".dist-info/" not in n}
    assert top == {"w4s"}
    for module in ("w4s/flows/cli.py", "w4s/tasks/stages.py", "w4s/models/rlao.py",
                   "w4s/storage/query.py", "w4s/sandbox/worker/plain.py"):
        assert module in names
    entry = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "w4s = w4s.flows.cli:main" in entry
