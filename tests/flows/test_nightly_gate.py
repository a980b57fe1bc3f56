"""The nightly learns only when there is something to learn, and keeps only what helps: the
fit skips a night without a positive reward, the dataset can span the last N nights, the
gate decides the champion, and optimize runs with the champion."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from nightly_support import build_tiny_base, nightly_data
from replies import GOOD, NO_CODE

from w4s.flows.nightly import NightlyConfig, _optimize_adapter, nightly
from w4s.models.factory import clear_model_cache
from w4s.storage import adapters

pytestmark = pytest.mark.usefixtures("nightly_home")


def _config(tmp_path: Path, base: Path, replies: list[str], window: int) -> NightlyConfig:
    data = nightly_data(tmp_path, base)
    data["collect"]["meta_agent"]["replies"] = replies
    data["dataset"]["window_nights"] = window
    data["gate"] = {"states": 1, "candidates": 2}
    return NightlyConfig.model_validate(data)


def _optimize_adapters(tmp_path: Path, nid: str) -> set:
    rows = pq.read_table(tmp_path / "runs" / f"{nid}-optimize" / "trajectories" /
                         "iter-0001.parquet").to_pylist()
    return {r["meta_adapter"] for r in rows}


@pytest.mark.slow
def test_a_night_without_reward_skips_the_fit_and_the_next_learns_from_both(tmp_path,
                                                                         tmp_path_factory):
    base = build_tiny_base(tmp_path_factory.mktemp("tiny-llama"))
    first = nightly(_config(tmp_path, base, [NO_CODE], 1), nightly_id="nightly-20261201-aaaaaa")
    assert "no row with a positive reward" in first["fit_skipped"]
    assert first["adapter_id"] is None and first["gate"] is None
    assert first["optimize_adapter"] is None  # the champion: the base model
    assert _optimize_adapters(tmp_path, "nightly-20261201-aaaaaa") == {None}
    assert adapters.list_adapters() == []
    assert first["dataset_collections"] == ["nightly-20261201-aaaaaa-collect"]

    clear_model_cache()
    second = nightly(_config(tmp_path, base, [GOOD, NO_CODE], 2),
                     nightly_id="nightly-20261202-aaaaaa")
    assert second["dataset_collections"] == ["nightly-20261201-aaaaaa-collect",
                                             "nightly-20261202-aaaaaa-collect"]
    card = json.loads(Path(second["dataset"]).with_suffix(".card.json").read_text())
    assert [c["collection_id"] for c in card["window"]["collections"]] == \
        second["dataset_collections"]
    assert {s["run_id"] for s in card["source_runs"]} == {
        "nightly-20261201-aaaaaa-collect-arithmetic-e000",
        "nightly-20261202-aaaaaa-collect-arithmetic-e000"}
    gate = second["gate"]
    assert gate["challenger"] == second["adapter_id"] and gate["champion"] == "base"
    assert gate["states"] == 1 and gate["candidates"] == 2
    assert set(gate["measures"]) >= {"reward_diff", "margin_diff", "states_paired"}
    assert json.loads((Path(second["adapter"]) / "gate.json").read_text()) == gate
    # the tiny random model fails every candidate either way: a tie, not worse
    assert gate["verdict"] == "promoted" and adapters.champion().id == second["adapter_id"]
    assert second["optimize_adapter"] == second["adapter"]
    # the gate's report in the UI says what it measured
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from w4s.flows.ui import artifact_key

    key = artifact_key("gate", second["adapter_id"])
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key])))
    assert found and "**promoted**" in found[0].data and "| reward_diff | 0.0 |" in \
        found[0].data
    assert _optimize_adapters(tmp_path, "nightly-20261202-aaaaaa") == {second["adapter"]}


def test_optimize_runs_with_the_champion_the_gate_leaves(tmp_path):
    from adapter_folders import make_adapter_folder

    old = adapters.register(make_adapter_folder(tmp_path / "old"), base_model="b")
    new = adapters.register(make_adapter_folder(tmp_path / "new"), base_model="b")
    fitted = {"adapter_id": new.id, "path": new.path}
    verdict = {"challenger": new.id, "champion": old.id}
    assert _optimize_adapter(fitted, {**verdict, "verdict": "promoted"}) == new.path
    assert _optimize_adapter(fitted, {**verdict, "verdict": "kept_champion"}) == old.path
    assert _optimize_adapter(fitted, {**verdict, "champion": "base",
                                      "verdict": "kept_champion"}) is None
    assert _optimize_adapter(fitted, None) == new.path  # the gate is off
    skipped = {"skipped": "fit skipped: ...", "adapter_id": None, "path": None}
    assert _optimize_adapter(skipped, None) is None  # no champion yet: the base model
    adapters.promote(old)
    assert _optimize_adapter(skipped, None) == old.path
