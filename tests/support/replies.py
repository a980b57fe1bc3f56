"""Canned meta-agent replies for scripted runs on the arithmetic benchmark."""

GOOD = '''Compute it with code.
```python
def solver(agent, task: str) -> dict:
    expr = task.split("What is ")[1].rstrip("?")
    return {"answer": agent.execute_code("print(" + expr + ")")}
```'''  # a valid workflow that scores 1.0: it computes the expression
NO_CODE = "I would think harder."  # no code block: the self-check skips it
