"""Fit throughput: padding-free packing vs max-length padding vs one forward per sample.

The same synthetic samples (random ids, lengths spread over the range, the last quarter of
each the completion) go through a LoRA forward + backward of the weighted loss three ways,
in one process: packed rows of up to the max length, several rows per forward pass up to a
token budget (models/rlao.py); the same as one long packed row per budget; batches padded to the
max length, as the authors' code pads; and each sample alone, padded to the max length,
as their loss loops. Tokens/s counts real tokens only, so padding shows as lost speed.
All three use the same loss (the LM head on completion positions only): the ratios
measure the batching alone.

With `--base`, the CPU's defaults too: bf16 autocast and rows of the longest state laid out
shared, against fp32 in rows of 4096 (the earlier default), on states shaped like the
learning-signal experiment's (a prompt of 850 tokens, 3 candidates of 210).

Prefix sharing (models/packing.py): W4S-shaped states, by default 2 states of a 4096-token
prompt with 5 candidates of 500 tokens, each candidate packed with its own copy of the
prompt (unshared) or one prompt per state under the block mask (shared). Tokens/s counts the
samples' own tokens for both, so the ratio is the speedup; `computed_tokens` is what the
forward passes ran over.

    .venv/bin/python benchmarks/bench_fit.py [--base embedded|PATH] [--samples N]
        [--states N --prompt P --completion C --candidates M]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_fit_gpu import state_samples  # noqa: E402
from w4s.models import packing, rlao  # noqa: E402
from w4s.trainer_config import TrainerConfig  # noqa: E402


def tiny_model(vocab: int = 1024):
    """The tests' tiny random Llama (2 layers, hidden 64) with a 1k vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, vocab_size=vocab,
                         tie_word_embeddings=True, max_position_embeddings=8192)
    return LlamaForCausalLM(config), "tiny-llama-1k"


def synthetic_samples(n: int, min_len: int, max_len: int, vocab: int, seed: int = 0):
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        n_prompt = length - max(1, length // 4)
        samples.append(rlao.Sample(ids, [rlao.IGNORE] * n_prompt + ids[n_prompt:],
                                   rng.choice([12.18, 3.49, 1.0, 0.78])))
    return samples


def _run(model, batches, n_samples: int) -> float:
    start = time.perf_counter()
    for batch in batches:
        model.zero_grad(set_to_none=True)
        rlao.forward_loss(model, batch, n_samples).backward()
    return time.perf_counter() - start


def measure(model, samples, max_len: int, batch_tokens: int, repeats: int) -> dict:
    real = sum(len(s.input_ids) for s in samples)
    lengths = [len(s.input_ids) for s in samples]
    rows = rlao.pack(lengths, max_len)  # the trainer's default: rows of up to max_seq_len
    per_row = max(1, batch_tokens // max_len)
    groups = [rows[i : i + per_row] for i in range(0, len(rows), per_row)]
    ways = {
        "packed": [rlao.collate_packed_rows([[samples[i] for i in r] for r in g]) for g in groups],
        "packed_one_long_row": [rlao.collate_packed([samples[i] for i in r])
                                for r in rlao.pack(lengths, batch_tokens)],
        "padded_max_length": [rlao.collate_padded(samples[i:i + per_row], 0, max_len)
                              for i in range(0, len(samples), per_row)],
        "per_sample_forward": [rlao.collate_padded([s], 0, max_len) for s in samples],
    }
    for batches in ways.values():  # warm-up: first calls of each shape are slower
        _run(model, batches[:1], len(samples))
    result = {"samples": len(samples), "real_tokens": real, "max_len": max_len,
              "batch_tokens": batch_tokens, "ways": {}}
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(repeats):  # round-robin, best of: other load on the machine hits all ways
        for name, batches in ways.items():
            best[name] = min(best[name], _run(model, batches, len(samples)))
    for name, batches in ways.items():
        result["ways"][name] = {"seconds": best[name], "tokens_per_s": real / best[name],
                                "batches": len(batches)}
    packed = result["ways"]["packed"]["tokens_per_s"]
    result["ratio_one_long_row_vs_padded"] = (
        result["ways"]["packed_one_long_row"]["tokens_per_s"]
        / result["ways"]["padded_max_length"]["tokens_per_s"])
    result["ratio_packed_vs_padded"] = packed / result["ways"]["padded_max_length"]["tokens_per_s"]
    result["ratio_packed_vs_per_sample"] = (
        packed / result["ways"]["per_sample_forward"]["tokens_per_s"])
    return result


def measure_sharing(model, samples, row_tokens: int, repeats: int) -> dict:
    """Shared vs unshared rows of up to row_tokens, one row per forward pass."""
    lengths = [len(s.input_ids) for s in samples]
    ways = {
        "unshared": [rlao.collate_packed_rows([[samples[i] for i in r]])
                     for r in rlao.pack(lengths, row_tokens)],
        "shared": [packing.collate_shared_rows([[samples[i] for i in r]])
                   for r in packing.pack_shared(samples, row_tokens)],
    }
    for batches in ways.values():
        _run(model, batches[:1], len(samples))
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(repeats):
        for name, batches in ways.items():
            best[name] = min(best[name], _run(model, batches, len(samples)))
    real = sum(lengths)
    computed = {"unshared": real,
                "shared": sum(packing.computed_tokens(b) for b in ways["shared"])}
    result = {"samples": len(samples), "tokens": real, "row_tokens": row_tokens, "ways": {
        name: {"seconds": best[name], "tokens_per_s": real / best[name],
               "computed_tokens": computed[name], "forward_passes": len(ways[name])}
        for name in ways}}
    result["token_ratio_unshared_vs_shared"] = real / computed["shared"]
    result["speedup_shared_vs_unshared"] = best["unshared"] / best["shared"]
    return result


def measure_cpu_defaults(model, samples, repeats: int) -> dict:
    """The CPU's defaults against the earlier ones, on shared rows: fp32 in rows of 4096
    (min(batch_tokens, max_seq_len)) vs bf16 autocast and/or rows of the longest state."""
    import torch

    config = TrainerConfig()
    rows = {"4096": 4096, "longest_state": rlao.cpu_row_tokens(samples, config)}
    batches = {k: [packing.collate_shared_rows([[samples[i] for i in r]])
                   for r in packing.pack_shared(samples, n, packing.grouped_order(samples, 0))]
               for k, n in rows.items()}
    ways = {"fp32_rows_4096": ("4096", False), "bf16_rows_4096": ("4096", True),
            "fp32_rows_longest_state": ("longest_state", False),
            "bf16_rows_longest_state": ("longest_state", True)}

    def run(row: str, bf16: bool, limit: int | None = None) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return _run(model, batches[row][:limit], len(samples))

    for row, bf16 in ways.values():
        run(row, bf16, 1)  # warm-up
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(repeats):
        for name, (row, bf16) in ways.items():
            best[name] = min(best[name], run(row, bf16))
    real = sum(len(s.input_ids) for s in samples)
    before = best["fp32_rows_4096"]
    return {"samples": len(samples), "tokens": real, "row_tokens": rows,
            "cpu_has_bf16_matmul": rlao.cpu_has_bf16_matmul(),
            "ways": {k: {"seconds": v, "tokens_per_s": real / v, "speedup": before / v}
                     for k, v in best.items()}}


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", help="also measure `embedded` or a local Hugging Face folder")
    p.add_argument("--samples", type=int, default=48)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--states", type=int, default=2, help="states, shared vs unshared")
    p.add_argument("--prompt", type=int, default=4096, help="prompt tokens of a state")
    p.add_argument("--completion", type=int, default=500, help="tokens of each candidate")
    p.add_argument("--candidates", type=int, default=5, help="candidates per state (m)")
    p.add_argument("--cpu-states", type=int, default=4,
                   help="states of the CPU-defaults measure (with --base)")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    config = TrainerConfig(lora_dropout=0.0)
    model, name = tiny_model()
    model = rlao.add_lora(model, config)
    runs = {name: measure(model, synthetic_samples(args.samples, 32, 512, 1024), 512, 2048,
                          args.repeats)}
    states = state_samples(rlao, args.states, args.prompt, args.completion, args.candidates,
                           1024)
    state_len = args.prompt + args.completion
    # rows of one shared state; unshared rows of as many whole candidates as fit
    row_tokens = max(state_len, args.prompt + args.candidates * (args.completion + 1))
    sharing = {f"{name} sharing": measure_sharing(model, states, row_tokens, args.repeats)}
    if args.base:
        from w4s.tasks.fit import resolve_base

        folder, base_id = resolve_base(args.base)
        base, _ = rlao.load_base(folder)
        n = max(4, args.samples // 4)
        lora = rlao.add_lora(base, config)
        runs[base_id] = measure(lora, synthetic_samples(n, 32, 256, base.config.vocab_size),
                                256, 1024, args.repeats)
        # the learning signal's states: a prompt of ~850 tokens, ~3 valid candidates of ~210
        shaped = state_samples(rlao, args.cpu_states, 850, 210, 3, base.config.vocab_size)
        cpu = measure_cpu_defaults(lora, shaped, args.repeats)
    print(f"torch threads {torch.get_num_threads()}")
    for name, r in runs.items():
        w = r["ways"]
        print(f"{name}: {r['samples']} samples, {r['real_tokens']} tokens, max_len "
              f"{r['max_len']}: packed {w['packed']['tokens_per_s']:,.0f} tok/s, padded "
              f"{w['padded_max_length']['tokens_per_s']:,.0f}, per-sample "
              f"{w['per_sample_forward']['tokens_per_s']:,.0f}; packed/padded "
              f"{r['ratio_packed_vs_padded']:.2f}x, packed/per-sample "
              f"{r['ratio_packed_vs_per_sample']:.2f}x; one long packed row/padded "
              f"{r['ratio_one_long_row_vs_padded']:.2f}x")
    for name, r in sharing.items():
        w = r["ways"]
        print(f"{name}: {args.states} states x ({args.prompt} + {args.candidates} x "
              f"{args.completion}) tokens: unshared {w['unshared']['tokens_per_s']:,.0f} tok/s "
              f"({w['unshared']['computed_tokens']} computed), shared "
              f"{w['shared']['tokens_per_s']:,.0f} tok/s ({w['shared']['computed_tokens']} "
              f"computed); {r['token_ratio_unshared_vs_shared']:.2f}x fewer tokens, "
              f"{r['speedup_shared_vs_unshared']:.2f}x faster")
    runs.update(sharing)
    if args.base:
        print(f"{base_id} CPU defaults, {cpu['samples']} samples of {args.cpu_states} states "
              f"(850 + 3 x 210 tokens), bf16 units {cpu['cpu_has_bf16_matmul']}: "
              + ", ".join(f"{k} {v['tokens_per_s']:,.0f} tok/s ({v['speedup']:.2f}x)"
                          for k, v in cpu["ways"].items()))
        runs[f"{base_id} cpu defaults"] = cpu
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
