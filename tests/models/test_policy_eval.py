"""Offline policy evaluation (models/policy_eval.py) on the tiny random Llama."""

from __future__ import annotations

import math

import pytest

from w4s.models import policy_eval
from w4s.models.policy_eval import Candidate

PROMPT = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "What is 2+3?"}]
OTHER = [{"role": "user", "content": "the quick brown fox"}]
REPLIES = ["The answer is 5.", "def solver(question): return answer", "jumps over the dog"]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from tests.models.conftest import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("policy-eval-tiny"))
    return folder, *policy_eval.load_policy(folder)


def manual_logprob(model, tokenizer, prompt, reply):
    """Mean log-prob of the reply's tokens up to <|im_end|> from one full forward pass."""
    import torch

    p = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    c = reply + "<|im_end|>"
    p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(c, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p_ids + c_ids]), use_cache=False).logits[0]
    lp = torch.log_softmax(logits.float(), -1)
    return sum(float(lp[len(p_ids) - 1 + k, t]) for k, t in enumerate(c_ids)) / len(c_ids)


def test_logprobs_score_the_reply_through_its_end_of_turn_only(policy):
    _, model, tok = policy
    got = policy_eval.completion_logprobs(model, tok, [PROMPT, PROMPT, OTHER], REPLIES)
    prompts = [PROMPT, PROMPT, OTHER]
    want = [manual_logprob(model, tok, p, r) for p, r in zip(prompts, REPLIES, strict=True)]
    assert got == pytest.approx(want, abs=1e-4)
    assert all(math.isfinite(x) and x < 0 for x in got)


def test_shared_prompt_cache_equals_separate_forward_passes(policy):
    _, model, tok = policy
    prompts = [PROMPT, OTHER, PROMPT, PROMPT]
    replies = REPLIES + ["5"]
    shared = policy_eval.completion_logprobs(model, tok, prompts, replies)
    alone = policy_eval.completion_logprobs(model, tok, prompts, replies, share_prompt=False)
    assert shared == pytest.approx(alone, abs=1e-4)


def test_offline_margin_and_a_paired_comparison(policy, tmp_path):
    folder, model, tok = policy
    cands = [Candidate(PROMPT, REPLIES[0], True, "s0"), Candidate(PROMPT, REPLIES[1], False, "s0"),
             Candidate(OTHER, REPLIES[2], True, "s1"), Candidate(OTHER, REPLIES[0], False, "s1"),
             Candidate(OTHER, REPLIES[1], False, "s2")]  # s2: no positive, left out
    out = policy_eval.offline_margin(model, tok, cands)
    lp = out["logprobs"]
    assert out["states"] == 2 and set(out["by_state"]) == {"s0", "s1"}
    assert out["by_state"]["s0"] == pytest.approx(lp[0] - lp[1], abs=1e-4)
    assert out["margin"] == pytest.approx((lp[0] - lp[1] + lp[2] - lp[3]) / 2, abs=1e-3)
    same = policy_eval.compare_margins(out, out)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0] and same["clusters"] == 2

    # an adapter at its initialisation (lora_B = 0) leaves the policy's scores unchanged
    from peft import LoraConfig, get_peft_model

    from w4s.models.rlao import load_base

    base, _ = load_base(folder)
    get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                    task_type="CAUSAL_LM")).save_pretrained(tmp_path / "ad")
    adapted, tok2 = policy_eval.load_policy(folder, tmp_path / "ad")
    assert policy_eval.offline_margin(adapted, tok2, cands)["logprobs"] == \
        pytest.approx(lp, abs=1e-4)


def test_mismatched_lengths_is_a_clear_error(policy):
    _, model, tok = policy
    with pytest.raises(ValueError, match="2 prompts for 1 replies"):
        policy_eval.completion_logprobs(model, tok, [PROMPT, PROMPT], ["x"])
