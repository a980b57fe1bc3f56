"""The `agent` a workflow's `solver(agent, task)` receives, inside the jail.

Every method is a proxy: the executor call is made by the parent, which holds the keys,
the cache and the meter; this side only validates arguments and shapes replies.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading

from .framing import recv_frame, send_frame
from .program import run_forked_program

JSON_MARKER = "<unparseable JSON>"
MISSING_MARKER = "<missing>"


class ExecutorError(RuntimeError):
    """The executor call failed (backend error or budget); raised inside the workflow."""


class Channel:
    """Request/response over the socket, safe for a workflow that calls from many threads."""

    def __init__(self, sock: socket.socket, job: int) -> None:
        self.sock = sock
        self.job = job
        self.pid = os.getpid()
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._results: dict[int, dict] = {}
        self._reading = False
        self._ids = itertools.count(1)

    def request(self, msg: dict) -> dict:
        if os.getpid() != self.pid:
            raise RuntimeError("agent calls are only allowed from the solver's own process")
        rid = next(self._ids)
        msg["id"] = rid
        msg["job"] = self.job
        with self._send_lock:
            send_frame(self.sock, msg)
        with self._cond:
            while rid not in self._results:
                if self._reading:
                    self._cond.wait()
                    continue
                self._reading = True
                self._cond.release()
                try:
                    frame = recv_frame(self.sock)
                except BaseException:
                    self._cond.acquire()
                    self._reading = False
                    self._cond.notify_all()
                    raise
                self._cond.acquire()
                self._reading = False
                if frame.get("job") == self.job:  # else a late reply meant for an earlier job
                    self._results[frame.get("id")] = frame
                self._cond.notify_all()
            return self._results.pop(rid)


def _messages(prompt, system: str | None) -> list[dict]:
    if isinstance(prompt, str):
        msgs = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, (list, tuple)) and all(
        isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt
    ):
        msgs = [{"role": str(m.get("role", "user")), "content": m["content"]} for m in prompt]
    else:
        raise TypeError("`prompt` must be a string or a list of {'role', 'content'} dicts")
    if system is not None:
        msgs = [{"role": "system", "content": str(system)}] + msgs
    return msgs


def extract_json_object(text: str) -> dict | None:
    """The reply as a JSON object, or the first {...} object inside surrounding prose."""
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            return obj
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch == "{":
            try:
                obj, _ = decoder.raw_decode(text, i)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def strip_fences(code: str) -> str:
    """The contents of the first ``` fenced block (minus its language tag), else `code`."""
    text = code.strip()
    if "```" not in text:
        return text
    blocks = text.split("```")
    body = blocks[1] if len(blocks) >= 2 else text
    first, _, rest = body.partition("\n")
    if first.strip().isidentifier() or first.strip() == "":
        return rest.strip("\n")
    return body.strip("\n")


class Agent:
    """The `agent` a workflow's `solver(agent, task)` receives. Every method is a proxy:
    the executor call is made by the parent, which holds the keys, the cache and the meter.
    """

    def __init__(self, channel: Channel, *, code_timeout_s: float, memory_mb: int,
                 limit: int, max_prompt_chars: int = 1_000_000) -> None:
        self._channel = channel
        self._code_timeout_s = code_timeout_s
        self._memory_mb = memory_mb
        self._limit = limit
        self._max_prompt_chars = max_prompt_chars

    def _complete(self, messages: list[dict], *, n: int, temperature: float,
                  max_tokens: int | None, json_mode: bool) -> list[str]:
        if not isinstance(n, int) or not 1 <= n <= 64:
            raise ValueError(f"`n` must be an integer in [1, 64], but received {n!r}")
        if not 0.0 <= float(temperature) <= 2.0:
            raise ValueError(f"`temperature` must be in [0, 2], but received {temperature!r}")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise ValueError(f"`max_tokens` must be a positive integer, got {max_tokens!r}")
        size = sum(len(m["content"]) for m in messages)
        if size > self._max_prompt_chars:
            raise ValueError(f"prompt of {size} chars exceeds {self._max_prompt_chars}")
        reply = self._channel.request({
            "op": "call", "messages": messages, "n": n, "temperature": float(temperature),
            "max_tokens": max_tokens, "json_mode": bool(json_mode),
        })
        if "error" in reply:
            raise ExecutorError(reply["error"])
        return [str(t) for t in reply["texts"]]

    def llm(self, prompt, temperature: float = 0.0, system: str | None = None,
            max_tokens: int | None = None) -> str:
        """One executor reply to `prompt` (a string, or a list of chat messages)."""
        return self._complete(_messages(prompt, system), n=1, temperature=temperature,
                              max_tokens=max_tokens, json_mode=False)[0]

    def sample(self, prompt, n: int, temperature: float = 0.8, system: str | None = None,
               max_tokens: int | None = None) -> list[str]:
        """`n` independent executor replies (one call; cached per sample)."""
        return self._complete(_messages(prompt, system), n=n, temperature=temperature,
                              max_tokens=max_tokens, json_mode=False)

    def call_json_format_llm(self, messages, temperature: float = 0.0,
                             num_of_response: int = 1, agent_role: str = "helpful assistant",
                             return_dict_keys=("answer",), instructions: str = "",
                             **legacy) -> list[dict]:
        """W4S-compatible: `num_of_response` dicts holding exactly `return_dict_keys`."""
        if "requirements" in legacy and not instructions:
            instructions = str(legacy.pop("requirements"))
        if legacy:
            raise TypeError(f"unexpected arguments: {', '.join(sorted(legacy))}")
        if isinstance(return_dict_keys, str):
            return_dict_keys = [return_dict_keys]
        keys = [str(k) for k in return_dict_keys]
        shape = json.dumps({k: f"<your {k}>" for k in keys})
        system = (
            f"You are a {agent_role}.\n\n{instructions}\n\n"
            f"Reply with exactly one JSON object in this format:\n{shape}\n"
            "Include every key, and nothing outside the JSON object."
        )
        msgs = _messages(messages, None)
        msgs = [{"role": "system", "content": system}] + [m for m in msgs if m["role"] != "system"]
        texts = self._complete(msgs, n=int(num_of_response), temperature=temperature,
                               max_tokens=None, json_mode=True)
        out = []
        for text in texts:
            obj = extract_json_object(text)
            if obj is None:
                out.append({k: JSON_MARKER for k in keys})
            else:
                out.append({k: obj.get(k, MISSING_MARKER) for k in keys})
        return out

    def execute_code(self, code: str) -> str:
        """Run `code` in a nested sandboxed process: str(solution()) if it defines
        `solution`, else its printed output; "Error: <Type: message>" when it fails."""
        code = strip_fences(str(code))
        rec = run_forked_program(None, code, timeout_s=self._code_timeout_s,
                                 memory_mb=self._memory_mb, limit=self._limit,
                                 want_solution=True, close_fds=(self._channel.sock.fileno(),))
        if not rec.get("ok"):
            return rec.get("line") or "Error: program failed"
        if rec.get("result") is not None:
            return rec["result"]
        return rec.get("stdout", "").strip()
