"""The nightly's story on one page: what each stage did, took and spent, beside last night's.

Built from what the stages left on (shared) storage, so the parent writes it whether the
stages ran here or on other hosts; the summary goes into `<runs>/<nightly-id>.nightly.json`
and, as markdown with the best workflow's code inline (the UI may sit on another machine
than the run folders), into the artifact `w4s-nightly-<nightly-id>`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from w4s.paths import location
from w4s.storage.run_store import RunStore

SPEND_KEYS = ("executor_calls", "executor_tokens", "meta_agent_tokens", "cost_usd")
NO_SPEND = {"executor_calls": 0, "executor_tokens": 0, "meta_agent_tokens": 0, "cost_usd": 0.0}


def _usd_sum(values: list[float | None]) -> float | None:
    """A sum that stays unknown (None) once any part is unknown, never a silent 0."""
    return None if any(v is None for v in values) else round(sum(values), 6)  # type: ignore


def add_spend(*parts: dict[str, Any]) -> dict[str, Any]:
    out = {k: sum(p[k] for p in parts) for k in SPEND_KEYS[:3]}
    return out | {"cost_usd": _usd_sum([p["cost_usd"] for p in parts])}


def run_folder_spend(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's spend: its executor calls (every process, lost calls too) and its
    meta-agent's tokens, priced like the executor (a local model costs 0.0)."""
    from w4s.cost import PriceTable
    from w4s.tasks.runtime import run_spend

    store = RunStore(run_dir)
    cfg = store.config()
    executor = run_spend(store.root)
    meta = cfg.meta_agent
    prompt = completion = 0
    for it in range(cfg.iterations + 1):
        for c in store.candidates(it):
            prompt += c.meta_prompt_tokens
            completion += c.meta_completion_tokens
    model = meta.model or meta.label
    meta_usd = PriceTable.for_executor(meta.kind, model, cfg.prices).cost(model, prompt,
                                                                          completion)
    return {"executor_calls": executor.executor_calls, "executor_tokens": executor.tokens,
            "meta_agent_tokens": prompt + completion,
            "cost_usd": _usd_sum([executor.cost_usd, meta_usd])}


def evaluation_spend(report: dict[str, Any]) -> dict[str, Any]:
    return {"executor_calls": report.get("executor_calls", 0),
            "executor_tokens": report.get("prompt_tokens", 0) + report.get("completion_tokens", 0),
            "meta_agent_tokens": 0, "cost_usd": report.get("cost_usd")}


def _read(path: Any) -> dict[str, Any] | None:
    p = location(path)
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except (OSError, ValueError):
        return None


def previous_night(root: str | Path, nightly_id: str) -> dict[str, Any] | None:
    """The latest other nightly summary under `root` (by when it finished)."""
    found = []
    for path in location(root).glob("*.nightly.json"):
        doc = _read(path)
        if doc and doc.get("nightly_id") != nightly_id and doc.get("figures"):
            found.append(doc)
    return max(found, key=lambda d: d.get("finished_at", ""), default=None)


def _histogram(card_path: str | None) -> dict[str, int]:
    card = _read(card_path) if card_path else None
    return (card or {}).get("reward_histogram") or {}


def _warnings(positive_share: float | None, histogram: dict[str, int],
              curve: list[dict[str, Any]]) -> list[str]:
    out = []
    rewards = [float(k) for k in histogram if k not in ("null", "None", "nan")]
    if (rewards and max(rewards) <= 0) or positive_share == 0:
        out.append("the fit learned from nothing: every reward in the data is negative "
                   "or zero (positive share 0)")
    if len(curve) >= 2 and curve[-1]["loss"] > curve[0]["loss"]:
        out.append(f"the fit's loss rose: {curve[0]['loss']:.4f} -> {curve[-1]['loss']:.4f}")
    return out


def _gate_spend(gate: dict[str, Any] | None) -> dict[str, Any]:
    """The gate's spend: the run folders of its champion and challenger samples."""
    if not gate or not gate.get("runs_dir"):
        return dict(NO_SPEND)
    root = location(gate["runs_dir"])
    episodes = [root / e for cid in (gate.get("collections") or {}).values()
                for e in (_read(root / f"{cid}.collection.json") or {}).get("episodes", [])]
    return add_spend(NO_SPEND, *(run_folder_spend(e) for e in episodes
                                 if (e / "config.json").is_file()))


def build(*, nightly_id: str, root: str | Path, stages: list[dict[str, Any]],
          collected: dict[str, Any], data: dict[str, Any], adapter: dict[str, Any],
          summary: dict[str, Any], scored: dict[str, Any], finished_at: str,
          gate: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every figure of the night (plain JSON): stages with time, pool, host and spend."""
    root_loc = location(root)
    spend = {
        "collect": add_spend(NO_SPEND, *(run_folder_spend(root_loc / e)
                                         for e in collected["episodes"]
                                         if (root_loc / e / "config.json").is_file())),
        "dataset": dict(NO_SPEND), "fit": dict(NO_SPEND), "gate": _gate_spend(gate),
        "optimize": run_folder_spend(summary["run_dir"]),
        "evaluate": evaluation_spend(_read(scored["report"]) or scored),
    }
    for s in stages:
        s["spend"] = spend.get(s["stage"], dict(NO_SPEND))
    fitted = Path(adapter["path"]) if adapter.get("path") else None  # None: fit skipped
    metrics = (_read(fitted / "metrics.json") if fitted else None) or {}
    curve = metrics.get("loss_curve") or []
    if gate is None and fitted is not None:
        gate = _read(fitted / "gate.json")
    histogram = _histogram(data.get("card"))
    code_path = location(summary["best_workflow"])
    figures = {
        "collection_rows": collected["rows"], "positive_share": collected["positive_share"],
        "dataset_rows": data["rows"], "fit_steps": adapter["steps"],
        "first_loss": curve[0]["loss"] if curve else None,
        "final_loss": adapter["final_loss"], "gate": gate["verdict"] if gate else "no gate",
        "best_val_accuracy": summary["best_val_accuracy"],
        "test_accuracy": summary["test_accuracy"], "evaluation_accuracy": scored["accuracy"],
        "seconds": round(sum(s["seconds"] for s in stages), 1),
        "cost_usd": _usd_sum([s["spend"]["cost_usd"] for s in stages]),
    }
    return {
        "nightly_id": nightly_id, "finished_at": finished_at, "stages": stages,
        "spend_total": add_spend(*(s["spend"] for s in stages)), "figures": figures,
        "reward_histogram": histogram, "fit_device": metrics.get("device"),
        "gate": gate, "evaluation": {k: scored.get(k) for k in ("benchmark", "split",
                                                                 "items", "accuracy")},
        "best_workflow": summary["best_workflow"],
        "best_workflow_code": code_path.read_text() if code_path.is_file() else None,
        "warnings": _warnings(collected["positive_share"], histogram, curve),
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}".rstrip("0").rstrip(".") if v != int(v) or abs(v) < 1e6 else f"{v:g}"
    return str(v)


FIGURE_LABELS = {
    "collection_rows": "collection rows", "positive_share": "positive share",
    "dataset_rows": "dataset rows", "fit_steps": "fit steps", "first_loss": "first loss",
    "final_loss": "final loss", "gate": "gate verdict",
    "best_val_accuracy": "best workflow: validation accuracy",
    "test_accuracy": "best workflow: test accuracy (optimize)",
    "evaluation_accuracy": "evaluation accuracy", "seconds": "stage time (s)",
    "cost_usd": "spend (USD)",
}


def markdown(doc: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """The summary page: warnings first, then stages, tonight vs last night, fit, code."""
    nid = doc["nightly_id"]
    parts = [f"# w4s nightly {nid}", f"finished {doc['finished_at']}"]
    parts += [f"**warning:** {w}" for w in doc["warnings"]]
    rows = ["| stage | state | seconds | pool | host | executor calls | executor tokens | "
            "meta-agent tokens | USD |", "|---|---|---:|---|---|---:|---:|---:|---:|"]
    for s in doc["stages"]:
        sp = s["spend"]
        rows.append(f"| {s['stage']} | {s['state']} | {s['seconds']:.1f} | {s['pool']} | "
                    f"{s['host']} | {sp['executor_calls']} | {sp['executor_tokens']} | "
                    f"{sp['meta_agent_tokens']} | {_fmt(sp['cost_usd'])} |")
    t = doc["spend_total"]
    rows.append(f"| **total** | | {doc['figures']['seconds']:.1f} | | | {t['executor_calls']} "
                f"| {t['executor_tokens']} | {t['meta_agent_tokens']} | {_fmt(t['cost_usd'])} |")
    parts += ["## Stages", "\n".join(rows)]
    last = previous["figures"] if previous else {}
    head = f"last night ({previous['nightly_id']})" if previous else "last night"
    table = [f"| figure | tonight | {head} |", "|---|---:|---:|"]
    table += [f"| {label} | {_fmt(doc['figures'].get(k))} | {_fmt(last.get(k))} |"
              for k, label in FIGURE_LABELS.items()]
    parts += ["## Tonight and last night", "\n".join(table)]
    hist = doc["reward_histogram"]
    if hist:
        keys = sorted(hist, key=lambda k: float("inf") if k == "null" else float(k))
        parts += ["## Dataset rewards", "| reward | rows |\n|---:|---:|\n"
                  + "\n".join(f"| {k} | {hist[k]} |" for k in keys)]
    gate = doc["gate"]
    fit = (f"{doc['figures']['fit_steps']} steps on {doc['fit_device'] or 'unknown device'}, "
           f"loss {_fmt(doc['figures']['first_loss'])} -> {_fmt(doc['figures']['final_loss'])}; "
           + (f"gate: **{gate['verdict']}** (champion {gate.get('champion')}, challenger "
              f"{gate.get('challenger')})" if gate else "no gate"))
    parts += ["## Fit", fit]
    ev = doc["evaluation"]
    parts += [f"## Best workflow (validation {_fmt(doc['figures']['best_val_accuracy'])}, "
              f"test {_fmt(doc['figures']['test_accuracy'])}; evaluation "
              f"{_fmt(ev['accuracy'])} on {ev['items']} items of {ev['benchmark']} "
              f"{ev['split']})",
              f"`{doc['best_workflow']}`",
              "```python\n" + (doc["best_workflow_code"] or "(not readable here)").rstrip()
              + "\n```"]
    return "\n\n".join(parts)


def evaluation_markdown(result: dict[str, Any]) -> str:
    """The evaluate stage's own page: its score, spend and the workflow it scored."""
    code = location(result["workflow"])
    cost = result.get("cost_usd")
    return "\n\n".join([
        f"# w4s evaluation of `{result['workflow']}`",
        f"accuracy **{result['accuracy']:.4f}** on {result['items']} items of "
        f"{result['benchmark']} ({result['split']}); {result['executor_calls']} executor "
        f"calls, {'unknown' if cost is None else f'${cost:.4f}'}"
        + ("; **budget exceeded**" if result.get("budget_exceeded") else ""),
        f"report: `{result['report']}`",
        "```python\n" + (code.read_text().rstrip() if code.is_file() else "(not readable)")
        + "\n```"])


__all__ = ["add_spend", "build", "evaluation_markdown", "markdown", "previous_night",
           "run_folder_spend"]
