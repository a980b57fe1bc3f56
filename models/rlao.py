"""RLAO trainer: reward-weighted regression of the meta-agent with a LoRA adapter.

The estimator (`estimator`, named in metrics.json and the fit report):
- `self_normalized` (default): each optimizer step's loss is
  sum_i w_i * loss_i / sum_i w_i over the step's samples, loss_i being sample i's mean token
  cross-entropy over its completion. The step's gradient is a weighted average of per-sample
  gradients, so clipping at `max_grad_norm` scales the whole step and the RELATIVE weights
  survive it. The paper's form (divided by the sample count) lets a weight-12 sample's
  gradient be clipped 12x harder than a weight-1 one, so with few samples per step RWR's
  updates came out as SFT's (issue 15).
- `mean`: sum_i w_i * loss_i / n (the paper's and the authors' code), kept for comparison.
Steps hold `step_samples` samples (default 16) drawn from a shuffle of every state's
candidates, whatever the token budget: accumulation counts samples, not packed rows.

Three faults of the authors' code are avoided on purpose (shared/reference/rlao-facts.md):
- prompt tokens are masked and stay masked (their collator rebuilt labels from input_ids);
- samples are packed into rows up to a token budget with restarting `position_ids` and no
  attention mask, never padded to a fixed length;
- one forward pass runs per packed row, not per sample.
Nor is a sample ever cut: one longer than `max_seq_len` (default: the base model's context)
is dropped and counted. The completion ends at the end-of-turn token that was sampled; the
chat template's glue after it (the "\n" after `<|im_end|>`) is masked.
`use_cache=False` is required: with a cache, transformers skips packing detection and logits
leak across samples. The LM head runs only on the positions that predict completion tokens,
since the logits of a 49k vocabulary dominate the memory of a small model.

torch, transformers and peft are imported inside functions: importing w4s stays cheap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from w4s.errors import ConfigError, one_line
from w4s.models import packing
from w4s.trainer_config import RUN_LENGTH, TrainerConfig

log = logging.getLogger(__name__)

IGNORE = -100
REQUIRED_COLUMNS = ("prompt", "completion", "weight")
_CHECKPOINTS = "checkpoints"
_KEEP_CHECKPOINTS = 2


# end-of-turn tokens of common chat templates, besides the tokenizer's eos token
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|eot|>")
# a context above this is a tokenizer's "no limit" placeholder (e.g. 1e30), not a context
_SANE_CONTEXT = 10_000_000


@dataclass
class Sample:
    """One tokenized sample: labels are IGNORE on the prompt, the token ids on the completion."""

    input_ids: list[int]
    labels: list[int]
    weight: float

    @property
    def completion_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


@dataclass
class TokenizeStats:
    samples: int = 0
    dropped_too_long: int = 0  # prompt + completion exceed max_seq_len: dropped, never cut
    longest_dropped: int = 0  # tokens of the longest dropped sample
    template_fallback: int = 0  # the prompt was not a prefix of the full conversation
    glue_masked: int = 0  # template tokens after the end-of-turn token, masked
    no_end_of_turn: int = 0  # completions in which no end-of-turn token was found
    tokens: int = 0
    completion_tokens: int = 0


# ------------------------------------------------------------------------- dataset


def read_dataset(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a prompt-completion Parquet file, checked before any model is loaded:
    missing file or columns, no rows, negative/non-finite weights or all weights zero."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"`dataset` {str(path)!r} does not exist")
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise ConfigError(f"`dataset` {str(path)!r} is not a Parquet file: {one_line(e)}") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise ConfigError(
            f"`dataset` {path.name!r} lacks column(s) {', '.join(missing)}; a fit needs "
            f"{', '.join(REQUIRED_COLUMNS)} (the prompt-completion layout `w4s dataset` writes)"
        )
    rows = pq.read_table(path, columns=list(REQUIRED_COLUMNS)).to_pylist()
    if not rows:
        raise ConfigError(f"`dataset` {path.name!r} has no rows: nothing to fit")
    weights = [r["weight"] for r in rows]
    bad = [w for w in weights if w is None or not math.isfinite(w) or w < 0]
    if bad:
        raise ConfigError(
            f"`dataset` {path.name!r}: weights must be finite and >= 0, received {bad[0]!r} "
            f"({len(bad)} row(s))"
        )
    if not any(w > 0 for w in weights):
        raise ConfigError(f"`dataset` {path.name!r}: every weight is zero, so the loss is zero")
    for i, r in enumerate(rows):
        if not r["prompt"] or not r["completion"]:
            raise ConfigError(f"`dataset` {path.name!r} row {i}: empty `prompt` or `completion`")
    return rows


def _encode_chat(
    tokenizer: Any, messages: list[dict], *, generation_prompt: bool
) -> tuple[str, list[int]]:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    return text, tokenizer(text, add_special_tokens=False)["input_ids"]


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """The ids that end an assistant turn: the eos token and the usual end-of-turn tokens
    the vocabulary has."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return ids


def model_context(model: Any, tokenizer: Any) -> int:
    """The base model's context in tokens: the smaller of config.max_position_embeddings and
    tokenizer.model_max_length, ignoring a missing or placeholder value (e.g. 1e30)."""
    values = [
        getattr(model.config, "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    sane = [int(v) for v in values if isinstance(v, int | float) and 1 < v < _SANE_CONTEXT]
    if not sane:
        raise ConfigError(
            "the base model states no context length (max_position_embeddings); "
            "pass `max_seq_len`"
        )
    return min(sane)


def tokenize_sample(
    tokenizer: Any,
    prompt: list[dict],
    completion: list[dict],
    weight: float,
    max_seq_len: int,
    stats: TokenizeStats | None = None,
    end_ids: set[int] | None = None,
) -> Sample | None:
    """Render with the chat template; mask the prompt and the template's glue after the
    completion's last end-of-turn token. None when prompt + completion exceed max_seq_len
    (counted in stats): a sample is never cut."""
    stats = stats if stats is not None else TokenizeStats()
    end_ids = end_ids if end_ids is not None else end_of_turn_ids(tokenizer)
    prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
    completion = [{"role": m["role"], "content": m["content"]} for m in completion]
    prompt_text, prompt_ids = _encode_chat(tokenizer, prompt, generation_prompt=True)
    full_text, full_ids = _encode_chat(tokenizer, prompt + completion, generation_prompt=False)
    if full_ids[: len(prompt_ids)] == prompt_ids:
        completion_ids = full_ids[len(prompt_ids) :]
    elif full_text.startswith(prompt_text):
        # a tokenizer merged across the boundary: tokenize the completion's text separately
        # so the mask stays exact
        if stats.template_fallback == 0:
            log.warning(
                "prompt ids are not a prefix of the full conversation's ids; "
                "tokenizing completions separately"
            )
        stats.template_fallback += 1
        completion_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)[
            "input_ids"
        ]
    else:
        raise ConfigError(
            "the tokenizer's chat template does not render the prompt (with the generation "
            "prompt) as a prefix of prompt + completion, so the completion cannot be masked"
        )
    if not completion_ids:
        raise ConfigError("a completion rendered to no tokens; check the `completion` column")
    total = len(prompt_ids) + len(completion_ids)
    if total > max_seq_len:
        stats.dropped_too_long += 1
        stats.longest_dropped = max(stats.longest_dropped, total)
        return None
    ends = [k for k, t in enumerate(completion_ids) if t in end_ids]
    trained = ends[-1] + 1 if ends else len(completion_ids)
    if not ends:
        stats.no_end_of_turn += 1
    glue = len(completion_ids) - trained
    stats.glue_masked += glue
    stats.samples += 1
    stats.tokens += total
    stats.completion_tokens += trained
    return Sample(
        input_ids=list(prompt_ids) + list(completion_ids),
        labels=[IGNORE] * len(prompt_ids) + list(completion_ids[:trained]) + [IGNORE] * glue,
        weight=float(weight),
    )


def tokenize_rows(
    tokenizer: Any, rows: list[dict], max_seq_len: int
) -> tuple[list[Sample], TokenizeStats]:
    """Every row as a Sample; those over max_seq_len are dropped with one warning line."""
    stats = TokenizeStats()
    end_ids = end_of_turn_ids(tokenizer)
    samples = []
    for r in rows:
        s = tokenize_sample(
            tokenizer, r["prompt"], r["completion"], r["weight"], max_seq_len, stats, end_ids
        )
        if s is not None:
            samples.append(s)
    if stats.dropped_too_long:
        log.warning(
            "%d of %d samples dropped: longer than max_seq_len %d tokens (the longest %d); "
            "none was cut",
            stats.dropped_too_long,
            len(rows),
            max_seq_len,
            stats.longest_dropped,
        )
    return samples, stats


# ------------------------------------------------------------------------- batching


def pack(
    lengths: Sequence[int], batch_tokens: int, order: Sequence[int] | None = None
) -> list[list[int]]:
    """Greedy rows of sample indices, in `order`, each up to batch_tokens tokens (a longer
    sample gets a row of its own)."""
    rows: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in order if order is not None else range(len(lengths)):
        if current and used + lengths[i] > batch_tokens:
            rows.append(current)
            current, used = [], 0
        current.append(i)
        used += lengths[i]
    if current:
        rows.append(current)
    return rows


def collate_packed(samples: Sequence[Sample]) -> dict[str, Any]:
    """One row: ids and labels concatenated, position_ids restarting at 0 per sample, the
    first label of each sample IGNORE, `sample_index` naming each token's sample. No mask."""
    import torch

    ids, labels, positions, owner = [], [], [], []
    for k, s in enumerate(samples):
        ids += s.input_ids
        labels += [IGNORE] + s.labels[1:]
        positions += list(range(len(s.input_ids)))
        owner += [k] * len(s.input_ids)
    return {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([positions]),
        "labels": torch.tensor([labels]),
        "sample_index": torch.tensor([owner]),
        "weights": torch.tensor([s.weight for s in samples], dtype=torch.float32),
    }


def collate_packed_rows(rows: Sequence[Sequence[Sample]], pad_id: int = 0) -> dict[str, Any]:
    """Several packed rows in one [R, L] batch. Shorter rows get pad tokens at their tail,
    as a sequence of their own (positions from 0, labels IGNORE): causal attention means no
    real token sees them, so no attention mask is needed."""
    import torch

    parts = [collate_packed(r) for r in rows]
    length = max(p["input_ids"].shape[1] for p in parts)
    batch: dict[str, list] = {"input_ids": [], "position_ids": [], "labels": [], "sample_index": []}
    fill = {"input_ids": pad_id, "labels": IGNORE, "sample_index": 0}
    offset = 0
    for p in parts:
        extra = length - p["input_ids"].shape[1]
        for key in batch:
            row = p[key][0]
            if key == "sample_index":
                row = row + offset
            tail = (
                torch.arange(extra)
                if key == "position_ids"
                else torch.full((extra,), fill[key], dtype=row.dtype)
            )
            batch[key].append(torch.cat([row, tail]))
        offset += p["weights"].shape[0]
    out = {k: torch.stack(v) for k, v in batch.items()}
    out["weights"] = torch.cat([p["weights"] for p in parts])
    return out


def collate_padded(
    samples: Sequence[Sample], pad_id: int, length: int | None = None
) -> dict[str, Any]:
    """The baseline: one sample per row, right-padded to `length` (default: the longest)."""
    import torch

    length = length or max(len(s.input_ids) for s in samples)
    n = len(samples)
    ids = torch.full((n, length), pad_id)
    labels = torch.full((n, length), IGNORE)
    mask = torch.zeros((n, length), dtype=torch.long)
    owner = torch.full((n, length), -1)
    for k, s in enumerate(samples):
        m = len(s.input_ids)
        ids[k, :m] = torch.tensor(s.input_ids)
        labels[k, :m] = torch.tensor(s.labels)
        mask[k, :m] = 1
        owner[k, :m] = k
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "sample_index": owner,
        "weights": torch.tensor([s.weight for s in samples], dtype=torch.float32),
    }


# ------------------------------------------------------------------------- loss


def normalizer(weights: Sequence[float], estimator: str = "self_normalized") -> float:
    """What a step's weighted sum of sample losses is divided by: the sum of its weights
    (self_normalized) or its sample count (mean, the paper's)."""
    if estimator == "mean":
        return float(len(weights))
    total = float(sum(weights))
    return total if total > 0 else 1.0  # a step of zero weights has zero loss


def _weighted_from_token_ce(ce: Any, owner: Any, weights: Any, norm: float) -> Any:
    """sum_i weight_i * mean(ce over sample i's tokens) / norm."""
    import torch

    n = weights.shape[0]
    sums = torch.zeros(n, dtype=ce.dtype, device=ce.device).index_add(0, owner, ce)
    counts = torch.zeros(n, dtype=ce.dtype, device=ce.device).index_add(
        0, owner, torch.ones_like(ce)
    )
    per_sample = sums / counts.clamp(min=1)
    return (weights.to(ce.device, ce.dtype) * per_sample).sum() / norm


def _norm(batch: dict[str, Any], norm: float | None) -> float:
    return norm if norm is not None else normalizer(batch["weights"].tolist())


def weighted_loss_from_logits(logits: Any, batch: dict[str, Any], norm: float | None = None) -> Any:
    """The loss from full logits [B, T, V] (tests, the reference form). `norm` defaults to
    the batch's weight sum: the batch is one self-normalised step."""
    import torch.nn.functional as F

    targets = batch["labels"][:, 1:].to(logits.device)
    owner = batch["sample_index"][:, 1:].to(logits.device)
    valid = targets != IGNORE
    ce = F.cross_entropy(logits[:, :-1][valid].float(), targets[valid], reduction="none")
    return _weighted_from_token_ce(ce, owner[valid], batch["weights"], _norm(batch, norm))


def forward_loss(model: Any, batch: dict[str, Any], norm: float | None = None) -> Any:
    """One forward pass of a packed or padded batch; the LM head runs on completion-
    predicting positions only. Equals weighted_loss_from_logits on the full logits. A step
    of several micro-batches passes the step's `norm` to each (see `normalizer`)."""
    import torch.nn.functional as F

    device = next(model.parameters()).device
    kwargs = {"input_ids": batch["input_ids"].to(device), "use_cache": False}
    if "position_ids" in batch:
        kwargs["position_ids"] = batch["position_ids"].to(device)
    if "attention_mask" in batch:
        kwargs["attention_mask"] = batch["attention_mask"].to(device)
    if "segment_ids" in batch:  # prefix-shared rows: their block mask (models/packing.py)
        kwargs["attention_mask"] = packing.attention_mask(model, batch, device)
    hidden = model.get_decoder()(**kwargs).last_hidden_state
    targets = batch["labels"][:, 1:].to(device)
    owner = batch["sample_index"][:, 1:].to(device)
    valid = targets != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][valid]).float()
    ce = F.cross_entropy(logits, targets[valid], reduction="none")
    return _weighted_from_token_ce(ce, owner[valid], batch["weights"], _norm(batch, norm))


# ------------------------------------------------------------------------- model


def pick_device() -> tuple[str, Any]:
    """bf16 on a GPU, fp32 on the CPU (bf16 matmuls are slow there and lose precision)."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16
    return "cpu", torch.float32


def load_base(folder: str | Path, device: str = "cpu", dtype: Any = None) -> tuple[Any, Any]:
    """Model and tokenizer from a local Hugging Face folder; ConfigError if it is not one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"`base` {str(folder)!r} is not a Hugging Face model folder "
            "(no config.json); pass `embedded` or a local folder"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"`base` {str(folder)!r} cannot be loaded: {one_line(e)}") from e
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError(f"`base` {str(folder)!r}: the tokenizer has no chat template")
    return model.to(device), tokenizer


def add_lora(model: Any, config: TrainerConfig) -> Any:
    """Wrap the base in a trainable peft LoRA; the seed fixes lora_A's initialisation."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as e:  # e.g. a target module the architecture lacks
        raise ConfigError(
            f"`target_modules` {','.join(config.target_modules)!r}: {one_line(e)}"
        ) from e


def use_gradient_checkpointing(config: TrainerConfig, device: str) -> bool:
    """On a GPU by default: activations of 10-20k-token states dominate its memory; on the
    CPU memory is rarely the limit and recomputation costs a third more time."""
    if config.gradient_checkpointing is not None:
        return config.gradient_checkpointing
    return device != "cpu"


def cpu_has_bf16_matmul() -> bool:
    """AMX or AVX512-BF16: there bf16 autocast ran SmolLM2's LoRA steps 1.96x as fast as fp32
    (docs/performance.md); without them bf16 matmuls are emulated and slower."""
    import torch

    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def use_bf16_autocast(config: TrainerConfig, device: str) -> bool:
    """On the CPU only (a GPU fit already holds its base in bf16): `cpu_bf16`, else where the
    CPU has bf16 matrix units."""
    if device != "cpu":
        return False
    return config.cpu_bf16 if config.cpu_bf16 is not None else cpu_has_bf16_matmul()


def cpu_row_tokens(samples: Sequence[Sample], config: TrainerConfig) -> int:
    """The CPU's default row: the longest state laid out shared (the longest sample when not
    sharing), within batch_tokens and max_seq_len. Its dense mask makes attention grow with
    the row's square: fp32 rows of 4096 ran at 249 tok/s, of the longest state (1,480) at 550
    (docs/performance.md)."""
    if config.share_prefix:
        longest = max(packing.shared_length(samples, g) for g in packing.group_by_prompt(samples))
    else:
        longest = max(len(s.input_ids) for s in samples)
    return min(longest, config.batch_tokens, config.max_seq_len or config.batch_tokens)


def use_flex_attention(model: Any, config: TrainerConfig, device: str) -> bool:
    """Prefix-shared rows on a GPU run under flex attention, which skips the blocks the mask
    rules out (5.70x the unshared tokens/s against 3.46x with sdpa's dense mask on an H200,
    docs/performance.md); its backward needs a GPU, so the CPU keeps sdpa. A model or torch
    without it keeps its attention, with one warning line."""
    if not config.share_prefix or device == "cpu":
        return False
    try:
        from torch.nn.attention import flex_attention  # noqa: F401

        model.set_attn_implementation("flex_attention")
    except (ImportError, ValueError, AttributeError) as e:
        log.warning("flex attention unavailable (%s): prefix-shared rows use a dense mask",
                    one_line(e))
        return False
    return True


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute each decoder layer's activations in the backward pass. Non-reentrant, so it
    works with the frozen base; LoRA also needs the inputs to require grad."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()


# ------------------------------------------------------------------------- training loop


@dataclass
class TrainState:
    """What a checkpoint carries besides the weights and the optimizer."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)  # before clipping
    tokens: int = 0
    train_seconds: float = 0.0


def epoch_order(samples: Sequence[Sample], seed: int) -> list[int]:
    """One epoch's sample order: a seeded shuffle, so steps mix the states' candidates."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    return order


def pack_step(samples: Sequence[Sample], row_tokens: int, indices: list[int]) -> list[list[int]]:
    """One optimizer step's samples in packed rows of up to row_tokens."""
    return pack([len(s.input_ids) for s in samples], row_tokens, indices)


def schedule(samples: Sequence[Sample], config: TrainerConfig) -> list[list[list[list[int]]]]:
    """Optimizer steps -> micro-batches -> packed rows -> sample indices, fixed by the seed,
    so a resumed fit replays the same order. The epochs' orders are one stream cut into
    steps of step_samples samples (all of them when there are fewer); each step's samples
    are packed into rows of up to row_tokens and the rows grouped into micro-batches of up
    to batch_tokens, so the token budget never changes which samples share a step."""
    n = len(samples)
    row_tokens = min(config.row_tokens or config.max_seq_len or config.batch_tokens,
                     config.batch_tokens)
    per_batch = max(1, config.batch_tokens // row_tokens)
    size = min(config.step_samples, n)
    needed = config.epochs * n
    if config.max_steps is not None:
        needed = max(needed, config.max_steps * size)
    stream: list[int] = []
    epoch = 0
    while len(stream) < needed:
        seed = config.seed * 1_000_003 + epoch
        # prefix sharing keeps one state's candidates adjacent, so they share a row
        stream += (packing.grouped_order(samples, seed) if config.share_prefix
                   else epoch_order(samples, seed))
        epoch += 1
    steps = []
    for start in range(0, needed, size):
        indices = stream[start : min(start + size, needed)]
        rows = (packing.pack_shared(samples, row_tokens, indices) if config.share_prefix
                else pack_step(samples, row_tokens, indices))
        steps.append([rows[i : i + per_batch] for i in range(0, len(rows), per_batch)])
    return steps[: config.max_steps] if config.max_steps is not None else steps


def resume_fingerprint(config: TrainerConfig, extra: dict[str, Any]) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed (not epochs or max_steps)."""
    keep = {k: v for k, v in asdict(config).items() if k not in RUN_LENGTH}
    keep["target_modules"] = list(config.target_modules)
    return {**keep, **extra}


def _rng_state() -> dict[str, Any]:
    import torch

    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out: Path, model: Any, optimizer: Any, state: TrainState, fingerprint: dict[str, Any],
    keep: int = _KEEP_CHECKPOINTS,
) -> Path:
    """out/checkpoints/step-NNNNNN: adapter, optimizer, RNG, state; written under a temporary
    name and renamed, so a kill never leaves a half checkpoint. Keeps the last `keep`."""
    import torch

    root = out / _CHECKPOINTS
    final = root / f"step-{state.step:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(_rng_state(), tmp / "rng.pt")
    (tmp / "trainer_state.json").write_text(
        json.dumps({**asdict(state), "fingerprint": fingerprint})
    )
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    for old in sorted(p for p in root.glob("step-*"))[:-max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def last_checkpoint(out: Path) -> Path | None:
    found = sorted(
        p for p in (out / _CHECKPOINTS).glob("step-*") if (p / "trainer_state.json").is_file()
    )
    return found[-1] if found else None


def load_checkpoint(
    path: Path, model: Any, optimizer: Any, fingerprint: dict[str, Any]
) -> TrainState:
    """Restore adapter weights, optimizer and RNG; ConfigError if the checkpoint belongs to a
    fit with other data or hyperparameters."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = json.loads((path / "trainer_state.json").read_text())
    if saved.pop("fingerprint") != json.loads(json.dumps(fingerprint)):
        raise ConfigError(
            f"`out` {str(path.parent.parent)!r} holds checkpoints of a fit with another dataset "
            "or hyperparameters; pass a new --out or delete its checkpoints/ folder"
        )
    set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    _set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return TrainState(**saved)


StepCallback = Callable[[int, int, float, float], None]  # step, total, loss, tokens/s


def train(
    model: Any,
    samples: Sequence[Sample],
    config: TrainerConfig,
    out: Path,
    fingerprint: dict[str, Any] | None = None,
    on_step: StepCallback | None = None,
) -> tuple[TrainState, int]:
    """The loop: AdamW over the LoRA parameters, one step per `schedule` entry, its loss
    normalised by `config.estimator` over the whole step; resumes from out's last checkpoint.
    Returns the final state and the step it resumed from (0 for a fresh fit)."""
    import torch

    out = Path(out)
    fingerprint = fingerprint or resume_fingerprint(config, {})
    plan = schedule(samples, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    state = TrainState()
    checkpoint = last_checkpoint(out)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer, fingerprint)
        log.info("resuming from %s (step %d)", checkpoint, state.step)
    else:
        torch.manual_seed(config.seed)  # LoRA dropout
    resumed_from = state.step
    device = next(model.parameters()).device.type
    autocast = torch.autocast("cpu", dtype=torch.bfloat16,
                              enabled=use_bf16_autocast(config, device))
    model.train()
    for step in range(state.step, len(plan)):
        start = time.perf_counter()
        micro_batches = plan[step]
        weights = [samples[i].weight for rows in micro_batches for r in rows for i in r]
        norm = normalizer(weights, config.estimator)
        step_loss = 0.0
        step_tokens = 0
        optimizer.zero_grad(set_to_none=True)
        for rows in micro_batches:
            collate = packing.collate_shared_rows if config.share_prefix else collate_packed_rows
            batch = collate([[samples[i] for i in r] for r in rows])
            with autocast:
                loss = forward_loss(model, batch, norm)
            loss.backward()
            step_loss += float(loss.detach())
            step_tokens += sum(len(samples[i].input_ids) for r in rows for i in r)  # no pads
        # the norm before clipping (clip_grad_norm_ with an infinite limit only measures)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or math.inf)
        optimizer.step()
        state.grad_norms.append(float(grad_norm))
        seconds = time.perf_counter() - start
        state.step = step + 1
        state.losses.append(step_loss)
        state.tokens += step_tokens
        state.train_seconds += seconds
        if on_step is not None:
            on_step(state.step, len(plan), step_loss, step_tokens / max(seconds, 1e-9))
        if config.checkpoint_every and (
            state.step % config.checkpoint_every == 0 or state.step == len(plan)
        ):
            final = state.step == len(plan)
            save_checkpoint(out, model, optimizer, state, fingerprint,
                            keep=config.keep_checkpoints if final else _KEEP_CHECKPOINTS)
    return state, resumed_from
