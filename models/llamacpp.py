"""A GGUF model served in-process by llama.cpp (the `xllamacpp` wheel): several times faster on
CPU than transformers for the embedded SmolLM2, with no dequantized copy on disk.

`xllamacpp.Server` runs llama.cpp's server loop in this process (it also binds a port on
127.0.0.1, unused here); `handle_chat_completions` takes and returns OpenAI-shaped dicts and
blocks the calling thread. Concurrent callers land in separate slots that llama.cpp decodes
together (continuous batching), so this backend needs no batching code of its own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from w4s.embedded_model import EMBEDDED_LLAMACPP_ID, EMBEDDED_MODEL_ID, embedded_gguf_path
from w4s.errors import BackendError, ConfigError, one_line
from w4s.hashing import local_model_identity
from w4s.models.lora_gguf import adapted_model_id, gguf_adapter_for
from w4s.protocols import Completion, Message

if TYPE_CHECKING:
    from w4s.config import BackendConfig

log = logging.getLogger(__name__)

_INSTALL_HINT = "pip install xllamacpp"


_ALONE_RETRY_DELAYS_S = (0.05, 0.25, 1.0)


class _ContextFull(Exception):
    """llama.cpp found no room in the KV cache for the request (alone, or beside others)."""


class _SharedOrAlone:
    """Requests run side by side (shared) or one alone (exclusive); a waiting exclusive
    request holds new shared ones back, so it is not starved under load."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = self._waiting = 0
        self._alone = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._alone and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._alone and not self._shared)
            self._waiting -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()


class LlamaCppChatModel:
    """ChatModel over an in-process llama.cpp server; thread-safe.

    `n > 1` is one request with llama.cpp's own `n` (up to `n_parallel` choices a request):
    the prompt is read once and its cache copied to the choices' slots, which decode in one
    batch. Its `usage` counts the first choice only, so every choice's tokens are counted from
    its per-token log-probabilities; the prompt counts once, as it was read once. Seeded
    samples are reproducible only when no other call overlaps them: the batch a row shares
    changes its numerics.
    `json_mode` uses llama.cpp's JSON grammar, so replies are valid JSON unless cut by
    `max_tokens` (transformers: no grammar).
    One unified KV cache of `n_ctx` tokens is shared by `n_parallel` slots, so one long
    prompt may use the whole context; a request that finds the cache full of the others'
    tokens (llama.cpp's 500 "Context size has been exceeded") is retried alone, and only a
    request too long on its own is the caller's fault.
    """

    def __init__(
        self,
        gguf_path: str | Path,
        *,
        model_id: str | None = None,
        max_new_tokens: int = 512,
        n_parallel: int = 8,
        n_ctx: int = 0,
        n_threads: int | None = None,
        lora_path: str | Path | None = None,
        lora_scale: float = 1.0,
    ) -> None:
        try:
            import xllamacpp
        except ImportError as e:
            raise ConfigError(
                f"`kind: llamacpp` needs the package 'xllamacpp': {_INSTALL_HINT}"
            ) from e
        path = Path(gguf_path)
        self.model_id = model_id or path.stem
        # what answers: this exact file (the cache keys on it, not on the name)
        self.identity = f"{self.model_id}@{local_model_identity(path)}"
        self.max_new_tokens = max_new_tokens
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_parallel = n_parallel
        params.n_ctx = n_ctx  # 0: the model's own context length
        params.kv_unified = True
        if lora_path is not None:  # a GGUF LoRA (models.lora_gguf), applied to every request
            params.lora_adapters = [
                xllamacpp.CommonAdapterLoraInfo(path=str(lora_path), scale=float(lora_scale))
            ]
        params.warmup = False
        params.verbosity = -1  # llama.cpp logs every request to stderr otherwise
        threads = n_threads or os.cpu_count() or 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        start = time.perf_counter()
        try:
            self._server = xllamacpp.Server(params)
        except (RuntimeError, ValueError) as e:
            raise BackendError(
                f"llama.cpp cannot load {str(path)!r}: {e}", model=self.model_id,
                infrastructure=True,
            ) from e
        log.info("llama.cpp loaded %s in %.2fs", path.name, time.perf_counter() - start)
        self.n_parallel = n_parallel
        self._kv = _SharedOrAlone()

    @classmethod
    def from_config(
        cls, cfg: BackendConfig, *, field_prefix: str = "", **options: Any
    ) -> LlamaCppChatModel:
        """`model` is a GGUF path, a folder with `gguf_file`, or "smollm2-135m-instruct";
        `adapter` a PEFT LoRA folder, converted once to a cached GGUF LoRA; `options` go to
        the constructor (n_parallel, n_ctx, n_threads, lora_scale)."""
        if cfg.model == EMBEDDED_MODEL_ID:
            path = embedded_gguf_path()
            model_id = EMBEDDED_LLAMACPP_ID  # not the transformers copy's cache entries
        else:
            path = Path(cfg.model or "").expanduser()
            if cfg.gguf_file:
                path = path / cfg.gguf_file
            if not path.is_file():
                field = "gguf_file" if cfg.gguf_file else "model"
                raise ConfigError(
                    f"`{field_prefix}{field}`: GGUF file {str(path)!r} does not exist"
                )
            model_id = path.stem
        if cfg.adapter:
            lora, digest = gguf_adapter_for(cfg.adapter, path, field=f"{field_prefix}adapter")
            options.setdefault("lora_path", lora)
            # an adapted model answers differently: its id keeps caches and records apart
            model_id = adapted_model_id(model_id, digest)
        return cls(path, model_id=model_id, max_new_tokens=cfg.max_new_tokens, **options)

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
        request: dict[str, Any] = {
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": min(max_tokens, self.max_new_tokens),
            "temperature": temperature,
        }
        if json_mode:
            request["response_format"] = {"type": "json_object"}
        texts: list[str] = []
        prompt_tokens = completion_tokens = 0
        for start in range(0, n, self.n_parallel):  # llama.cpp wants a slot per choice
            size = min(self.n_parallel, n - start)
            chunk = {**request, "n": size, "logprobs": True} if size > 1 else request
            got, p, c = self._one(chunk, None if seed is None else seed + start)
            texts += got
            prompt_tokens += p
            completion_tokens += c
        return Completion(texts=tuple(texts), prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens, model=self.model_id)

    def _one(self, request: dict[str, Any], seed: int | None) -> tuple[list[str], int, int]:
        """One request. The slots share one KV cache, so a request may find the context full
        of other requests' tokens: it is then retried alone, and only a request that does not
        fit on its own is the caller's fault."""
        if seed is not None:
            request = {**request, "seed": seed}
        try:
            with self._kv.shared():
                return self._send(request)
        except _ContextFull:
            with self._kv.alone():
                # llama.cpp frees a failed request's cache on its own loop, a moment later
                for delay in _ALONE_RETRY_DELAYS_S:
                    try:
                        return self._send(request)
                    except _ContextFull as e:
                        last = e
                    time.sleep(delay)
                raise BackendError(f"llama.cpp error: {last}", model=self.model_id,
                                   infrastructure=False) from None

    def _send(self, request: dict[str, Any]) -> tuple[list[str], int, int]:
        try:
            resp = self._server.handle_chat_completions(request)
        except ValueError as e:  # the request's shape (e.g. its response_format)
            raise BackendError(f"llama.cpp rejected the request: {one_line(e)}",
                               model=self.model_id, infrastructure=False) from e
        except RuntimeError as e:
            raise BackendError(f"llama.cpp failed: {one_line(e)}", model=self.model_id,
                               infrastructure=True) from e
        if "error" in resp:
            # llama.cpp's server error: {"code": 400, "message": ..., "type": ...}; a 4xx is
            # the request's fault (e.g. a prompt beyond the context), anything else ours
            err = resp["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            code = err.get("code") if isinstance(err, dict) else None
            rejected = isinstance(code, int) and 400 <= code < 500
            if code == 500 and "context size has been exceeded" in str(msg).lower():
                raise _ContextFull(one_line(str(msg)))  # the shared cache filled up mid-way
            raise BackendError(f"llama.cpp error: {one_line(str(msg))}", model=self.model_id,
                               infrastructure=not rejected)
        usage = resp.get("usage") or {}
        choices = sorted(resp.get("choices") or [], key=lambda c: c.get("index", 0))
        want = request.get("n", 1)
        if len(choices) != want:
            raise BackendError(f"llama.cpp returned {len(choices)} choice(s) for n={want}",
                               model=self.model_id, infrastructure=True)
        texts = [c["message"].get("content") or "" for c in choices]
        if want == 1:
            return texts, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        # llama.cpp's usage for n > 1 is the first choice's: count each from its log-probs
        completion = sum(len((c.get("logprobs") or {}).get("content") or []) for c in choices)
        return texts, int(usage.get("prompt_tokens", 0)), completion

    def close(self) -> None:
        """Nothing to stop: the llama.cpp server stops when this object is freed."""
