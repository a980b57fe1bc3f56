"""The paper's initial state: every seed with its accuracy in view, the starting one last."""

from __future__ import annotations

from pathlib import Path

import pytest
from configs import run_config

from w4s.benchmarks import Item, get_benchmark
from w4s.config import CollectConfig, build_config
from w4s.errors import BenchmarkError, W4SError
from w4s.mdp import Candidate
from w4s.storage.run_store import RunStore
from w4s.tasks import stages


def _seed(index: int, name: str, accuracy: float | None) -> Candidate:
    return Candidate(run_id="r", iteration=0, index=index, kind="seed", prompt=[],
                     reply=f"# {name}", seed_name=name, code=f"# {name} workflow\n",
                     status="ok", accuracy=accuracy,
                     failures=[{"question": "q?", "answer": "1", "expected": "2"}])


def test_all_seeds_in_view_with_the_start_last_and_the_best_as_reference():
    seeds = [_seed(0, "direct", 0.0), _seed(1, "cot", 0.1), _seed(2, "lost", None),
             _seed(3, "code", 0.6)]
    state = stages.initial_state("Add numbers.", Item(id="a", question="1+1?", gold=2), seeds,
                                 seeds[0], all_seeds=True)
    assert [h.code for h in state.history] == ["# cot workflow\n", "# code workflow\n",
                                               "# direct workflow\n"]
    assert state.best_accuracy == 0.6 and state.last_accuracy == 0.0
    assert [len(h.failures) for h in state.history] == [0, 0, 1]  # feedback: latest only
    prompt = state.messages()[1]["content"]
    assert "# code workflow" in prompt and "validation accuracy 0.60" in prompt
    assert prompt.count("Validation accuracy:") == 1 and "went" not in prompt
    alone = stages.initial_state("Add numbers.", Item(id="a", question="1+1?", gold=2), seeds,
                                 seeds[0], all_seeds=False)
    assert len(alone.history) == 1 and alone.best_accuracy == 0.0


def test_seed_stage_evaluates_every_seed_and_starts_from_the_named_one(tmp_path):
    cfg = run_config(tmp_path, executor_reply="print(7)", seed_workflow="code",
                     initial_state="all_seeds")
    run_dir = stages.prepare_run(cfg, tmp_path / "runs", "all-seeds")
    stages.seed(run_dir)
    store = RunStore(run_dir)
    seeds = store.candidates(0)
    assert [c.seed_name for c in seeds] == ["direct", "cot", "cot_sc", "code"]
    assert all(c.accuracy is not None for c in seeds)
    assert [c.seed_name for c in seeds if c.chosen] == ["code"]
    state = store.load_state(0)
    assert len(state.history) == 4 and state.history[-1].code == seeds[3].code


def test_episodes_split_apart_only_when_asked():
    same = CollectConfig(episodes=3, split_seed=5).episode_configs()
    apart = CollectConfig(episodes=3, split_seed=5, split_per_episode=True).episode_configs()
    assert [c.split_seed for c in same] == [5, 5, 5]
    assert [c.split_seed for c in apart] == [5, 6, 7]


def test_seeds_narrow_what_is_evaluated_and_in_view(tmp_path):
    cfg = run_config(tmp_path, executor_reply="print(7)", initial_state="all_seeds",
                     seeds=["direct", "code"], val_size=2, test_size=2)
    run_dir = stages.prepare_run(cfg, tmp_path / "runs", "two-seeds")
    stages.seed(run_dir)
    store = RunStore(run_dir)
    assert [c.seed_name for c in store.candidates(0)] == ["direct", "code"]
    state = store.load_state(0)
    assert [h.code for h in state.history] == [c.code for c in reversed(store.candidates(0))]


def test_a_seed_name_not_of_the_benchmark_or_not_evaluated_is_one_line(tmp_path):
    base = {"benchmark": "arithmetic", "val_size": 2, "test_size": 2,
            "runs_dir": str(tmp_path / "runs")}
    with pytest.raises(W4SError, match=r"^`seeds`: 'nope' is not a seed of arithmetic; "):
        stages.prepare_run(build_config({**base, "seeds": ["code", "nope"]}),
                           tmp_path / "runs", "bad-1")
    with pytest.raises(W4SError, match=r"^`seed_workflow` 'cot' is not among the seeds "):
        stages.prepare_run(build_config({**base, "seeds": ["code"], "seed_workflow": "cot"}),
                           tmp_path / "runs", "bad-2")


def _example_cfg(tmp_path, **over):
    return build_config({
        "benchmark": "arithmetic", "benchmark_options": {"size": 12},
        "seeds": ["direct"], "seed_workflow": "direct", "val_size": 4, "test_size": 3,
        "runs_dir": str(tmp_path / "runs"),
        "meta_agent": {"kind": "scripted", "replies": ["x"]},
        "executor": {"kind": "scripted", "replies": ["7"]}, **over,
    })


def test_the_example_in_view_is_never_a_validation_or_test_item(tmp_path):
    # issue 15: the example was validation item 0, so returning its gold earned 1/N accuracy
    for split_seed in range(6):
        cfg = _example_cfg(tmp_path, split_seed=split_seed)
        run_dir = stages.prepare_run(cfg, tmp_path / "runs", f"ex-{split_seed}")
        stages.seed(run_dir)
        store = RunStore(run_dir)
        ids = store.split_ids()
        assert ids["example"] not in ids["validation"] + ids["test"]
        by_id = {i.id: i for i in get_benchmark("arithmetic", size=12).load()}
        state = store.load_state(0)
        assert state.example_question == by_id[ids["example"]].question
        assert state.example_answer == str(by_id[ids["example"]].gold)
        shown = {by_id[i].question for i in ids["validation"] + ids["test"]}
        assert state.example_question not in shown


def test_a_resumed_run_shows_the_same_example(tmp_path):
    cfg = _example_cfg(tmp_path, split_seed=3)
    run_dir = stages.prepare_run(cfg, tmp_path / "runs", "resume")
    first = RunStore(run_dir).split_ids()
    assert stages.prepare_run(cfg, tmp_path / "runs", "resume") == run_dir
    assert RunStore(run_dir).split_ids() == first
    stages.seed(run_dir)
    question = RunStore(run_dir).load_state(0).example_question
    (Path(run_dir) / "state" / "iter-0000.json").unlink()  # killed before the state held
    stages.seed(run_dir)
    assert RunStore(run_dir).load_state(0).example_question == question


def test_an_old_split_without_an_example_gets_one_outside_it_and_keeps_it(tmp_path):
    cfg = _example_cfg(tmp_path)
    run_dir = stages.prepare_run(cfg, tmp_path / "runs", "old")
    store = RunStore(run_dir)
    ids = store.split_ids()
    store.save_split(ids["validation"], ids["test"])  # as saved before issue 15's fix
    stages.seed(run_dir)
    again = store.split_ids()
    assert again["example"] not in ids["validation"] + ids["test"]
    by_id = {i.id: i for i in get_benchmark("arithmetic", size=12).load()}
    assert store.load_state(0).example_question == by_id[again["example"]].question


def test_with_no_item_left_over_the_example_leaves_the_test_items(tmp_path):
    for name, test_size in (("rest", None), ("all", 8)):  # None: "all the rest"
        cfg = _example_cfg(tmp_path, test_size=test_size)
        run_dir = stages.prepare_run(cfg, tmp_path / "runs", name)
        ids = RunStore(run_dir).split_ids()
        assert len(ids["validation"]) == 4 and len(ids["test"]) == 7
        assert ids["example"] not in ids["validation"] + ids["test"]
        assert len({*ids["validation"], *ids["test"], ids["example"]}) == 12


def test_no_item_for_the_example_is_one_line_naming_the_sizes(tmp_path):
    cfg = _example_cfg(tmp_path, benchmark_options={"size": 5}, val_size=4, test_size=1)
    with pytest.raises(BenchmarkError, match=r"^no item is left for the example shown to the "
                       r"meta-agent: the benchmark has 5 items, validation takes 4 and test "
                       r"1; lower `val_size` or `test_size`$"):
        stages.prepare_run(cfg, tmp_path / "runs", "full")
    assert not (tmp_path / "runs" / "full").exists()
