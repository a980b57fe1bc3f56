"""Check in a real browser that the run report's plots show in the Prefect UI.

Starts `prefect server start` on a free port (temp PREFECT_HOME), runs a small scripted
optimization against it, then screenshots the report artifact's page with headless Chromium
(`apt-get install chromium`). Prints the artifact id, the URL and the screenshot's path; look
at the PNG. A script, not a test: it needs Chromium and takes about a minute.

    .venv/bin/python benchmarks/ui_screenshot.py --out /tmp/ui.png
    .venv/bin/python benchmarks/ui_screenshot.py --nightly --out docs/ui-nightly-summary.png

`--nightly` runs two tiny nightly chains instead (scripted collection, a fit on a random
2-layer Llama, tests/support/nightly_support.py), so the second night's summary page shows
last night beside tonight.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOOD = '''Compute it with code.
```python
def solver(agent, task: str) -> dict:
    expr = task.split("What is ")[1].rstrip("?")
    return {"answer": agent.execute_code("print(" + expr + ")")}
```'''
CONFIG = {
    "benchmark": "arithmetic", "seed_workflow": "direct", "iterations": 3, "candidates": 3,
    "val_size": 6, "test_size": 6, "max_repairs": 0,
    "prices": {"scripted": [1000.0, 2000.0]},
    "meta_agent": {"kind": "scripted", "replies": ["no code here", GOOD, "still no code"]},
    "executor": {"kind": "scripted", "replies": ["maybe 7"]},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None) -> object:
    req = urllib.request.Request(url + path, method="POST" if body is not None else "GET",
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def wait_healthy(api: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _api(api, "/health")
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"prefect server at {api} not healthy after {timeout_s:.0f}s")


def new_best_events(api: str, run_id: str, wait_s: float = 20) -> list[dict]:
    """The run's `w4s.workflow.new-best` events as the server stored them (asynchronously)."""
    body = {"filter": {"event": {"name": ["w4s.workflow.new-best"]},
                       "any_resource": {"id": [f"w4s.run.{run_id}"]}}, "limit": 10}
    deadline = time.monotonic() + wait_s
    while True:
        events = _api(api, "/events/filter", body)["events"]
        if events or time.monotonic() > deadline:
            return [e["payload"] for e in events]
        time.sleep(1)


def run_flow(run_id: str, runs_dir: str) -> None:
    """In a child process (PREFECT_API_URL set): one scripted optimization."""
    from w4s.config import build_config
    from w4s.flows.optimize import optimize

    optimize(build_config({**CONFIG, "runs_dir": runs_dir}), run_id=run_id)


def run_nightlies(run_id: str, runs_dir: str) -> None:
    """In a child process: two tiny nightly chains, `<run_id>-1` then `<run_id>`."""
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from nightly_support import build_tiny_base, nightly_data

    from w4s.flows.nightly import NightlyConfig, nightly

    tmp = Path(runs_dir).parent
    base = build_tiny_base(tmp / "tiny-llama")
    data = nightly_data(tmp, base)
    data["collect"]["prices"] = data["optimize"]["prices"] = {"scripted": [1000.0, 2000.0]}
    nightly(NightlyConfig.model_validate(data), nightly_id=f"{run_id}-1")
    nightly(NightlyConfig.model_validate(data), nightly_id=run_id)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="ui-report.png", help="the screenshot PNG")
    p.add_argument("--browser", default=shutil.which("chromium") or "chromium")
    p.add_argument("--nightly", action="store_true",
                   help="screenshot a nightly's summary page instead of a run report")
    p.add_argument("--run-flow", nargs=2, metavar=("RUN_ID", "RUNS_DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_flow:
        (run_nightlies if args.nightly else run_flow)(*args.run_flow)
        return 0
    if not shutil.which(args.browser):
        raise SystemExit(f"`--browser` {args.browser!r} not found (apt-get install chromium)")
    tmp = Path(tempfile.mkdtemp(prefix="w4s-ui-"))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect"), "W4S_HOME": str(tmp / "w4s"),
           "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1"}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start"], env=env,
                              stdout=open(tmp / "server.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_healthy(api)
        run_id = ("nightly-" if args.nightly else "ui-") + time.strftime("%Y%m%d-%H%M%S")
        subprocess.run([sys.executable, __file__, "--run-flow", run_id, str(tmp / "runs")]
                       + ["--nightly"] * args.nightly,
                       env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        key = f"w4s-nightly-{run_id}" if args.nightly else f"w4s-run-{run_id}"
        found = _api(api, "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}})
        if not found:
            raise SystemExit(f"no artifact with key {key}")
        art = found[0]
        url = f"http://127.0.0.1:{port}/artifacts/artifact/{art['id']}"
        out = Path(args.out).resolve()
        subprocess.run([args.browser, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", f"--screenshot={out}",
                        f"--window-size=1400,{2600 if args.nightly else 1800}",
                        "--virtual-time-budget=15000", url],
                       check=True, capture_output=True, timeout=120)
        size = len(art["data"])
        print(f"artifact {art['id']} ({key}, {size} chars of markdown)\nurl {url}\n"
              f"screenshot {out} ({out.stat().st_size} bytes)")
        print(f"events: {new_best_events(api, run_id)}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
