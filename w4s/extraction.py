"""Turn a meta-agent reply into an action: its analysis and the workflow code."""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)
_DEFINES_SOLVER = re.compile(r"^\s*def\s+solver\s*\(", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Action:
    """A parsed reply. `code` is None when the reply held no usable workflow; `error` says why."""

    analysis: str
    code: str | None
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.code is not None


def parse_action(reply: str) -> Action:
    """The last closed ```python block defining `solver` is the code; text before it, analysis."""
    blocks = list(_FENCE.finditer(reply))
    if not blocks:
        return Action(reply.strip(), None, "reply has no closed ```python code block")
    for block in reversed(blocks):
        if _DEFINES_SOLVER.search(block.group(1)):
            analysis = reply[: block.start()].strip()
            return Action(analysis, block.group(1).strip("\n") + "\n")
    return Action(reply.strip(), None, "no code block in the reply defines `solver(agent, task)`")
