"""Per-process resources shared by the stages: loaded models, the sandbox harness, items.

Stages receive only a run folder and ids; the heavy objects are built once per process
and keyed by the config pieces that define them, so Prefect tasks in one worker share them.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from w4s.benchmarks import Benchmark, Item, get_benchmark
from w4s.config import OptimizeConfig
from w4s.cost import Meter, PriceTable, Spend
from w4s.errors import ConfigError, InfrastructureError
from w4s.models.factory import build_chat_model
from w4s.paths import location
from w4s.protocols import ChatModel
from w4s.sandbox import Harness, SandboxSettings
from w4s.sandbox.cache import CallCache
from w4s.storage.call_cache import default_cache_path, open_call_cache
from w4s.storage.run_store import RunStore

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
    """One warm worker pool per (executor, sandbox settings) in this process, shared by
    every run; each run brings its own spend meter (`run_meter`)."""
    key = "|".join(map(str, (
        cfg.executor.model_dump_json(), cfg.item_timeout_s, cfg.code_timeout_s,
        cfg.concurrency, cfg.reuse_outcomes, sorted(cfg.prices.items()),
        default_cache_path() if cfg.use_cache else None,
    )))
    with _lock:
        if _stopping.is_set():
            raise InfrastructureError("w4s is shutting down: no new sandbox workers")
        if key not in _harnesses:
            _harnesses[key] = new_harness(
                executor(cfg), cfg.executor.kind,
                SandboxSettings(
                    item_timeout_s=cfg.item_timeout_s, code_timeout_s=cfg.code_timeout_s,
                    concurrency=cfg.concurrency, reuse_outcomes=cfg.reuse_outcomes,
                ),
                cache=open_call_cache() if cfg.use_cache else None, prices=cfg.prices,
            )
        return _harnesses[key]


def new_harness(model: ChatModel, kind: str, settings: SandboxSettings, *,
                cache: CallCache | None = None,
                prices: Mapping[str, tuple[float, float]] | None = None,
                budget_usd: float | None = None, budget_tokens: int | None = None) -> Harness:
    """A sandbox harness over an executor model of backend `kind`, priced for it: the one
    place a harness is built for a stage (the shared pools above; `w4s evaluate` should
    too). The caller owns it and the cache (closes both)."""
    return Harness(model, settings=settings, cache=cache,
                   prices=PriceTable.for_executor(kind, model.model_id, prices),
                   budget_usd=budget_usd, budget_tokens=budget_tokens)


# this process's name in a run's spend files: host, pid and a nonce (pids are reused)
WRITER = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class _RunSpend:
    meter: Meter  # this process's spend for the run; its budget counts `spent_before` too
    store: RunStore
    lock: threading.Lock = field(default_factory=threading.Lock)

    def others(self) -> Spend:
        """What every other process has saved for this run and for its budget group."""
        store = self.store
        shared = sum((RunStore(store.root.parent / r).spend()
                      for r in store.budget_group() if r != store.run_id), Spend())
        return store.spend(exclude=WRITER) + shared


_spends: dict[str, _RunSpend] = {}


def _run_spend(run_dir: str | Path) -> _RunSpend:
    key = str(location(run_dir).resolve())
    with _lock:
        if key not in _spends:
            store = RunStore(key)
            cfg = store.config()
            if cfg.budget_usd is not None:
                _require_price(cfg)
            _spends[key] = _RunSpend(
                Meter(budget_usd=cfg.budget_usd, budget_tokens=cfg.budget_tokens), store)
        return _spends[key]


def _require_price(cfg: OptimizeConfig) -> None:
    model_id = executor(cfg).model_id
    if PriceTable.for_executor(cfg.executor.kind, model_id, cfg.prices).price(model_id) is None:
        raise ConfigError(
            f"`budget_usd` needs a price for executor model {model_id!r}: "
            "add it to `prices` or set `budget_tokens` instead"
        )


@contextmanager
def run_meter(run_dir: str | Path) -> Iterator[Meter]:
    """The run's spend meter and budget; what it metered is saved with the run on exit.

    Spend persists in the run folder, so a resumed run, and each benchmark of a multi-
    benchmark run (its budget group), counts what was spent before against the budget.
    """
    spend = _run_spend(run_dir)
    # each stage starts from what the other processes have saved by now: stages running in
    # other processes at the same moment are counted at their next save, not live
    spend.meter.spent_before = spend.others()
    try:
        yield spend.meter
    finally:
        with spend.lock:  # concurrent stages of one run in this process: one file, newest
            spend.store.save_spend(spend.meter.totals, WRITER)


def run_spend(run_dir: str | Path) -> Spend:
    """Everything the run's executor calls have cost so far, over every process."""
    spend = _run_spend(run_dir)
    return spend.store.spend(exclude=WRITER) + spend.meter.totals


_stopping = threading.Event()


def stop_all() -> None:
    """Ctrl-C: stop every worker pool now and start no new one. Items still running are
    lost to infrastructure (never scored), and their stages are not retried."""
    _stopping.set()
    close_all()


def stopping() -> bool:
    return _stopping.is_set()


@atexit.register
def close_all() -> None:
    """Stop the worker pools at exit. Not at a run's end: other runs may share them."""
    with _lock:
        for h in _harnesses.values():
            h.close()
        _harnesses.clear()
