"""Executor spend: a price table, and a thread-safe meter with an optional run budget.

Prices are USD per 1M tokens (input, output). A model missing from the table has an
unknown cost (None), never a silent 0.0; local models are listed at 0.0 on purpose.

A budget is a cap: a call reserves its worst case (`Meter.reserve`) before it is sent and
settles to its real usage on the reply (`Meter.settle`). A call that fits beside the
reservations in flight goes at once; one that could cross the budget waits until it is
alone, so at most one call at a time can cross: the billed total stays within the budget
plus one call's reservation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from w4s.embedded_model import EMBEDDED_LLAMACPP_ID, EMBEDDED_MODEL_ID
from w4s.errors import BudgetExceeded, ConfigError

# Public list prices (USD per 1M tokens) as of 2025; override or extend per run.
KNOWN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    # local backends: free to run, priced explicitly
    EMBEDDED_MODEL_ID: (0.0, 0.0),
    EMBEDDED_LLAMACPP_ID: (0.0, 0.0),
    "embedded": (0.0, 0.0),
    "scripted": (0.0, 0.0),
    "fake": (0.0, 0.0),
}


# Backend kinds (w4s.config.BackendKind) that run on this machine: their calls cost nothing.
LOCAL_BACKEND_KINDS = frozenset({"embedded", "transformers", "llamacpp", "vllm",
                                 "scripted"})


class PriceTable:
    """Model name -> (USD per 1M input tokens, USD per 1M output tokens).

    Lookup is exact first, then the longest known prefix followed by "-" or ":", so a
    dated snapshot such as "gpt-4o-mini-2024-07-18" gets the "gpt-4o-mini" price.
    """

    def __init__(self, prices: Mapping[str, tuple[float, float]] | None = None, *,
                 include_known: bool = True) -> None:
        table = dict(KNOWN_PRICES) if include_known else {}
        for model, pair in (prices or {}).items():
            if len(pair) != 2 or any(p < 0 for p in pair):
                raise ValueError(
                    f"`prices[{model!r}]` must be (input, output) USD per 1M tokens >= 0, "
                    f"but received {pair!r}"
                )
            table[model] = (float(pair[0]), float(pair[1]))
        self._table = table

    @classmethod
    def for_executor(cls, kind: str, model_id: str,
                     prices: Mapping[str, tuple[float, float]] | None = None) -> PriceTable:
        """The known prices plus `prices`; a local backend's model is priced 0.0 explicitly
        (a transformers folder may have any name, so its id cannot be listed in advance)."""
        extra = dict(prices or {})
        if kind in LOCAL_BACKEND_KINDS:
            extra.setdefault(model_id, (0.0, 0.0))
        return cls(extra)

    def price(self, model: str) -> tuple[float, float] | None:
        if model in self._table:
            return self._table[model]
        best = None
        for name in self._table:
            if model.startswith(name) and model[len(name): len(name) + 1] in ("-", ":", "@"):
                if best is None or len(name) > len(best):
                    best = name
        return self._table[best] if best else None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        p = self.price(model)
        if p is None:
            return None
        return (prompt_tokens * p[0] + completion_tokens * p[1]) / 1_000_000


@dataclass(frozen=True, slots=True)
class Spend:
    """Totals at one moment. cost_usd is None once any call had an unknown price."""

    executor_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    cache_hits: int = 0
    cache_misses: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Spend) -> Spend:
        cost = None if self.cost_usd is None or other.cost_usd is None else (
            self.cost_usd + other.cost_usd)
        return Spend(
            self.executor_calls + other.executor_calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            cost,
            self.cache_hits + other.cache_hits,
            self.cache_misses + other.cache_misses,
        )


class Meter:
    """Run-level totals of new executor spend; cache hits are counted, not charged."""

    def __init__(self, *, budget_usd: float | None = None, budget_tokens: int | None = None,
                 spent_before: Spend = Spend()) -> None:  # noqa: B008 - frozen
        """`spent_before`: spend this meter did not see (an earlier process of the run, the
        other runs sharing its budget); it counts against the budget, not in `totals`."""
        if budget_usd is not None and not budget_usd > 0:
            raise ConfigError(f"`budget_usd` must be positive, but received {budget_usd!r}")
        if budget_tokens is not None and not budget_tokens > 0:
            raise ConfigError(f"`budget_tokens` must be positive, but received {budget_tokens!r}")
        self.budget_usd = budget_usd
        self.budget_tokens = budget_tokens
        self.spent_before = spent_before
        self._lock = threading.Condition()
        self._spend = Spend()
        self._reserved_tokens = 0  # worst cases of the calls in flight
        self._reserved_usd = 0.0
        self._reservations = 0

    def add(self, spend: Spend) -> None:
        with self._lock:
            self._spend = self._spend + spend
            self._lock.notify_all()

    def reserve(self, tokens: int, cost_usd: float | None, *,
                check: Callable[[], None] | None = None) -> None:
        """Hold `tokens` / `cost_usd` (a call's worst case) against the budget until `settle`.

        Raises BudgetExceeded once the budget is spent. A call that would cross the budget
        beside the others in flight waits for them to settle, then goes alone (or is
        refused if they spent the rest). `check()` is called while waiting and may raise
        (e.g. `CancelScope.check`) to give up; nothing is then held.
        """
        with self._lock:
            while True:
                if self._spent_out():
                    raise BudgetExceeded("budget exceeded")
                if self._reservations == 0 or self._fits(tokens, cost_usd):
                    self._reserved_tokens += tokens
                    self._reserved_usd += cost_usd or 0.0
                    self._reservations += 1
                    return
                if check is not None:
                    check()
                self._lock.wait(0.05)

    def settle(self, tokens: int, cost_usd: float | None, spend: Spend) -> None:
        """Release a reservation made by `reserve` and add the call's real `spend`."""
        with self._lock:
            self._reserved_tokens -= tokens
            self._reserved_usd -= cost_usd or 0.0
            self._reservations -= 1
            self._spend = self._spend + spend
            self._lock.notify_all()

    def _fits(self, tokens: int, cost_usd: float | None) -> bool:
        s = self.spent_before + self._spend
        if self.budget_tokens is not None and (
                s.tokens + self._reserved_tokens + tokens > self.budget_tokens):
            return False
        return not (self.budget_usd is not None and s.cost_usd is not None and
                    s.cost_usd + self._reserved_usd + (cost_usd or 0.0) > self.budget_usd)

    def _spent_out(self) -> bool:
        s = self.spent_before + self._spend
        if self.budget_tokens is not None and s.tokens >= self.budget_tokens:
            return True
        return (self.budget_usd is not None and s.cost_usd is not None
                and s.cost_usd >= self.budget_usd)

    @property
    def totals(self) -> Spend:
        with self._lock:
            return self._spend

    # convenient read-outs for logs and the CLI
    executor_calls = property(lambda self: self.totals.executor_calls)
    prompt_tokens = property(lambda self: self.totals.prompt_tokens)
    completion_tokens = property(lambda self: self.totals.completion_tokens)
    cost_usd = property(lambda self: self.totals.cost_usd)
    cache_hits = property(lambda self: self.totals.cache_hits)
    cache_misses = property(lambda self: self.totals.cache_misses)

    @property
    def exceeded(self) -> bool:
        with self._lock:
            return self._spent_out()

    def check(self) -> None:
        """Raise BudgetExceeded before a new executor call once the budget is spent."""
        if self.exceeded:
            raise BudgetExceeded("budget exceeded")
