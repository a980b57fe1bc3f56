"""The fit stage without Prefect: a LoRA adapter fitted on a reward-weighted dataset,
written with its metrics.json and registered. Every input (dataset, base, hyperparameters)
is checked before a model loads, so a bad input costs a one-line error, not a model load.
The trainer itself is models/rlao.py; `w4s fit` and the `fit` flow call `fit_stage`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w4s.config import build_config
from w4s.stage_config import FitConfig
from w4s.storage.files import atomic_write
from w4s.tasks.caching import file_digest

log = logging.getLogger(__name__)

StepFn = Callable[[int, int, float, float], None]  # step, total, loss, tokens/s

EMBEDDED = "embedded"


@dataclass
class FitResult:
    """What a fit left: the adapter folder, its metrics.json document, its registry id."""

    out: Path
    metrics: dict[str, Any]
    adapter_id: str | None  # None when not registered


def resolve_base(base: str) -> tuple[Path, str]:
    """(local folder, base model id): `embedded` is SmolLM2-135M-Instruct's cached folder."""
    from w4s.errors import ConfigError

    if base == EMBEDDED:
        from w4s.models.embedded import (
            EMBEDDED_MODEL_ID,
            embedded_gguf_path,
            ensure_embedded_folder,
        )

        embedded_gguf_path()  # a one-line error if the package is missing, before anything
        return ensure_embedded_folder(), EMBEDDED_MODEL_ID
    folder = Path(base).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"`base` {base!r} is neither `embedded` nor a local Hugging Face model "
            "folder (no config.json there)"
        )
    return folder.resolve(), str(folder.resolve())


def fit_adapter(dataset: str | Path, base: str, out: str | Path, *, register: bool = True,
                on_step: StepFn | None = None, **fields: Any) -> FitResult:
    """`fit_stage` with the config's fields as keywords: an unknown or bad one is a one-line
    ConfigError naming it."""
    config = build_config({**fields, "base": base}, FitConfig)
    return fit_stage(dataset, out, config, register=register, on_step=on_step)


def fit_stage(dataset: str | Path, out: str | Path, config: FitConfig, *,
              register: bool = True, on_step: StepFn | None = None) -> FitResult:
    """Fit, write `out` (a PEFT adapter folder + metrics.json), register it; rerunning with the
    same `out` resumes from its last checkpoint. A dataset without a positive reward raises
    NothingToLearn (before any model loads) unless `config.force`. The report and the UI are
    the caller's (`w4s.flows.ui.publish_fit`)."""
    from w4s.errors import ConfigError
    from w4s.models import rlao

    started = time.perf_counter()
    dataset = Path(dataset)
    rows = rlao.read_dataset(dataset)  # every dataset check, before the model loads
    if not config.force:
        require_positive_reward(dataset)
    folder, base_id = resolve_base(config.base)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"`out` {str(out)!r} exists and is not a folder")
    sha = file_digest(dataset)
    device, dtype = rlao.pick_device()
    model, tokenizer = rlao.load_base(folder, device=device, dtype=dtype)
    rlao.use_flex_attention(model, config.trainer(), device)
    if config.max_seq_len is None:
        config = config.model_copy(update={"max_seq_len": rlao.model_context(model, tokenizer)})
    samples, stats = rlao.tokenize_rows(tokenizer, rows, config.max_seq_len)
    if not samples:
        raise ConfigError(
            f"`max_seq_len` {config.max_seq_len}: every sample is longer, "
            f"so all {stats.dropped_too_long} were dropped (none is ever cut)"
        )
    if not any(s.weight > 0 for s in samples):
        raise ConfigError("every sample left after dropping the too long ones has weight zero")
    if device == "cpu":  # recorded resolved, so metrics.json says what ran
        update = {"cpu_bf16": rlao.use_bf16_autocast(config.trainer(), device)}
        if config.row_tokens is None:
            update["row_tokens"] = rlao.cpu_row_tokens(samples, config.trainer())
        config = config.model_copy(update=update)
    trainer = config.trainer()  # the trainer's part, max_seq_len (and the CPU's) resolved
    model = rlao.add_lora(model, trainer)
    checkpointing = rlao.use_gradient_checkpointing(trainer, device)
    if checkpointing:
        rlao.enable_gradient_checkpointing(model)
    fingerprint = rlao.resume_fingerprint(trainer, {"dataset_sha256": sha, "base_model": base_id})
    out.mkdir(parents=True, exist_ok=True)
    state, resumed_from = rlao.train(model, samples, trainer, out, fingerprint, on_step=on_step)
    save_adapter(model, out)
    import peft
    import torch
    import transformers

    # a checkpoint from before grad norms were recorded lacks its first steps' norms
    norms = [None] * (len(state.losses) - len(state.grad_norms)) + state.grad_norms
    metrics = {
        "base_model": base_id,
        "base_path": str(folder),
        "dataset": str(dataset.resolve()),
        "dataset_sha256": sha,
        "hyperparameters": config.hyperparameters(),
        "estimator": config.estimator,
        "max_grad_norm": config.max_grad_norm,
        "loss_curve": [
            {"step": i + 1, "loss": loss, "grad_norm": norm}
            for i, (loss, norm) in enumerate(zip(state.losses, norms, strict=True))
        ],
        "clipped_steps": sum(
            1 for g in state.grad_norms if config.max_grad_norm and g > config.max_grad_norm
        ),
        "steps": state.step,
        "resumed_from_step": resumed_from,
        "rows": len(rows),
        "samples": stats.samples,
        "samples_dropped": stats.dropped_too_long,  # longer than max_seq_len; none is cut
        "longest_dropped_tokens": stats.longest_dropped,
        "max_seq_len": config.max_seq_len,
        "template_fallback": stats.template_fallback,
        "glue_tokens_masked": stats.glue_masked,
        "no_end_of_turn": stats.no_end_of_turn,
        "gradient_checkpointing": checkpointing,
        "bf16_autocast": rlao.use_bf16_autocast(trainer, device),
        "attention": getattr(model.config, "_attn_implementation", None),
        "tokens_total": stats.tokens,
        "tokens_completion": stats.completion_tokens,
        "tokens_trained": state.tokens,
        "tokens_per_s": state.tokens / state.train_seconds if state.train_seconds else None,
        "train_seconds": state.train_seconds,
        "seconds": time.perf_counter() - started,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    }
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2))
    adapter_id = None
    if register:
        from w4s.storage.adapters import register as register_adapter

        summary = {
            k: metrics[k]
            for k in ("steps", "samples", "samples_dropped", "estimator", "tokens_total",
                      "tokens_per_s", "seconds")
        }
        summary["final_loss"] = state.losses[-1] if state.losses else None
        adapter_id = register_adapter(
            out,
            base_model=base_id,
            dataset_sha256=sha,
            hyperparameters=metrics["hyperparameters"],
            metrics=summary,
            dataset=metrics["dataset"],
        ).id
    return FitResult(out=out, metrics=metrics, adapter_id=adapter_id)


def require_positive_reward(dataset: Path) -> None:
    """NothingToLearn when no row's reward is > 0. A dataset without a `reward` column
    (written by other tools) is not judged: its weights are all there is."""
    import pyarrow.parquet as pq

    from w4s.errors import NothingToLearn

    if "reward" not in pq.read_schema(dataset).names:
        return
    rewards = [r for r in pq.read_table(dataset, columns=["reward"])["reward"].to_pylist()
               if r is not None]
    if any(r > 0 for r in rewards):
        return
    top = f", the highest {max(rewards):g}" if rewards else ""
    raise NothingToLearn(
        f"fit skipped: dataset {dataset.name!r} has no row with a positive reward "
        f"({len(rewards)} rows{top}), so a reward-weighted fit would only imitate actions "
        "that earned nothing; --force (force: true) fits anyway")


def save_adapter(model: Any, out: Path) -> None:
    """The final adapter into `out`, whole: saved in a temp folder inside `out`, then each
    file renamed in, the weights before `adapter_config.json`. A fit killed here leaves no
    folder that looks like an adapter (config present) with missing or half weights; a
    rerun resumes from the last checkpoint and replaces the files."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".final-", suffix=".tmp"))
    try:
        model.save_pretrained(tmp)
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        for f in sorted(files, key=lambda p: p.name == "adapter_config.json"):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


