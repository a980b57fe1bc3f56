"""Seed workflows per kind of task: the paper's starting points (CoT, CoT-SC, code, repair).

Each is a plain source string defining `solver(agent, task) -> dict` that uses only the agent
API (`llm`, `sample`, `execute_code`) and the standard library, imported inside `solver`.
"""

from __future__ import annotations

# Shared helper text for math seeds: the last \boxed{} (braces matched), else the text after
# "answer is", else the last number; the workflow itself returns a short answer.
_MATH_FINAL = '''\
def final_answer(reply):
    import re
    start = reply.rfind("\\\\boxed{")
    if start >= 0:
        depth, i = 0, start + len("\\\\boxed")
        for j in range(i, len(reply)):
            depth += {"{": 1, "}": -1}.get(reply[j], 0)
            if depth == 0:
                return reply[i + 1:j].strip()
    marked = re.split(r"(?i)answer is|answer:", reply)
    if len(marked) > 1 and marked[-1].strip():
        return marked[-1].strip().rstrip(".")
    numbers = re.findall(r"-?\\d[\\d,]*(?:\\.\\d+)?", reply)
    return numbers[-1] if numbers else reply.strip()
'''

MATH_COT = (
    _MATH_FINAL
    + '''

def solver(agent, task: str) -> dict:
    reply = agent.llm(
        task + "\\n\\nSolve the problem step by step. Put the final answer in \\\\boxed{}.",
        temperature=0.0,
    )
    return {"answer": final_answer(reply), "reasoning": reply}
'''
)

MATH_COT_SC = (
    _MATH_FINAL
    + '''

def solver(agent, task: str) -> dict:
    from collections import Counter

    prompt = task + "\\n\\nSolve the problem step by step. Put the final answer in \\\\boxed{}."
    replies = agent.sample(prompt, n=5, temperature=0.8)
    answers = [final_answer(r) for r in replies]
    keys = [a.replace(",", "").replace(" ", "").removesuffix(".0") for a in answers]
    best = Counter(keys).most_common(1)[0][0]
    return {"answer": answers[keys.index(best)], "votes": dict(Counter(keys))}
'''
)

MATH_CODE = (
    _MATH_FINAL
    + '''

def solver(agent, task: str) -> dict:
    import re

    reply = agent.llm(
        task + "\\n\\nWrite a Python function `solution()` that computes and returns the "
        "final answer. Reply with only the code in one ```python block.",
        temperature=0.0,
    )
    blocks = re.findall(r"```(?:python)?\\n(.*?)```", reply, re.DOTALL)
    result = agent.execute_code(blocks[-1] if blocks else reply).strip()
    if result and not result.startswith("Error"):
        return {"answer": result}
    fallback = agent.llm(task + "\\n\\nSolve step by step. Put the final answer in \\\\boxed{}.")
    return {"answer": final_answer(fallback), "code_error": result}
'''
)

_CODE_HELPERS = '''\
def extract_code(reply):
    import re
    blocks = re.findall(r"```(?:python|py)?[ \\t]*\\n(.*?)```", reply, re.DOTALL)
    return max(blocks, key=len) if blocks else reply


def public_tests(task):
    """Asserts written in the task (MBPP) or built from its `>>>` docstring examples."""
    import re
    tests = [line.strip() for line in task.splitlines() if line.strip().startswith("assert ")]
    lines = task.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\\s*>>>\\s*(.+)", line)
        if m and i + 1 < len(lines) and lines[i + 1].strip() and ">>>" not in lines[i + 1]:
            tests.append("assert " + m.group(1).strip() + " == " + lines[i + 1].strip())
    return tests


def run_tests(agent, code, tests):
    """Failure lines for the tests the code does not pass (empty when all pass)."""
    checks = []
    for t in tests:
        checks.append("try:\\n    " + t + "\\nexcept Exception as e:\\n    print('FAILED: '"
                      " + " + repr(t) + " + ' -> ' + type(e).__name__ + ' ' + str(e))")
    output = agent.execute_code(code + "\\n\\n" + "\\n".join(checks) + "\\nprint('DONE')\\n")
    if output.startswith("Error"):
        return [output]
    return [line for line in output.splitlines() if line.startswith("FAILED")]
'''

_CODE_PROMPT = (
    "\\n\\nWrite the complete Python function (signature and body, with any imports it "
    "needs). Reply with the code in one ```python block."
)

CODE_GENERATE = (
    _CODE_HELPERS
    + f'''

def solver(agent, task: str) -> dict:
    reply = agent.llm(task + "{_CODE_PROMPT}", temperature=0.0)
    return {{"answer": extract_code(reply)}}
'''
)

CODE_GENERATE_REPAIR = (
    _CODE_HELPERS
    + f'''

def solver(agent, task: str) -> dict:
    prompt = task + "{_CODE_PROMPT}"
    code = extract_code(agent.llm(prompt, temperature=0.0))
    tests = public_tests(task)
    for _ in range(3):
        failures = run_tests(agent, code, tests) if tests else []
        if not failures:
            break
        reply = agent.llm(
            prompt + "\\n\\nYour previous code:\\n```python\\n" + code + "\\n```\\n"
            "It fails these tests:\\n" + "\\n".join(failures[:5]) + "\\nFix the code.",
            temperature=0.0,
        )
        code = extract_code(reply)
    return {{"answer": code}}
'''
)

_CHOICE_FINAL = '''\
def final_letter(reply):
    import re
    found = re.findall(r"(?i:answer)\\s*(?:is|:)?\\s*\\(?([A-J])\\)?(?![a-z])", reply)
    if not found:
        found = re.findall(r"\\(([A-J])\\)", reply)
    return found[-1] if found else reply.strip()
'''

_CHOICE_PROMPT = (
    "\\n\\nThink step by step, then finish with the line 'The answer is (X)' "
    "where X is the letter of the correct option."
)

CHOICE_COT = (
    _CHOICE_FINAL
    + f'''

def solver(agent, task: str) -> dict:
    reply = agent.llm(task + "{_CHOICE_PROMPT}", temperature=0.0)
    return {{"answer": final_letter(reply), "reasoning": reply}}
'''
)

CHOICE_COT_SC = (
    _CHOICE_FINAL
    + f'''

def solver(agent, task: str) -> dict:
    from collections import Counter

    replies = agent.sample(task + "{_CHOICE_PROMPT}", n=5, temperature=0.8)
    votes = Counter(final_letter(r) for r in replies)
    return {{"answer": votes.most_common(1)[0][0], "votes": dict(votes)}}
'''
)

QA_COT = '''\
def solver(agent, task: str) -> dict:
    import re

    reply = agent.llm(
        task + "\\n\\nThink step by step. Then give only the final answer (a number, a date, "
        "or a short span copied from the passage) on the last line as 'Final answer: ...'.",
        temperature=0.0,
    )
    parts = re.split(r"(?i)final answer\\s*:", reply)
    lines = reply.strip().splitlines()
    answer = parts[-1] if len(parts) > 1 else (lines[-1] if lines else "")
    return {"answer": answer.strip().rstrip("."), "reasoning": reply}
'''

MATH_SEEDS = {"cot": MATH_COT, "cot_sc": MATH_COT_SC, "code": MATH_CODE}
CODE_SEEDS = {"generate": CODE_GENERATE, "generate_repair": CODE_GENERATE_REPAIR}
CHOICE_SEEDS = {"cot": CHOICE_COT, "cot_sc": CHOICE_COT_SC}
QA_SEEDS = {"cot": QA_COT}
SEEDS_BY_KIND = {"math": MATH_SEEDS, "code": CODE_SEEDS, "choice": CHOICE_SEEDS, "qa": QA_SEEDS}
