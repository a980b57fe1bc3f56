"""The UI story of a collection and a fit, and the progress artifacts' throttle."""

from __future__ import annotations

import json
import threading

import pytest
from configs import run_config
from PIL import Image
from prefect import flow, get_client
from prefect_reads import flow_run_artifacts, stored_events
from replies import GOOD, NO_CODE

from w4s.config import CollectConfig
from w4s.flows import progress, ui
from w4s.flows.collect import collect
from w4s.flows.report import PNG_SIGNATURE


@pytest.fixture
def events(monkeypatch):
    seen: list[dict] = []
    import prefect.events

    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: seen.append(kw))
    return seen


def _valid_png(path):
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(path) as img:
        img.verify()


def test_a_collection_is_named_tagged_reported_and_shows_its_stages(tmp_path):
    cfg = run_config(tmp_path, [GOOD, NO_CODE], config_type=CollectConfig, episodes=2,
                     iterations=1, candidates=2, max_repairs=0)
    state = collect(cfg, collection_id="c-ui", return_state=True)
    summary = state.result()
    fr_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(fr_id)
    assert run.name == "collect arithmetic c-ui"
    assert "benchmark:arithmetic" in run.tags and "executor:scripted:smollm2-135m-instruct" \
        in run.tags
    arts = flow_run_artifacts(fr_id)
    report = next(a for a in arts if a.key == "w4s-collection-c-ui")
    assert "data:image/png;base64," in report.data
    _valid_png(tmp_path / "runs" / "c-ui.report" / "c-ui-rewards.png")
    stages = [a for a in arts if a.type == "progress" and "stages done" in a.description]
    assert len(stages) == 1 and float(stages[0].data) == 100.0
    assert stages[0].description.endswith("stages done: 7/7")  # 2 seed stages + 5 per turn
    assert summary["rows"] == 4


def _fake_adapter(tmp_path):
    """What fit_adapter leaves: an adapter folder with metrics.json, a dataset with its card."""
    dataset = tmp_path / "data" / "rlao.parquet"
    dataset.parent.mkdir()
    dataset.write_bytes(b"PAR1")
    (tmp_path / "data" / "rlao.card.json").write_text(json.dumps(
        {"reward_histogram": {"-0.1": 6, "0.5": 2, "1.0": 3}}))
    out = tmp_path / "adapter"
    out.mkdir()
    metrics = {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "steps": 4, "samples": 11,
               "samples_dropped": 0, "seconds": 3.2, "device": "cpu",
               "dataset": str(dataset), "loss_curve": [
                   {"step": i + 1, "loss": 2.0 / (i + 1)} for i in range(4)]}
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out, metrics


def test_a_fit_publishes_its_loss_and_rewards_links_the_adapter_and_announces_it(tmp_path):
    out, metrics = _fake_adapter(tmp_path)

    @flow
    def fit_stage():
        ui.publish_fit(out, "a-20261202-x1", metrics)

    state = fit_stage(return_state=True)
    arts = {a.key: a for a in flow_run_artifacts(state.state_details.flow_run_id)}
    assert set(arts) == {"w4s-adapter-a-20261202-x1", "w4s-adapter-a-20261202-x1-folder"}
    assert arts["w4s-adapter-a-20261202-x1"].data.count("data:image/png;base64,") == 2
    folder = arts["w4s-adapter-a-20261202-x1-folder"].data  # a worker's path is no link:
    assert f"`{out}` (on host " in folder and "not a browser link" in folder  # named as such
    for name in ("loss.png", "rewards.png"):
        _valid_png(out / "report" / name)
    [event] = stored_events(ui.ADAPTER_CREATED, "w4s.adapter.a-20261202-x1")
    assert event["payload"]["final_loss"] == 0.5 and event["payload"]["path"] == str(out)
    assert event["payload"]["steps"] == 4


def test_an_unregistered_fit_outside_prefect_still_writes_its_report_and_announces_nothing(
        tmp_path, events):
    out, metrics = _fake_adapter(tmp_path)
    ui.publish_fit(out, None, metrics)
    _valid_png(out / "report" / "loss.png")
    assert events == []


def test_fit_progress_follows_the_steps_and_keeps_the_callers_callback():
    seen = []

    @flow
    def fit_stage():
        on_step = progress.fit_on_step("fit x", lambda *a: seen.append(a))
        for step in range(1, 11):
            on_step(step, 10, 1.0 / step, 100.0)

    state = fit_stage(return_state=True)
    [bar] = [a for a in flow_run_artifacts(state.state_details.flow_run_id) if a.type == "progress"]
    assert float(bar.data) == 100.0 and bar.description.startswith("fit x (loss 0.1000): 10/10")
    assert [s[0] for s in seen] == list(range(1, 11))
    assert progress.fit_on_step("outside a run", None) is None


def test_progress_updates_are_throttled_across_threads():
    now = [0.0]

    @flow
    def stage():
        bar = progress.Progress(1000, "items", clock=lambda: now[0])

        def work():
            for _ in range(250):
                bar.advance()

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return bar.updates

    state = stage(return_state=True)
    updates = state.result()
    assert 1 < updates <= 21, "every 5 % and the end, never once per item"
    [bar] = [a for a in flow_run_artifacts(state.state_details.flow_run_id) if a.type == "progress"]
    assert float(bar.data) == 100.0 and bar.description == "items: 1000/1000"


def test_outside_a_run_no_progress_artifact_is_made():
    assert progress.start(10, "x") is None
