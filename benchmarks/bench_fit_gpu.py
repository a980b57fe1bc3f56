"""Fit throughput on a GPU at the paper's scale: the Qwen2.5-7B-Instruct architecture.

A randomly initialised model with Qwen2.5-7B-Instruct's shape (no download: the weights do
not change the speed) in bf16, LoRA r=16 on the attention projections, gradient
checkpointing, the weighted RLAO loss of models/rlao.py, on synthetic conversations of
2k-6k tokens (the last quarter of each the completion). Three ways over the same samples,
in one process, best of `--repeats`:

- packed: padding-free rows of up to `--row-tokens`, rows batched up to `--batch-tokens`
  (the trainer's way);
- padded: every sample padded to the longest length (6k), as the authors' code pads;
- per-sample: one padded sample per forward pass, as the authors' loss loops.

Reports tokens/s (real tokens only), peak memory, the ratios against packed, and MFU: the
useful FLOPs of LoRA training per real token (forward and input-gradient backward of the
frozen weights, 4 x matmul parameters, the LM head on completion tokens, causal attention;
no recomputation counted) over the GPU's dense bf16 peak. One command, a few minutes:

    python benchmarks/bench_fit_gpu.py [--json out.json]      # on the GPU machine
    python benchmarks/bench_fit_gpu.py --tiny                 # a smoke test on a CPU

It needs only torch, transformers and peft: models/rlao.py is loaded from its file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# dense bf16 peak FLOP/s, by a substring of torch.cuda.get_device_name()
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}
QWEN25_7B = {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
             "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
             "max_position_embeddings": 32768, "rope_theta": 1e6, "rms_norm_eps": 1e-6,
             "tie_word_embeddings": False}
TINY = {**QWEN25_7B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024}


def load_rlao() -> Any:
    """models/rlao.py without the `models` package (whose backends need more libraries)."""
    spec = importlib.util.spec_from_file_location("w4s_rlao", ROOT / "models" / "rlao.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def build(shape: dict[str, Any], device: str, dtype: Any, rlao: Any) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(Qwen2Config(**shape))
    finally:
        torch.set_default_dtype(previous)
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    config = rlao.RLAOConfig(lora_r=16, lora_alpha=32, lora_dropout=0.0,
                             target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    return rlao.add_lora(model, config)


def samples(rlao: Any, n: int, lo: int, hi: int, vocab: int) -> list[Any]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        length = rng.randint(lo, hi)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        n_prompt = length - length // 4
        out.append(rlao.Sample(ids, [rlao.IGNORE] * n_prompt + ids[n_prompt:],
                               rng.choice([12.18, 3.49, 1.0, 0.78])))
    return out


def useful_flops(shape: dict[str, Any], batch: list[Any]) -> float:
    """FLOPs of one LoRA training step's useful work over these samples (see the header)."""
    d, f, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = d * shape["num_key_value_heads"] // shape["num_attention_heads"]
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * f  # q, o; k, v; gate, up, down
    tokens = sum(len(s.input_ids) for s in batch)
    completion = sum(s.completion_tokens for s in batch)
    attention = sum(2 * len(s.input_ids) ** 2 * d * layers for s in batch)  # causal forward
    return (4 * per_layer * layers * tokens + 4 * shape["vocab_size"] * d * completion
            + 3 * attention)


def measure(model: Any, rlao: Any, data: list[Any], *, row_tokens: int, batch_tokens: int,
            repeats: int, device: str) -> dict[str, Any]:
    import torch

    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    lengths = [len(s.input_ids) for s in data]
    longest = max(lengths)
    rows = rlao.pack(lengths, row_tokens)
    per_batch = max(1, batch_tokens // row_tokens)
    padded_per_batch = max(1, batch_tokens // longest)
    ways = {
        "packed": [rlao.collate_packed_rows([[data[i] for i in r] for r in rows[k:k + per_batch]])
                   for k in range(0, len(rows), per_batch)],
        "padded": [rlao.collate_padded(data[k:k + padded_per_batch], 0, longest)
                   for k in range(0, len(data), padded_per_batch)],
        "per_sample": [rlao.collate_padded([s], 0, longest) for s in data],
    }

    def run(batches: list[dict[str, Any]]) -> float:
        sync()
        start = time.perf_counter()
        for batch in batches:
            model.zero_grad(set_to_none=True)
            rlao.forward_loss(model, batch, len(data)).backward()
        sync()
        return time.perf_counter() - start

    real = sum(lengths)
    out: dict[str, Any] = {}
    for name, batches in ways.items():
        run(batches[:1])  # warm-up: kernels and allocator
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        best = min(run(batches) for _ in range(repeats))
        out[name] = {"seconds": round(best, 3), "tokens_per_s": round(real / best, 1),
                     "forward_passes": len(batches),
                     "peak_memory_gib": (round(torch.cuda.max_memory_allocated() / 2**30, 2)
                                         if cuda else None)}
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a 2-layer model: a CPU smoke test")
    p.add_argument("--samples", type=int, default=24)
    p.add_argument("--min-len", type=int, default=2048)
    p.add_argument("--max-len", type=int, default=6144)
    p.add_argument("--row-tokens", type=int, default=8192)
    p.add_argument("--batch-tokens", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)

    rlao = load_rlao()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    shape = TINY if args.tiny else QWEN25_7B
    if args.tiny:
        args.samples, args.min_len, args.max_len = min(args.samples, 8), 64, 192
        args.row_tokens, args.batch_tokens = 256, 512
    t0 = time.perf_counter()
    model = build(shape, device, dtype, rlao)
    built = time.perf_counter() - t0
    data = samples(rlao, args.samples, args.min_len, args.max_len, shape["vocab_size"])
    ways = measure(model, rlao, data, row_tokens=args.row_tokens,
                   batch_tokens=args.batch_tokens, repeats=args.repeats, device=device)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    flops = useful_flops(shape, data)
    for way in ways.values():
        achieved = flops / way["seconds"]
        way["tflops"] = round(achieved / 1e12, 1)
        way["mfu"] = round(achieved / peak, 4) if peak else None
    packed = ways["packed"]["tokens_per_s"]
    result = {
        "device": name, "dtype": str(dtype).removeprefix("torch."),
        "model": "tiny Qwen2 (2 layers)" if args.tiny else "Qwen2.5-7B-Instruct shape, random",
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "build_seconds": round(built, 1), "samples": len(data),
        "tokens": sum(len(s.input_ids) for s in data), "lengths": [args.min_len, args.max_len],
        "row_tokens": args.row_tokens, "batch_tokens": args.batch_tokens, "ways": ways,
        "ratio_packed_vs_padded": round(packed / ways["padded"]["tokens_per_s"], 2),
        "ratio_packed_vs_per_sample": round(packed / ways["per_sample"]["tokens_per_s"], 2),
        "versions": {"torch": torch.__version__},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
