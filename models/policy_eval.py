"""Offline policy evaluation: how likely a policy finds held-out candidates, forward only.

The offline margin of a policy is, per state, the mean token log-probability it gives the
candidates that earned a positive reward minus the mean it gives the others, averaged over
states that have both (`w4s.stats.grouped_margin`). A fit that learned what pays raises it;
it needs no sampling, no executor and no sandbox, so it is cheap and deterministic.

Completions are scored as the fit trains them: the reply as an assistant turn after the
prompt messages, rendered by the chat template, ending at the end-of-turn token (template
glue after it is not scored). Candidates that share a prompt (the m candidates of a state)
reuse one forward pass of it through the KV cache.

Used by `benchmarks/learning_signal.py` and the nightly's champion/challenger gate.
torch, transformers and peft are imported inside functions.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w4s import stats
from w4s.errors import ConfigError


@dataclass(frozen=True)
class Candidate:
    """One held-out candidate: the messages it was sampled from, its reply, its label."""

    prompt: tuple[dict, ...] | list[dict]
    reply: str
    positive: bool
    state: Hashable


def load_policy(base: str | Path, adapter: str | Path | None = None) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer): `base` is `embedded` or a local Hugging Face folder,
    `adapter` an optional PEFT LoRA folder on top (None: the base policy)."""
    from w4s.models.rlao import load_base, pick_device
    from w4s.models.transformers_local import apply_adapter

    if str(base) == "embedded":
        from w4s.models.embedded import ensure_embedded_folder

        folder = ensure_embedded_folder()
    else:
        folder = Path(base).expanduser()
    device, dtype = pick_device()
    model, tokenizer = load_base(folder, device=device, dtype=dtype)
    if adapter is not None:
        model, _ = apply_adapter(model, adapter, model_id=str(folder))
    return model.eval(), tokenizer


def _render(tokenizer: Any, prompt: Sequence[dict], reply: str) -> tuple[list[int], list[int]]:
    """(prompt ids with the generation prompt, completion ids up to its end-of-turn)."""
    msgs = [{"role": m["role"], "content": m["content"]} for m in prompt]
    p_text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    f_text = tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": reply}],
                                           tokenize=False, add_generation_prompt=False)
    if not f_text.startswith(p_text):
        raise ConfigError("the chat template does not render the prompt as a prefix of "
                          "prompt + reply, so the reply cannot be scored on its own")
    p_ids = tokenizer(p_text, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(f_text[len(p_text):], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None and eos in c_ids:  # glue after the end-of-turn token is not sampled
        c_ids = c_ids[: len(c_ids) - c_ids[::-1].index(eos)]
    if not c_ids:
        raise ConfigError("a reply rendered to no tokens")
    return p_ids, c_ids


def completion_logprobs(model: Any, tokenizer: Any, prompts: Sequence[Sequence[dict]],
                        replies: Sequence[str], *, share_prompt: bool = True) -> list[float]:
    """Mean token log-probability of each reply given its prompt messages. With
    `share_prompt`, consecutive and repeated prompts are run once and their KV cache copied
    for each reply (same result, fewer FLOPs)."""
    import torch

    if len(prompts) != len(replies):
        raise ValueError(f"{len(prompts)} prompts for {len(replies)} replies")
    device = next(model.parameters()).device
    rendered = [_render(tokenizer, p, r) for p, r in zip(prompts, replies, strict=True)]
    out: list[float] = [0.0] * len(rendered)
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, (p_ids, _) in enumerate(rendered):
        by_prompt.setdefault(tuple(p_ids) if share_prompt else (i, *p_ids), []).append(i)
    with torch.no_grad():
        for members in by_prompt.values():
            p_ids = rendered[members[0]][0]
            if share_prompt:
                first = model(input_ids=torch.tensor([p_ids], device=device), use_cache=True,
                              logits_to_keep=1)
                last = first.logits[0, -1:].float()
            for i in members:
                c_ids = rendered[i][1]
                target = torch.tensor(c_ids, device=device)
                if share_prompt:
                    cache = copy.deepcopy(first.past_key_values)
                    o = model(input_ids=target[None], cache=cache, use_cache=True)
                    logits = torch.cat([last, o.logits[0, :-1].float()])
                else:
                    ids = torch.tensor([p_ids + c_ids], device=device)
                    logits = model(input_ids=ids, use_cache=False).logits[0].float()
                    logits = logits[len(p_ids) - 1: -1]
                lp = torch.log_softmax(logits, dim=-1).gather(1, target[:, None])
                out[i] = float(lp.mean())
    return out


def offline_margin(model: Any, tokenizer: Any, candidates: Sequence[Candidate], *,
                   resamples: int = stats.RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """The policy's log-likelihood margin of positive over non-positive candidates, per
    state then averaged, with a 95% cluster-bootstrap interval; also each state's margin
    (`by_state`, for paired comparisons of two policies) and each candidate's log-prob."""
    logps = completion_logprobs(model, tokenizer, [c.prompt for c in candidates],
                                [c.reply for c in candidates])
    labels = [c.positive for c in candidates]
    groups = [c.state for c in candidates]
    summary = stats.grouped_margin(logps, labels, groups, resamples=resamples, seed=seed)
    return {**summary, "by_state": stats.state_margins(logps, labels, groups),
            "logprobs": [round(x, 5) for x in logps]}


def compare_margins(a: dict[str, Any], b: dict[str, Any], *, resamples: int = stats.RESAMPLES,
                    seed: int = 0) -> dict[str, Any]:
    """Paired difference of two `offline_margin` results on the same candidates (a - b),
    resampling states."""
    wrap = {k: [v] for k, v in a["by_state"].items()}
    return stats.paired_difference(wrap, {k: [v] for k, v in b["by_state"].items()},
                                   resamples=resamples, seed=seed)
