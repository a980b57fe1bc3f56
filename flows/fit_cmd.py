"""`w4s fit` and `w4s adapters`: fit a LoRA adapter on a reward-weighted dataset (the stage
function `w4s.tasks.fit.fit_stage`), register it, list and promote adapters."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Annotated, Any

from cyclopts import Parameter

from w4s.flows.config_cli import Given, config_command, option
from w4s.stage_config import FitConfig

# ----------------------------------------------------------------------------- commands


def _stderr_progress(step: int, total: int, loss: float, tokens_per_s: float) -> None:
    print(
        f"step {step}/{total}  loss {loss:.4f}  {tokens_per_s:,.0f} tok/s",
        file=sys.stderr,
        flush=True,
    )


def _fit(given: Given, *, dataset: str, out: str) -> int:
    from w4s.errors import NothingToLearn
    from w4s.flows import progress, ui
    from w4s.tasks.fit import fit_stage

    config = given.load(FitConfig)
    on_step = progress.fit_on_step(f"fit {out}: optimizer steps", _stderr_progress)
    try:
        result = fit_stage(dataset, out, config, on_step=on_step)
    except NothingToLearn as e:
        print(f"w4s fit: {e}")
        return 0
    ui.publish_fit(result.out, result.adapter_id, result.metrics)  # report PNGs in out/report/
    print(fit_summary(result))
    return 0


def fit_summary(result: Any) -> str:
    """One line: what the fit did and where the adapter is."""
    m = result.metrics
    last = m["loss_curve"][-1]["loss"] if m["loss_curve"] else float("nan")
    return (
        f"fitted {result.adapter_id or result.out}: {m['steps']} steps, {m['samples']} samples "
        f"({m['samples_dropped']} dropped: over {m['max_seq_len']} tokens), estimator "
        f"{m['estimator']}, {m['tokens_total']} tokens, final loss {last:.4f}, "
        f"{m['tokens_per_s'] or 0:,.0f} tok/s, {m['seconds']:.1f}s -> {result.out}"
    )


def adapters(*, json_out: Annotated[bool, Parameter(
                 name="--json", negative="", help="print the records as JSON")] = False,
             promote: Annotated[str | None, Parameter(
                 help="make this adapter the champion by hand, by id (the nightly's gate "
                      "promotes only what is not worse)")] = None) -> int:
    """List the fitted adapters (* the champion)."""
    from w4s.storage.adapters import champion, list_adapters, resolve
    from w4s.storage.adapters import promote as promote_adapter

    if promote:  # by hand: a rollback, or an adapter fitted outside the nightly
        record, previous = resolve(promote), champion()
        promote_adapter(record, previous=previous.id if previous else None,
                        gate={"verdict": "promoted", "by": "w4s adapters --promote"})
        print(f"champion: {record.id} (was {previous.id if previous else 'base'})")
        return 0
    records = list_adapters()
    if json_out:
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


fit = config_command(
    FitConfig, _fit, help="Fit a LoRA adapter on a reward-weighted dataset (RLAO).",
    options=[option("dataset", str, "a prompt-completion Parquet file", required=True),
             option("out", str, "the adapter folder (rerun to resume)", required=True)])
