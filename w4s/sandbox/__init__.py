"""Run untrusted workflows and programs in warm, jailed worker processes.

Workflows are Python source defining `def solver(agent, task: str) -> dict` whose result
holds the final answer under "answer". Inside the sandbox, `agent` offers:

- `agent.llm(prompt, temperature=0.0, system=None, max_tokens=None) -> str`: one executor
  reply; `prompt` is a string or a list of {"role", "content"} messages.
- `agent.sample(prompt, n, temperature=0.8, system=None, max_tokens=None) -> list[str]`:
  n independent replies in one call.
- `agent.call_json_format_llm(messages, temperature, num_of_response, agent_role,
  return_dict_keys, instructions) -> list[dict]`: asks for a JSON object with exactly
  `return_dict_keys` (JSON mode); each reply is parsed, taking the first {...} object
  when the model adds prose; a missing key reads "<missing>", unparseable JSON gives
  every key the value "<unparseable JSON>".
- `agent.execute_code(code) -> str`: runs `code` (``` fences stripped) in a nested
  sandboxed process with its own timeout; returns str(solution()) if the code defines
  `solution()`, else its printed output, stripped; on failure "Error: <Type>: <message>".

Caps on one executor call (`w4s.sandbox.proxy`; a call that breaks one gets an
`ExecutorError` "bad executor request: ...", the workflow's error, never infrastructure):
at most MAX_MESSAGES (64) messages, each exactly {"role", "content"} with a role among
system/user/assistant and string content; MAX_PROMPT_CHARS (200,000) characters of content
in all; 1 <= n <= MAX_SAMPLES (64); a finite temperature in [0, 2]; max_tokens null or
1 <= max_tokens <= MAX_TOKENS_CAP (32,768), further capped by the backend's
`max_new_tokens`; no other fields. At most MAX_CALLS_IN_FLIGHT (64) calls of one item wait
for the executor at once. Each call reserves its worst case against the run's budget
before it is sent (`w4s.cost.Meter.reserve`), so the billed total stays within the budget
plus one call's reservation.

Executor failures raise `ExecutorError` inside the workflow. Calls are proxied to the
parent, which holds the API keys, the call cache and the spend meter; the worker has no
network, no keys, can write only to its own temporary folder and, where Landlock is on,
read only the interpreter, the system libraries and that folder (`python -m w4s.sandbox`).
"""

from w4s.sandbox.cache import CallCache, MemoryCallCache, call_key
from w4s.sandbox.harness import Harness
from w4s.sandbox.pool import isolation_report
from w4s.sandbox.programs import CodeTest, run_program, run_programs, run_tests
from w4s.sandbox.static import check_workflow_source
from w4s.sandbox.types import EvalResult, ItemOutcome, ProgramResult, SandboxSettings

__all__ = [
    "CallCache",
    "CodeTest",
    "EvalResult",
    "Harness",
    "ItemOutcome",
    "MemoryCallCache",
    "ProgramResult",
    "SandboxSettings",
    "call_key",
    "check_workflow_source",
    "isolation_report",
    "run_program",
    "run_programs",
    "run_tests",
]
