"""Cluster-bootstrap statistics for policy comparisons (pure Python, no numpy).

Candidates sampled from one state share its prompt, its validation items and its reference
accuracy, so they are not independent: the state is the unit. Every interval here resamples
states (clusters) with replacement and keeps each drawn state's candidates together; a
comparison of two policies resamples the same states for both (paired), since they sampled
from identical states. Point estimates are pooled means over candidates ("mean per sampled
candidate"), which equal the mean of state means when every state has as many candidates.

Used by `benchmarks/learning_signal.py` and the nightly's champion/challenger gate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

Clusters = Mapping[Hashable, Sequence[float]]

RESAMPLES = 2000
LEVEL = 0.95


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of already sorted values, q in [0, 1]."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"`q` must be in [0, 1], received {q!r}")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _interval(draws: list[float], level: float) -> list[float]:
    draws.sort()
    tail = (1.0 - level) / 2.0
    return [round(percentile(draws, tail), 4), round(percentile(draws, 1.0 - tail), 4)]


def _check_level(level: float, resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be in (0, 1), received {level!r}")
    if resamples < 1:
        raise ValueError(f"`resamples` must be at least 1, received {resamples!r}")


def _pooled(groups: Sequence[Sequence[float]]) -> float | None:
    n = sum(len(g) for g in groups)
    return sum(sum(g) for g in groups) / n if n else None


def cluster_bootstrap(clusters: Clusters, *, resamples: int = RESAMPLES, level: float = LEVEL,
                      seed: int = 0) -> dict[str, Any]:
    """Pooled mean of all values with a percentile interval from resampling whole clusters.

    `clusters` maps a state id to its candidates' values (empty ones are left out). With no
    value at all, mean and interval are None.
    """
    _check_level(level, resamples)
    groups = [[float(v) for v in vs] for vs in clusters.values() if len(vs)]
    n = sum(len(g) for g in groups)
    if not n:
        return {"clusters": 0, "n": 0, "mean": None, "ci95": None}
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        drawn = [groups[rng.randrange(len(groups))] for _ in groups]
        draws.append(_pooled(drawn))
    return {"clusters": len(groups), "n": n, "mean": round(_pooled(groups), 4),
            "ci95": _interval(draws, level)}


def paired_difference(a: Clusters, b: Clusters, *, resamples: int = RESAMPLES,
                      level: float = LEVEL, seed: int = 0) -> dict[str, Any]:
    """Pooled mean of `a` minus pooled mean of `b` over the states both sampled from, with a
    percentile interval from resampling those states (the same draw for both arms).

    A state missing from one arm (or empty there) is left out of both, and counted.
    ValueError if the arms share no state.
    """
    _check_level(level, resamples)
    common = [k for k in a if len(a[k]) and k in b and len(b[k])]
    if not common:
        raise ValueError("paired_difference: the two policies share no state with values")
    ga = [[float(v) for v in a[k]] for k in common]
    gb = [[float(v) for v in b[k]] for k in common]
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        idx = [rng.randrange(len(common)) for _ in common]
        draws.append(_pooled([ga[i] for i in idx]) - _pooled([gb[i] for i in idx]))
    unpaired = (len([k for k in a if len(a[k])]) + len([k for k in b if len(b[k])])
                - 2 * len(common))
    return {"clusters": len(common), "left_out": unpaired,
            "n_a": sum(map(len, ga)), "n_b": sum(map(len, gb)),
            "diff": round(_pooled(ga) - _pooled(gb), 4), "ci95": _interval(draws, level)}


def state_margins(values: Sequence[float], positive: Sequence[bool],
                  groups: Sequence[Hashable]) -> dict[Hashable, float]:
    """Per state: mean value of its positive candidates minus the mean of the others; only
    states that have both kinds. Feed two policies' results to `paired_difference` as
    `{state: [margin]}` to compare them on the same candidates."""
    if not len(values) == len(positive) == len(groups):
        raise ValueError(f"state_margins: {len(values)} values, {len(positive)} labels and "
                         f"{len(groups)} groups differ in length")
    by: dict[Hashable, tuple[list[float], list[float]]] = {}
    for v, p, g in zip(values, positive, groups, strict=True):
        by.setdefault(g, ([], []))[0 if p else 1].append(float(v))
    return {g: sum(pos) / len(pos) - sum(neg) / len(neg) for g, (pos, neg) in by.items()
            if pos and neg}


def grouped_margin(values: Sequence[float], positive: Sequence[bool],
                   groups: Sequence[Hashable], *, resamples: int = RESAMPLES,
                   level: float = LEVEL, seed: int = 0) -> dict[str, Any]:
    """Mean over states of `state_margins`, with a percentile interval from resampling
    those states.

    For the offline log-likelihood margin: `values` are each candidate's mean token log-prob
    under a policy, `positive` whether its reward was above 0, `groups` its state.
    """
    _check_level(level, resamples)
    margins = list(state_margins(values, positive, groups).values())
    if not margins:
        return {"states": 0, "margin": None, "ci95": None}
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        drawn = [margins[rng.randrange(len(margins))] for _ in margins]
        draws.append(sum(drawn) / len(drawn))
    return {"states": len(margins), "margin": round(sum(margins) / len(margins), 4),
            "ci95": _interval(draws, level)}
