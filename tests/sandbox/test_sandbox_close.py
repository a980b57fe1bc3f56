"""Closing a harness under running items (Ctrl-C) loses them to infrastructure: they are
never scored or recorded as the workflow's failure."""

from __future__ import annotations

import threading
import time

from w4s.sandbox import Harness, MemoryCallCache, SandboxSettings

SLEEPS = "def solver(agent, task):\n    import time\n    time.sleep(30)\n    return {'answer': 1}\n"


def test_items_running_when_the_harness_closes_are_lost_not_failed(fake, make_bench):
    bench = make_bench(2)
    h = Harness(fake, settings=SandboxSettings(concurrency=2), cache=MemoryCallCache())
    threading.Timer(1.0, h.close).start()
    start = time.monotonic()
    result = h.evaluate(SLEEPS, bench.load(), bench)
    assert time.monotonic() - start < 15  # not the workflow's 30 s
    assert result.infra_errors == 2 and not result.failures
    assert all("harness was closed" in o.infra_error for o in result.outcomes)
