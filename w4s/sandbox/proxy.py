"""The executor-call proxy: a workflow's `agent.llm` / `agent.sample` calls, served by the parent.

The sandboxed workflow sends each call as a frame; the harness's reader thread hands it to
`CallProxy.on_call`, which validates it, serves it from the call cache when every sample is
there, and otherwise fetches the missing samples from the executor on a thread of its own
(so the item's deadline keeps ticking), meters their spend and caches them. Every reply goes
back on the item's data socket; a failure is a reply too (`{"error": ...}`, raised as
`ExecutorError` in the workflow).

Failures are classified on the item's `ItemRun`: anything outside the workflow's control
makes the item non-replayable (never recorded as a reusable outcome), and an executor loss
(`BackendError.infrastructure`, an executor bug, a short reply) marks it lost to
infrastructure (`ItemRun.infra_error`), whatever the workflow then does with the error.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from w4s.cost import Meter, PriceTable, Spend
from w4s.errors import BackendError, BudgetExceeded, one_line
from w4s.sandbox import worker as _w
from w4s.sandbox.cache import CallCache, call_key

if TYPE_CHECKING:
    from w4s.protocols import ChatModel

log = logging.getLogger("w4s.sandbox")

BUDGET_ERROR = "budget exceeded"
MAX_REPLY_CHARS = 200_000  # per executor text handed back to a workflow
MAX_CALLS_IN_FLIGHT = 64  # per item: a workflow flooding requests gets errors, not threads


class ItemRun:
    """Per-item state shared by the reader thread and the executor-call threads."""

    def __init__(self, job: int, meters: tuple[Meter, ...]) -> None:
        self.job = job
        self.meters = meters  # each checks the budget before a fetch and adds its spend
        self.lock = threading.Lock()
        self.closed = False  # no replies may be sent once the job is over
        self.budget_hit = False
        self.replayable = True  # False once anything outside the workflow's control failed
        self.infra_error: str | None = None  # the first infrastructure failure, one line
        self.spend = Spend()
        self._next_index: dict[str, int] = {}
        self._fetching: dict[int, float] = {}  # id(call) -> when it went to the executor

    def take_indexes(self, request_key: str, n: int) -> int:
        """First of n fresh sample indexes for a repeated request (deterministic on rerun)."""
        with self.lock:
            first = self._next_index.get(request_key, 0)
            self._next_index[request_key] = first + n
            return first

    def add(self, spend: Spend) -> None:
        with self.lock:
            self.spend = self.spend + spend

    def start_fetch(self, call: Call) -> bool:
        """Count a call going to the executor; False when the item has too many in flight."""
        with self.lock:
            if len(self._fetching) >= MAX_CALLS_IN_FLIGHT:
                return False
            self._fetching[id(call)] = time.monotonic()
            return True

    def end_fetch(self, call: Call) -> None:
        with self.lock:
            self._fetching.pop(id(call), None)

    def lose(self, reason: str) -> None:
        """Mark the item lost to infrastructure (the first reason is kept); never recorded."""
        with self.lock:
            self.replayable = False
            if self.infra_error is None:
                self.infra_error = one_line(reason, 300)

    def oldest_fetch_s(self) -> float:
        """How long the longest-waiting executor fetch of this item has waited (0: none)."""
        with self.lock:
            started = min(self._fetching.values(), default=None)
        return 0.0 if started is None else time.monotonic() - started


class Call:
    """One executor request from a workflow: validated, keyed per sample, partly cached."""

    __slots__ = ("messages", "n", "temperature", "max_tokens", "json_mode", "model", "keys",
                 "texts")

    def __init__(self, messages: list[dict], n: int, temperature: float,
                 max_tokens: int | None, json_mode: bool, model: str, keys: list[str]) -> None:
        self.messages, self.n, self.temperature = messages, n, temperature
        self.max_tokens, self.json_mode, self.model, self.keys = max_tokens, json_mode, model, keys
        self.texts: list[str | None] = [None] * n

    @classmethod
    def parse(cls, frame: dict, model: str, run: ItemRun, key_model: str) -> Call:
        """Validate a frame from the (untrusted) worker and derive its cache keys."""
        messages = frame["messages"]
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str)
            and isinstance(m.get("role"), str) for m in messages
        ):
            raise TypeError("`messages` must be a list of {'role': str, 'content': str}")
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        n, temperature = int(frame["n"]), float(frame["temperature"])
        if not 1 <= n <= 64:
            raise ValueError(f"`n` must be in [1, 64], got {n}")
        if not 0.0 <= temperature <= 2.0:
            raise ValueError(f"`temperature` must be in [0, 2], got {temperature}")
        max_tokens = None if frame.get("max_tokens") is None else int(frame["max_tokens"])
        json_mode = bool(frame.get("json_mode", False))
        request = {"model": key_model, "messages": messages, "temperature": temperature,
                   "max_tokens": max_tokens, "json_mode": json_mode}
        first = 0
        if temperature > 0:  # repeated identical sampling calls get fresh sample indexes
            first = run.take_indexes(call_key(**request, sample_index=-1), n)
        keys = [call_key(**request, sample_index=first + i) for i in range(n)]
        return cls(messages, n, temperature, max_tokens, json_mode, model, keys)

    @property
    def missing(self) -> list[int]:
        return [i for i, t in enumerate(self.texts) if t is None]

    def reply_texts(self) -> list[str]:
        return [_w.clip(t or "", MAX_REPLY_CHARS) for t in self.texts]


class CallProxy:
    """Serves workflows' executor calls: cache first, then the executor; meters the spend."""

    def __init__(self, executor: ChatModel, *, cache: CallCache | None, prices: PriceTable,
                 key_model: str) -> None:
        self.executor = executor
        self.cache = cache
        self.prices = prices
        self.key_model = key_model
        # threads start on demand; many, because an abandoned (timed-out) call holds one
        # until the backend's own timeout ends it
        self._calls = ThreadPoolExecutor(256, thread_name_prefix="w4s-call")

    def close(self) -> None:
        self._calls.shutdown(wait=False, cancel_futures=True)

    def on_call(self, w, run: ItemRun, frame: dict) -> None:
        """Serve a call from the reader thread when the cache has every sample; otherwise
        hand it to an executor thread, so the item's deadline keeps ticking meanwhile."""
        try:
            call = Call.parse(frame, self.executor.model_id, run, self.key_model)
            self._lookup(call)
        except (KeyError, TypeError, ValueError) as e:
            run.replayable = False
            self._reply(w, run, frame, {"error": f"bad executor request: {type(e).__name__}: {e}"})
            return
        if call.missing:
            if not run.start_fetch(call):
                run.replayable = False
                self._reply(w, run, frame, {"error": "too many executor calls in flight "
                                                     f"(limit {MAX_CALLS_IN_FLIGHT} per item)"})
                return
            self._calls.submit(contextvars.copy_context().run, self._serve_call, w, run, frame,
                               call)  # the item's context: its logs reach the caller's run
        else:
            self._account(run, Spend(cache_hits=call.n))
            self._reply(w, run, frame, {"texts": call.reply_texts()})

    def _serve_call(self, w, run: ItemRun, frame: dict, call: Call) -> None:
        try:
            self._fetch(run, call)
            reply: dict = {"texts": call.reply_texts()}
        except BudgetExceeded:
            run.replayable = False
            run.budget_hit = True
            reply = {"error": BUDGET_ERROR}
        except BackendError as e:
            run.replayable = False
            if e.infrastructure:
                run.lose(f"executor unavailable: {one_line(e)}")
            reply = {"error": f"BackendError: {e}"}
        except Exception as e:  # noqa: BLE001 - an executor bug fails the item, not the run
            log.exception("sandbox: executor call failed")
            run.lose(f"executor failed: {type(e).__name__}: {one_line(e)}")
            reply = {"error": f"executor failed: {type(e).__name__}: {e}"}
        finally:
            run.end_fetch(call)
        self._reply(w, run, frame, reply)

    @staticmethod
    def _reply(w, run: ItemRun, frame: dict, reply: dict) -> None:
        reply.update(op="reply", id=frame.get("id"), job=run.job)
        with run.lock:
            if run.closed:
                return
            try:
                _w.send_frame(w.data_out, reply)
            except OSError:
                pass  # the child is gone; the reader thread reports why

    def _lookup(self, call: Call) -> None:
        if self.cache is None:
            return
        for i, key in enumerate(call.keys):
            try:
                hit = self.cache.get(key)
            except Exception as e:  # noqa: BLE001 - a broken cache degrades to misses
                log.warning("sandbox: call cache read failed: %s", e)
                hit = None
            if isinstance(hit, dict) and isinstance(hit.get("text"), str):
                call.texts[i] = hit["text"]

    def _fetch(self, run: ItemRun, call: Call) -> None:
        """Ask the executor for the samples the cache lacks; meter and cache them."""
        missing = call.missing
        for meter in run.meters:
            meter.check()
        kwargs: dict[str, Any] = {"n": len(missing), "temperature": call.temperature,
                                  "json_mode": call.json_mode}
        if call.max_tokens is not None:
            kwargs["max_tokens"] = call.max_tokens
        comp = self.executor.complete(call.messages, **kwargs)
        got = list(comp.texts)
        if len(got) < len(missing):
            raise BackendError(f"asked for {len(missing)} replies, got {len(got)}",
                               model=call.model, infrastructure=True)
        if comp.cached:  # the backend served it from its own cache: no new spend
            spend = Spend(cache_hits=call.n)
        else:
            cost = self.prices.cost(comp.model or call.model, comp.prompt_tokens,
                                    comp.completion_tokens)
            if cost is None and comp.model and comp.model != call.model:
                cost = self.prices.cost(call.model, comp.prompt_tokens, comp.completion_tokens)
            spend = Spend(executor_calls=1, prompt_tokens=comp.prompt_tokens,
                          completion_tokens=comp.completion_tokens, cost_usd=cost,
                          cache_hits=call.n - len(missing), cache_misses=len(missing))
        per_sample = comp.completion_tokens // max(1, len(missing))
        for j, i in enumerate(missing):
            call.texts[i] = str(got[j])
            if self.cache is not None:
                value = {"text": call.texts[i], "model": comp.model or call.model,
                         "prompt_tokens": comp.prompt_tokens, "completion_tokens": per_sample}
                try:
                    self.cache.put(call.keys[i], value)
                except Exception as e:  # noqa: BLE001
                    run.replayable = False  # a rerun could not replay this reply
                    log.warning("sandbox: call cache write failed: %s", e)
        self._account(run, spend)

    @staticmethod
    def _account(run: ItemRun, spend: Spend) -> None:
        for meter in run.meters:
            meter.add(spend)
        run.add(spend)
