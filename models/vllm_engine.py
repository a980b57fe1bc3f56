"""A ChatModel on an in-process vLLM engine, optionally with a PEFT LoRA adapter.

For a GPU machine that serves the meta-agent without a separate `vllm serve` (`kind: vllm`,
`model:` a local folder or a name the engine can load): `n` samples come from one
`SamplingParams(n=...)` request, so the prompt is prefilled once. vLLM is an optional extra
(`pip install 'w4s[vllm]'`); without it construction fails in one line.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from w4s.errors import BackendError, ConfigError, one_line
from w4s.models.lora_gguf import adapted_model_id, adapter_digest, check_adapter_dir
from w4s.protocols import Completion, Message

MISSING_VLLM = "`kind: vllm` needs `pip install 'w4s[vllm]'` (a GPU machine)"


# the values vLLM accepts for `max_lora_rank` (its default, 16, refuses an r=32 adapter)
LORA_RANK_SLOTS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank_slot(folder: Any) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds the adapter's rank."""
    import json
    from pathlib import Path

    r = int(json.loads((Path(folder) / "adapter_config.json").read_text()).get("r", 16))
    for slot in LORA_RANK_SLOTS:
        if slot >= r:
            return slot
    raise ConfigError(f"adapter rank {r} is above vLLM's largest `max_lora_rank` (512)")


class VLLMChatModel:
    """`LLM(model, enable_lora=True)`; every request carries the adapter's `LoRARequest`.

    vLLM's `LLM` is not thread-safe, so calls are serialised by a lock (the engine batches
    the n samples of one call itself). `json_mode` is ignored: the meta-agent's replies are
    parsed and repaired by w4s either way.
    """

    def __init__(self, *, model: str, adapter: str | None = None, field: str = "adapter",
                 max_new_tokens: int | None = None, **engine_args: Any) -> None:
        try:
            from vllm import LLM, SamplingParams
            from vllm.lora.request import LoRARequest
        except ImportError as e:
            raise ConfigError(MISSING_VLLM) from e
        self._sampling_params = SamplingParams
        self.max_new_tokens = max_new_tokens
        self.model_id = model
        self._lora = None
        if adapter is not None:
            folder = check_adapter_dir(adapter, field=field).resolve()
            digest = adapter_digest(folder)
            # an adapted model's id differs from its base's: caches and records key on it
            self.model_id = adapted_model_id(model, digest)
            self._lora = LoRARequest(f"w4s-lora-{digest[:10]}", 1, str(folder))
        if adapter is not None:
            engine_args.setdefault("max_lora_rank", lora_rank_slot(folder))
        self._llm = LLM(model=model, enable_lora=adapter is not None, **engine_args)
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
        if self.max_new_tokens is not None:
            max_tokens = min(max_tokens, self.max_new_tokens)
        params = self._sampling_params(n=n, temperature=temperature, max_tokens=max_tokens,
                                       seed=seed)
        chat = [{"role": m["role"], "content": m["content"]} for m in messages]
        try:
            with self._lock:
                out = self._llm.chat(chat, params, lora_request=self._lora, use_tqdm=False)[0]
        except Exception as e:  # vLLM raises plain ValueError/RuntimeError for everything
            raise BackendError(f"vLLM generation failed: {type(e).__name__}: {one_line(e)}",
                               model=self.model_id,
                               infrastructure=not isinstance(e, ValueError)) from e
        return Completion(
            texts=tuple(c.text for c in out.outputs),
            prompt_tokens=len(out.prompt_token_ids or ()),
            completion_tokens=sum(len(c.token_ids) for c in out.outputs),
            model=self.model_id,
            extra={"finish_reasons": [c.finish_reason for c in out.outputs]},
        )
