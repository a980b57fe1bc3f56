"""Protocols the backends in models/ implement; the core depends only on these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypedDict, runtime_checkable


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True, slots=True)
class Completion:
    """n sampled replies to one conversation, with the token counts that priced them."""

    texts: tuple[str, ...]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    cached: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""


@runtime_checkable
class ChatModel(Protocol):
    """A chat-completion backend, used directly in both roles: as the executor (the sandbox
    harness serves workflows' calls with it) and as the meta-agent (`w4s.mdp` samples
    candidate workflows and repairs from it with one `complete(n=m)` call per state).

    Implementations must be thread-safe: the harness calls `complete` from many threads
    at once, and a local backend may batch those concurrent calls into one forward pass.
    Failures raise `w4s.errors.BackendError` with `infrastructure` set: False only when the
    request itself was rejected (e.g. a prompt too long), so a retry cannot help.
    """

    model_id: str

    def complete(
        self,
        messages: Sequence[Message],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 512,
        json_mode: bool = False,
        seed: int | None = None,
    ) -> Completion: ...
