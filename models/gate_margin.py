"""Offline policy measure: each policy's log-likelihood of given completions (forward passes
only, no sampling), for the gate's margin of positive over non-positive candidates.

The base model loads once; every adapter is a named PEFT adapter on it, and the base policy
is the same model with its adapters disabled, so all policies score identical token ids.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from models import rlao

log = logging.getLogger(__name__)


def mean_token_logprob(model: Any, sample: rlao.Sample, device: str) -> float:
    """Mean log-probability of the sample's completion tokens (labels != IGNORE)."""
    import torch

    ids = torch.tensor([sample.input_ids], device=device)
    labels = torch.tensor([sample.labels], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1].float()
    target = labels[:, 1:]
    mask = target != rlao.IGNORE
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1))
    return float(logp.squeeze(-1)[mask].mean())


def completion_logliks(base_folder: str | Path, policies: Mapping[str, str | None],
                       rows: Sequence[Mapping[str, Any]], *,
                       max_seq_len: int = 32768) -> tuple[dict[str, list[float | None]], int]:
    """{policy: [mean token log-prob of each row's completion or None]}, and how many rows
    did not fit in `max_seq_len` (None for every policy: never cut, never compared).

    `policies` maps a name to a PEFT adapter folder, or None for the base model. A row has
    `prompt` and `completion` as chat messages.
    """
    device, dtype = rlao.pick_device()
    model, tokenizer = rlao.load_base(base_folder, device=device, dtype=dtype)
    model.eval()
    samples: list[rlao.Sample | None] = []
    for r in rows:
        stats = rlao.TokenizeStats()
        s = rlao.tokenize_sample(tokenizer, list(r["prompt"]), list(r["completion"]), 1.0,
                                 max_seq_len, stats)
        samples.append(None if s is None or stats.truncated else s)
    skipped = sum(s is None for s in samples)
    if skipped:
        log.warning("gate margin: %d of %d candidates exceed max_seq_len %d and are not "
                    "scored", skipped, len(samples), max_seq_len)
    peft_model = None
    out: dict[str, list[float | None]] = {}
    for name, adapter in policies.items():
        if adapter is not None:
            from peft import PeftModel

            if peft_model is None:
                peft_model = PeftModel.from_pretrained(model, str(adapter), adapter_name=name)
            else:
                peft_model.load_adapter(str(adapter), adapter_name=name)
            peft_model.set_adapter(name)
            peft_model.eval()
    for name, adapter in policies.items():
        scorer, ctx = (model, contextlib.nullcontext()) if peft_model is None else (
            peft_model, peft_model.disable_adapter() if adapter is None else
            contextlib.nullcontext())
        if adapter is not None:
            peft_model.set_adapter(name)
        with ctx:
            out[name] = [None if s is None else mean_token_logprob(scorer, s, device)
                         for s in samples]
    return out, skipped
