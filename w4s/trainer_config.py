"""The trainer's hyperparameters (models/rlao.py), declared here once and without pydantic:
the trainer also runs where only torch, transformers and peft are installed (the GPU fit
benchmark). `w4s.stage_config.FitConfig` is generated from these fields (their defaults,
bounds and descriptions) plus the stage's own `base` and `force`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# fields a resumed fit may change: the length of the run, not what it learns
RUN_LENGTH = ("epochs", "max_steps", "checkpoint_every", "keep_checkpoints")


def _field(default: Any, *, description: str, **bounds: Any) -> Any:
    """A dataclass field whose metadata FitConfig turns into a validated pydantic field."""
    return field(default=default, metadata={"description": description, "bounds": bounds})


@dataclass(frozen=True)
class TrainerConfig:
    """Hyperparameters of one fit; saved in metrics.json and in every checkpoint."""

    epochs: int = _field(1, ge=1, description="passes over the samples (ignored when "
                        "max_steps asks for more)")
    max_steps: int | None = _field(None, ge=1, description="optimizer steps (overrides epochs)")
    lr: float = _field(1e-4, gt=0, description="AdamW learning rate, constant")
    weight_decay: float = _field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float | None = _field(1.0, ge=0, description="gradient clipping; None or 0 "
                                        "= off")
    estimator: Literal["self_normalized", "mean"] = _field(
        "self_normalized", description="step loss: sum w*loss / sum w, or / n (the paper's)")
    step_samples: int = _field(16, ge=1, description="samples per optimizer step, shuffled "
                              "across states")
    lora_r: int = _field(8, ge=1, description="LoRA rank")
    lora_alpha: int = _field(16, ge=1, description="LoRA alpha")
    lora_dropout: float = _field(0.05, ge=0, lt=1, description="LoRA dropout")
    target_modules: tuple[str, ...] = _field(
        ("q_proj", "v_proj"), min_length=1, description="the modules LoRA adapts")
    batch_tokens: int = _field(4096, ge=1, description="tokens per forward pass (micro-batch)")
    row_tokens: int | None = _field(
        None, ge=2, description="tokens per packed row; default: min(batch_tokens, "
        "max_seq_len) on a GPU; on the CPU, where attention's cost grows with the row's "
        "square, the longest state laid out shared (the longest sample unshared)")
    max_seq_len: int | None = _field(
        None, ge=2, description="default: the base model's context; longer samples are "
        "dropped and counted, never cut")
    gradient_checkpointing: bool | None = _field(
        None, description="recompute activations in the backward pass; default: on on a GPU")
    cpu_bf16: bool | None = _field(
        None, description="bf16 autocast on the CPU (the LoRA weights stay fp32); default: on "
        "where the CPU has bf16 matrix units (AMX or AVX512-BF16), fp32 elsewhere")
    seed: int = _field(0, description="seed of the LoRA init, dropout and sample order")
    checkpoint_every: int = _field(50, ge=0, description="optimizer steps; 0 = none")
    keep_checkpoints: int = _field(
        1, ge=1, description="checkpoints (optimizer states) left after the fit; the last "
        "two are kept while it runs")
    share_prefix: bool = _field(
        True, description="prefix-shared packing: the candidates of one prompt share one "
        "copy of it per row under a block mask")
