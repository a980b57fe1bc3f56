"""Run, collection and fit reports: matplotlib PNG plots and markdown that embeds them.

Plain functions over run and adapter folders (no Prefect): flows/ui.py publishes what they
return. Each plot is saved as a PNG under the folder's `report/` and embedded in the markdown
as a `data:` URI, since the Prefect UI renders markdown images from their `src` as given and
serves no files of its own.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from w4s.paths import location
from w4s.storage.files import atomic_write
from w4s.storage.query import iteration_table
from w4s.storage.run_store import RunStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Report:
    """A markdown text and the PNG files it embeds (also saved, locally or at a URL)."""

    markdown: str
    plots: dict[str, Any] = field(default_factory=dict)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display; never a GUI backend in a worker
    import matplotlib.pyplot as plt

    return plt


def preload() -> None:
    """Import matplotlib on a background thread (about 1.5 s on a busy 2-core machine), so
    the report at the end of a run does not wait for it."""
    threading.Thread(target=_pyplot, name="w4s-report-preload", daemon=True).start()


def save_png(fig: Any, path: Any) -> bytes:
    """Write the figure as PNG, whole (a local path or a URL location)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)  # constrained layout: no second "tight" draw
    _pyplot().close(fig)
    data = buf.getvalue()
    atomic_write(location(path), data)
    return data


def embed(title: str, png: bytes) -> str:
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def candidates(run_dir: Any, iterations: list[int]) -> list[dict[str, Any]]:
    """The plotted and counted fields of every candidate of `iterations`, from the run folder."""
    store = RunStore(run_dir)
    return [{"iteration": c.iteration, "candidate": c.index, "val_accuracy": c.accuracy,
             "chosen": c.chosen, "cost_usd": c.cost_usd, "executor_calls": c.executor_calls,
             "executor_tokens": c.executor_prompt_tokens + c.executor_completion_tokens,
             "meta_tokens": c.meta_prompt_tokens + c.meta_completion_tokens}
            for i in iterations for c in store.candidates(i)]


QUALITY_COLUMNS = ("iteration", "candidates", "ran", "skipped", "lost", "stopped", "repairs",
                   "best_val", "chosen_val", "mean_reward")


def iteration_rows(run_dir: Any) -> list[dict[str, Any]]:
    """`w4s show`'s per-iteration table (what the candidates achieved); spend is in
    `spend_rows`, so neither table is too wide for the UI."""
    cols, rows = iteration_table(run_dir)
    return [{c: r[c] for c in QUALITY_COLUMNS}
            for r in (dict(zip(cols, row, strict=True)) for row in rows)]


def spend_rows(run_dir: Any, summary: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per iteration: the validation spend of its candidates (meta-agent tokens are prompt +
    completion); with the run's `summary`, a row for the rest (the seed's and test
    evaluation's calls, lost calls) and a total equal to the summary's."""
    iterations = [r["iteration"] for r in iteration_rows(run_dir)]
    cands = candidates(run_dir, iterations)
    rows = []
    for it in iterations:
        mine = [c for c in cands if c["iteration"] == it]
        costs = [c["cost_usd"] for c in mine if c["cost_usd"] is not None]
        rows.append({"iteration": it, "meta_tokens": sum(c["meta_tokens"] for c in mine),
                     "executor_calls": sum(c["executor_calls"] for c in mine),
                     "executor_tokens": sum(c["executor_tokens"] for c in mine),
                     "cost_usd": round(sum(costs), 6) if costs else None})
    if summary is None:
        return rows
    total = {"iteration": "total", "meta_tokens": summary.get("meta_agent_tokens") or 0,
             "executor_calls": summary.get("executor_calls") or 0,
             "executor_tokens": summary.get("executor_tokens") or 0,
             "cost_usd": summary.get("cost_usd")}
    rest: dict[str, Any] = {"iteration": "test evaluation and other"}
    for key in ("meta_tokens", "executor_calls", "executor_tokens", "cost_usd"):
        shown = [r[key] for r in rows if r[key] is not None]
        rest[key] = (None if total[key] is None else
                     round(total[key] - sum(shown), 6) if key == "cost_usd" else
                     total[key] - sum(shown))
    return [*rows, rest, total]


def accuracy_plot(cands: list[dict[str, Any]], path: Any) -> bytes:
    """Validation accuracy of every candidate per iteration, the chosen ones and best so far."""
    plt = _pyplot()
    fig, ax = plt.subplots(layout="constrained", figsize=(7, 3.6))
    scored = [c for c in cands if c["val_accuracy"] is not None]
    unscored = [c for c in cands if c["val_accuracy"] is None]
    ax.scatter([c["iteration"] for c in scored], [c["val_accuracy"] for c in scored],
               alpha=0.6, label="candidate")
    chosen = [c for c in scored if c["chosen"]]
    ax.scatter([c["iteration"] for c in chosen], [c["val_accuracy"] for c in chosen],
               marker="*", s=160, color="tab:orange", label="chosen", zorder=3)
    if unscored:
        ax.scatter([c["iteration"] for c in unscored], [-0.05] * len(unscored), marker="x",
                   color="grey", label="skipped / not scored")
    iterations = sorted({c["iteration"] for c in cands})
    per_it = [max((c["val_accuracy"] for c in scored if c["iteration"] == i), default=None)
              for i in iterations]
    best = list(accumulate((-1.0 if v is None else v for v in per_it), max))
    ax.step(iterations, [float("nan") if b < 0 else b for b in best], where="post",
            color="tab:green", label="best so far")
    ax.set(xlabel="iteration", ylabel="validation accuracy", ylim=(-0.1, 1.05),
           title="validation accuracy per candidate")
    ax.set_xticks(iterations)
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def cost_plot(rows: list[dict[str, Any]], path: Any) -> tuple[bytes, str]:
    """Cumulative executor cost by iteration, or tokens when no prices are set."""
    plt = _pyplot()
    priced = any(r["cost_usd"] is not None for r in rows)
    values = [(r["cost_usd"] or 0.0) if priced else (r["executor_tokens"] or 0) for r in rows]
    what = "cost (USD)" if priced else "executor tokens"
    fig, ax = plt.subplots(layout="constrained", figsize=(7, 3.0))
    ax.plot([r["iteration"] for r in rows], list(accumulate(values)), marker="o")
    ax.set(xlabel="iteration", ylabel=f"cumulative {what}",
           title=f"cumulative validation {what}")
    ax.set_xticks([r["iteration"] for r in rows])
    ax.grid(alpha=0.3)
    return save_png(fig, path), what


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |"
              for r in rows]
    return "\n".join(lines)


def run_report(run_dir: Any, summary: dict[str, Any], headline: str) -> Report:
    """The optimization run's report: result, totals, both plots, the iteration table."""
    run_dir = location(run_dir)
    adapter = RunStore(run_dir).config().meta_agent.adapter
    rows = iteration_rows(run_dir)
    spend = spend_rows(run_dir, summary)
    per_iteration = [r for r in spend if isinstance(r["iteration"], int)]
    cands = candidates(run_dir, [r["iteration"] for r in rows])
    out = run_dir / "report"
    acc = accuracy_plot(cands, out / "accuracy.png")
    cost, what = cost_plot(per_iteration, out / "cost.png")
    total = summary.get("cost_usd")
    spent = (f"total executor cost: **${total:.4f}**" if total is not None
             else "total executor cost: not priced (set `prices` in the config)")
    text = "\n\n".join([
        f"# w4s run {summary['run_id']} ({summary['benchmark']})",
        headline,
        f"{spent}; executor tokens {summary.get('executor_tokens')} in "
        f"{summary.get('executor_calls')} calls; meta-agent tokens (prompt + completion) "
        f"{summary.get('meta_agent_tokens')}: the *Spend* table's total row, its iterations "
        "being the candidates' validation",
        f"best workflow: `{summary.get('best_workflow')}`  \nrun folder: `{run_dir}`"
        + (f"  \nmeta-agent adapter: `{adapter}`" if adapter else ""),
        "## Validation accuracy", embed("validation accuracy per candidate", acc),
        f"## Cumulative {what}", embed(f"cumulative {what}", cost),
        "## Iterations", markdown_table(rows),
        "## Spend", markdown_table(spend),
    ])
    return Report(text, {"accuracy": out / "accuracy.png", "cost": out / "cost.png"})


def histogram_plot(histogram: dict[str, int], path: Any, title: str) -> bytes:
    plt = _pyplot()
    keys = sorted(histogram, key=lambda k: float("inf") if k == "null" else float(k))
    fig, ax = plt.subplots(layout="constrained", figsize=(6, 3.0))
    ax.bar([k for k in keys], [histogram[k] for k in keys], color="tab:purple")
    ax.set(xlabel="reward", ylabel="rows", title=title)
    ax.grid(alpha=0.3, axis="y")
    return save_png(fig, path)


def collection_report(summary: dict[str, Any], report_dir: Any) -> Report:
    """A collection's episodes and the reward histogram of its rows."""
    cid = summary["collection_id"]
    parts = [f"# w4s collection {cid}",
             f"{len(summary['completed'])} of {len(summary['episodes'])} episodes done "
             f"({summary['status']}), {summary['rows']} candidate rows; positive share "
             f"{summary['positive_share']}"]
    plots = {}
    if summary["reward_histogram"]:
        path = report_dir / f"{cid}-rewards.png"
        png = histogram_plot(summary["reward_histogram"], path, "rewards of the collected rows")
        parts += ["## Rewards", embed("reward histogram", png)]
        plots["rewards"] = path
    if summary["failed"]:
        parts.append("## Failed episodes\n" + "\n".join(f"- {e}: {why}" for e, why in
                                                         summary["failed"].items()))
    return Report("\n\n".join(parts), plots)


def loss_plot(curve: list[dict[str, Any]], path: Any) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(layout="constrained", figsize=(7, 3.2))
    ax.plot([p["step"] for p in curve], [p["loss"] for p in curve], marker="." if
            len(curve) < 50 else None)
    ax.set(xlabel="optimizer step", ylabel="weighted loss", title="RLAO fit: training loss")
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def _dropped_why(metrics: dict[str, Any]) -> str:
    if not metrics.get("samples_dropped") or metrics.get("max_seq_len") is None:
        return ""
    return f": longer than max_seq_len {metrics['max_seq_len']} tokens, none cut"


def _estimator_line(metrics: dict[str, Any]) -> str:
    """How the weights reached the optimizer (issue 15: clipping had erased them)."""
    estimator = metrics.get("estimator", "mean (sum w*loss / n, before issue 15)")
    clip = metrics.get("max_grad_norm")
    line = f"estimator: `{estimator}`; max_grad_norm {clip if clip else 'off'}"
    if clip and "clipped_steps" in metrics:
        line += f" (clipped {metrics['clipped_steps']} of {metrics['steps']} steps)"
    if "gradient_checkpointing" in metrics:
        line += f"; gradient checkpointing {'on' if metrics['gradient_checkpointing'] else 'off'}"
    if metrics.get("bf16_autocast"):
        line += "; bf16 autocast on the CPU"
    return line


def fit_report(adapter_dir: str | Path, adapter_id: str | None = None) -> Report:
    """The fit's loss curve (metrics.json) and its dataset's reward histogram (the card)."""
    from w4s.storage.dataset import card_path_for

    adapter_dir = Path(adapter_dir)
    metrics = json.loads((adapter_dir / "metrics.json").read_text())
    out = adapter_dir / "report"
    curve = metrics.get("loss_curve") or []
    name = adapter_id or adapter_dir.name
    final = f"{curve[-1]['loss']:.4f}" if curve else "n/a"
    parts = [f"# w4s adapter {name}",
             f"{metrics['steps']} steps on {metrics['samples']} samples "
             f"({metrics['samples_dropped']} dropped{_dropped_why(metrics)}), final loss "
             f"{final}, {metrics['seconds']:.1f} s on {metrics['device']}; "
             f"base `{metrics['base_model']}`",
             _estimator_line(metrics),
             f"adapter folder: `{adapter_dir}`  \ndataset: `{metrics['dataset']}`"]
    plots = {}
    if curve:
        parts += ["## Loss", embed("loss curve", loss_plot(curve, out / "loss.png"))]
        plots["loss"] = out / "loss.png"
    card = card_path_for(metrics["dataset"])
    if card.is_file():
        hist = json.loads(card.read_text()).get("reward_histogram") or {}
        if hist:
            png = histogram_plot(hist, out / "rewards.png", "rewards in the dataset")
            parts += ["## Dataset rewards", embed("reward histogram", png)]
            plots["rewards"] = out / "rewards.png"
    return Report("\n\n".join(parts), plots)
