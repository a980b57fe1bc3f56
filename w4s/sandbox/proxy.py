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
A call that breaks the caps below is the workflow's error (an error reply), never
infrastructure.

Spend: each fetch reserves its worst case on every meter before it is sent (`Meter.reserve`:
for each sample asked, the prompt's UTF-8 bytes plus a few tokens per message, and
`max_tokens`; priced) and settles to the reply's usage. When the item ends (result, crash or
timeout), `CallProxy.finish` cancels its calls still in flight (`w4s.cancel`: an HTTP
backend closes the request) and charges each one that was sent but never answered its
reservation, the most it could have cost, so a killed item's spend is counted, not lost.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from w4s.cancel import Cancelled, CancelScope, running_under
from w4s.cost import Meter, PriceTable, Spend
from w4s.errors import BackendError, BadCall, BudgetExceeded, one_line
from w4s.sandbox import worker as _w
from w4s.sandbox.cache import CallCache, call_key

if TYPE_CHECKING:
    from w4s.protocols import ChatModel

log = logging.getLogger("w4s.sandbox")

BUDGET_ERROR = "budget exceeded"
MAX_REPLY_CHARS = 200_000  # per executor text handed back to a workflow
MAX_CALLS_IN_FLIGHT = 64  # per item: a workflow flooding requests gets errors, not threads
# caps on what one call may ask (documented in w4s.sandbox)
MAX_PROMPT_CHARS = 200_000  # all messages' content together
MAX_MESSAGES = 64
ROLES = frozenset({"system", "user", "assistant"})
MAX_SAMPLES = 64  # n
MAX_TOKENS_CAP = 32_768  # max_tokens (the backend's own max_new_tokens caps it further)
DEFAULT_MAX_TOKENS = 512  # when a call names none (ChatModel.complete's default)
MAX_TEMPERATURE = 2.0
CALL_KEYS = frozenset({"op", "id", "job", "messages", "n", "temperature", "max_tokens",
                       "json_mode"})
# a prompt's worst case in tokens: at most one per UTF-8 byte, plus the chat template's
PROMPT_TOKENS_PER_MESSAGE = 8
# how long an ended item's cancelled calls get to return before their reservations are
# charged as spent (an HTTP call ends at once; a backend that cannot be cancelled keeps
# running on its thread until its own timeout)
FINISH_WAIT_S = 1.0


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
        self.scope = CancelScope()  # cancelled when the item ends: its calls stop
        self._next_index: dict[str, int] = {}
        self._fetching: dict[int, tuple[Call, float]] = {}  # id(call) -> (call, since)

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
            self._fetching[id(call)] = (call, time.monotonic())
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
            started = min((t for _, t in self._fetching.values()), default=None)
        return 0.0 if started is None else time.monotonic() - started

    def in_flight(self) -> list[Call]:
        with self.lock:
            return [c for c, _ in self._fetching.values()]

    def reserve(self, call: Call, tokens: int, cost_usd: float | None) -> None:
        """Reserve the call's worst case on every meter (all or none); see Meter.reserve."""
        held: list[Meter] = []
        try:
            for meter in self.meters:
                meter.reserve(tokens, cost_usd, check=self.scope.check)
                held.append(meter)
        except BaseException:
            for meter in held:
                meter.settle(tokens, cost_usd, Spend())
            raise
        with self.lock:
            call.reservation = (tokens, cost_usd)

    def settle(self, call: Call, spend: Spend) -> None:
        """Release the call's reservation (once) and count `spend` on the meters and here."""
        with self.lock:
            if call.reservation is None:
                return  # never reserved, or already settled (charged when its item ended)
            tokens, cost_usd = call.reservation
            call.reservation = None
            for meter in self.meters:
                meter.settle(tokens, cost_usd, spend)
            self.spend = self.spend + spend


class Call:
    """One executor request from a workflow: validated, keyed per sample, partly cached."""

    __slots__ = ("messages", "n", "temperature", "max_tokens", "json_mode", "model", "keys",
                 "texts", "reservation")

    def __init__(self, messages: list[dict], n: int, temperature: float,
                 max_tokens: int | None, json_mode: bool, model: str, keys: list[str]) -> None:
        self.messages, self.n, self.temperature = messages, n, temperature
        self.max_tokens, self.json_mode, self.model, self.keys = max_tokens, json_mode, model, keys
        self.texts: list[str | None] = [None] * n
        self.reservation: tuple[int, float | None] | None = None  # held on the meters

    @classmethod
    def parse(cls, frame: dict, model: str, run: ItemRun, key_model: str) -> Call:
        """Validate a frame from the (untrusted) worker and derive its cache keys."""
        messages, n, temperature, max_tokens, json_mode = validate_call(frame)
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

    def finish(self, run: ItemRun) -> None:
        """The item has ended: cancel its calls in flight, and charge each one still
        unanswered after FINISH_WAIT_S its reservation (it was sent, and may be billed)."""
        run.scope.cancel()
        deadline = time.monotonic() + FINISH_WAIT_S
        while run.in_flight() and time.monotonic() < deadline:
            time.sleep(0.01)
        for call in run.in_flight():
            with run.lock:
                reserved = call.reservation
            if reserved is not None:
                run.settle(call, self._worst_case(call, reserved))

    def _worst_case(self, call: Call, reserved: tuple[int, float | None]) -> Spend:
        """A sent call's spend when its usage never came back: its whole reservation."""
        samples = len(call.missing)
        prompt = prompt_tokens_bound(call.messages) * samples
        return Spend(executor_calls=1, prompt_tokens=prompt,
                     completion_tokens=max(0, reserved[0] - prompt), cost_usd=reserved[1],
                     cache_hits=call.n - samples, cache_misses=samples)

    def on_call(self, w, run: ItemRun, frame: dict) -> None:
        """Serve a call from the reader thread when the cache has every sample; otherwise
        hand it to an executor thread, so the item's deadline keeps ticking meanwhile."""
        try:
            call = Call.parse(frame, self.executor.model_id, run, self.key_model)
            self._lookup(call)
        except BadCall as e:
            run.replayable = False
            self._reply(w, run, frame, {"error": f"bad executor request: {e}"})
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
        except Cancelled as e:  # the item ended meanwhile: nobody reads the reply
            run.replayable = False
            reply = {"error": str(e)}
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
        max_tokens = call.max_tokens or DEFAULT_MAX_TOKENS
        cap = getattr(self.executor, "max_new_tokens", None)
        if isinstance(cap, int) and cap > 0:
            max_tokens = min(max_tokens, cap)
        # a backend that sends n > 1 as n requests (llama.cpp, a server refusing n) bills
        # the prompt once per sample: the worst case counts it so
        prompt = prompt_tokens_bound(call.messages) * len(missing)
        completion = max_tokens * len(missing)
        cost = self.prices.cost(call.model, prompt, completion)
        run.reserve(call, prompt + completion, cost)
        if run.scope.cancelled:  # the item ended while this call waited: never sent
            run.settle(call, Spend())
            run.scope.check()
        kwargs: dict[str, Any] = {"n": len(missing), "temperature": call.temperature,
                                  "json_mode": call.json_mode, "max_tokens": max_tokens}
        try:
            with running_under(run.scope):
                comp = self.executor.complete(call.messages, **kwargs)
        except Cancelled:
            run.settle(call, self._worst_case(call, (prompt + completion, cost)))
            raise
        except BaseException:
            run.settle(call, Spend())  # refused or unreachable: nothing was generated
            raise
        got = list(comp.texts)
        if len(got) < len(missing):
            run.settle(call, Spend(executor_calls=1, prompt_tokens=comp.prompt_tokens,
                                   completion_tokens=comp.completion_tokens,
                                   cost_usd=self.prices.cost(call.model, comp.prompt_tokens,
                                                             comp.completion_tokens)))
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
        run.settle(call, spend)

    @staticmethod
    def _account(run: ItemRun, spend: Spend) -> None:
        for meter in run.meters:
            meter.add(spend)
        run.add(spend)


def validate_call(frame: Any) -> tuple[list[dict], int, float, int | None, bool]:
    """(messages, n, temperature, max_tokens, json_mode) of a call frame, or BadCall."""
    if not isinstance(frame, dict):
        raise BadCall("a call must be a JSON object")
    unknown = sorted(str(k) for k in frame if k not in CALL_KEYS)
    if unknown:
        raise BadCall(f"unknown fields {', '.join(unknown)[:200]}")
    messages = frame.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadCall("`messages` must be a non-empty list of {'role', 'content'}")
    if len(messages) > MAX_MESSAGES:
        raise BadCall(f"{len(messages)} messages, more than {MAX_MESSAGES}")
    size = 0
    for m in messages:
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise BadCall("each message must be exactly {'role': str, 'content': str}")
        if not isinstance(m["role"], str) or m["role"] not in ROLES:
            raise BadCall(f"`role` must be one of {', '.join(sorted(ROLES))}, "
                          f"got {str(m['role'])[:40]!r}")
        if not isinstance(m["content"], str):
            raise BadCall("`content` must be a string")
        try:
            m["content"].encode("utf-8")
        except UnicodeEncodeError:
            raise BadCall("`content` is not valid Unicode text (a lone surrogate)") from None
        size += len(m["content"])
    if size > MAX_PROMPT_CHARS:
        raise BadCall(f"prompt of {size} characters, more than {MAX_PROMPT_CHARS}")
    n = frame.get("n")
    if type(n) is not int or not 1 <= n <= MAX_SAMPLES:
        raise BadCall(f"`n` must be an integer in [1, {MAX_SAMPLES}], got {str(n)[:40]}")
    temperature = frame.get("temperature")
    if type(temperature) not in (int, float) or not (
            math.isfinite(temperature) and 0.0 <= temperature <= MAX_TEMPERATURE):
        raise BadCall(f"`temperature` must be a number in [0, {MAX_TEMPERATURE:g}], "
                      f"got {str(temperature)[:40]}")
    max_tokens = frame.get("max_tokens")
    if max_tokens is not None and (type(max_tokens) is not int
                                   or not 1 <= max_tokens <= MAX_TOKENS_CAP):
        raise BadCall(f"`max_tokens` must be an integer in [1, {MAX_TOKENS_CAP}] or null, "
                      f"got {str(max_tokens)[:40]}")
    json_mode = frame.get("json_mode", False)
    if type(json_mode) is not bool:
        raise BadCall("`json_mode` must be true or false")
    clean = [{"role": m["role"], "content": m["content"]} for m in messages]
    return clean, n, float(temperature), max_tokens, json_mode


def prompt_tokens_bound(messages: list[dict]) -> int:
    """At least the prompt's tokens: byte-level tokenizers give at most one per byte."""
    return sum(len(m["content"].encode("utf-8")) + PROMPT_TOKENS_PER_MESSAGE
               for m in messages) + PROMPT_TOKENS_PER_MESSAGE
