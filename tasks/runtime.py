"""Per-process resources shared by the stages: loaded models, the sandbox harness, items.

Stages receive only a run folder and ids; the heavy objects are built once per process
and keyed by the config pieces that define them, so Prefect tasks in one worker share them.
"""

from __future__ import annotations

import atexit
import json
import threading
from functools import lru_cache

from models.factory import build_chat_model
from storage.call_cache import open_call_cache
from w4s.benchmarks import Benchmark, Item, get_benchmark
from w4s.config import OptimizeConfig
from w4s.cost import PriceTable
from w4s.protocols import ChatModel
from w4s.sandbox import Harness, SandboxSettings

_lock = threading.Lock()
_harnesses: dict[str, Harness] = {}


def meta_agent(cfg: OptimizeConfig) -> ChatModel:
    return build_chat_model(cfg.meta_agent, role="meta_agent")


def executor(cfg: OptimizeConfig) -> ChatModel:
    return build_chat_model(cfg.executor, role="executor")


@lru_cache(maxsize=8)
def _benchmark(name: str, options_json: str) -> Benchmark:
    return get_benchmark(name, **json.loads(options_json))


def benchmark(cfg: OptimizeConfig) -> Benchmark:
    return _benchmark(cfg.benchmark, json.dumps(cfg.benchmark_options, sort_keys=True))


def items_by_id(cfg: OptimizeConfig) -> dict[str, Item]:
    return {it.id: it for it in benchmark(cfg).load()}


def harness(cfg: OptimizeConfig) -> Harness:
    """One warm worker pool per (executor, sandbox settings, budget) in this process."""
    key = "|".join(map(str, (
        cfg.executor.model_dump_json(), cfg.item_timeout_s, cfg.code_timeout_s,
        cfg.concurrency, cfg.use_cache, cfg.reuse_outcomes, cfg.budget_usd, cfg.budget_tokens,
        sorted(cfg.prices.items()),
    )))
    with _lock:
        if key not in _harnesses:
            model = executor(cfg)
            _harnesses[key] = Harness(
                model,
                settings=SandboxSettings(
                    item_timeout_s=cfg.item_timeout_s, code_timeout_s=cfg.code_timeout_s,
                    concurrency=cfg.concurrency, reuse_outcomes=cfg.reuse_outcomes,
                ),
                cache=open_call_cache() if cfg.use_cache else None,
                prices=PriceTable.for_executor(cfg.executor.kind, model.model_id, cfg.prices),
                budget_usd=cfg.budget_usd, budget_tokens=cfg.budget_tokens,
            )
        return _harnesses[key]


@atexit.register
def close_all() -> None:
    """Stop worker pools (called at exit and by the flow when a run ends)."""
    with _lock:
        for h in _harnesses.values():
            h.close()
        _harnesses.clear()
