"""The gate's rule: is a challenger adapter *not worse* than the champion on the same states?

Two measures, both paired (the same fresh states, the same candidates):

- on-policy reward: each policy samples m candidates from each of k states through the real
  environment (self-check, validation, reward). The measure is the mean reward per sampled
  candidate (an invalid one gets the reward the environment gives it), challenger minus
  champion, over the states where both policies have rewarded candidates, with a 95%
  cluster-bootstrap interval over states (`w4s.stats.paired_difference`). Candidates lost to
  infrastructure or the budget are never counted.
- offline margin: on the pooled candidates of both samples, per state, a policy's mean token
  log-likelihood of the positive (reward > 0) completions minus that of the others, each
  given the conversation it was sampled from, averaged over the states that have both kinds
  (`w4s.stats.grouped_margin`, the learning-signal experiment's measure). The measure is
  challenger minus champion, paired by state. Undefined (None) when no state has both.

Not worse, precisely: `reward_diff >= -reward_tolerance` and, when the margin is defined,
`margin_diff >= -margin_tolerance`. A tie counts as not worse, so a challenger that changes
nothing measurable is promoted (it is the newer fit on more data); the tolerances are how
much measured loss one accepts as noise in a small sample.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from w4s import stats

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


def _by_state(rows: Sequence[Mapping[str, Any]], value: Any) -> dict[Hashable, list[float]]:
    out: dict[Hashable, list[float]] = {}
    for r in rows:
        if r.get("reward") is not None:
            out.setdefault(r["state"], []).append(float(value(r)))
    return out


def paired_reward(champion: Sequence[Mapping[str, Any]],
                  challenger: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The on-policy measure from each policy's candidate rows (`state`, `reward`: None when
    lost, `status`): means, the paired difference and its interval, and what was lost."""
    a = _by_state(champion, lambda r: r["reward"])
    b = _by_state(challenger, lambda r: r["reward"])
    common = {s for s in a if s in b}
    out: dict[str, Any] = {"states_paired": len(common), "champion_mean_reward": None,
                           "challenger_mean_reward": None, "reward_diff": None,
                           "reward_diff_ci95": None}
    if common:
        d = stats.paired_difference(b, a)
        out |= {"champion_mean_reward": _pooled(a, common),
                "challenger_mean_reward": _pooled(b, common),
                "reward_diff": d["diff"], "reward_diff_ci95": d["ci95"]}

    def share(rows: Sequence[Mapping[str, Any]], test: Any) -> float | None:
        rewarded = [bool(test(r)) for r in rows if r.get("reward") is not None]
        return round(sum(rewarded) / len(rewarded), 4) if rewarded else None

    for name, rows in (("champion", champion), ("challenger", challenger)):
        out |= {f"{name}_candidates": len(rows),
                f"{name}_lost": sum(r.get("reward") is None for r in rows),
                # reported, not decided on: valid (self-check passed) and positive shares
                f"{name}_valid_rate": share(rows, lambda r: r.get("status") == "ok"),
                f"{name}_positive_share": share(rows, lambda r: r["reward"] > 0)}
    return out


def paired_margin(champion: Sequence[float], challenger: Sequence[float],
                  rewards: Sequence[float], states: Sequence[Hashable]) -> dict[str, Any]:
    """The offline measure from each policy's log-likelihoods of the same candidates."""
    positive = [r > 0 for r in rewards]
    a = stats.state_margins(champion, positive, states)
    b = stats.state_margins(challenger, positive, states)
    out: dict[str, Any] = {"margin_states": len(a), "champion_margin": None,
                           "challenger_margin": None, "margin_diff": None,
                           "margin_diff_ci95": None}
    if a:
        d = stats.paired_difference({s: [v] for s, v in b.items()},
                                    {s: [v] for s, v in a.items()})
        out |= {"champion_margin": round(sum(a.values()) / len(a), 4),
                "challenger_margin": round(sum(b.values()) / len(b), 4),
                "margin_diff": d["diff"], "margin_diff_ci95": d["ci95"]}
    return out


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
        reasons.append("margin not measured (no state of the sample has both a "
                       "positive and a non-positive candidate)")
    elif m >= -rule.margin_tolerance:
        reasons.append(f"margin diff {m:+.4f} >= -{rule.margin_tolerance:g}")
    else:
        ok = False
        reasons.append(f"margin diff {m:+.4f} < -{rule.margin_tolerance:g} (worse)")
    return (PROMOTED if ok else KEPT), reasons


def _pooled(clusters: Mapping[Hashable, Sequence[float]], keys: set) -> float:
    values = [v for k in keys for v in clusters[k]]
    return round(sum(values) / len(values), 4)
