"""The sparse RLAO reward: did a candidate beat the best so far, or at least the last step?"""

from __future__ import annotations

import math

LOW_ACCURACY = 0.3
LOW_ACCURACY_PENALTY = 0.1
TAU = 0.4


def reward(accuracy: float | None, *, best_so_far: float, last: float) -> float:
    """1 if above the running best, 0.5 if above the last iteration, else 0; -0.1 below 0.3.

    A skipped or invalid candidate (accuracy None) counts as accuracy 0.
    """
    acc = 0.0 if accuracy is None else accuracy
    r = 1.0 if acc > best_so_far else 0.5 if acc > last else 0.0
    if acc < LOW_ACCURACY:
        r -= LOW_ACCURACY_PENALTY
    return r


def rwr_weight(r: float, tau: float = TAU) -> float:
    """Reward-weighted-regression sample weight exp(r / tau)."""
    return math.exp(r / tau)
