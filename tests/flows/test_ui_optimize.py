"""The story in the Prefect UI of an optimization run: its name and tags, per-run artifact keys,
the iteration table with cost, a valid PNG plot embedded in the report, progress artifacts,
and the new-best event: all read back from the test harness's server."""

from __future__ import annotations

import base64
import json
import re

import pytest
from configs import run_config
from PIL import Image
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect_reads import flow_run_artifacts, stored_events
from replies import GOOD, NO_CODE

from w4s.flows import ui
from w4s.flows.optimize import optimize
from w4s.flows.report import PNG_SIGNATURE


@pytest.fixture
def events(monkeypatch):
    """emit_event at its boundary, where a test asserts that none was sent."""
    seen: list[dict] = []
    import prefect.events

    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: seen.append(kw))
    return seen


def _config(tmp_path, **extra):
    return run_config(tmp_path, [GOOD, NO_CODE], **{
        "iterations": 2, "candidates": 2, "val_size": 4, "test_size": 4, "max_repairs": 0,
        "prices": {"scripted": [1000.0, 2000.0]}, **extra})


def _flow_run(flow_run_id):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def test_a_run_is_named_tagged_reported_and_announced(tmp_path):
    state = optimize(_config(tmp_path), run_id="ui-run-a", return_state=True)
    summary = state.result()
    fr_id = state.state_details.flow_run_id
    run = _flow_run(fr_id)
    assert run.name == "optimize arithmetic ui-run-a"
    assert {"benchmark:arithmetic", "meta-agent:scripted:smollm2-135m-instruct",
            "executor:scripted:smollm2-135m-instruct"} <= set(run.tags)
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[fr_id])))
    # the tags stay on the flow run: a tagged task run waits on tag concurrency slots
    assert task_runs and not any(t.tags for t in task_runs)

    arts = {a.key: a for a in flow_run_artifacts(fr_id) if a.key}
    assert set(arts) == {"w4s-run-ui-run-a", "w4s-run-ui-run-a-iterations",
                         "w4s-run-ui-run-a-spend", "w4s-run-ui-run-a-best-workflow"}
    table = arts["w4s-run-ui-run-a-iterations"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert [r["iteration"] for r in table] == [0, 1, 2]
    for col in ("best_val", "mean_reward", "skipped", "repairs"):
        assert col in table[0], col
    assert len(table[0]) <= 10  # narrow enough for the UI: spend is its own table
    assert table[1]["best_val"] == 1.0 and table[1]["skipped"] == 1
    spend = arts["w4s-run-ui-run-a-spend"].data
    spend = json.loads(spend) if isinstance(spend, str) else spend
    assert [r["iteration"] for r in spend] == [0, 1, 2, "test evaluation and other", "total"]
    assert spend[0]["cost_usd"] > 0  # priced executor: the seed's validation spend
    # the total row is the report's header, and the rows add up to it
    total = spend[-1]
    assert (total["executor_tokens"], total["executor_calls"], total["meta_tokens"]) == (
        summary["executor_tokens"], summary["executor_calls"], summary["meta_agent_tokens"])
    for key in ("executor_tokens", "executor_calls", "meta_tokens"):
        assert sum(r[key] for r in spend[:-1]) == total[key], key

    report = arts["w4s-run-ui-run-a"].data
    assert f"${summary['cost_usd']:.4f}" in report
    png_file = tmp_path / "runs" / "ui-run-a" / "report" / "accuracy.png"
    data = png_file.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(png_file) as img:
        img.verify()
    with Image.open(png_file) as img:
        assert img.format == "PNG" and img.width > 200 and img.height > 100
    embedded = re.findall(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", report)
    assert len(embedded) == 2 and base64.b64decode(embedded[0]) == data

    best = arts["w4s-run-ui-run-a-best-workflow"].data  # no file:// link to a worker's disk
    assert f"`{summary['best_workflow']}` (on host " in best and "file://" not in best
    assert "execute_code" in best  # the code inline
    assert (f"executor tokens {summary['executor_tokens']} in {summary['executor_calls']} "
            "calls") in report and "| total |" in report

    bars = [a for a in flow_run_artifacts(fr_id) if a.type == "progress"]
    assert len(bars) == 3, "one bar per validation evaluation: the seed's, each iteration's"
    assert all(float(a.data) == 100.0 for a in bars)
    # one candidate per iteration passed its self-check: 4 of 4 validation items
    assert all(a.description.endswith("validation items done: 4/4") for a in bars)

    new_best = stored_events(ui.NEW_BEST, "w4s.run.ui-run-a")
    assert len(new_best) == 1, "the seed is the start; iteration 1's GOOD is the one new best"
    e = new_best[0]
    assert e["payload"]["accuracy"] == 1.0 and e["payload"]["previous_best"] == 0.0
    assert {r["prefect.resource.id"] for r in e["related"]} >= {f"prefect.flow-run.{fr_id}"}
    assert e["payload"]["iteration"] == 1 and e["payload"]["path"] == summary["best_workflow"]
    assert "execute_code" in open(e["payload"]["path"]).read()


def test_a_run_without_an_id_is_named_after_the_id_it_draws(tmp_path, events):
    state = optimize(_config(tmp_path, iterations=1, meta_agent={
        "kind": "scripted", "replies": [NO_CODE]}), return_state=True)
    summary = state.result()
    run = _flow_run(state.state_details.flow_run_id)
    assert run.name == f"optimize arithmetic {summary['run_id']}"
    keys = {a.key for a in flow_run_artifacts(run.id) if a.key}
    assert f"w4s-run-{summary['run_id']}" in keys
    assert not [e for e in events if e["event"] == ui.NEW_BEST], "nothing beat the seed"


@pytest.mark.parametrize("parts, key", [
    (("run", "20261201-224904-arithmetic-a9e5"), "w4s-run-20261201-224904-arithmetic-a9e5"),
    (("run", "My_Run.1"), "w4s-run-my-run-1"),
    (("adapter", "--x--", "folder"), "w4s-adapter-x-folder"),
])
def test_artifact_keys_are_valid_prefect_keys(parts, key):
    assert ui.artifact_key(*parts) == key
