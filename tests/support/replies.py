"""Canned meta-agent replies for scripted runs on the arithmetic benchmark."""

# a valid workflow that scores 1.0: it computes the expression
GOOD_CODE = '''def solver(agent, task: str) -> dict:
    expr = task.split("What is ")[1].rstrip("?")
    return {"answer": agent.execute_code("print(" + expr + ")")}
'''
GOOD = f"Compute it with code.\n```python\n{GOOD_CODE}```"
NO_CODE = "I would think harder."  # no code block: the self-check skips it
RAISES_CODE = '''def solver(agent, task: str) -> dict:
    raise RuntimeError("boom")
'''
RAISES = f"```python\n{RAISES_CODE}```"  # valid code that fails its self-check
