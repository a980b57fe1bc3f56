from w4s.extraction import parse_action

GOOD = '''The last workflow guessed. I will compute with code.
```python
def solver(agent, task: str) -> dict:
    return {"answer": agent.execute_code(agent.llm(task))}
```
'''


def test_takes_last_block_defining_solver_and_keeps_analysis():
    reply = "Plan:\n```python\nx = 1\n```\n" + GOOD + "\n```python\nprint('not it')\n```"
    action = parse_action(reply)
    assert action.valid
    assert action.code.startswith("def solver(agent, task: str) -> dict:")
    assert "execute_code" in action.code
    assert action.analysis.endswith("I will compute with code.")


def test_reply_without_code_block_is_invalid_with_reason():
    action = parse_action("I think we should use chain of thought.")
    assert not action.valid
    assert "no closed ```python code block" in action.error


def test_unclosed_block_is_invalid():
    action = parse_action("```python\ndef solver(agent, task):\n    return {}\n")
    assert not action.valid


def test_block_without_solver_is_invalid():
    action = parse_action("```python\ndef solve(agent, task):\n    return {}\n```")
    assert not action.valid
    assert "solver" in action.error


def test_plain_fence_counts_as_python():
    action = parse_action("```\ndef solver(agent, task):\n    return {'answer': 1}\n```")
    assert action.valid
