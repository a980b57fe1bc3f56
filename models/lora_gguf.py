"""A PEFT LoRA adapter folder as a GGUF LoRA file that llama.cpp loads beside its base GGUF.

PEFT saves `lora_A` (r x in) and `lora_B` (out x r) per target module under Hugging Face names;
llama.cpp wants the same matrices as f32 under its own tensor names (`blk.0.attn_q.weight.lora_a`)
plus three keys (`general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`). One
subtlety decides whether the output matches peft's: llama.cpp's converter stores Llama's q and k
weights with their rows permuted per head (its RoPE pairs dimensions differently), so `lora_B`
of q_proj and k_proj must get the same row permutation, or the adapter loads and silently
drifts. `lora_A` acts on the input side, which is not permuted.

Everything needed about the base (architecture, heads, shapes) is read from the base GGUF, so
an adapter fitted on another base fails here in one line instead of inside llama.cpp.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any

from w4s.errors import ConfigError, one_line
from w4s.hashing import sha256_text, stream_sha256

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# architectures whose GGUF stores q/k rows permuted per head (convert_hf_to_gguf's LlamaModel)
_PERMUTED_QK = {"llama"}
LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


def adapted_model_id(base_id: str, digest: str) -> str:
    """The id of `base_id` with an adapter: executor caches and outcome records key on it."""
    return f"{base_id}+lora-{digest[:10]}"


def check_adapter_dir(path: str | Path, *, field: str = "adapter") -> Path:
    """The adapter folder, or a one-line ConfigError naming `field` when it is not one."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"`{field}`: adapter folder {str(folder)!r} does not exist")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise ConfigError(
                f"`{field}`: {str(folder)!r} is not a PEFT adapter folder (no {name})"
            )
    return folder


def adapter_digest(path: str | Path) -> str:
    """sha256 of the adapter's config and weights: the identity of what it computes."""
    folder = Path(path)
    h = hashlib.sha256()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        h.update(name.encode())
        with open(folder / name, "rb") as f:
            stream_sha256(f, h)
    return h.hexdigest()


def read_adapter_config(folder: Path, *, field: str = "adapter") -> dict[str, Any]:
    try:
        cfg = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"`{field}`: cannot read {ADAPTER_CONFIG}: {one_line(e)}") from e
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise ConfigError(f"`{field}`: only LoRA adapters are supported, not {cfg['peft_type']!r}")
    if cfg.get("use_dora"):
        raise ConfigError(f"`{field}`: DoRA adapters are not supported on llama.cpp")
    return cfg


def permute_rows(weight: Any, n_head: int) -> Any:
    """llama.cpp's q/k row order: rows viewed as (heads, 2, head_dim/2), middle axes swapped."""
    out = weight.shape[0]
    return (
        weight.reshape(n_head, 2, out // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents() if hasattr(f, "contents") else f.parts[-1][0]


def convert_adapter(
    adapter_dir: str | Path,
    base_gguf: str | Path,
    out_path: str | Path,
    *,
    permute_qk: bool = True,
    field: str = "adapter",
) -> Path:
    """Write `adapter_dir` as a GGUF LoRA for `base_gguf` to `out_path` (atomically).

    `permute_qk=False` skips the q/k permutation; it exists only so a test can show that the
    permutation is needed.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    folder = check_adapter_dir(adapter_dir, field=field)
    cfg = read_adapter_config(folder, field=field)
    reader = gguf.GGUFReader(str(base_gguf))
    arch = str(_field(reader, "general.architecture"))
    n_blocks = int(_field(reader, f"{arch}.block_count"))
    n_head = int(_field(reader, f"{arch}.attention.head_count"))
    n_kv = int(_field(reader, f"{arch}.attention.head_count_kv") or n_head)
    base_shapes = {t.name: [int(d) for d in t.shape] for t in reader.tensors}  # ggml ne order
    arch_enum = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), None)
    if arch_enum is None:
        raise ConfigError(f"`{field}`: the gguf package knows no architecture {arch!r}")
    names = gguf.get_tensor_name_map(arch_enum, n_blocks)

    weights = load_file(str(folder / ADAPTER_WEIGHTS))
    pairs: dict[str, dict[str, Any]] = {}
    for key, value in weights.items():
        m = LORA_KEY.match(key)
        if m is None:  # e.g. modules_to_save, embedding LoRA, lora bias
            raise ConfigError(f"`{field}`: tensor {key!r} is not supported on llama.cpp")
        pairs.setdefault(m["module"], {})[m["ab"]] = value

    r_default = int(cfg.get("r", 8))
    alpha_default = float(cfg.get("lora_alpha", r_default))
    rank_pattern = cfg.get("rank_pattern") or {}
    alpha_pattern = cfg.get("alpha_pattern") or {}
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha_default)
    try:
        for module, ab in sorted(pairs.items()):
            if set(ab) != {"A", "B"}:
                raise ConfigError(f"`{field}`: {module} lacks its lora_A or lora_B")
            gguf_name = names.get_name(f"{module}.weight", try_suffixes=(".weight",))
            if gguf_name is None or gguf_name not in base_shapes:
                raise ConfigError(
                    f"`{field}`: the adapter was fitted on another base: "
                    f"{module} has no counterpart in {Path(base_gguf).name}"
                )
            a = np.ascontiguousarray(ab["A"], dtype=np.float32)
            b = np.ascontiguousarray(ab["B"], dtype=np.float32)
            in_dim, out_dim = base_shapes[gguf_name][:2]
            if a.shape[1] != in_dim or b.shape[0] != out_dim or a.shape[0] != b.shape[1]:
                raise ConfigError(
                    f"`{field}`: the adapter was fitted on another base: {module} is "
                    f"{b.shape[0]}x{a.shape[1]}, {Path(base_gguf).name} has {out_dim}x{in_dim}"
                )
            # llama.cpp scales by alpha / rank with one global alpha; fold per-module patterns
            # and rsLoRA's alpha / sqrt(r) into B so the product matches peft's scaling
            rank = a.shape[0]
            short = module.rsplit(".", 1)[-1]
            alpha = float(_pattern(alpha_pattern, module, short, alpha_default))
            want = alpha / (math.sqrt(rank) if cfg.get("use_rslora") else rank)
            got = alpha_default / rank
            if not math.isclose(want, got):
                b = b * np.float32(want / got)
            if _pattern(rank_pattern, module, short, r_default) != rank:
                log.debug("%s: rank %d from its weights", module, rank)
            if permute_qk and arch in _PERMUTED_QK:
                if gguf_name.endswith("attn_q.weight"):
                    b = np.ascontiguousarray(permute_rows(b, n_head))
                elif gguf_name.endswith("attn_k.weight"):
                    b = np.ascontiguousarray(permute_rows(b, n_kv))
            writer.add_tensor(f"{gguf_name}.lora_a", a)
            writer.add_tensor(f"{gguf_name}.lora_b", b)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _pattern(pattern: dict[str, Any], module: str, short: str, default: Any) -> Any:
    """peft's rank/alpha pattern lookup: a key matches the module's full name or its suffix."""
    for key, value in pattern.items():
        if module == key or module.endswith(f".{key}") or re.fullmatch(key, module) or key == short:
            return value
    return default


def gguf_adapter_for(
    adapter_dir: str | Path, base_gguf: str | Path, *, field: str = "adapter"
) -> tuple[Path, str]:
    """The cached GGUF LoRA of `adapter_dir` for `base_gguf` (converting once) and the
    adapter's digest. The cache file is named by the adapter's content and the base's
    name and size, so a refitted adapter in the same folder is converted again."""
    from w4s.paths import models_cache_dir  # platformdirs: not on the fit's GPU machine

    folder = check_adapter_dir(adapter_dir, field=field)
    digest = adapter_digest(folder)
    base = Path(base_gguf)
    base_id = sha256_text(f"{base.name}:{base.stat().st_size}")[:8]
    out = models_cache_dir() / "lora" / f"{digest[:16]}-{base_id}.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        convert_adapter(folder, base, out, field=field)
        log.info("converted adapter %s to %s", folder, out)
    return out, digest
