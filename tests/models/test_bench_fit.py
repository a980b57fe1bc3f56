"""The GPU fit benchmark's CPU smoke run: the real fit path, importable without the
project's service libraries (the GPU machine has only torch, transformers, peft, pyarrow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# run as on the GPU machine: from the repo root, libraries it lacks made unimportable
RUN = """
import runpy, sys
for name in ("pydantic", "prefect", "duckdb"):
    sys.modules[name] = None
sys.argv = ["benchmarks/bench_fit_gpu.py", "--tiny", "--repeats", "1", "--json", sys.argv[1]]
try:
    runpy.run_path("benchmarks/bench_fit_gpu.py", run_name="__main__")
finally:
    ours = ("models", "w4s", "storage", "tasks", "flows")
    print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in ours))
"""


def test_tiny_gpu_benchmark_runs_the_fit_path_without_service_libraries(tmp_path):
    out = tmp_path / "fit.json"
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = done.stdout.split("LOADED", 1)[1]
    assert "w4s.models.rlao" in loaded and "w4s.models.packing" in loaded
    assert "w4s.models.factory" not in loaded  # the models package's __init__ did not run
    result = json.loads(out.read_text())
    sharing = result["sharing"]
    assert sharing["token_ratio_unshared_vs_shared"] > 1.5
    assert sharing["loss_rel_diff_shared"] < 1e-5  # the same loss, shared or not
    assert "tokens_per_s" in sharing["unshared"] and "tokens_per_s" in sharing["shared"]
    assert "skipped" in sharing["shared_flex"]  # flex attention's backward needs a GPU
    assert result["packing"]["ratio_packed_vs_padded"] > 0
    assert "] sharing" in done.stdout or "] unshared:" in done.stdout  # timestamped progress
