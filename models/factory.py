"""Build a ChatModel from a BackendConfig, once per process per config.

Prefect runs many tasks in one process; loading a local model per task would cost seconds
and gigabytes each time, so built models are cached by the config's content. Secrets are
never part of the key: the key holds the env var's name, not its value.

Every built model has an `identity`: what answers its calls, beyond its name. The sandbox
keys its executor-call cache and recorded outcomes on it, so the same model name behind
another server, or another local model file under the same name, reuses nothing: an
HTTP model's is its id at its base URL; a local model's, its id and a digest of its files
(`w4s.hashing.local_model_identity`).
"""

from __future__ import annotations

import threading
from pathlib import Path

from w4s.config import BackendConfig
from w4s.embedded_model import embedded_gguf_path
from w4s.errors import ConfigError
from w4s.hashing import local_model_identity
from w4s.protocols import ChatModel

_cache: dict[str, ChatModel] = {}
_cache_lock = threading.Lock()
_key_locks: dict[str, threading.Lock] = {}


def build_chat_model(
    cfg: BackendConfig, *, role: str | None = None, cache: bool = True
) -> ChatModel:
    """The model `cfg` describes; `role` ("executor", "meta_agent") names fields in errors.

    Equal configs share one instance (also across roles), including a `scripted` model's
    position in its replies. `cache=False` builds a fresh one. `adapter` is part of the key,
    and an adapted model never wraps the weights an unadapted config shares, so a
    meta-agent's adapter cannot reach an executor built from the same base.
    """
    if not cache:
        model = _build(cfg, role)
        _set_identity(cfg, model)
        return model
    key = cfg.model_dump_json()
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:  # two threads asking for the same model load it once
        with _cache_lock:
            if key in _cache:
                return _cache[key]
        model = _build(cfg, role)
        _set_identity(cfg, model)
        with _cache_lock:
            _cache[key] = model
    return model


def _set_identity(cfg: BackendConfig, model: ChatModel) -> None:
    """`model.identity` for the backends that do not define their own (see the docstring)."""
    if getattr(model, "identity", None):
        return
    path: Path | None = None
    if cfg.kind == "embedded":
        path = embedded_gguf_path()
    elif cfg.kind in ("transformers", "vllm"):
        candidate = Path(cfg.model or "").expanduser()
        path = candidate if cfg.model and candidate.exists() else None
    identity = model.model_id
    if path is not None:
        identity += "@" + local_model_identity(path)
    try:
        model.identity = identity  # type: ignore[attr-defined]
    except AttributeError:
        pass  # a model class with slots keys on its name alone


def clear_model_cache() -> None:
    """Forget every built model (tests, or to free memory between runs)."""
    from w4s.models.embedded import forget_embedded_weights

    with _cache_lock:
        _cache.clear()
        _key_locks.clear()
    forget_embedded_weights()


def _build(cfg: BackendConfig, role: str | None) -> ChatModel:
    prefix = f"{role}." if role else ""
    if cfg.kind == "scripted":
        from w4s.models.scripted import ScriptedChatModel

        if not cfg.replies:
            raise ConfigError(f"`{prefix}replies` must hold at least one reply for kind 'scripted'")
        # a configured run makes an unknown number of calls, so the script cycles
        return ScriptedChatModel(cfg.replies, model_id=cfg.model or "scripted", cycle=True)
    if cfg.kind == "openai":
        from w4s.models.openai_compat import OpenAICompatChatModel, resolve_api_key

        return OpenAICompatChatModel(
            model=cfg.model or "",
            base_url=cfg.base_url,
            api_key=resolve_api_key(cfg.api_key_env, field=f"{prefix}api_key_env"),
            api_key_env=cfg.api_key_env,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            max_new_tokens=cfg.max_new_tokens,
            transport=cfg.transport,
            adapter=cfg.adapter,
            adapter_field=f"{prefix}adapter",
        )
    if cfg.kind == "embedded":
        from w4s.models.embedded import load_embedded_chat_model

        return load_embedded_chat_model(
            device=cfg.device,
            max_new_tokens=cfg.max_new_tokens,
            adapter=cfg.adapter,
            field=f"{prefix}adapter",
        )
    if cfg.kind == "transformers":
        from w4s.models.transformers_local import TransformersChatModel

        path = Path(cfg.model or "").expanduser()
        if not path.is_dir():
            raise ConfigError(f"`{prefix}model`: folder {str(path)!r} does not exist")
        if cfg.gguf_file and not (path / cfg.gguf_file).is_file():
            raise ConfigError(f"`{prefix}gguf_file`: {cfg.gguf_file!r} is not a file in {path}")
        return TransformersChatModel.from_path(
            path,
            gguf_file=cfg.gguf_file,
            device=cfg.device,
            max_new_tokens=cfg.max_new_tokens,
            field_prefix=prefix,
            adapter=cfg.adapter,
        )
    if cfg.kind == "llamacpp":
        from w4s.models.llamacpp import LlamaCppChatModel

        return LlamaCppChatModel.from_config(cfg, field_prefix=prefix)
    if cfg.kind == "vllm":
        from w4s.models.vllm_engine import VLLMChatModel

        return VLLMChatModel(model=cfg.model or "", adapter=cfg.adapter,
                             field=f"{prefix}adapter", max_new_tokens=cfg.max_new_tokens)
    raise ConfigError(f"`{prefix}kind`: unknown backend {cfg.kind!r}")  # pydantic rejects first
