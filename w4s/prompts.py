"""Meta-agent prompts in the W4S style: records in, message lists out. No I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from w4s.protocols import Message
from w4s.sandbox.worker.text import clip  # the project's one `clip` (re-exported here)

# Bumped whenever a prompt below changes: trajectory rows record it, so a dataset can keep
# samples from one template.
PROMPT_VERSION = "w4s-prompt-v1"

SYSTEM = (
    "You are an expert in designing agentic workflows. You improve a Python workflow that "
    "solves tasks by calling a strong executor language model. Reply with a short analysis "
    "and then the complete improved workflow in one ```python code block."
)

AGENT_INTERFACE = '''\
# Agentic system interface
Write a function `solver(agent, task: str) -> dict` returning {"answer": ...}.
`agent` gives you the executor model and a code runner:
- agent.llm(prompt, temperature=0.0, system=None) -> str: one reply from the executor model.
- agent.sample(prompt, n, temperature=0.8) -> list[str]: n replies (for voting).
- agent.call_json_format_llm(messages, temperature, num_of_response, agent_role,
  return_dict_keys, instructions) -> list[dict]: replies parsed as JSON with those keys.
- agent.execute_code(code) -> str: runs Python code in a sandbox; returns str(solution())
  if the code defines solution(), else what it printed; "Error: ..." on failure.
Example:
```python
def solver(agent, task: str) -> dict:
    code = agent.llm("Write Python code that prints the answer.\\n" + task)
    return {"answer": agent.execute_code(code)}
```'''

PRINCIPLES = """\
# Guiding principles
- First analyse the failure cases of the latest workflow: why did it get them wrong?
- Make one focused change that fixes the cause; do not overfit to the shown cases.
- Useful techniques: step-by-step reasoning, self-consistency (sample and vote),
  role assignment, decomposition, reflection and revision, writing and running code.
- The workflow must be complete, runnable Python using only `agent` and the standard library."""

OUTPUT_FORMAT = """\
# Output format
First a short analysis (a few sentences). Then the full new workflow in ONE block:
```python
def solver(agent, task: str) -> dict:
    ...
    return {"answer": answer}
```"""

REPAIR = """\
The workflow failed when run on a sample task:

{error}

Fix the root cause (do not just wrap the code in try/except). Reply with a short \
analysis, then the complete corrected workflow in one ```python block."""


@dataclass(frozen=True, slots=True)
class FailureCase:
    question: str
    answer: str | None
    expected: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One past workflow of the trajectory; feedback is shown only for the latest."""

    iteration: int
    accuracy: float
    code: str
    failures: tuple[FailureCase, ...] = ()


def format_feedback(accuracy: float, failures: Sequence[FailureCase]) -> str:
    lines = [f"Validation accuracy: {accuracy:.2f}"]
    for i, f in enumerate(failures, 1):
        lines.append(f"Failure {i}:")
        lines.append(f"  question: {clip(f.question, 600)}")
        lines.append(f"  workflow answer: {clip(str(f.answer), 300)}")
        lines.append(f"  expected answer: {clip(f.expected, 300)}")
        if f.error:
            lines.append(f"  error: {clip(f.error, 800)}")
    return "\n".join(lines)


def trend_line(best_before: float, latest: float) -> str:
    if latest > best_before:
        word = "went up"
    elif latest < best_before:
        word = "went down"
    else:
        word = "stayed the same"
    return f"Validation accuracy {word}: from {best_before:.2f} to {latest:.2f}."


def build_messages(
    *,
    task_description: str,
    example_question: str,
    example_answer: str,
    history: Sequence[HistoryEntry],
    best_before: float | None = None,
) -> list[Message]:
    """The state as a conversation: system + one user message with the W4S sections."""
    blocks = []
    for i, h in enumerate(history):
        latest = i == len(history) - 1
        title = "Latest workflow" if latest else "Workflow"
        block = (f"## {title} (iteration {h.iteration}, validation accuracy {h.accuracy:.2f})\n"
                 f"```python\n{h.code.rstrip()}\n```")
        if latest:
            block += "\n" + format_feedback(h.accuracy, h.failures)
        blocks.append(block)
    parts = [
        AGENT_INTERFACE,
        PRINCIPLES,
        "# Task description\n"
        f"{task_description}\nExample task: {clip(example_question, 800)}\n"
        f"Example answer: {clip(example_answer, 400)}",
        "# History of workflows (latest last)\n" + "\n\n".join(blocks),
    ]
    if history and best_before is not None:
        parts.append(trend_line(best_before, history[-1].accuracy))
    parts.append(OUTPUT_FORMAT)
    parts.append("Improve the latest workflow to raise validation accuracy.")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def repair_messages(
    conversation: Sequence[Message], reply: str, error: str
) -> list[Message]:
    """Continue the conversation with the failing reply and the traceback."""
    return [
        *conversation,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": REPAIR.format(error=clip(error, 2000))},
    ]
