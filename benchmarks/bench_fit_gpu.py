"""Fit throughput on a GPU at the paper's scale: the Qwen2.5-7B-Instruct architecture.

A randomly initialised model with Qwen2.5-7B-Instruct's shape (no download: the weights do
not change the speed) in bf16, LoRA r=16 on q/k/v/o, gradient checkpointing, through the
fit's own code: models/rlao.py's forward_loss and collators and models/packing.py's
prefix-shared rows and masks. Two comparisons in one process, best of `--repeats`:

1. Prefix sharing, on W4S-shaped states: `--states` states of a `--prompt`-token prompt and
   `--candidates` completions of `--completion` tokens (default 4 x (4096 + 5 x 500)):
   - unshared: each candidate packed with its own copy of the prompt (rlao.collate_packed_rows);
   - shared: one prompt per state, dense block mask through sdpa (packing.collate_shared_rows);
   - shared_flex: the same rows under a flex-attention BlockMask (compiled; GPU only).
2. Packing, on `--samples` conversations of `--min-len`..`--max-len` tokens (the last
   quarter of each the completion): packed rows vs every sample padded to the longest.

Tokens/s counts the samples' own tokens (prompt + completion per sample, no pads), the same
numerator for every way of one comparison, so the ratios are speedups; `computed_tokens` is
what the forward passes ran over. MFU: the useful FLOPs of the way (forward and
input-gradient backward of the frozen matmuls, 4 x their parameters per computed token; the
LM head on completion tokens; attention over the pairs the mask allows, x3 for the backward;
no recomputation counted) over the GPU's dense bf16 peak. Progress lines carry timestamps;
the JSON is rewritten after every measurement, so a run cut short keeps what it measured.

    python benchmarks/bench_fit_gpu.py --json out.json   # on the GPU machine, about 5 min
    python benchmarks/bench_fit_gpu.py --tiny            # a CPU smoke test, seconds

Needs only torch, transformers and peft: the `models` package is entered without running
its __init__ (whose chat backends need more libraries).
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import sys
import time
import types
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
T0 = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - T0:6.1f}s] {message}",
          flush=True)


def fit_modules() -> tuple[Any, Any]:
    """w4s.models.rlao and w4s.models.packing, without running models/__init__ (the device
    has neither pydantic nor the installed package: ROOT/models is mapped by hand)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if "w4s.models" not in sys.modules:
        package = types.ModuleType("w4s.models")
        package.__path__ = [str(ROOT / "models")]
        sys.modules["w4s.models"] = package
    return importlib.import_module("w4s.models.rlao"), importlib.import_module("w4s.models.packing")


def build(shape: dict[str, Any], device: str, dtype: Any, rlao: Any) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(Qwen2Config(**shape, attn_implementation="sdpa"))
    finally:
        torch.set_default_dtype(previous)
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    config = rlao.TrainerConfig(lora_r=16, lora_alpha=32, lora_dropout=0.0,
                             target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    return rlao.add_lora(model, config).train()  # checkpointing acts in training mode only


def state_samples(rlao: Any, states: int, prompt: int, completion: int, candidates: int,
                  vocab: int, seed: int = 0) -> list[Any]:
    """W4S-shaped samples: `candidates` completions per state, all sharing its prompt ids."""
    rng = random.Random(seed)
    out = []
    for _ in range(states):
        ids = [rng.randrange(3, vocab) for _ in range(prompt)]
        for _ in range(candidates):
            tail = [rng.randrange(3, vocab) for _ in range(completion)]
            out.append(rlao.Sample(ids + tail, [rlao.IGNORE] * prompt + tail,
                                   rng.choice([12.18, 3.49, 1.0, 0.78])))
    return out


def varied_samples(rlao: Any, n: int, lo: int, hi: int, vocab: int) -> list[Any]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        length = rng.randint(lo, hi)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        n_prompt = length - length // 4
        out.append(rlao.Sample(ids, [rlao.IGNORE] * n_prompt + ids[n_prompt:],
                               rng.choice([12.18, 3.49, 1.0, 0.78])))
    return out


def shared_pairs(packing: Any, samples: list[Any]) -> int:
    """(query, key) pairs a shared layout attends over: each prefix causally, each segment
    to its prefix and causally to itself."""
    pairs = 0
    for members in packing.group_by_prompt(samples):
        first = samples[members[0]]
        k = max(packing.prompt_length(first.input_ids, first.labels) - 1, 0)
        pairs += k * (k + 1) // 2
        for i in members:
            s = len(samples[i].input_ids) - k
            pairs += s * k + s * (s + 1) // 2
    return pairs


def useful_flops(shape: dict[str, Any], tokens: int, completion: int, pairs: int) -> float:
    """FLOPs of one LoRA training pass's useful work (see the header)."""
    d, f, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = d * shape["num_key_value_heads"] // shape["num_attention_heads"]
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * f  # q, o; k, v; gate, up, down
    attention = 4 * pairs * d * layers  # QK^T and AV, forward
    head = 4 * shape["vocab_size"] * d * completion
    return 4 * per_layer * layers * tokens + head + 3 * attention


class Bench:
    """Times ways (lists of batches) over one set of samples and keeps the figures."""

    def __init__(self, model: Any, rlao: Any, device: str, repeats: int, peak: float | None,
                 shape: dict[str, Any], save: Any, budget_s: float) -> None:
        self.model, self.rlao, self.device = model, rlao, device
        self.repeats, self.peak, self.shape, self.save = repeats, peak, shape, save
        self.budget_s = budget_s

    def _sync(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()

    def _run(self, batches: list[dict[str, Any]], n_samples: int) -> tuple[float, float]:
        self._sync()
        start = time.perf_counter()
        total = 0.0
        for batch in batches:
            self.model.zero_grad(set_to_none=True)
            loss = self.rlao.forward_loss(self.model, batch, float(n_samples))
            loss.backward()
            total += float(loss.detach())
        self._sync()
        return time.perf_counter() - start, total

    def way(self, name: str, batches: list[dict[str, Any]], samples: list[Any], *,
            computed: int, pairs: int) -> dict[str, Any]:
        import torch

        cuda = self.device == "cuda"
        say(f"{name}: warm-up ({len(batches)} forward passes, {computed:,} computed tokens)")
        self._run(batches[:1], len(samples))  # kernels, compilation and the allocator
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        best, loss = float("inf"), float("nan")
        for r in range(self.repeats):
            seconds, loss = self._run(batches, len(samples))
            best = min(best, seconds)
            say(f"{name}: repeat {r + 1}/{self.repeats} {seconds:.2f}s, loss {loss:.5f}")
        real = sum(len(s.input_ids) for s in samples)
        completion = sum(s.completion_tokens for s in samples)
        achieved = useful_flops(self.shape, computed, completion, pairs) / best
        out = {"seconds": round(best, 3), "tokens_per_s": round(real / best, 1),
               "computed_tokens": computed, "forward_passes": len(batches),
               "loss": loss, "tflops": round(achieved / 1e12, 1),
               "mfu": round(achieved / self.peak, 4) if self.peak else None,
               "peak_memory_gib": (round(torch.cuda.max_memory_allocated() / 2**30, 2)
                                   if cuda else None)}
        say(f"{name}: {out['tokens_per_s']:,.0f} tok/s, peak {out['peak_memory_gib']} GiB, "
            f"MFU {out['mfu']}")
        return out

    def guarded(self, result: dict[str, Any], name: str, make: Any) -> None:
        """One way; an error (e.g. flex attention unavailable) is recorded, not fatal, and a
        way that would start past the time budget is skipped."""
        if time.perf_counter() - T0 > self.budget_s:
            say(f"{name}: skipped, past the {self.budget_s:.0f}s budget")
            result[name] = {"skipped": f"past the {self.budget_s:.0f}s time budget"}
            self.save()
            return
        try:
            result[name] = make()
        except Exception as e:  # noqa: BLE001 - the benchmark reports and goes on
            import torch

            say(f"{name}: failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
            result[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            if self.device == "cuda":
                torch.cuda.empty_cache()
        self.save()


def sharing(bench: Bench, rlao: Any, packing: Any, data: list[Any], result: dict[str, Any],
            *, row_tokens: int, batch_tokens: int, ways: tuple[str, ...]) -> None:
    """The named ways of the sharing comparison (flex runs last: it compiles, the riskiest)."""
    model = bench.model
    lengths = [len(s.input_ids) for s in data]
    per_batch = max(1, batch_tokens // row_tokens)

    def grouped(rows: list[list[int]], collate: Any) -> list[dict[str, Any]]:
        return [collate([[data[i] for i in r] for r in rows[k:k + per_batch]])
                for k in range(0, len(rows), per_batch)]

    unshared_rows = rlao.pack(lengths, row_tokens)
    shared_rows = packing.pack_shared(data, row_tokens)
    unshared_pairs = sum(n * (n + 1) // 2 for n in lengths)
    computed_shared = sum(packing.shared_length(data, r) for r in shared_rows)
    pairs_shared = sum(shared_pairs(packing, [data[i] for i in r]) for r in shared_rows)
    result.update({
        "samples": len(data), "tokens": sum(lengths), "row_tokens": row_tokens,
        "batch_tokens": batch_tokens, "computed_tokens_shared": computed_shared,
        "token_ratio_unshared_vs_shared": round(sum(lengths) / computed_shared, 2),
    })
    if "unshared" in ways:
        bench.guarded(result, "unshared", lambda: bench.way(
            "unshared", grouped(unshared_rows, rlao.collate_packed_rows), data,
            computed=sum(lengths), pairs=unshared_pairs))
    if "shared" in ways:
        bench.guarded(result, "shared", lambda: bench.way(
            "shared", grouped(shared_rows, packing.collate_shared_rows), data,
            computed=computed_shared, pairs=pairs_shared))
    if "shared_flex" in ways and bench.device != "cuda":
        result["shared_flex"] = {"skipped": "flex attention's backward needs a GPU"}
    elif "shared_flex" in ways:
        def flex() -> dict[str, Any]:
            model.set_attn_implementation("flex_attention")
            try:
                return bench.way("shared_flex", grouped(shared_rows, packing.collate_shared_rows),
                                 data, computed=computed_shared, pairs=pairs_shared)
            finally:
                model.set_attn_implementation("sdpa")
        bench.guarded(result, "shared_flex", flex)
    base = result.get("unshared", {}).get("tokens_per_s")
    for name in ("shared", "shared_flex"):
        if base and "tokens_per_s" in result.get(name, {}):
            result[f"speedup_{name}_vs_unshared"] = round(result[name]["tokens_per_s"] / base, 2)
            result[f"loss_rel_diff_{name}"] = abs(result[name]["loss"] / result["unshared"]["loss"]
                                                  - 1)
    bench.save()


def packing_vs_padding(bench: Bench, rlao: Any, data: list[Any], result: dict[str, Any], *,
                       row_tokens: int, batch_tokens: int, per_sample: bool) -> None:
    lengths = [len(s.input_ids) for s in data]
    longest = max(lengths)
    rows = rlao.pack(lengths, row_tokens)
    per_batch = max(1, batch_tokens // row_tokens)
    padded_per_batch = max(1, batch_tokens // longest)
    pairs = sum(n * (n + 1) // 2 for n in lengths)
    result.update({"samples": len(data), "tokens": sum(lengths),
                   "lengths": [min(lengths), longest], "row_tokens": row_tokens,
                   "batch_tokens": batch_tokens})
    ways = {
        "packed": lambda: [rlao.collate_packed_rows([[data[i] for i in r]
                                                     for r in rows[k:k + per_batch]])
                           for k in range(0, len(rows), per_batch)],
        "padded": lambda: [rlao.collate_padded(data[k:k + padded_per_batch], 0, longest)
                           for k in range(0, len(data), padded_per_batch)],
    }
    if per_sample:
        ways["per_sample"] = lambda: [rlao.collate_padded([s], 0, longest) for s in data]
    for name, make in ways.items():
        # padding: the forward runs over the pads too, but they are no useful work
        bench.guarded(result, name, lambda make=make, name=name: bench.way(
            name, make(), data, computed=sum(lengths), pairs=pairs))
    packed = result["packed"].get("tokens_per_s")
    for name in ways:
        if name != "packed" and packed and "tokens_per_s" in result[name]:
            result[f"ratio_packed_vs_{name}"] = round(packed / result[name]["tokens_per_s"], 2)
    bench.save()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a 2-layer model: a CPU smoke test")
    p.add_argument("--states", type=int, default=4)
    p.add_argument("--prompt", type=int, default=4096, help="prompt tokens of a state")
    p.add_argument("--completion", type=int, default=500, help="tokens of each candidate")
    p.add_argument("--candidates", type=int, default=5, help="candidates per state (m)")
    p.add_argument("--samples", type=int, default=16, help="conversations, packed vs padded")
    p.add_argument("--min-len", type=int, default=2048)
    p.add_argument("--max-len", type=int, default=6144)
    p.add_argument("--row-tokens", type=int, default=16384)
    p.add_argument("--batch-tokens", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--per-sample", action="store_true", help="also one forward per sample")
    p.add_argument("--skip", choices=["sharing", "packing"], action="append", default=[])
    p.add_argument("--budget-s", type=float, default=360,
                   help="start no new way after this many seconds (the rest are skipped)")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)

    import torch

    say("importing the fit's modules")
    rlao, packing = fit_modules()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    shape = TINY if args.tiny else QWEN25_7B
    if args.tiny:
        args.states, args.prompt, args.completion, args.candidates = 2, 96, 24, 3
        args.samples, args.min_len, args.max_len = min(args.samples, 6), 64, 192
        args.row_tokens, args.batch_tokens = 512, 512
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = PEAK_BF16.get(next((k for k in PEAK_BF16 if k in name), ""))
    say(f"building {'tiny Qwen2' if args.tiny else 'Qwen2.5-7B shape'} on {name} ({dtype})")
    t = time.perf_counter()
    model = build(shape, device, dtype, rlao)
    results: dict[str, Any] = {
        "device": name, "dtype": str(dtype).removeprefix("torch."),
        "model": "tiny Qwen2 (2 layers)" if args.tiny else "Qwen2.5-7B-Instruct shape, random",
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "lora": "r=16 alpha=32 on q,k,v,o", "gradient_checkpointing": True,
        "build_seconds": round(time.perf_counter() - t, 1), "repeats": args.repeats,
        "versions": {"torch": torch.__version__,
                     "transformers": importlib.import_module("transformers").__version__},
    }

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1) + "\n")

    bench = Bench(model, rlao, device, args.repeats, peak, shape, save, args.budget_s)
    say(f"built in {results['build_seconds']}s: {results['parameters'] / 1e9:.2f}B parameters")
    states = state_samples(rlao, args.states, args.prompt, args.completion, args.candidates,
                           shape["vocab_size"])
    results["sharing"] = {"states": args.states, "prompt": args.prompt,
                          "completion": args.completion, "candidates": args.candidates}
    rows = {"row_tokens": args.row_tokens, "batch_tokens": args.batch_tokens}
    if "sharing" not in args.skip:
        sharing(bench, rlao, packing, states, results["sharing"], ways=("unshared", "shared"),
                **rows)
    if "packing" not in args.skip:
        data = varied_samples(rlao, args.samples, args.min_len, args.max_len,
                              shape["vocab_size"])
        results["packing"] = {}
        packing_vs_padding(bench, rlao, data, results["packing"], per_sample=args.per_sample,
                           **rows)
    if "sharing" not in args.skip:
        sharing(bench, rlao, packing, states, results["sharing"], ways=("shared_flex",), **rows)
    results["total_seconds"] = round(time.perf_counter() - T0, 1)
    save()
    print(json.dumps(results, indent=1))
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
