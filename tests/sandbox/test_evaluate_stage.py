"""The evaluate stage as a plain function (`w4s.tasks.evaluate`), called with no Prefect
flow, task or server: the code the `evaluate` flow and `w4s evaluate` both run."""

from __future__ import annotations

import json

import pytest

from w4s.config import BackendConfig
from w4s.errors import InfrastructureError
from w4s.stage_config import EvaluateConfig
from w4s.tasks.evaluate import evaluate_workflow, run_evaluation

ECHO = "def solver(agent, task):\n    return {'answer': agent.llm('ECHO: 7')}\n"
DOWN = "def solver(agent, task):\n    return {'answer': agent.llm('FAIL now')}\n"


@pytest.fixture
def served(monkeypatch, fake):
    from w4s.models import factory

    monkeypatch.setattr(factory, "build_chat_model", lambda cfg, role=None: fake)
    return fake


def _config(**kw) -> EvaluateConfig:
    return EvaluateConfig(benchmark="arithmetic", val_size=3, test_size=2, concurrency=2,
                          use_cache=False, executor=BackendConfig(kind="scripted",
                                                                  replies=["unused"]), **kw)


def test_the_stage_scores_the_test_split_and_writes_its_report(tmp_path, served):
    from prefect.context import FlowRunContext, TaskRunContext

    assert FlowRunContext.get() is None and TaskRunContext.get() is None  # no Prefect run
    wf = tmp_path / "wf.py"
    wf.write_text(ECHO)
    report = tmp_path / "out" / "evaluation.json"
    result = evaluate_workflow(str(wf), str(report), _config())
    assert result["split"] == "test" and result["items"] == 2  # the stage's default split
    assert result["report"] == str(report) and result["workflow"] == str(wf)
    doc = json.loads(report.read_text())
    assert [o["answer"] for o in doc["outcomes"]] == ["7", "7"]
    assert doc["accuracy"] == result["accuracy"] and served.calls >= 1


def test_the_split_and_the_limits_come_from_the_config(tmp_path, served):
    wf = tmp_path / "wf.py"
    wf.write_text(ECHO)
    ev = run_evaluation(wf, _config(split="validation"))
    assert ev.header["split"] == "validation" and len(ev.result.outcomes) == 3
    ev = run_evaluation(wf, _config(), default_split="validation")
    assert ev.header["split"] == "validation"


def test_items_lost_to_the_executor_raise_and_write_no_report(tmp_path, served):
    wf = tmp_path / "wf.py"
    wf.write_text(DOWN)
    report = tmp_path / "evaluation.json"
    with pytest.raises(InfrastructureError, match="2 of 2 items lost to infrastructure"):
        evaluate_workflow(str(wf), str(report), _config())
    assert not report.exists()  # never scored as wrong answers
