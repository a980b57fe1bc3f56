"""Evaluate untrusted workflows on benchmark items: parallel, sandboxed, cached, metered.

One function handles one item (`_run_item`); everything else hands items to it through a
bounded thread pool. A failure is a value: every item ends as an ItemOutcome, whatever the
workflow, the executor or the worker did.

With a call cache, each item's outcome is recorded there too, keyed by the workflow code,
the item, the executor model and the limits. The meta-agent often re-proposes a workflow it
has seen (the seed, a sibling candidate), and a rerun of a stage repeats whole evaluations:
those items get the recorded answer back, re-scored, without a sandbox run. Only clean runs
are recorded: no timeout, crash, executor error or budget stop, so those are always retried.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import select
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from w4s.cost import Meter, PriceTable, Spend
from w4s.errors import BackendError, BudgetExceeded, ConfigError
from w4s.sandbox import worker as _w
from w4s.sandbox.cache import CallCache, call_key
from w4s.sandbox.pool import WorkerDied, WorkerPool
from w4s.sandbox.static import check_workflow_source
from w4s.sandbox.types import EvalResult, ItemOutcome, SandboxSettings

if TYPE_CHECKING:
    from w4s.benchmarks.base import Benchmark, Item
    from w4s.protocols import ChatModel

log = logging.getLogger("w4s.sandbox")

BUDGET_ERROR = "budget exceeded"
_MAX_REPLY_CHARS = 200_000  # per executor text handed back to a workflow
MAX_CALLS_IN_FLIGHT = 64  # per item: a workflow flooding requests gets errors, not threads
# A worker is released as soon as its item's result arrives; its zygote ends that job's
# processes before it starts the next one. A job that lingers past its result (e.g. a
# forged result frame, then a hang) holds the zygote: after this long the next item gives
# up on the worker and retries on a fresh one, so it is never charged the wait.
START_GRACE_S = 5.0


class _ItemRun:
    """Per-item state shared by the reader thread and the executor-call threads."""

    def __init__(self, job: int) -> None:
        self.job = job
        self.lock = threading.Lock()
        self.closed = False  # no replies may be sent once the job is over
        self.budget_hit = False
        self.in_flight = 0  # executor calls being served for this item
        self.replayable = True  # False once anything outside the workflow's control failed
        self.spend = Spend()
        self._next_index: dict[str, int] = {}

    def take_indexes(self, request_key: str, n: int) -> int:
        """First of n fresh sample indexes for a repeated request (deterministic on rerun)."""
        with self.lock:
            first = self._next_index.get(request_key, 0)
            self._next_index[request_key] = first + n
            return first

    def add(self, spend: Spend) -> None:
        with self.lock:
            self.spend = self.spend + spend


class _Call:
    """One executor request from a workflow: validated, keyed per sample, partly cached."""

    __slots__ = ("messages", "n", "temperature", "max_tokens", "json_mode", "model", "keys",
                 "texts")

    def __init__(self, messages: list[dict], n: int, temperature: float,
                 max_tokens: int | None, json_mode: bool, model: str, keys: list[str]) -> None:
        self.messages, self.n, self.temperature = messages, n, temperature
        self.max_tokens, self.json_mode, self.model, self.keys = max_tokens, json_mode, model, keys
        self.texts: list[str | None] = [None] * n

    @classmethod
    def parse(cls, frame: dict, model: str, run: _ItemRun, key_model: str) -> _Call:
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
        return [_w.clip(t or "", _MAX_REPLY_CHARS) for t in self.texts]


class Harness:
    """Owns a warm worker pool, the executor-call cache and the run's spend meter."""

    def __init__(
        self,
        executor: ChatModel,
        *,
        settings: SandboxSettings = SandboxSettings(),  # noqa: B008 - frozen, shared safely
        cache: CallCache | None = None,
        prices: PriceTable | None = None,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
    ) -> None:
        self.executor = executor
        self.settings = settings
        self.cache = cache
        self.prices = prices or PriceTable()
        if budget_usd is not None and self.prices.price(executor.model_id) is None:
            raise ConfigError(
                f"`budget_usd` needs a price for executor model {executor.model_id!r}: "
                "add it to `prices` or set `budget_tokens` instead"
            )
        self._meter = Meter(budget_usd=budget_usd, budget_tokens=budget_tokens)
        # the backend's own cap on new tokens shapes every reply, so it is part of each key
        cap = getattr(executor, "max_new_tokens", None)
        self._key_model = executor.model_id + (f"@max_new_tokens={cap}" if cap else "")
        self._pool = WorkerPool(settings.concurrency)
        self._items = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="w4s-item")
        # threads start on demand; many, because an abandoned (timed-out) call holds one
        # until the backend's own timeout ends it
        self._calls = ThreadPoolExecutor(256, thread_name_prefix="w4s-call")
        self._closed = False

    # ------------------------------------------------------------ public API

    @property
    def meter(self) -> Meter:
        """Totals for the whole run: calls, tokens, cost, cache hits and misses."""
        return self._meter

    def evaluate(self, code: str, items: Sequence[Item], benchmark: Benchmark) -> EvalResult:
        return self.evaluate_many([code], items, benchmark)[0]

    def evaluate_many(
        self, codes: Sequence[str], items: Sequence[Item], benchmark: Benchmark
    ) -> list[EvalResult]:
        """Several workflows at once; their items share the `concurrency` budget."""
        self._check_open()
        items = list(items)
        static = [check_workflow_source(c) for c in codes]
        futures: dict[tuple[int, int], Future[ItemOutcome]] = {}
        for ii, item in enumerate(items):  # item-major, so candidates progress together
            for ci, code in enumerate(codes):
                if static[ci] is None:
                    futures[ci, ii] = self._items.submit(self._run_item, code, item, benchmark)
        results = []
        for ci in range(len(codes)):
            outcomes = [
                futures[ci, ii].result() if static[ci] is None
                else _failed(item.id, static[ci], 0.0)
                for ii, item in enumerate(items)
            ]
            results.append(self._summarize(outcomes))
        return results

    def self_check(self, code: str, item: Item, benchmark: Benchmark | None = None) -> str | None:
        """Run one item: None if the solver returned a dict with "answer", else the error."""
        self._check_open()
        err = check_workflow_source(code)
        if err is not None:
            return err
        return self._items.submit(self._run_item, code, item, None).result().error

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._items.shutdown(wait=False, cancel_futures=True)
        self._pool.close()
        self._calls.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ one item

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Harness is closed; create a new one")

    def _run_item(self, code: str, item: Item, benchmark: Benchmark | None) -> ItemOutcome:
        start = time.monotonic()
        key = self._outcome_key(code, item)
        recorded = self._recorded(key)
        if recorded is not None:
            raw, answer, error, samples = recorded
            spend = Spend(cache_hits=samples)  # what replaying its calls would have cost
            self._meter.add(spend)
        else:
            if self._meter.exceeded:
                return _failed(item.id, BUDGET_ERROR, 0.0)
            run = _ItemRun(secrets.randbits(52))  # unguessable: stale frames never match
            try:
                raw, answer, error = self._execute(code, item, run)
            except Exception as e:  # a bug of ours must not end the run: record it on the item
                log.exception("sandbox: item %s failed inside the harness", item.id)
                raw, answer, error = None, None, f"internal harness error: {type(e).__name__}: {e}"
                run.replayable = False
            if run.budget_hit and error is not None:
                error = BUDGET_ERROR
            if key is not None and run.replayable and not run.budget_hit:
                self._record(key, raw, answer, error, run)
            spend = run.spend
        score = 0.0
        if error is None and benchmark is not None:
            try:
                score = float(benchmark.score(item, raw))
            except Exception as e:  # noqa: BLE001 - the scorer's failure is this item's
                error = f"scorer failed: {type(e).__name__}: {e}"
                score = 0.0
            if not math.isfinite(score):
                score, error = 0.0, f"scorer returned {score!r}"
        return ItemOutcome(
            item_id=item.id, answer=answer, score=score, error=error,
            executor_calls=spend.executor_calls, prompt_tokens=spend.prompt_tokens,
            completion_tokens=spend.completion_tokens, cost_usd=spend.cost_usd,
            seconds=time.monotonic() - start, cache_hits=spend.cache_hits,
            cache_misses=spend.cache_misses, reused=recorded is not None,
        )

    # ------------------------------------------------------------ recorded outcomes

    def _outcome_key(self, code: str, item: Item) -> str | None:
        if self.cache is None or not self.settings.reuse_outcomes:
            return None
        st = self.settings
        payload = [
            "outcome-v1", code, item.id, item.question, self._key_model,
            st.item_timeout_s, st.code_timeout_s, st.memory_mb, st.max_output_chars,
        ]
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)
        return "outcome:" + hashlib.sha256(text.encode()).hexdigest()

    def _recorded(self, key: str | None) -> tuple[Any, str | None, str | None, int] | None:
        """(raw answer, its text, error, samples used) of an identical earlier clean run."""
        if key is None or self.cache is None:
            return None
        try:
            hit = self.cache.get(key)
        except Exception as e:  # noqa: BLE001 - a broken cache degrades to a rerun
            log.warning("sandbox: outcome cache read failed: %s", e)
            return None
        if not isinstance(hit, dict) or not isinstance(hit.get("samples"), int):
            return None
        answer, error = hit.get("answer"), hit.get("error")
        return hit.get("raw", answer), answer, error, hit["samples"]

    def _record(self, key: str, raw: Any, answer: str | None, error: str | None,
                run: _ItemRun) -> None:
        s = run.spend
        value: dict[str, Any] = {"answer": answer, "error": error,
                                 "samples": s.cache_hits + s.cache_misses}
        if error is None and raw is not answer:  # the solver's answer as JSON, when it was
            value["raw"] = raw
        try:
            self.cache.put(key, value)  # type: ignore[union-attr] - key implies a cache
        except Exception as e:  # noqa: BLE001
            log.warning("sandbox: outcome cache write failed: %s", e)

    def _execute(self, code: str, item: Item, run: _ItemRun) -> tuple[Any, str | None, str | None]:
        """Run the solver in a worker: (raw answer, its text, error)."""
        st = self.settings
        job = {
            "op": "item", "job": run.job, "code": code, "task": item.question,
            "limit": st.max_output_chars, "code_timeout_s": st.code_timeout_s,
            "memory_mb": st.memory_mb, "cpu_s": st.item_timeout_s,
        }
        for attempt in range(2):  # a worker found dead before the job starts is replaced once
            try:
                with self._pool.worker() as w:
                    try:
                        _w.send_frame(w.ctrl, job)
                    except OSError as e:
                        w.kill()
                        raise WorkerDied(str(e)) from e
                    with run.lock:
                        run.closed = False
                    try:
                        return self._converse(w, run)
                    finally:
                        with run.lock:
                            run.closed = True
            except WorkerDied as e:
                if attempt == 1:
                    run.replayable = False
                    return None, None, f"sandbox worker failed: {e}"
        raise AssertionError("unreachable")

    def _converse(self, w, run: _ItemRun) -> tuple[Any, str | None, str | None]:
        """Serve the child's executor calls until its result (or the zygote's "done")."""
        limit = _w.MAX_FRAME  # prompts may be long; answers are clipped by the child
        result: dict | None = None
        started = False
        # the item's clock starts when its process does, not while the zygote is busy
        deadline = time.monotonic() + START_GRACE_S
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    if not started:
                        w.kill()
                        raise WorkerDied(f"the worker's previous job did not end within "
                                         f"{START_GRACE_S:g}s")
                    raise TimeoutError
                ready = _readable(w.data, w.ctrl, timeout=left)
                if w.data in ready:
                    frame = _w.recv_frame(w.data, deadline=deadline, max_bytes=limit)
                    if frame.get("job") != run.job:
                        continue  # written by an earlier job's process before it was killed
                    if not started:  # its frames can overtake the zygote's "started"
                        started, deadline = True, time.monotonic() + self.settings.item_timeout_s
                    op = frame.get("op")
                    if op == "call":
                        self._on_call(w, run, frame)
                    elif op == "result":
                        # done: the worker goes back to the pool now, and its zygote ends
                        # this job's processes before it reads the next job
                        w.job_pid = None
                        result = frame
                        break
                    else:
                        raise _w.ProtocolError(f"unexpected frame {op!r} from the solver")
                elif w.ctrl in ready:
                    done = _w.recv_frame(w.ctrl, deadline=deadline)
                    if done.get("job") != run.job:
                        continue  # the previous job's "done"
                    if done.get("op") == "started":
                        w.job_pid = done.get("pid")
                        if not started:
                            started = True
                            deadline = time.monotonic() + self.settings.item_timeout_s
                        continue
                    w.job_pid = None  # it ended without a result (crashed or exited)
                    result = self._drain_result(w, run, limit)
                    break
        except TimeoutError:
            w.kill()
            run.replayable = False
            return None, None, f"timeout after {self.settings.item_timeout_s:g}s"
        except (EOFError, OSError, _w.ProtocolError) as e:
            w.kill()
            run.replayable = False
            return None, None, f"worker failed: {type(e).__name__} {e}".strip()
        if result is None:  # a crash (memory, CPU or process limit): not worth recording
            run.replayable = False
            return None, None, str(done.get("exit") or "worker exited without a result")
        if "error" in result:
            return None, None, _w.clip(str(result["error"]), self.settings.max_output_chars)
        answer = str(result.get("answer_str", ""))
        raw: Any = answer
        if "answer_json" in result:
            try:
                raw = json.loads(result["answer_json"])
            except (ValueError, TypeError, RecursionError):
                raw = answer
        return raw, answer, None

    @staticmethod
    def _drain_result(w, run: _ItemRun, limit: int) -> dict | None:
        """A result that reached the data socket just before the zygote's "done"."""
        while _readable(w.data, timeout=0):
            frame = _w.recv_frame(w.data, deadline=time.monotonic() + 1.0, max_bytes=limit)
            if frame.get("op") == "result" and frame.get("job") == run.job:
                return frame
        return None

    # ------------------------------------------------------------ executor calls

    def _on_call(self, w, run: _ItemRun, frame: dict) -> None:
        """Serve a call from the reader thread when the cache has every sample; otherwise
        hand it to an executor thread, so the item's deadline keeps ticking meanwhile."""
        try:
            call = _Call.parse(frame, self.executor.model_id, run, self._key_model)
            self._lookup(call)
        except (KeyError, TypeError, ValueError) as e:
            run.replayable = False
            self._reply(w, run, frame, {"error": f"bad executor request: {type(e).__name__}: {e}"})
            return
        if call.missing:
            with run.lock:
                busy = run.in_flight >= MAX_CALLS_IN_FLIGHT
                run.in_flight += 0 if busy else 1
            if busy:
                run.replayable = False
                self._reply(w, run, frame, {"error": "too many executor calls in flight "
                                                     f"(limit {MAX_CALLS_IN_FLIGHT} per item)"})
                return
            self._calls.submit(self._serve_call, w, run, frame, call)
        else:
            self._account(run, Spend(cache_hits=call.n))
            self._reply(w, run, frame, {"texts": call.reply_texts()})

    def _serve_call(self, w, run: _ItemRun, frame: dict, call: _Call) -> None:
        try:
            self._fetch(run, call)
            reply: dict = {"texts": call.reply_texts()}
        except BudgetExceeded:
            run.replayable = False
            run.budget_hit = True
            reply = {"error": BUDGET_ERROR}
        except BackendError as e:
            run.replayable = False
            reply = {"error": f"BackendError: {e}"}
        except Exception as e:  # noqa: BLE001 - an executor bug fails the item, not the run
            run.replayable = False
            log.exception("sandbox: executor call failed")
            reply = {"error": f"executor failed: {type(e).__name__}: {e}"}
        finally:
            with run.lock:
                run.in_flight -= 1
        self._reply(w, run, frame, reply)

    @staticmethod
    def _reply(w, run: _ItemRun, frame: dict, reply: dict) -> None:
        reply.update(op="reply", id=frame.get("id"), job=run.job)
        with run.lock:
            if run.closed:
                return
            try:
                _w.send_frame(w.data_out, reply)
            except OSError:
                pass  # the child is gone; the reader thread reports why

    def _lookup(self, call: _Call) -> None:
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

    def _fetch(self, run: _ItemRun, call: _Call) -> None:
        """Ask the executor for the samples the cache lacks; meter and cache them."""
        missing = call.missing
        self._meter.check()
        kwargs: dict[str, Any] = {"n": len(missing), "temperature": call.temperature,
                                  "json_mode": call.json_mode}
        if call.max_tokens is not None:
            kwargs["max_tokens"] = call.max_tokens
        comp = self.executor.complete(call.messages, **kwargs)
        got = list(comp.texts)
        if len(got) < len(missing):
            raise BackendError(f"asked for {len(missing)} replies, got {len(got)}",
                               model=call.model)
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

    def _account(self, run: _ItemRun, spend: Spend) -> None:
        self._meter.add(spend)
        run.add(spend)

    # ------------------------------------------------------------ totals

    def _summarize(self, outcomes: list[ItemOutcome]) -> EvalResult:
        total = Spend()
        for o in outcomes:
            total = total + Spend(o.executor_calls, o.prompt_tokens, o.completion_tokens,
                                  o.cost_usd, o.cache_hits, o.cache_misses)
        budget = any(o.error == BUDGET_ERROR for o in outcomes) or self._meter.exceeded
        return EvalResult(
            outcomes=outcomes,
            accuracy=sum(o.score for o in outcomes) / len(outcomes) if outcomes else 0.0,
            executor_calls=total.executor_calls, prompt_tokens=total.prompt_tokens,
            completion_tokens=total.completion_tokens, cost_usd=total.cost_usd,
            cache_hits=total.cache_hits, cache_misses=total.cache_misses,
            budget_exceeded=budget,
        )


def _readable(*socks, timeout: float) -> list:
    """The sockets ready to read; poll(), unlike select(), takes fds above 1024."""
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
    ready = {fd for fd, _ in poller.poll(max(0, math.ceil(timeout * 1000)))}
    return [s for s in socks if s.fileno() in ready]


def _failed(item_id: str, error: str, seconds: float) -> ItemOutcome:
    return ItemOutcome(item_id=item_id, answer=None, score=0.0, error=error, executor_calls=0,
                       prompt_tokens=0, completion_tokens=0, cost_usd=0.0, seconds=seconds)
