"""A deterministic chat model for tests and dry runs, shipped in the package like dspy's DummyLM.

Replies come from a list (in order) or from a function of the messages, so rollout, reward
and storage code can be exercised without loading any model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from w4s.errors import BackendError
from w4s.protocols import Completion, Message

ReplyFn = Callable[[Sequence[Message]], str]


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """One recorded `complete` call, for tests to inspect what was asked."""

    messages: tuple[Message, ...]
    n: int
    temperature: float
    max_tokens: int
    json_mode: bool
    seed: int | None


class ScriptedChatModel:
    """Returns canned replies: the next `n` entries of `replies`, or `replies(messages)` n times.

    With a list, an exhausted script raises BackendError unless `cycle=True`, because a test
    that makes more calls than it scripted is usually a wrong test. Token counts are rough
    (whitespace-separated words) but deterministic, so budget code can be tested with them.
    `max_tokens` is recorded, not applied: the scripted text is returned as written.
    """

    def __init__(
        self,
        replies: Sequence[str] | ReplyFn,
        *,
        model_id: str = "scripted",
        cycle: bool = False,
    ) -> None:
        if callable(replies):
            self._fn: ReplyFn | None = replies
            self._replies: tuple[str, ...] = ()
        else:
            if isinstance(replies, str):
                raise TypeError("`replies` must be a list of strings, not a single string")
            if not replies:
                raise ValueError("`replies` must hold at least one reply")
            self._fn = None
            self._replies = tuple(replies)
        self.model_id = model_id
        self.cycle = cycle
        self.calls: list[ScriptedCall] = []
        self._next = 0
        self._lock = threading.Lock()

    def complete(
        self,
        messages: Sequence[Message],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 512,
        json_mode: bool = False,
        seed: int | None = None,
    ) -> Completion:
        if n < 1:
            raise ValueError(f"`n` must be at least 1, but received {n!r}")
        call = ScriptedCall(tuple(messages), n, temperature, max_tokens, json_mode, seed)
        with self._lock:  # one lock so concurrent callers each get distinct, ordered replies
            self.calls.append(call)
            if self._fn is not None:
                texts = tuple(self._fn(messages) for _ in range(n))
            else:
                texts = tuple(self._take() for _ in range(n))
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        return Completion(
            texts=texts,
            prompt_tokens=prompt_tokens,
            completion_tokens=sum(len(t.split()) for t in texts),
            model=self.model_id,
        )

    def _take(self) -> str:
        if self._next >= len(self._replies):
            if not self.cycle:
                raise BackendError(
                    f"scripted replies exhausted after {len(self._replies)} replies; "
                    "script more or pass cycle=True",
                    model=self.model_id,
                    infrastructure=True,  # the script's fault, not the workflow's
                )
            self._next = 0
        reply = self._replies[self._next]
        self._next += 1
        return reply

    @property
    def remaining(self) -> int | None:
        """Replies left before exhaustion; None for a function script or a cycling one."""
        if self._fn is not None or self.cycle:
            return None
        with self._lock:
            return len(self._replies) - self._next
