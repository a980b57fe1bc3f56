"""The child side of an item: exec the workflow, call its `solver`, shape the result.

Runs jailed; everything the workflow does, including raising or exiting, becomes a
record the parent can trust the shape of (an error text, or a clipped answer).
"""

from __future__ import annotations

import json
import linecache
import socket

from .agent import Agent, Channel
from .seeding import seed_random
from .text import clip, error_text, one_line_error

WORKFLOW_FILE = "<workflow>"


def run_item(sock: socket.socket, job: dict) -> dict:
    """Exec the workflow, call its solver with an `Agent` on `sock`, return the record."""
    limit = int(job["limit"])
    code = job["code"]
    seed_random(code, job["task"])
    linecache.cache[WORKFLOW_FILE] = (len(code), None, code.splitlines(True), WORKFLOW_FILE)
    agent = Agent(Channel(sock, job["job"]), code_timeout_s=float(job["code_timeout_s"]),
                  memory_mb=int(job["memory_mb"]), limit=limit)
    glb: dict = {"__name__": "workflow", "__builtins__": __builtins__}
    try:
        exec(compile(code, WORKFLOW_FILE, "exec"), glb)  # noqa: S102 - inside the jail
        solver = glb.get("solver")
        if not callable(solver):
            return {"error": "workflow defines no callable `solver`"}
        out = solver(agent, job["task"])
    except SystemExit as e:
        return {"error": f"solver called sys.exit({e.code!r})"}
    except BaseException as e:  # noqa: BLE001 - every failure becomes the item's error
        return {"error": error_text(e, limit)}
    if not isinstance(out, dict):
        return {"error": f"solver returned {type(out).__name__}, not dict"}
    if "answer" not in out:
        return {"error": "solver's dict has no 'answer' key"}
    answer = out["answer"]
    try:
        text = str(answer)
    except BaseException as e:  # noqa: BLE001
        return {"error": f"str(answer) failed: {one_line_error(e)}"}
    record: dict = {"answer_str": clip(text, limit)}
    try:
        encoded = json.dumps(answer, allow_nan=True)
        if len(encoded) <= 4 * limit:
            record["answer_json"] = encoded
    except (TypeError, ValueError, RecursionError):
        pass
    return record
