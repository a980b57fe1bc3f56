"""The W4S MDP: state, candidate actions, self-check with repairs, reward and the state update.

Reading order: State -> Candidate -> sampling -> self-check/repair -> scoring -> advance.
Everything here is plain data and control flow; models and the sandbox come in through
protocols, so tests drive it with scripted doubles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from w4s.extraction import parse_action
from w4s.hashing import json_sha256, sha256_text
from w4s.prompts import FailureCase, HistoryEntry, build_messages, repair_messages
from w4s.protocols import ChatModel, Completion, Message
from w4s.reward import reward


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def hash_messages(messages: Sequence[Message]) -> str:
    return json_sha256(list(messages), compact=False)[:16]


def hash_code(code: str | None) -> str | None:
    return sha256_text(code)[:16] if code is not None else None


@dataclass(frozen=True, slots=True)
class State:
    """Task instructions + the trajectory's workflows; feedback of the latest drives the prompt."""

    task_description: str
    example_question: str
    example_answer: str
    history: tuple[HistoryEntry, ...] = ()
    best_accuracy: float = 0.0  # running max over the trajectory (reward reference)
    best_before_latest: float | None = None  # for the "went up/down" line

    @property
    def last_accuracy(self) -> float:
        return self.history[-1].accuracy if self.history else 0.0

    def messages(self) -> list[Message]:
        return build_messages(
            task_description=self.task_description,
            example_question=self.example_question,
            example_answer=self.example_answer,
            history=self.history,
            best_before=self.best_before_latest,
        )

    def advance(self, iteration: int, accuracy: float, code: str,
                failures: Sequence[FailureCase]) -> State:
        """s_{i+1} = [s_i; a_i; f_i]: append the chosen workflow with its feedback."""
        entry = HistoryEntry(iteration, accuracy, code, tuple(failures))
        return replace(
            self,
            history=(*self.history, entry),
            best_before_latest=self.best_accuracy if self.history else None,
            best_accuracy=max(self.best_accuracy, accuracy) if self.history else accuracy,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        history = tuple(
            HistoryEntry(
                h["iteration"], h["accuracy"], h["code"],
                tuple(FailureCase(**f) for f in h["failures"]),
            )
            for h in data["history"]
        )
        return cls(**{**data, "history": history})


@dataclass(slots=True)
class Candidate:
    """One sampled action and everything that happened to it; becomes one trajectory row."""

    run_id: str
    iteration: int
    index: int
    kind: str  # "seed" | "action"
    prompt: list[Message]
    reply: str
    seed_name: str | None = None
    analysis: str = ""
    code: str | None = None
    status: str = "pending"  # pending -> ok | skipped | budget_exceeded | infra_error
    error: str | None = None
    repairs: int = 0
    repair_log: list[dict[str, str]] = field(default_factory=list)
    # the conversation `reply` was sampled from: `prompt` itself, or after repairs, the
    # prompt followed by each failed attempt and its error (None: `prompt`)
    conversation: list[Message] | None = None
    meta_prompt_tokens: int = 0
    meta_completion_tokens: int = 0
    accuracy: float | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    executor_calls: int = 0
    executor_prompt_tokens: int = 0
    executor_completion_tokens: int = 0
    cost_usd: float | None = None
    cache_hits: int = 0
    reward: float | None = None
    chosen: bool = False
    best_so_far: float | None = None
    last_accuracy: float | None = None
    created_at: str = field(default_factory=now)
    finished_at: str | None = None

    @property
    def id(self) -> str:
        return f"{self.iteration:04d}-{self.index:02d}"

    @property
    def prompt_hash(self) -> str:
        return hash_messages(self.prompt)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        return cls(**data)


def sample_candidates(
    meta_agent: ChatModel, state: State, *, run_id: str, iteration: int, m: int,
    temperature: float, max_tokens: int,
) -> list[Candidate]:
    """m actions for one state, in one batched call; its token usage is split across them."""
    prompt = state.messages()
    done = meta_agent.complete(prompt, n=m, temperature=temperature, max_tokens=max_tokens)
    share_in, share_out = done.prompt_tokens // m, done.completion_tokens // m
    out = []
    for j, reply in enumerate(done.texts):
        # the first candidate also carries the remainder, so the rows sum to the call's usage
        extra_in = done.prompt_tokens % m if j == 0 else 0
        extra_out = done.completion_tokens % m if j == 0 else 0
        action = parse_action(reply)
        out.append(Candidate(
            run_id=run_id, iteration=iteration, index=j, kind="action", prompt=prompt,
            reply=reply, analysis=action.analysis, code=action.code, error=action.error,
            meta_prompt_tokens=share_in + extra_in,
            meta_completion_tokens=share_out + extra_out,
        ))
    return out


REWARDED_STATUSES = ("ok", "skipped")  # budget_exceeded, infra_error: no reward, never trained

CheckFn = Callable[[str], "str | None"]
RepairFn = Callable[[list[Message]], Completion]


def self_check_with_repairs(
    cand: Candidate, *, check: CheckFn, repair: RepairFn, max_repairs: int
) -> Candidate:
    """Run the workflow on one sample; on error ask for a fix, at most `max_repairs` times.

    `check(code)` returns None when the workflow ran and answered, else the error text.
    A candidate that still fails is marked skipped with its last error. Either way the
    candidate's reply, analysis and code are those of its last attempt, and `repair_log`
    holds every failed attempt (reply and error), the last one of a skipped candidate too.
    Exceptions from `check` (an infrastructure failure, not the workflow's) propagate.
    """
    conversation = list(cand.prompt)
    reply = cand.reply
    action = parse_action(reply)
    while True:
        error = action.error if action.code is None else check(action.code)
        cand.analysis, cand.code, cand.reply = action.analysis, action.code, reply
        cand.conversation = conversation if cand.repairs else None
        if error is None:
            cand.status, cand.error = "ok", None
            return cand
        cand.repair_log.append({"reply": reply, "error": error})
        if cand.repairs >= max_repairs:
            cand.status, cand.error = "skipped", error
            cand.finished_at = now()
            return cand
        conversation = repair_messages(conversation, reply, error)
        done = repair(conversation)
        cand.meta_prompt_tokens += done.prompt_tokens
        cand.meta_completion_tokens += done.completion_tokens
        cand.repairs += 1
        reply = done.text
        action = parse_action(reply)


def assign_rewards(cands: Sequence[Candidate], state: State) -> Candidate | None:
    """Reward the candidates against the state, mark the best executed one chosen.

    Only the meta-agent's own outcomes are rewarded (ok, skipped): a candidate the budget
    stopped or infrastructure failed has no reward (None), so no dataset trains on it.
    """
    best, last = state.best_accuracy, state.last_accuracy
    for c in cands:
        c.best_so_far, c.last_accuracy = best, last
        c.reward = (reward(c.accuracy, best_so_far=best, last=last)
                    if c.status in REWARDED_STATUSES else None)
    scored = [c for c in cands if c.status == "ok" and c.accuracy is not None]
    if not scored:
        return None
    chosen = max(scored, key=lambda c: (c.accuracy, -c.index))
    chosen.chosen = True
    return chosen


def failure_cases(failures: Sequence[dict[str, Any]]) -> list[FailureCase]:
    return [FailureCase(**f) for f in failures]
