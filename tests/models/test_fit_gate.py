"""The fit skips a dataset with nothing to learn (no positive reward) unless forced, and the
gate's offline margin: each policy's log-likelihood of the same completions."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from w4s.errors import NothingToLearn
from w4s.flows.cli import main
from w4s.flows.gate import default_logliks
from w4s.gate import paired_margin
from w4s.storage import adapters
from w4s.tasks.fit import fit_adapter

MESSAGE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
USER = [{"role": "user", "content": "What is 2+3?"}]
GOOD_REPLY = "The answer is 5."
BAD_REPLY = "the quick brown fox"


def _dataset(path: Path, rewards: list[float], replies: list[str] | None = None) -> Path:
    replies = replies or [GOOD_REPLY] * len(rewards)
    pq.write_table(pa.table({
        "prompt": pa.array([USER] * len(rewards), type=MESSAGE),
        "completion": pa.array([[{"role": "assistant", "content": r}] for r in replies],
                               type=MESSAGE),
        "weight": pa.array([2.718 ** (r / 0.4) for r in rewards], type=pa.float64()),
        "reward": pa.array(rewards, type=pa.float64()),
    }), path)
    return path


def test_a_dataset_without_a_positive_reward_skips_the_fit_before_any_model_loads(tmp_path):
    data = _dataset(tmp_path / "d.parquet", [-0.1, 0.0, -0.1])
    with pytest.raises(NothingToLearn, match="no row with a positive reward") as e:
        fit_adapter(data, "no-such-base-folder", tmp_path / "out")  # never loaded
    assert "\n" not in str(e.value) and "--force" in str(e.value)
    assert "3 rows, the highest 0" in str(e.value)
    assert not (tmp_path / "out").exists() and adapters.list_adapters() == []


def test_force_fits_anyway_and_the_cli_says_skipped(tiny_model_dir, tmp_path, capsys):
    data = _dataset(tmp_path / "d.parquet", [-0.1, 0.0])
    common = ["fit", "--dataset", str(data), "--base", str(tiny_model_dir),
              "--max-steps", "1", "--batch-tokens", "128"]
    assert main([*common, "--out", str(tmp_path / "skipped")]) == 0
    assert "w4s fit: fit skipped: dataset 'd.parquet'" in capsys.readouterr().out
    assert adapters.list_adapters() == []
    assert main([*common, "--out", str(tmp_path / "forced"), "--force"]) == 0
    assert (tmp_path / "forced" / "adapter_config.json").is_file()
    assert len(adapters.list_adapters()) == 1


def test_the_gate_margin_rises_for_an_adapter_fitted_on_the_positive_completion(
        tiny_model_dir, tmp_path):
    data = _dataset(tmp_path / "d.parquet", [1.0])
    fit_adapter(data, str(tiny_model_dir), tmp_path / "good", max_steps=30, lr=2e-2,
                batch_tokens=128, register=False)
    rows = [{"prompt": USER, "completion": [{"role": "assistant", "content": reply}]}
            for reply in (GOOD_REPLY, BAD_REPLY)]
    scored = default_logliks(str(tiny_model_dir))(
        {"champion": None, "challenger": str(tmp_path / "good")}, rows)
    m = paired_margin(scored["champion"], scored["challenger"], [1.0, -0.1], ["s", "s"])
    assert m["margin_states"] == 1 and m["margin_diff"] > 0.3, m
    assert m["margin_diff"] == pytest.approx(m["challenger_margin"] - m["champion_margin"],
                                             abs=1e-3)
