"""RLAO end to end on the real SmolLM2: collect -> dataset -> fit -> optimize with the
fitted adapter (the meta-agent on llama.cpp, the adapter converted to a GGUF LoRA)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from w4s.config import CollectConfig
from w4s.flows.cli import main as cli
from w4s.flows.collect import collect
from w4s.models.factory import clear_model_cache
from w4s.stage_config import DatasetConfig
from w4s.storage.dataset import build_dataset
from w4s.tasks.fit import fit_adapter

SMOL = {"kind": "llamacpp", "model": "smollm2-135m-instruct"}


@pytest.mark.slow
def test_collect_dataset_fit_then_optimize_with_the_adapter(tmp_path, capsys):
    runs = tmp_path / "runs"
    common = {"benchmark": "arithmetic", "seed_workflow": "code", "val_size": 3,
              "test_size": 3, "max_repairs": 0, "runs_dir": str(runs),
              "executor": {**SMOL, "max_new_tokens": 32}}
    cfg = CollectConfig.model_validate({
        **common, "episodes": 1, "iterations": 1, "candidates": 2,
        "meta_agent": {**SMOL, "max_new_tokens": 128}})
    summary = collect(cfg, collection_id="e2e")
    assert summary["rows"] == 2

    data = build_dataset(runs, tmp_path / "d.parquet", DatasetConfig(include_skipped=True))
    assert data.rows == 2
    fitted = fit_adapter(data.path, "embedded", tmp_path / "adapter", max_steps=2,
                         max_seq_len=1024, force=True)  # the plumbing, whatever the rewards
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert fitted.metrics["steps"] == 2 and fitted.adapter_id

    clear_model_cache()
    meta = json.dumps({**SMOL, "max_new_tokens": 128})
    code = cli(["optimize", "--run-id", "with-adapter", "--adapter", "latest",
                "--iterations", "1", "--candidates", "2", "--set", f"meta_agent={meta}",
                "--set", f"executor={json.dumps(common['executor'])}",
                *[f"--{k.replace('_', '-')}={v}" for k, v in common.items()
                  if k not in ("executor",)]])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    rows = pq.read_table(runs / "with-adapter" / "trajectories" / "iter-0001.parquet").to_pylist()
    # the run's rows name the adapter that sampled them (resolved from `latest`)
    assert {r["meta_adapter"] for r in rows} == {str((tmp_path / "adapter").resolve())}
    assert all(r["meta_completion_tokens"] > 0 for r in rows)
