"""Prefix-shared packing: the m candidates of one state share one copy of their prompt.

Samples whose prompt token ids are identical form a group. A group is laid out once per
row as [prefix][segment_1]...[segment_m], where the prefix is the prompt without its last
token and segment_j is that last prompt token followed by completion j. Each segment's
position ids restart where the prefix ends, and a block mask lets segment j attend to the
prefix and causally to itself only, never to another candidate. Repeating the prompt's
last token in every segment keeps the usual shift-by-one labels: the token that predicts
a completion's first token sits right before it, so rlao.forward_loss computes the same
loss and gradients as for unshared rows, at about (P + m*C) instead of m*(P + C) tokens.

The mask is built per attention implementation: a flex-attention BlockMask when the model
runs "flex_attention", else a dense [rows, 1, L, L] mask (boolean for sdpa, additive for
eager). transformers (masking_utils._preprocess_mask_arguments) passes any 4D mask or
BlockMask through unchanged, so it does not rebuild a block-diagonal mask from the
restarting position ids.

torch is imported inside functions, as in models/rlao.py.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)
_WARNED: set[tuple[int, int]] = set()
IGNORE = -100  # = rlao.IGNORE; not imported so that rlao can import this module


def prompt_length(input_ids: Sequence[int], labels: Sequence[int]) -> int:
    """Tokens before the first trained label: the part candidates of one state share."""
    for i, t in enumerate(labels):
        if t != IGNORE:
            return i
    return len(input_ids)


def _key(sample: Any) -> tuple[int, ...]:
    return tuple(sample.input_ids[: prompt_length(sample.input_ids, sample.labels)])


def _prefix_len(sample: Any) -> int:
    """Length of the shared prefix: the prompt less its last token, which each segment
    repeats (so the prediction of the completion's first token stays in the segment)."""
    return max(prompt_length(sample.input_ids, sample.labels) - 1, 0)


def group_by_prompt(
    samples: Sequence[Any], indices: Sequence[int] | None = None
) -> list[list[int]]:
    """Indices grouped by identical prompt ids, groups in order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in indices if indices is not None else range(len(samples)):
        groups.setdefault(_key(samples[i]), []).append(i)
    return list(groups.values())


def shared_length(samples: Sequence[Any], members: Sequence[int]) -> int:
    """Tokens of one group laid out shared: the prefix once plus every segment."""
    prefix = _prefix_len(samples[members[0]])
    return prefix + sum(len(samples[i].input_ids) - prefix for i in members)


def grouped_order(samples: Sequence[Any], seed: int) -> list[int]:
    """A seeded shuffle of the groups (states), each group's members kept adjacent, so a
    packer can put one state's candidates in one row."""
    groups = group_by_prompt(samples)
    random.Random(seed).shuffle(groups)
    return [i for g in groups for i in g]


def pack_shared(
    samples: Sequence[Any], row_tokens: int, order: Sequence[int] | None = None
) -> list[list[int]]:
    """Greedy rows of sample indices, in `order`, each up to row_tokens tokens counted as
    laid out shared (a prompt counts once per row that holds any of its candidates). A
    group too long for one row is split across rows, each repeating the prompt."""
    rows: list[list[int]] = []
    current: list[int] = []
    seen: set[tuple[int, ...]] = set()
    used = 0
    for i in order if order is not None else range(len(samples)):
        s = samples[i]
        key = _key(s)
        prefix = _prefix_len(s)
        cost = len(s.input_ids) - (prefix if key in seen else 0)
        if current and used + cost > row_tokens:
            rows.append(current)
            current, seen, used = [], set(), 0
            cost = len(s.input_ids)
        current.append(i)
        seen.add(key)
        used += cost
    if current:
        rows.append(current)
    _warn_split(samples, rows, row_tokens)
    return rows


def _warn_split(samples: Sequence[Any], rows: list[list[int]], row_tokens: int) -> None:
    """One warning line (per budget and count) when states do not fit in a row: their
    candidates then pay for the prompt again in every row they span."""
    spread: dict[tuple[int, ...], int] = {}
    for r in rows:
        for key in {_key(samples[i]) for i in r}:
            spread[key] = spread.get(key, 0) + 1
    split = sum(1 for n in spread.values() if n > 1)
    if split and (row_tokens, split) not in _WARNED:
        _WARNED.add((row_tokens, split))
        need = max(shared_length(samples, g) for g in group_by_prompt(samples))
        log.warning(
            "prefix sharing: %d of %d states do not fit in a row of %d tokens and repeat "
            "their prompt; rows (batch_tokens, row_tokens) of %d tokens would share fully",
            split,
            len(spread),
            row_tokens,
            need,
        )


def _layout(samples: Sequence[Any]) -> dict[str, list[int]]:
    """One shared row: ids, labels, positions, owner (sample index), document and
    segment ids (0 = a group's prefix, 1.. = its candidates)."""
    out: dict[str, list[int]] = {k: [] for k in ("ids", "labels", "pos", "owner", "doc", "seg")}
    for doc, members in enumerate(group_by_prompt(samples)):
        first = samples[members[0]]
        prefix = _prefix_len(first)
        out["ids"] += first.input_ids[:prefix]
        out["labels"] += [IGNORE] * prefix
        out["pos"] += list(range(prefix))
        out["owner"] += [members[0]] * prefix  # labels are IGNORE: no loss is counted
        out["doc"] += [doc] * prefix
        out["seg"] += [0] * prefix
        for j, k in enumerate(members, start=1):
            s = samples[k]
            n = len(s.input_ids) - prefix
            out["ids"] += s.input_ids[prefix:]
            out["labels"] += [IGNORE] + list(s.labels[prefix + 1 :])
            out["pos"] += list(range(prefix, prefix + n))
            out["owner"] += [k] * n
            out["doc"] += [doc] * n
            out["seg"] += [j] * n
    return out


def collate_shared_rows(rows: Sequence[Sequence[Any]], pad_id: int = 0) -> dict[str, Any]:
    """Rows of samples as one [R, L] batch of prefix-shared rows, in the keys of
    rlao.collate_packed_rows plus `document_ids` and `segment_ids`, from which
    attention_mask() builds the mask. Shorter rows end in pad tokens, a document of
    their own with labels IGNORE."""
    import torch

    layouts = [_layout(r) for r in rows]
    length = max(len(lay["ids"]) for lay in layouts)
    cols: dict[str, list[list[int]]] = {
        k: [] for k in ("ids", "labels", "pos", "owner", "doc", "seg")
    }
    offset = 0
    for lay, samples in zip(layouts, rows, strict=True):
        extra = length - len(lay["ids"])
        fill = {
            "ids": [pad_id] * extra,
            "labels": [IGNORE] * extra,
            "pos": list(range(extra)),
            "owner": [offset] * extra,
            "doc": [-1] * extra,
            "seg": [0] * extra,
        }
        for key in cols:
            values = [v + offset for v in lay[key]] if key == "owner" else lay[key]
            cols[key].append(values + fill[key])
        offset += len(samples)
    weights = [s.weight for r in rows for s in r]
    return {
        "input_ids": torch.tensor(cols["ids"]),
        "position_ids": torch.tensor(cols["pos"]),
        "labels": torch.tensor(cols["labels"]),
        "sample_index": torch.tensor(cols["owner"]),
        "document_ids": torch.tensor(cols["doc"]),
        "segment_ids": torch.tensor(cols["seg"]),
        "weights": torch.tensor(weights, dtype=torch.float32),
    }


def dense_mask(document_ids: Any, segment_ids: Any) -> Any:
    """[R, 1, L, L] boolean, True where a query may attend: same document, not later, and
    the key in the prefix or in the query's own segment."""
    import torch

    L = document_ids.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=document_ids.device).tril()
    same_doc = document_ids[:, :, None] == document_ids[:, None, :]
    seg_q, seg_k = segment_ids[:, :, None], segment_ids[:, None, :]
    visible = (seg_k == 0) | (seg_k == seg_q)
    return (causal & same_doc & visible)[:, None]


def mask_mod(document_ids: Any, segment_ids: Any) -> Any:
    """dense_mask as a flex-attention mask_mod (b, h, q, kv) -> bool."""
    doc, seg = document_ids, segment_ids

    def allowed(b: Any, h: Any, q: Any, kv: Any) -> Any:
        return (
            (q >= kv) & (doc[b, q] == doc[b, kv]) & ((seg[b, kv] == 0) | (seg[b, kv] == seg[b, q]))
        )

    return allowed


def block_mask(document_ids: Any, segment_ids: Any) -> Any:
    """The same mask as a flex-attention BlockMask (blocks wholly masked are skipped)."""
    from torch.nn.attention.flex_attention import create_block_mask

    R, L = document_ids.shape
    return create_block_mask(
        mask_mod(document_ids, segment_ids), R, None, L, L, device=document_ids.device
    )


def attention_mask(model: Any, batch: dict[str, Any], device: Any) -> Any:
    """The mask of a shared batch in the form the model's attention implementation takes."""
    import torch

    doc = batch["document_ids"].to(device)
    seg = batch["segment_ids"].to(device)
    impl = getattr(model.config, "_attn_implementation", None) or "sdpa"
    if impl == "flex_attention":
        return block_mask(doc, seg)
    mask = dense_mask(doc, seg)
    if impl == "sdpa":
        return mask
    dtype = next(model.parameters()).dtype  # eager and others add the mask to the scores
    additive = torch.zeros(mask.shape, dtype=dtype, device=device)
    return additive.masked_fill_(~mask, torch.finfo(dtype).min)


def computed_tokens(batch: dict[str, Any]) -> int:
    """Tokens a shared batch's forward pass runs over, pads excluded."""
    return int((batch["document_ids"] >= 0).sum())
