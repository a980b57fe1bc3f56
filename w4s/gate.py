"""The gate's rule: is a challenger adapter *not worse* than the champion on the same states?

Two measures, both paired (the same fresh states, the same candidates):

- on-policy reward: each policy samples m candidates from each of k states through the real
  environment (self-check, validation, reward). Per state, the mean reward of its rewarded
  candidates (an invalid one gets the reward the environment gives it); the measure is the
  mean over states of (challenger - champion). Candidates lost to infrastructure are never
  counted; a state where either policy has none rewarded is left out of the pairing.
- offline margin: over the pooled candidates of both samples, a policy's mean per-token
  log-likelihood of the positive (reward > 0) completions minus that of the non-positive
  ones, each given the state it was sampled from. The measure is challenger - champion.
  Undefined (None) when the pool lacks a positive or a non-positive candidate.

Not worse, precisely: `reward_diff >= -reward_tolerance` and, when the margin is defined,
`margin_diff >= -margin_tolerance`. A tie counts as not worse, so a challenger that changes
nothing measurable is promoted (it is the newer fit on more data); the tolerances are how
much measured loss one accepts as noise in a small sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PROMOTED = "promoted"
KEPT = "kept_champion"


@dataclass(frozen=True)
class GateRule:
    """Tolerances of "not worse" (defaults: about 5% of the reward's range [-0.1, 1], and
    0.05 nats per completion token)."""

    reward_tolerance: float = 0.05
    margin_tolerance: float = 0.05

    def __post_init__(self) -> None:
        for name in ("reward_tolerance", "margin_tolerance"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"`{name}` must be a finite number >= 0, but received {value!r}")


def state_means(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """state -> mean reward of its rewarded candidates (reward None: lost, not counted)."""
    by_state: dict[str, list[float]] = {}
    for r in rows:
        if r.get("reward") is not None:
            by_state.setdefault(str(r["state"]), []).append(float(r["reward"]))
    return {s: float(np.mean(v)) for s, v in sorted(by_state.items())}


def cluster_bootstrap_mean(values: Sequence[float], *, resamples: int = 2000,
                           seed: int = 0) -> list[float] | None:
    """95% percentile interval of the mean of per-state values (the state is the unit)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def paired_reward(champion: Sequence[Mapping[str, Any]],
                  challenger: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The on-policy measure: per-policy means, the paired difference and its interval."""
    a, b = state_means(champion), state_means(challenger)
    paired = sorted(set(a) & set(b))
    diffs = [b[s] - a[s] for s in paired]

    def lost(rows: Sequence[Mapping[str, Any]]) -> int:
        return sum(r.get("reward") is None for r in rows)

    def share(rows: Sequence[Mapping[str, Any]], test: Any) -> float | None:
        rewarded = [r for r in rows if r.get("reward") is not None]
        return _round(np.mean([bool(test(r)) for r in rewarded])) if rewarded else None

    return {
        "states_paired": len(paired),
        "champion_mean_reward": _round(np.mean([a[s] for s in paired])) if paired else None,
        "challenger_mean_reward": _round(np.mean([b[s] for s in paired])) if paired else None,
        "reward_diff": _round(np.mean(diffs)) if diffs else None,
        "reward_diff_ci95": cluster_bootstrap_mean(diffs),
        "champion_candidates": len(champion), "challenger_candidates": len(challenger),
        "champion_lost": lost(champion), "challenger_lost": lost(challenger),
        # reported, not decided on: valid (self-check passed) and positive shares
        "champion_valid_rate": share(champion, lambda r: r.get("status") == "ok"),
        "challenger_valid_rate": share(challenger, lambda r: r.get("status") == "ok"),
        "champion_positive_share": share(champion, lambda r: r["reward"] > 0),
        "challenger_positive_share": share(challenger, lambda r: r["reward"] > 0),
    }


def margin(logliks: Sequence[float], rewards: Sequence[float]) -> float | None:
    """Mean log-likelihood of positive completions minus that of non-positive ones."""
    pos = [x for x, r in zip(logliks, rewards, strict=True) if r > 0]
    neg = [x for x, r in zip(logliks, rewards, strict=True) if r <= 0]
    if not pos or not neg:
        return None
    return float(np.mean(pos) - np.mean(neg))


def decide(measures: Mapping[str, Any], rule: GateRule) -> tuple[str, list[str]]:
    """(verdict, one reason per measure) from `reward_diff` and `margin_diff` (None: not
    measured). The on-policy difference must be measured: the caller raises before that."""
    reasons, ok = [], True
    d = measures["reward_diff"]
    if d is None:
        raise ValueError("the on-policy reward difference was not measured")
    if d >= -rule.reward_tolerance:
        reasons.append(f"reward diff {d:+.4f} >= -{rule.reward_tolerance:g}")
    else:
        ok = False
        reasons.append(f"reward diff {d:+.4f} < -{rule.reward_tolerance:g} (worse)")
    m = measures.get("margin_diff")
    if m is None:
        reasons.append("margin not measured (the sample holds no positive or no "
                       "non-positive candidate)")
    elif m >= -rule.margin_tolerance:
        reasons.append(f"margin diff {m:+.4f} >= -{rule.margin_tolerance:g}")
    else:
        ok = False
        reasons.append(f"margin diff {m:+.4f} < -{rule.margin_tolerance:g} (worse)")
    return (PROMOTED if ok else KEPT), reasons


def _round(x: Any) -> float:
    return round(float(x), 4)
