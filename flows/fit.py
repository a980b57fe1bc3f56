"""`w4s fit` and `w4s adapters`: fit a LoRA adapter on a reward-weighted dataset, register it.

`fit_adapter` checks every input (dataset, base, hyperparameters) before loading a model,
so a bad input costs a one-line error, not a model load. The work itself is in models/rlao.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from w4s.models.rlao import ESTIMATORS, RLAOConfig
from w4s.storage.files import atomic_write

log = logging.getLogger(__name__)

EMBEDDED = "embedded"


@dataclass
class FitResult:
    out: Path
    metrics: dict[str, Any]
    adapter_id: str | None  # None when not registered


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def fit_adapter(
    dataset: str | Path,
    base: str,
    out: str | Path,
    *,
    epochs: int = 1,
    max_steps: int | None = None,
    lr: float = 1e-4,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    batch_tokens: int = 4096,
    row_tokens: int | None = None,
    step_samples: int = 16,
    max_seq_len: int | None = None,
    max_grad_norm: float | None = 1.0,
    estimator: str = "self_normalized",
    gradient_checkpointing: bool | None = None,
    seed: int = 0,
    checkpoint_every: int = 50,
    keep_checkpoints: int = 1,
    register: bool = True,
    force: bool = False,
    on_step: Callable[[int, int, float, float], None] | None = None,
) -> FitResult:
    """Fit, write `out` (a PEFT adapter folder + metrics.json), register it; rerunning with the
    same `out` resumes from its last checkpoint. `max_seq_len` None is the base model's
    context; `gradient_checkpointing` None is on on a GPU (see models/rlao.py). A dataset
    without a positive reward raises NothingToLearn (before any model loads) unless `force`."""
    from w4s.errors import ConfigError
    from w4s.models import rlao

    started = time.perf_counter()
    config = RLAOConfig(
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=tuple(target_modules),
        batch_tokens=batch_tokens,
        row_tokens=row_tokens,
        step_samples=step_samples,
        max_seq_len=max_seq_len,
        max_grad_norm=max_grad_norm,
        estimator=estimator,
        gradient_checkpointing=gradient_checkpointing,
        seed=seed,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
    )
    dataset = Path(dataset)
    rows = rlao.read_dataset(dataset)  # every dataset check, before the model loads
    if not force:
        require_positive_reward(dataset)
    folder, base_id = resolve_base(base)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"`out` {str(out)!r} exists and is not a folder")
    sha = file_sha256(dataset)
    device, dtype = rlao.pick_device()
    model, tokenizer = rlao.load_base(folder, device=device, dtype=dtype)
    rlao.use_flex_attention(model, config, device)
    if config.max_seq_len is None:
        config = replace(config, max_seq_len=rlao.model_context(model, tokenizer))
    samples, stats = rlao.tokenize_rows(tokenizer, rows, config.max_seq_len)
    if not samples:
        raise ConfigError(
            f"`max_seq_len` {config.max_seq_len}: every sample is longer, "
            f"so all {stats.dropped_too_long} were dropped (none is ever cut)"
        )
    if not any(s.weight > 0 for s in samples):
        raise ConfigError("every sample left after dropping the too long ones has weight zero")
    model = rlao.add_lora(model, config)
    checkpointing = rlao.use_gradient_checkpointing(config, device)
    if checkpointing:
        rlao.enable_gradient_checkpointing(model)
    fingerprint = rlao.resume_fingerprint(config, {"dataset_sha256": sha, "base_model": base_id})
    out.mkdir(parents=True, exist_ok=True)
    from w4s.flows import progress

    on_step = progress.fit_on_step(f"fit {out.name}: optimizer steps", on_step)
    state, resumed_from = rlao.train(model, samples, config, out, fingerprint, on_step=on_step)
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
        "hyperparameters": {**asdict(config), "target_modules": list(config.target_modules)},
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
    from w4s.flows.ui import publish_fit

    publish_fit(out, adapter_id, metrics)  # report PNGs in out/report/; in a run: UI + event
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


# ----------------------------------------------------------------------------- commands


def _stderr_progress(step: int, total: int, loss: float, tokens_per_s: float) -> None:
    print(
        f"step {step}/{total}  loss {loss:.4f}  {tokens_per_s:,.0f} tok/s",
        file=sys.stderr,
        flush=True,
    )


def cmd_fit(args: argparse.Namespace) -> int:
    from w4s.errors import NothingToLearn

    try:
        result = _fit_from_args(args)
    except NothingToLearn as e:
        print(f"w4s fit: {e}")
        return 0
    m = result.metrics
    last = m["loss_curve"][-1]["loss"] if m["loss_curve"] else float("nan")
    print(
        f"fitted {result.adapter_id or result.out}: {m['steps']} steps, {m['samples']} samples "
        f"({m['samples_dropped']} dropped: over {m['max_seq_len']} tokens), estimator "
        f"{m['estimator']}, {m['tokens_total']} tokens, final loss {last:.4f}, "
        f"{m['tokens_per_s'] or 0:,.0f} tok/s, {m['seconds']:.1f}s -> {result.out}"
    )
    return 0


def _fit_from_args(args: argparse.Namespace) -> FitResult:
    return fit_adapter(
        args.dataset,
        args.base,
        args.out,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr=args.lr,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=[t.strip() for t in args.target_modules.split(",") if t.strip()],
        batch_tokens=args.batch_tokens,
        row_tokens=args.row_tokens,
        step_samples=args.step_samples,
        max_seq_len=args.max_seq_len,
        max_grad_norm=args.max_grad_norm if args.max_grad_norm > 0 else None,
        estimator=args.estimator,
        gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        force=args.force,
        on_step=_stderr_progress,
    )


def cmd_adapters(args: argparse.Namespace) -> int:
    from w4s.storage.adapters import champion, list_adapters, promote, resolve

    if args.promote:  # by hand: a rollback, or an adapter fitted outside the nightly
        record, previous = resolve(args.promote), champion()
        promote(record, previous=previous.id if previous else None,
                gate={"verdict": "promoted", "by": "w4s adapters --promote"})
        print(f"champion: {record.id} (was {previous.id if previous else 'base'})")
        return 0
    records = list_adapters()
    if args.json:
        print(json.dumps([asdict(r) for r in records], indent=2))
        return 0
    if not records:
        print("no adapters registered; fit one with `w4s fit`")
        return 0
    best = champion()
    for r in records:
        loss = r.metrics.get("final_loss")
        mark = "*" if best is not None and r.id == best.id else " "
        print(
            f"{mark}{r.id}  {r.created_at[:19]}  base={r.base_model}  "
            f"steps={r.metrics.get('steps')}  "
            f"loss={loss if loss is None else f'{loss:.4f}'}  {r.path}"
        )
    print("* champion (`--adapter champion`)" if best else
          "champion: the base model (no adapter promoted)")
    return 0


def add_parser(subparsers: Any) -> None:
    """Adds the `fit` and `adapters` subcommands to the `w4s` parser."""
    d = RLAOConfig()
    p = subparsers.add_parser("fit", help="fit a LoRA adapter on a reward-weighted dataset")
    p.add_argument("--dataset", required=True, help="a prompt-completion Parquet file")
    p.add_argument(
        "--base",
        default=EMBEDDED,
        help="`embedded` (SmolLM2-135M-Instruct, default) or a local Hugging Face folder",
    )
    p.add_argument("--out", required=True, help="the adapter folder (rerun to resume)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    p.add_argument(
        "--max-steps", type=int, default=None, help="optimizer steps (overrides --epochs)"
    )
    p.add_argument("--lr", type=float, default=d.lr, help=f"default {d.lr}")
    p.add_argument("--lora-r", type=int, default=d.lora_r, help=f"default {d.lora_r}")
    p.add_argument("--lora-alpha", type=int, default=d.lora_alpha, help=f"default {d.lora_alpha}")
    p.add_argument(
        "--lora-dropout", type=float, default=d.lora_dropout, help=f"default {d.lora_dropout}"
    )
    p.add_argument(
        "--target-modules",
        default=",".join(d.target_modules),
        help=f"comma-separated, default {','.join(d.target_modules)}",
    )
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=d.batch_tokens,
        help=f"tokens per forward pass (micro-batch), default {d.batch_tokens}",
    )
    p.add_argument(
        "--row-tokens",
        type=int,
        default=None,
        help="tokens per packed row (default: min(batch tokens, max seq len))",
    )
    p.add_argument(
        "--step-samples",
        type=int,
        default=d.step_samples,
        help=f"samples per optimizer step, shuffled across states, default {d.step_samples}",
    )
    p.add_argument(
        "--max-seq-len",
        type=int,
        default=None,
        help="default: the base model's context; longer samples are dropped and counted, "
        "never cut",
    )
    p.add_argument(
        "--max-grad-norm",
        type=float,
        default=d.max_grad_norm,
        help=f"gradient clipping, default {d.max_grad_norm}; 0 = off",
    )
    p.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default=d.estimator,
        help="step loss: sum w*loss / sum w (self_normalized, default) or / n (mean)",
    )
    p.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute activations in the backward pass (default: on on a GPU)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=d.checkpoint_every,
        help=f"optimizer steps, default {d.checkpoint_every}; 0 = none",
    )
    p.add_argument(
        "--keep-checkpoints",
        type=int,
        default=d.keep_checkpoints,
        help=f"checkpoints (optimizer states) left after the fit, default "
             f"{d.keep_checkpoints}: the final one",
    )
    p.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    p.add_argument("--force", action="store_true",
                   help="fit even when no row has a positive reward (skipped otherwise)")
    p.set_defaults(func=cmd_fit)

    p = subparsers.add_parser("adapters", help="list the fitted adapters (* the champion)")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.add_argument("--promote", metavar="ID", help="make this adapter the champion by hand "
                   "(the nightly's gate promotes only what is not worse)")
    p.set_defaults(func=cmd_adapters)
