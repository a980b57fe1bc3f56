"""What a run shows in the Prefect UI: its name, tags, artifacts (one key per run) and events.

Names say what a run is (`optimize gsm8k 20261201-...`), tags carry the benchmark, models
and adapter for filtering, every artifact key holds the run id (so the Artifacts page keeps
every run, not only the latest), and events announce a new best workflow or a new adapter
so automations can notify. Publishing never fails a run: the results are on disk already.
"""

from __future__ import annotations

import logging
import re
import socket
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from w4s.config import CollectConfig, OptimizeConfig
from w4s.flows import report
from w4s.flows.progress import in_prefect_run
from w4s.paths import location
from w4s.storage.run_store import RunStore
from w4s.tasks.stages import best_candidate, describe_result

log = logging.getLogger("w4s")
NEW_BEST = "w4s.workflow.new-best"
ADAPTER_CREATED = "w4s.adapter.created"
_EVENT_NS = uuid.UUID("6f1c2a52-3f0e-4c8e-9a51-2b7d0f4e8c11")


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from free-form parts."""
    text = "-".join(["w4s", *parts]).lower()
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", text)).strip("-")


def benchmarks_label(config: OptimizeConfig) -> str:
    names = [config.benchmark] if isinstance(config.benchmark, str) else config.benchmark
    return "+".join(names)


def run_tags(config: OptimizeConfig) -> list[str]:
    """Filterable tags: benchmark(s), both models, the meta-agent's adapter when set."""
    names = [config.benchmark] if isinstance(config.benchmark, str) else config.benchmark
    tags = [f"benchmark:{n}" for n in names]
    tags += [f"meta-agent:{config.meta_agent.label}", f"executor:{config.executor.label}"]
    if config.meta_agent.adapter:
        tags.append(f"adapter:{Path(config.meta_agent.adapter).name}")
    return tags


def _param_config(model: type) -> Any:
    from prefect.runtime import flow_run

    cfg = flow_run.parameters.get("config")
    return model.model_validate(cfg) if isinstance(cfg, dict) else cfg


def _run_name(verb: str, model: type, id_param: str) -> str:
    from prefect.runtime import flow_run

    try:
        cfg = _param_config(model)
        return " ".join(p for p in (verb, benchmarks_label(cfg),
                                    flow_run.parameters.get(id_param)) if p)
    except Exception:  # noqa: BLE001 - a name must never fail the run; the flow reports
        return verb  # a bad config itself, in one line


def optimize_run_name() -> str:
    """`flow_run_name` of optimize: `optimize <benchmark> <run id>` (the id when given;
    otherwise the flow renames itself once it has drawn one)."""
    return _run_name("optimize", OptimizeConfig, "run_id")


def collect_run_name() -> str:
    """`flow_run_name` of collect: `collect <benchmark(s)> <collection id>`."""
    return _run_name("collect", CollectConfig, "collection_id")


def label_flow_run(name: str, tags: Iterable[str]) -> None:
    """Set the current flow run's name (an id drawn inside the flow) and add its tags.

    The tags go on the flow run only, never on its task runs (a `prefect.tags` context):
    Prefect acquires tag concurrency slots from the server for every tagged task run, which
    cost about 2 s per stage here (benchmarks/bench_prefect_overhead.py)."""
    from prefect import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    merged = list(dict.fromkeys([*(ctx.flow_run.tags or []), *tags, host_tag()]))
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(ctx.flow_run.id, name=name, tags=merged)
        ctx.flow_run.name, ctx.flow_run.tags = name, merged
    except Exception as e:  # noqa: BLE001 - a label is not the run's work
        log.warning("flow run name/tags not updated (ignored): %s", e)


def host_tag() -> str:
    """`host:<name>`: where a run ran (a nightly's summary reads it off its stage runs)."""
    return f"host:{socket.gethostname()}"


def tag_host() -> None:
    """Add the host tag to the current flow run, keeping its name."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        label_flow_run(ctx.flow_run.name, [])


# ------------------------------------------------------------------------------- events


def new_best_event(run_id: str, iteration: int, candidate: int, accuracy: float,
                   previous: float | None, path: str, benchmark: str) -> dict[str, Any]:
    """emit_event's arguments for a run's new best workflow (a stable id: a resumed run
    announcing the same improvement again is the same event)."""
    return {
        "event": NEW_BEST,
        "resource": {"prefect.resource.id": f"w4s.run.{run_id}",
                     "prefect.resource.name": run_id, "w4s.benchmark": benchmark},
        "payload": {"run_id": run_id, "iteration": iteration, "candidate": candidate,
                    "accuracy": accuracy, "previous_best": previous, "path": path},
        "id": uuid.uuid5(_EVENT_NS, f"{NEW_BEST}|{run_id}|{iteration}|{candidate}"),
    }


def adapter_event(adapter_id: str, path: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """emit_event's arguments for a newly fitted (registered) adapter."""
    curve = metrics.get("loss_curve") or []
    return {
        "event": ADAPTER_CREATED,
        "resource": {"prefect.resource.id": f"w4s.adapter.{adapter_id}",
                     "prefect.resource.name": adapter_id},
        "payload": {"adapter_id": adapter_id, "path": path,
                    "base_model": metrics.get("base_model"), "steps": metrics.get("steps"),
                    "final_loss": curve[-1]["loss"] if curve else None,
                    "dataset": metrics.get("dataset")},
        "id": uuid.uuid5(_EVENT_NS, f"{ADAPTER_CREATED}|{adapter_id}"),
    }


def emit(spec: dict[str, Any]) -> None:
    from prefect.events import emit_event

    try:
        emit_event(**spec)
    except Exception as e:  # noqa: BLE001 - a notification is not the run's work
        log.warning("event %s not emitted (ignored): %s", spec["event"], e)


def track_best(run_dir: str, iteration: int, previous: float | None) -> float | None:
    """After an iteration: if a candidate beat the run's best so far, write it as
    `workflows/best.py` (what the end of the run writes, by the same rule) and announce it.
    Returns the best validation accuracy so far."""
    store = RunStore(run_dir)
    best = best_candidate(store.candidates(iteration))
    if best is None or (previous is not None and best.accuracy <= previous):
        return previous
    path = store.root / "workflows" / "best.py"
    if not path.is_file() or path.read_text() != (best.code or ""):  # a replay writes nothing
        path = store.save_workflow("best", best.code or "")
    if previous is not None:  # the seed is where a run starts, not an improvement
        cfg = store.config()
        emit(new_best_event(store.run_id, iteration, best.index, best.accuracy, previous,
                            str(path), benchmarks_label(cfg)))
    return best.accuracy


# ---------------------------------------------------------------------------- artifacts


def _safe(what: str, fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except Exception as e:  # noqa: BLE001 - the run's results are saved; only the UI lacks
        log.warning("%s not published (ignored): %s", what, e)
        return None


def _browsable(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def publish_location(target: str, key: str, description: str, body: str = "") -> None:
    """A link when a browser can open `target`; otherwise a page naming it where it lies
    (a path on a worker's disk or a storage URL), with `body` (e.g. the file inline)."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    if _browsable(target):
        _safe(description, create_link_artifact, target, link_text=target, key=key,
              description=description)
        return
    where = ("storage URL" if "://" in target else f"on host `{socket.gethostname()}`")
    text = f"`{target}` ({where}; not a browser link)" + (f"\n\n{body}" if body else "")
    _safe(description, create_markdown_artifact, text, key=key, description=description)


def _code_block(path: str) -> str:
    try:
        return "```python\n" + location(path).read_text().rstrip() + "\n```"
    except OSError:
        return ""


def publish_run(run_dir: str, summary: dict[str, Any]) -> report.Report | None:
    """The run's tables (what the iterations achieved; what they spent), report (plots
    embedded, PNGs in <run>/report/) and where its best workflow lies, with its code, each
    under a key holding the run id."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    run_id = summary["run_id"]
    rep = _safe("run report", report.run_report, run_dir, summary, describe_result(summary))
    if rep is None:
        return None
    if not in_prefect_run():
        return rep
    _safe("iteration table", create_table_artifact, report.iteration_rows(run_dir),
          key=artifact_key("run", run_id, "iterations"),
          description=f"w4s run {run_id}: per iteration")
    _safe("spend table", create_table_artifact, report.spend_rows(run_dir, summary),
          key=artifact_key("run", run_id, "spend"),
          description=f"w4s run {run_id}: spend per iteration (validation), the rest, total")
    _safe("run report", create_markdown_artifact, rep.markdown, key=artifact_key("run", run_id),
          description=f"w4s optimization run {run_id}")
    if summary.get("best_workflow"):
        path = summary["best_workflow"]
        publish_location(path, artifact_key("run", run_id, "best-workflow"),
                         f"w4s run {run_id}: best workflow (validation "
                         f"{summary['best_val_accuracy']})", _code_block(path))
    adapter = RunStore(run_dir).config().meta_agent.adapter
    if adapter:
        publish_location(adapter, artifact_key("run", run_id, "adapter"),
                         f"w4s run {run_id}: the meta-agent's LoRA adapter")
    return rep


def publish_collection(summary: dict[str, Any]) -> None:
    from prefect.artifacts import create_markdown_artifact

    cid = summary["collection_id"]
    rep = _safe("collection report", report.collection_report, summary,
                location(summary["runs_dir"]) / f"{cid}.report")
    if rep is not None and in_prefect_run():
        _safe("collection report", create_markdown_artifact, rep.markdown,
              key=artifact_key("collection", cid), description=f"w4s RLAO collection {cid}")


def publish_fit(out: str | Path, adapter_id: str | None, metrics: dict[str, Any]) -> None:
    """A fit's report (loss curve, dataset rewards), a link to the adapter folder, and the
    `w4s.adapter.created` event once it is registered."""
    from prefect.artifacts import create_markdown_artifact

    out = Path(out)
    name = adapter_id or out.name
    rep = _safe("fit report", report.fit_report, out, adapter_id)
    if not in_prefect_run():
        return
    if rep is not None:
        _safe("fit report", create_markdown_artifact, rep.markdown,
              key=artifact_key("adapter", name), description=f"w4s adapter {name}")
    publish_location(str(out), artifact_key("adapter", name, "folder"), f"w4s adapter {name}")
    if adapter_id is not None:
        emit(adapter_event(adapter_id, str(out.resolve()), metrics))


def publish_nightly(nightly_id: str, markdown: str) -> None:
    """The nightly's summary page, one key per night."""
    from prefect.artifacts import create_markdown_artifact

    if in_prefect_run():
        _safe("nightly summary", create_markdown_artifact, markdown,
              key=artifact_key("nightly", nightly_id), description=f"w4s nightly {nightly_id}")


def evaluation_key(report_path: str) -> str:
    """One key per evaluation report: its run folder and file name."""
    return artifact_key("evaluation", *Path(report_path).with_suffix("").parts[-3:])


def publish_evaluation(result: dict[str, Any]) -> None:
    """The evaluate stage's own page: score, spend, the workflow's code inline."""
    from prefect.artifacts import create_markdown_artifact

    from w4s.flows.nightly_report import evaluation_markdown

    if in_prefect_run():
        text = _safe("evaluation report", evaluation_markdown, result)
        if text is not None:
            _safe("evaluation report", create_markdown_artifact, text,
                  key=evaluation_key(result["report"]),
                  description=f"w4s evaluation of {result['workflow']}")
