"""Report plots at the edges: nothing scored yet, no prices (tokens instead of cost)."""

from __future__ import annotations

from PIL import Image

from w4s.flows.report import PNG_SIGNATURE, accuracy_plot, cost_plot, markdown_table


def test_a_run_with_an_unscored_candidate_still_plots(tmp_path):
    cands = [{"iteration": 0, "candidate": 0, "val_accuracy": None, "chosen": False},
             {"iteration": 1, "candidate": 0, "val_accuracy": 0.5, "chosen": True},
             {"iteration": 1, "candidate": 1, "val_accuracy": None, "chosen": False}]
    png = accuracy_plot(cands, tmp_path / "report" / "accuracy.png")
    assert png.startswith(PNG_SIGNATURE)
    assert (tmp_path / "report" / "accuracy.png").read_bytes() == png
    assert not list((tmp_path / "report").glob("*.tmp")), "written through a temp file"
    with Image.open(tmp_path / "report" / "accuracy.png") as img:
        assert img.format == "PNG"


def test_cost_falls_back_to_tokens_when_nothing_is_priced(tmp_path):
    rows = [{"iteration": 0, "cost_usd": None, "executor_tokens": 120},
            {"iteration": 1, "cost_usd": None, "executor_tokens": None}]
    _, what = cost_plot(rows, tmp_path / "cost.png")
    assert what == "executor tokens"
    _, what = cost_plot([{"iteration": 0, "cost_usd": 0.25, "executor_tokens": 9}],
                        tmp_path / "cost.png")
    assert what == "cost (USD)"


def test_markdown_table_shows_missing_values_as_empty_cells():
    text = markdown_table([{"iteration": 0, "mean_reward": None, "cost_usd": 0.5}])
    assert text.splitlines() == ["| iteration | mean_reward | cost_usd |", "|---|---|---|",
                                 "| 0 |  | 0.5 |"]
