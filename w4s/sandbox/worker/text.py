"""Bounded text: what leaves a job (answers, output, tracebacks) and what goes into prompts.

One `clip` for the whole project; w4s core imports it from here (this package is standard
library only, so the dependency can only point this way).
"""

from __future__ import annotations

import traceback


def clip(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters, saying how many were dropped."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 40)] + f"... [{len(text) - limit + 40} chars truncated]"


def error_text(exc: BaseException, limit: int, *, skip_frames: int = 1) -> str:
    """Traceback from the first frame of untrusted code on, with its source lines."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    if len(text) > limit:  # keep the end: the failing line and the exception
        text = "... [traceback truncated]\n" + text[-(limit - 30):]
    return text.rstrip()


def one_line_error(exc: BaseException) -> str:
    """"Error: Type: first line of the message", as `execute_code` returns failures."""
    msg = str(exc).strip().splitlines()
    return f"Error: {type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ").rstrip()
