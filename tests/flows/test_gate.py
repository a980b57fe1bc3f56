"""The gate: a challenger adapter is promoted only when it is not worse than the champion on
the same fresh states. The policies are scripted meta-agents (the model boundary): the
adapter folder decides which replies the meta-agent gives, and which log-likelihoods."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adapter_folders import make_adapter_folder
from configs import run_config
from replies import GOOD, NO_CODE

from w4s.config import BackendConfig, CollectConfig
from w4s.flows.gate import GATE_FILE, GateConfig, run_gate
from w4s.storage import adapters


def _env(tmp_path: Path) -> CollectConfig:
    return run_config(tmp_path, [NO_CODE], config_type=CollectConfig, test_size=2,
                      max_repairs=0, runs_dir=str(tmp_path / "unused"))


def _adapter(tmp_path: Path, name: str) -> adapters.AdapterRecord:
    folder = make_adapter_folder(tmp_path / name)
    return adapters.register(folder, base_model="smollm2-135m-instruct")


def _scripted(behaviour: dict[str | None, str]):
    """policy: adapter folder -> a scripted meta-agent that always replies GOOD or NO_CODE."""
    reply = {"good": GOOD, "bad": NO_CODE}

    def policy(adapter: str | None) -> BackendConfig:
        kind = behaviour[None if adapter is None else Path(adapter).name]
        return BackendConfig(kind="scripted", model=f"policy-{kind}", replies=[reply[kind]])
    return policy


def _logliks(prefers: dict[str | None, str]):
    """Scripted log-likelihoods: a policy scores the reply it prefers higher."""
    def score(policies: dict[str, str | None], rows: list[dict]) -> dict[str, list]:
        out = {}
        for name, adapter in policies.items():
            liked = GOOD if prefers[None if adapter is None else Path(adapter).name] == "good" \
                else NO_CODE
            out[name] = [-0.5 if r["completion"][0]["content"] == liked else -2.0
                         for r in rows]
        return out
    return score


OPTIONS = GateConfig(states=2, candidates=2, split_seed=500)


def test_the_gate_promotes_a_better_adapter_and_refuses_a_worse_one(tmp_path):
    good, worse = _adapter(tmp_path, "good"), _adapter(tmp_path, "worse")
    behaviour = {None: "bad", "good": "good", "worse": "bad"}
    runs = str(tmp_path / "gates")
    assert adapters.champion() is None  # the base model

    doc = run_gate(good, _env(tmp_path), OPTIONS, runs, policy=_scripted(behaviour),
                   logliks=_logliks(behaviour))
    assert doc["verdict"] == "promoted" and doc["champion"] == "base"
    assert doc["challenger"] == good.id and doc["states"] == 2 and doc["candidates"] == 2
    m = doc["measures"]
    assert m["states_paired"] == 2 and m["champion_candidates"] == 4
    assert m["challenger_mean_reward"] == 1.0 and m["champion_mean_reward"] == -0.1
    assert m["reward_diff"] == pytest.approx(1.1)
    assert (m["challenger_valid_rate"], m["champion_valid_rate"]) == (1.0, 0.0)
    assert (m["challenger_positive_share"], m["champion_positive_share"]) == (1.0, 0.0)
    assert m["margin_diff"] == pytest.approx(3.0)  # +1.5 vs -1.5
    assert json.loads((tmp_path / "good" / GATE_FILE).read_text()) == doc
    assert adapters.champion().id == good.id
    # the same fresh states for both policies
    states = {p: sorted(Path(d).name for d in (tmp_path / "gates").glob(f"gate-*-{p}-*"))
              for p in ("champion", "challenger")}
    assert [s.split(f"-{p}-")[1] for p, ss in states.items() for s in ss] == \
        ["arithmetic-e000", "arithmetic-e001"] * 2

    doc = run_gate(worse, _env(tmp_path), OPTIONS, runs, policy=_scripted(behaviour),
                   logliks=_logliks(behaviour))
    assert doc["verdict"] == "kept_champion" and doc["champion"] == good.id
    assert doc["measures"]["reward_diff"] == pytest.approx(-1.1)
    assert any("worse" in r for r in doc["reasons"])
    assert adapters.champion().id == good.id  # unchanged
    assert json.loads((tmp_path / "worse" / GATE_FILE).read_text())["verdict"] == "kept_champion"
    assert [e["adapter_id"] for e in adapters.promotions()] == [good.id]


def test_a_worse_margin_alone_keeps_the_champion_and_a_rerun_keeps_its_verdict(tmp_path):
    first, second = _adapter(tmp_path, "first"), _adapter(tmp_path, "second")
    adapters.promote(first)
    acts = {None: "bad", "first": "bad", "second": "good"}
    prefers = {None: "good", "first": "good", "second": "bad"}
    runs = str(tmp_path / "gates")
    doc = run_gate(second, _env(tmp_path), OPTIONS, runs, policy=_scripted(acts),
                   logliks=_logliks(prefers))
    m = doc["measures"]
    assert m["reward_diff"] == pytest.approx(1.1)  # better on-policy ...
    assert m["margin_diff"] == pytest.approx(-3.0)  # ... but it ranks the bad reply first
    assert doc["verdict"] == "kept_champion" and adapters.champion().id == first.id

    calls = []
    again = run_gate(second, _env(tmp_path), OPTIONS, runs,
                     policy=lambda a: calls.append(a) or _scripted(acts)(a),
                     logliks=_logliks(prefers))
    assert again == doc and calls == []  # read back, nothing sampled again


def test_a_tie_within_the_tolerance_is_not_worse_and_no_margin_without_a_positive(tmp_path):
    challenger = _adapter(tmp_path, "same")
    behaviour = {None: "bad", "same": "bad"}
    doc = run_gate(challenger, _env(tmp_path), OPTIONS, str(tmp_path / "gates"),
                   policy=_scripted(behaviour), logliks=_logliks({None: "good", "same": "bad"}))
    assert doc["measures"]["reward_diff"] == 0.0
    assert doc["measures"]["margin_diff"] is None and doc["measures"]["margin_positive"] == 0
    assert doc["verdict"] == "promoted"
    assert any("margin not measured" in r for r in doc["reasons"])


def test_the_real_margin_scores_both_policies_with_the_base_model(tmp_path, tmp_path_factory):
    """default_logliks: the base folder plus each adapter, on the pooled gate sample."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from nightly_support import build_tiny_base

    from w4s.flows.gate import default_logliks
    from w4s.tasks.fit import fit_adapter

    base = build_tiny_base(tmp_path_factory.mktemp("tiny-llama"))
    message = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    data = tmp_path / "d.parquet"
    pq.write_table(pa.table({
        "prompt": pa.array([[{"role": "user", "content": "What is 2+3?"}]], type=message),
        "completion": pa.array([[{"role": "assistant", "content": GOOD}]], type=message),
        "weight": [12.18], "reward": [1.0]}), data)
    fitted = fit_adapter(data, str(base), tmp_path / "real", max_steps=2, batch_tokens=512)
    challenger = adapters.resolve(fitted.adapter_id)
    doc = run_gate(challenger, _env(tmp_path), OPTIONS, str(tmp_path / "gates"),
                   policy=_scripted({None: "bad", "real": "good"}),
                   logliks=default_logliks(str(base)))
    m = doc["measures"]
    assert m["margin_candidates"] == 8 and m["margin_positive"] == 4
    assert isinstance(m["champion_margin"], float) and isinstance(m["challenger_margin"], float)
    assert m["margin_diff"] == pytest.approx(m["challenger_margin"] - m["champion_margin"],
                                             abs=1e-3)


def test_with_a_remote_registry_the_verdict_lands_beside_the_registrys_copy(tmp_path,
                                                                            monkeypatch):
    import uuid

    from w4s.paths import location

    monkeypatch.setenv("W4S_STORAGE_URL", f"memory://gate-{uuid.uuid4().hex[:8]}")
    record = adapters.register(make_adapter_folder(tmp_path / "fitted"), base_model="b")
    assert record.path.startswith("memory://")
    # a downloaded copy serves the policy: its folder is named after the id
    doc = run_gate(record, _env(tmp_path), OPTIONS, str(tmp_path / "gates"),
                   policy=_scripted({None: "bad", record.id: "good"}), logliks=None)
    assert doc["verdict"] == "promoted" and doc["measures"]["margin_diff"] is None
    assert any("margin not measured" in r for r in doc["reasons"])
    stored = json.loads((location(record.path) / GATE_FILE).read_text())
    assert stored == doc == json.loads((tmp_path / "fitted" / GATE_FILE).read_text())
    assert adapters.champion().id == record.id  # the registry at the URL records it


def test_the_gate_stage_runs_without_prefect_on_a_plain_collect(tmp_path):
    """`w4s.tasks.gate.run_gate` takes its collections from any function: here one that
    writes trajectory rows itself, with no flow, task or server."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from prefect.context import FlowRunContext

    from w4s.tasks.gate import run_gate as gate_stage

    challenger = _adapter(tmp_path, "good")
    runs, seen = tmp_path / "gates", []

    def collect(cfg: CollectConfig, collection_id: str, name: str) -> dict:
        assert FlowRunContext.get() is None
        seen.append((collection_id, name, cfg.meta_agent.model,
                     (cfg.episodes, cfg.candidates, cfg.iterations, cfg.split_seed)))
        reward = 1.0 if cfg.meta_agent.model == "policy-good" else -0.1
        episodes = [f"{collection_id}-e{k:03d}" for k in range(cfg.episodes)]
        for e in episodes:
            rows = [{"kind": "action", "run_id": e, "candidate": j, "status": "ok",
                     "reward": reward, "reply": "r", "prompt_json": "[]", "conversation_json": "[]"}
                    for j in range(cfg.candidates)]
            (runs / e / "trajectories").mkdir(parents=True)
            pq.write_table(pa.Table.from_pylist(rows), runs / e / "trajectories" / "iter-0.parquet")
        return {"episodes": episodes}

    doc = gate_stage(challenger, _env(tmp_path), OPTIONS, str(runs), collect=collect,
                     policy=_scripted({None: "bad", "good": "good"}))
    assert [s[:3] for s in seen] == [
        (f"gate-{challenger.id}-champion", f"gate champion {challenger.id}", "policy-bad"),
        (f"gate-{challenger.id}-challenger", f"gate challenger {challenger.id}", "policy-good")]
    assert {s[3] for s in seen} == {(2, 2, 1, 500)}  # the same fresh states for both
    assert doc["verdict"] == "promoted" and doc["measures"]["reward_diff"] == pytest.approx(1.1)
    assert adapters.champion().id == challenger.id
    assert json.loads((Path(challenger.path) / GATE_FILE).read_text()) == doc
