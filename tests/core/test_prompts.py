from w4s.mdp import State
from w4s.prompts import FailureCase, HistoryEntry, build_messages, repair_messages


def _history():
    return (
        HistoryEntry(0, 0.1, "def solver(agent, task):\n    return {'answer': 0}\n",
                     (FailureCase("What is 1+1?", "3", "2"),)),
        HistoryEntry(1, 0.6, "def solver(agent, task):\n    return {'answer': 2}\n",
                     (FailureCase("What is 7*8?", "54", "56", "ValueError: boom"),)),
    )


def test_prompt_has_w4s_sections_and_feedback_only_for_latest():
    msgs = build_messages(task_description="Evaluate expressions.", example_question="What is 2+2?",
                          example_answer="4", history=_history(), best_before=0.1)
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    for section in ("# Agentic system interface", "# Guiding principles", "# Task description",
                    "# History of workflows", "# Output format"):
        assert section in user
    assert "agent.execute_code" in user and "solver(agent, task: str) -> dict" in user
    assert "What is 7*8?" in user and "ValueError: boom" in user  # latest feedback
    assert "What is 1+1?" not in user  # older feedback dropped
    assert "went up: from 0.10 to 0.60" in user
    assert "(iteration 0, validation accuracy 0.10)" in user
    assert "## Latest workflow (iteration 1, validation accuracy 0.60)" in user
    assert "```python\ndef solver(agent, task):\n    return {'answer': 2}\n```" in user


def test_repair_continues_the_conversation():
    base = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    msgs = repair_messages(base, "bad reply", "Traceback: NameError on line 3")
    assert msgs[:2] == base
    assert msgs[2] == {"role": "assistant", "content": "bad reply"}
    assert "NameError on line 3" in msgs[3]["content"]
    assert "root cause" in msgs[3]["content"]


def test_state_advance_tracks_running_best_and_round_trips():
    s = State("d", "q", "a").advance(0, 0.4, "c0", [])
    assert s.best_accuracy == 0.4 and s.last_accuracy == 0.4
    s = s.advance(1, 0.2, "c1", [FailureCase("q", "x", "y")])
    assert s.best_accuracy == 0.4 and s.last_accuracy == 0.2 and s.best_before_latest == 0.4
    s = s.advance(2, 0.7, "c2", [])
    assert s.best_accuracy == 0.7 and s.history[-1].code == "c2"
    assert State.from_json(s.to_json()) == s
    assert "went up: from 0.40 to 0.70" in s.messages()[1]["content"]
