from w4s.mdp import Candidate, State, assign_rewards, self_check_with_repairs
from w4s.protocols import Completion

OK = "```python\ndef solver(agent, task):\n    return {'answer': 1}\n```"
BROKEN = "```python\ndef solver(agent, task):\n    return {'answer': 1/0}\n```"


def _cand(reply: str) -> Candidate:
    prompt = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    return Candidate(run_id="r", iteration=1, index=0, kind="action", prompt=prompt, reply=reply)


def _check(code: str) -> str | None:
    return "ZeroDivisionError: division by zero (line 2: 1/0)" if "1/0" in code else None


class Repairs:
    def __init__(self, replies):
        self.replies = list(replies)
        self.conversations = []

    def __call__(self, messages):
        self.conversations.append(messages)
        return Completion(texts=(self.replies.pop(0),), prompt_tokens=10, completion_tokens=5)


def test_passing_candidate_needs_no_repair():
    repair = Repairs([])
    cand = self_check_with_repairs(_cand(OK), check=_check, repair=repair, max_repairs=3)
    assert cand.status == "ok" and cand.repairs == 0 and not repair.conversations


def test_failure_is_repaired_with_traceback_in_the_prompt():
    repair = Repairs([BROKEN, OK])
    cand = self_check_with_repairs(_cand(BROKEN), check=_check, repair=repair, max_repairs=3)
    assert cand.status == "ok" and cand.repairs == 2
    assert "1/0" not in cand.code
    assert "ZeroDivisionError" in repair.conversations[0][-1]["content"]
    assert repair.conversations[1][-2]["content"] == BROKEN  # repair history accumulates
    assert cand.meta_completion_tokens == 10
    assert [e["error"][:17] for e in cand.repair_log] == ["ZeroDivisionError"] * 2


def test_at_most_three_repairs_then_skipped_with_last_error():
    repair = Repairs([BROKEN] * 5)
    cand = self_check_with_repairs(_cand(BROKEN), check=_check, repair=repair, max_repairs=3)
    assert cand.status == "skipped" and cand.repairs == 3
    assert len(repair.conversations) == 3
    assert cand.error.startswith("ZeroDivisionError")


def test_reply_without_code_is_repaired_then_skipped():
    repair = Repairs(["still no code"])
    cand = self_check_with_repairs(_cand("no code here"), check=_check, repair=repair,
                                   max_repairs=1)
    assert cand.status == "skipped" and "code block" in cand.error


def test_rewards_and_choice():
    state = State("d", "q", "a").advance(0, 0.5, "c", [])
    cands = [_cand(OK) for _ in range(3)]
    for i, (c, acc, status) in enumerate(zip(cands, [0.4, 0.8, None],
                                                  ["ok", "ok", "skipped"], strict=True)):
        c.index, c.accuracy, c.status = i, acc, status
    chosen = assign_rewards(cands, state)
    assert chosen is cands[1] and chosen.chosen and not cands[0].chosen
    assert [c.reward for c in cands] == [0.0, 1.0, -0.1]


def test_sampled_candidates_split_the_call_usage_exactly():
    from w4s.mdp import sample_candidates
    from w4s.models.scripted import ScriptedChatModel

    meta = ScriptedChatModel([OK, "no code", BROKEN])
    state = State("d", "q", "a").advance(0, 0.0, "c", [])
    cands = sample_candidates(meta, state, run_id="r", iteration=1, m=3, temperature=0.5,
                              max_tokens=64)
    assert [c.code is not None for c in cands] == [True, False, True]
    prompt_tokens = sum(len(m["content"].split()) for m in state.messages())
    completion_tokens = sum(len(t.split()) for t in (OK, "no code", BROKEN))
    assert sum(c.meta_prompt_tokens for c in cands) == prompt_tokens
    assert sum(c.meta_completion_tokens for c in cands) == completion_tokens


def test_skipped_row_is_one_attempt_and_every_reply_is_logged():
    first = "First try.\n" + BROKEN
    last = "Last try.\n```python\ndef solver(agent, task):\n    return {'answer': 2/0}\n```"
    repair = Repairs(["Second try.\n" + BROKEN, last])
    cand = self_check_with_repairs(_cand(first), check=lambda c: "boom" if "/0" in c else None,
                                   repair=repair, max_repairs=2)
    assert cand.status == "skipped" and cand.repairs == 2
    # reply, analysis and code all come from the same (last) attempt
    assert cand.reply == last and cand.analysis.startswith("Last try")
    assert "2/0" in cand.code
    # every failed attempt, the last one included, is in the log with its error
    assert [e["reply"] for e in cand.repair_log] == [first, "Second try.\n" + BROKEN, last]
    assert all(e["error"] == "boom" for e in cand.repair_log)


def test_repaired_candidate_logs_the_failed_attempts_only():
    repair = Repairs([OK])
    cand = self_check_with_repairs(_cand(BROKEN), check=_check, repair=repair, max_repairs=3)
    assert cand.status == "ok" and cand.reply == OK
    assert [e["reply"] for e in cand.repair_log] == [BROKEN]


def test_budget_stopped_and_infra_failed_candidates_get_no_reward():
    state = State("d", "q", "a").advance(0, 0.5, "c", [])
    cands = [_cand(OK) for _ in range(3)]
    for i, (c, status) in enumerate(zip(cands, ["budget_exceeded", "infra_error", "ok"],
                                        strict=True)):
        c.index, c.status = i, status
    cands[2].accuracy = 0.6
    chosen = assign_rewards(cands, state)
    assert chosen is cands[2]
    assert [c.reward for c in cands] == [None, None, 1.0]


def test_a_repaired_reply_records_the_conversation_it_was_sampled_from():
    repair = Repairs([OK])
    cand = self_check_with_repairs(_cand(BROKEN), check=_check, repair=repair, max_repairs=3)
    assert cand.conversation == repair.conversations[-1]
    assert cand.conversation[-2] == {"role": "assistant", "content": BROKEN}
    assert self_check_with_repairs(_cand(OK), check=_check, repair=Repairs([]),
                                   max_repairs=3).conversation is None  # the prompt itself
