"""Evaluate untrusted workflows on benchmark items: parallel, sandboxed, cached, metered.

One function handles one item (`_run_item`); everything else hands items to it through a
bounded thread pool. A failure is a value: every item ends as an ItemOutcome, whatever the
workflow, the executor or the worker did. The workflow's executor calls are served by
`proxy.CallProxy` (cache, executor, meter); with a call cache, clean outcomes are recorded
and reused by `outcomes.OutcomeStore`.

An item lost to infrastructure carries `ItemOutcome.infra_error` and scores 0, whatever the
workflow then did: an executor failure that is not the request's fault
(`BackendError.infrastructure`: unreachable, timed out, 5xx, 429 after the backend's
retries, a malformed or short reply), an executor bug, a sandbox worker that failed twice
before the job started, an internal harness error, or an item timeout while one of its
executor calls had been unanswered for at least half the item's time limit. A worker that
fails *during* a job (a crash, a closed socket, a garbled frame) is charged to the
workflow: its own process can cause all of those.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import secrets
import select
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from w4s.cost import Meter, PriceTable, Spend
from w4s.errors import BackendError, BadCall, ConfigError
from w4s.sandbox import worker as _w
from w4s.sandbox.cache import CallCache
from w4s.sandbox.outcomes import OutcomeStore
from w4s.sandbox.pool import WorkerDied, WorkerPool
from w4s.sandbox.proxy import BUDGET_ERROR, MAX_CALLS_IN_FLIGHT, CallProxy, ItemRun
from w4s.sandbox.static import check_workflow_source
from w4s.sandbox.types import EvalResult, ItemOutcome, SandboxSettings

if TYPE_CHECKING:
    from w4s.benchmarks.base import Benchmark, Item
    from w4s.protocols import ChatModel

__all__ = ["BUDGET_ERROR", "MAX_CALLS_IN_FLIGHT", "START_GRACE_S", "Harness", "OnItem"]

log = logging.getLogger("w4s.sandbox")

# A worker is released as soon as its item's result arrives; its zygote ends that job's
# processes before it starts the next one. A job that lingers past its result (e.g. a
# forged result frame, then a hang) holds the zygote: after this long the next item gives
# up on the worker and retries on a fresh one, so it is never charged the wait.
START_GRACE_S = 5.0
# An item that times out while one of its executor calls has been unanswered for at least
# this share of the item's time limit was lost to the executor, not to the workflow.
STALLED_CALL_SHARE = 0.5

OnItem = Callable[[int, ItemOutcome], None]
"""on_item(code_index, outcome): called once per finished item, from an item thread."""


class Harness:
    """Owns a warm worker pool, the executor-call proxy and cache, and the run's spend meter."""

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
        # and the endpoint's identity (`identity`: base URL, model file digest) beside its name
        cap = getattr(executor, "max_new_tokens", None)
        key_model = (getattr(executor, "identity", None) or executor.model_id) + (
            f"@max_new_tokens={cap}" if cap else "")
        self._outcomes = OutcomeStore(cache, settings, key_model)
        self._proxy = CallProxy(executor, cache=cache, prices=self.prices, key_model=key_model)
        self._pool = WorkerPool(settings.concurrency)
        self._items = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="w4s-item")
        self._closed = False

    # ------------------------------------------------------------ public API

    @property
    def meter(self) -> Meter:
        """Totals of everything this harness served: calls, tokens, cost, cache hits and
        misses; its budget (`budget_usd`, `budget_tokens`) applies to every call."""
        return self._meter

    def evaluate(self, code: str, items: Sequence[Item], benchmark: Benchmark,
                 on_item: OnItem | None = None, *, meter: Meter | None = None) -> EvalResult:
        """One workflow on `items`; `on_item(0, outcome)` as each item finishes."""
        return self.evaluate_many([code], items, benchmark, on_item=on_item, meter=meter)[0]

    def evaluate_many(
        self, codes: Sequence[str], items: Sequence[Item], benchmark: Benchmark,
        on_item: OnItem | None = None, *, meter: Meter | None = None,
    ) -> list[EvalResult]:
        """Several workflows at once; their items share the `concurrency` budget.

        `on_item(code_index, outcome)` is called once per finished item (len(codes) *
        len(items) calls in all, in no set order, from whichever thread finished it, before
        this returns); an exception it raises is logged and ignored. `meter`: a meter of the
        caller's (e.g. one run's, when runs share a harness) that this evaluation's spend is
        added to and whose budget it obeys, besides the harness's own.
        """
        self._check_open()
        meters = self._meters(meter)
        items = list(items)
        static = [check_workflow_source(c) for c in codes]
        futures: dict[tuple[int, int], Future[ItemOutcome]] = {}
        for ii, item in enumerate(items):  # item-major, so candidates progress together
            for ci, code in enumerate(codes):
                if static[ci] is None:
                    # the caller's context (e.g. its Prefect run, for the run's logs) goes
                    # with each item; one copy per item, a context runs in one thread at a time
                    futures[ci, ii] = self._items.submit(contextvars.copy_context().run,
                                                         self._run_item_reported, ci, code,
                                                         item, benchmark, on_item, meters)
        results = []
        for ci in range(len(codes)):
            outcomes = []
            for ii, item in enumerate(items):
                if static[ci] is None:
                    outcomes.append(futures[ci, ii].result())
                else:
                    outcomes.append(_failed(item.id, static[ci], 0.0))
                    _report(on_item, ci, outcomes[-1])
            results.append(self._summarize(outcomes, meters))
        return results

    def self_check(self, code: str, item: Item, *, meter: Meter | None = None) -> str | None:
        """Run the workflow on one item: None if the solver ran and returned a dict with
        "answer", else the error text (a static check's, the traceback, the timeout...).

        The answer is not scored: the self-check asks whether the workflow runs, not whether
        it is right. An item lost to infrastructure (`ItemOutcome.infra_error`: the executor
        unreachable, a failed sandbox worker...) says nothing about the workflow, so instead
        of an error to repair this raises BackendError with `infrastructure=True`, for the
        caller to retry later. A budget stop returns BUDGET_ERROR ("budget exceeded").
        `meter` as in `evaluate_many`.
        """
        self._check_open()
        err = check_workflow_source(code)
        if err is not None:
            return err
        out = self._items.submit(contextvars.copy_context().run, self._run_item, code, item,
                                 None, self._meters(meter)).result()
        if out.infra_error is not None:
            raise BackendError(f"self-check lost to infrastructure: {out.infra_error}",
                               infrastructure=True)
        return out.error

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._items.shutdown(wait=False, cancel_futures=True)
        self._pool.close()
        self._proxy.close()

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ one item

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Harness is closed; create a new one")

    def _meters(self, meter: Meter | None) -> tuple[Meter, ...]:
        return (self._meter,) if meter is None or meter is self._meter else (self._meter, meter)

    def _run_item_reported(self, ci: int, code: str, item: Item, benchmark: Benchmark,
                           on_item: OnItem | None, meters: tuple[Meter, ...]) -> ItemOutcome:
        out = self._run_item(code, item, benchmark, meters)
        _report(on_item, ci, out)
        return out

    def _run_item(self, code: str, item: Item, benchmark: Benchmark | None,
                  meters: tuple[Meter, ...] | None = None) -> ItemOutcome:
        start = time.monotonic()
        meters = meters or (self._meter,)
        key = self._outcomes.key(code, item)
        recorded = self._outcomes.get(key)
        infra: str | None = None
        if recorded is not None:
            raw, answer, error = recorded.raw, recorded.answer, recorded.error
            spend = Spend(cache_hits=recorded.samples)  # what replaying its calls would cost
            for m in meters:
                m.add(spend)
        else:
            if any(m.exceeded for m in meters):
                return _failed(item.id, BUDGET_ERROR, 0.0)
            run = ItemRun(secrets.randbits(52), meters)  # unguessable job: no stale frames
            try:
                raw, answer, error = self._execute(code, item, run)
            except Exception as e:  # a bug of ours must not end the run: record it on the item
                log.exception("sandbox: item %s failed inside the harness", item.id)
                raw, answer, error = None, None, f"internal harness error: {type(e).__name__}: {e}"
                run.lose(error)
            self._proxy.finish(run)  # cancel its calls still in flight; count their spend
            if self._closed:  # its worker was killed under it (shutdown, Ctrl-C): not judged
                run.lose("interrupted: the harness was closed while the item ran")
            if run.budget_hit:  # a refused call leaves the item unjudged, even if it answered
                error = BUDGET_ERROR
            infra = run.infra_error
            if key is not None and run.replayable and not run.budget_hit and infra is None:
                self._outcomes.put(key, raw, answer, error,
                                   run.spend.cache_hits + run.spend.cache_misses)
            spend = run.spend
        score = 0.0
        if infra is not None:  # whatever the workflow made of it, the item was not judged
            error = error if error is not None else infra
        elif error is None and benchmark is not None:
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
            cache_misses=spend.cache_misses, reused=recorded is not None, infra_error=infra,
        )

    def _execute(self, code: str, item: Item, run: ItemRun) -> tuple[Any, str | None, str | None]:
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
                        w.send_item(job)
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
                        w.close_channel()
            except WorkerDied as e:
                if attempt == 1:
                    run.lose(f"sandbox worker failed: {e}")
                    return None, None, f"sandbox worker failed: {e}"
        raise AssertionError("unreachable")

    def _converse(self, w, run: ItemRun) -> tuple[Any, str | None, str | None]:
        """Serve the child's executor calls until its result (or the zygote's "done")."""
        limit = _w.MAX_FRAME  # prompts may be long; answers are clipped by the child
        result: dict | None = None
        started = hung_up = False
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
                ready = _readable(*((w.ctrl,) if hung_up else (w.data, w.ctrl)), timeout=left)
                if w.data in ready:
                    try:
                        frame = _w.recv_frame(w.data, deadline=deadline, max_bytes=limit)
                    except EOFError:  # every process of the job closed it: await "done"
                        hung_up = True
                        continue
                    if frame.get("job") != run.job:  # its own channel: never another job's
                        raise _w.ProtocolError("frame for another job on the item's channel")
                    if not started:  # its frames can overtake the zygote's "started"
                        started, deadline = True, time.monotonic() + self.settings.item_timeout_s
                    op = frame.get("op")
                    if op == "call":
                        self._serve_call(w, run, frame)
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
                    if not hung_up:
                        result = self._drain_result(w, run, limit)
                    break
        except TimeoutError:
            w.kill()
            run.replayable = False
            limit_s = self.settings.item_timeout_s
            waited = run.oldest_fetch_s()
            if waited >= STALLED_CALL_SHARE * limit_s:
                run.lose(f"executor unavailable: a call unanswered for {waited:.0f}s "
                         f"when the item timed out after {limit_s:g}s")
            return None, None, f"timeout after {limit_s:g}s"
        except (EOFError, OSError, _w.ProtocolError) as e:
            w.kill()
            run.replayable = False
            return None, None, _w.clip(f"worker failed: {type(e).__name__} {e}".strip(), 500)
        except BadCall as e:  # not a call a workflow's `agent` can send: the item's fault
            w.kill()
            run.replayable = False
            return None, None, _w.clip(f"invalid executor call: {e}", 500)
        if result is None:  # a crash (memory, CPU or process limit): not worth recording
            run.replayable = False
            return None, None, str(done.get("exit") or "worker exited without a result")
        cap = self.settings.max_output_chars
        if "error" in result:
            return None, None, _w.clip(str(result["error"]), cap)
        # the child clips, but a forged result frame need not: the caps hold here too
        answer = _w.clip(str(result.get("answer_str", "")), cap)
        raw: Any = answer
        encoded = result.get("answer_json")
        if isinstance(encoded, str) and len(encoded) <= 4 * cap:
            try:
                raw = json.loads(encoded)
            except (ValueError, TypeError, RecursionError):
                raw = answer
        return raw, answer, None

    def _serve_call(self, w, run: ItemRun, frame: dict) -> None:
        """Hand a call frame to the proxy. Whatever a frame makes the proxy raise is the
        item's fault (BadCall): only the workflow's own process writes to its channel."""
        try:
            self._proxy.on_call(w, run, frame)
        except BadCall:
            raise
        except (KeyError, TypeError, ValueError, ArithmeticError, RecursionError,
                AttributeError) as e:
            raise BadCall(f"{type(e).__name__}: {e}") from e

    @staticmethod
    def _drain_result(w, run: ItemRun, limit: int) -> dict | None:
        """A result that reached the data socket just before the zygote's "done"."""
        while _readable(w.data, timeout=0):
            try:
                frame = _w.recv_frame(w.data, deadline=time.monotonic() + 1.0, max_bytes=limit)
            except EOFError:  # its channel is closed: whatever it sent was read
                return None
            if frame.get("op") == "result" and frame.get("job") == run.job:
                return frame
        return None

    # ------------------------------------------------------------ totals

    @staticmethod
    def _summarize(outcomes: list[ItemOutcome], meters: tuple[Meter, ...]) -> EvalResult:
        total = Spend()
        for o in outcomes:
            total = total + Spend(o.executor_calls, o.prompt_tokens, o.completion_tokens,
                                  o.cost_usd, o.cache_hits, o.cache_misses)
        budget = (any(o.error == BUDGET_ERROR for o in outcomes)
                  or any(m.exceeded for m in meters))
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
        if s is None or s.fileno() < 0:
            raise EOFError("the worker was closed")  # killed by another thread (close())
        poller.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
    ready = {fd for fd, _ in poller.poll(max(0, math.ceil(timeout * 1000)))}
    return [s for s in socks if s.fileno() in ready]


def _report(on_item: OnItem | None, ci: int, outcome: ItemOutcome) -> None:
    if on_item is None:
        return
    try:
        on_item(ci, outcome)
    except Exception:  # a progress bar's bug must not fail the evaluation
        log.exception("sandbox: the on_item callback failed (ignored)")


def _failed(item_id: str, error: str, seconds: float) -> ItemOutcome:
    return ItemOutcome(item_id=item_id, answer=None, score=0.0, error=error, executor_calls=0,
                       prompt_tokens=0, completion_tokens=0, cost_usd=0.0, seconds=seconds)
