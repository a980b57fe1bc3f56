"""Cluster bootstrap and paired differences (w4s/stats.py) on hand-made data.

The data are built so that resampling candidates instead of states gives visibly wrong
intervals: candidates of a state are identical, so only the number of states carries
information."""

from __future__ import annotations

import random

import pytest

from w4s import stats


def candidate_bootstrap_width(values: list[float], resamples: int = 2000) -> float:
    """What the old experiment did: resample candidates as if independent."""
    rng = random.Random(0)
    draws = sorted(sum(rng.choice(values) for _ in values) / len(values)
                   for _ in range(resamples))
    return stats.percentile(draws, 0.975) - stats.percentile(draws, 0.025)


def test_percentile_matches_linear_interpolation():
    assert stats.percentile([0.0, 10.0], 0.25) == 2.5
    assert stats.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert stats.percentile([7.0], 0.9) == 7.0
    with pytest.raises(ValueError, match="no values"):
        stats.percentile([], 0.5)


def test_cluster_bootstrap_is_wide_when_candidates_of_a_state_agree():
    # 4 states of 50 identical candidates: effectively 4 observations, not 200
    clusters = {"s0": [0.0] * 50, "s1": [1.0] * 50, "s2": [0.0] * 50, "s3": [1.0] * 50}
    out = stats.cluster_bootstrap(clusters)
    assert out["clusters"] == 4 and out["n"] == 200 and out["mean"] == 0.5
    lo, hi = out["ci95"]
    assert hi - lo >= 0.5  # draws of 4 states: means in steps of 0.25 over [0, 1]
    pooled = [v for vs in clusters.values() for v in vs]
    assert candidate_bootstrap_width(pooled) < 0.2  # the overconfident candidate interval


def test_cluster_bootstrap_pools_candidates_and_skips_empty_states():
    out = stats.cluster_bootstrap({"a": [1.0, 1.0, 1.0], "b": [0.0], "c": []})
    assert out["clusters"] == 2 and out["n"] == 4 and out["mean"] == 0.75
    assert stats.cluster_bootstrap({}) == {"clusters": 0, "n": 0, "mean": None, "ci95": None}
    same = stats.cluster_bootstrap({"a": [0.3, 0.3], "b": [0.3]})
    assert same["ci95"] == [0.3, 0.3]
    assert stats.cluster_bootstrap({"a": [1], "b": [0]}, seed=3) == \
        stats.cluster_bootstrap({"a": [1], "b": [0]}, seed=3)


def test_paired_difference_is_tight_when_the_gain_is_the_same_in_every_state():
    # states differ widely, but policy a beats b by 0.1 in each: pairing removes the spread
    rng = random.Random(1)
    b = {f"s{k}": [rng.random()] * 8 for k in range(16)}
    a = {k: [v + 0.1 for v in vs] for k, vs in b.items()}
    out = stats.paired_difference(a, b)
    assert out["diff"] == pytest.approx(0.1, abs=1e-4)
    assert out["ci95"][0] == pytest.approx(0.1, abs=1e-4)
    assert out["ci95"][1] == pytest.approx(0.1, abs=1e-4)
    assert out["clusters"] == 16 and out["n_a"] == out["n_b"] == 128
    # unpaired, the two arms' intervals overlap almost entirely
    ia, ib = stats.cluster_bootstrap(a)["ci95"], stats.cluster_bootstrap(b)["ci95"]
    assert ia[0] < ib[1]


def test_paired_difference_gain_in_one_state_only_is_not_significant():
    # a gains 1.0 in one of 8 states (8 candidates each): with states as the unit the
    # interval reaches 0; resampling the 64 candidate differences would exclude it
    b = {f"s{k}": [0.0] * 8 for k in range(8)}
    a = {**b, "s0": [1.0] * 8}
    out = stats.paired_difference(a, b)
    assert out["diff"] == 0.125
    assert out["ci95"][0] == 0.0
    diffs = [x - y for k in a for x, y in zip(a[k], b[k], strict=True)]
    rng = random.Random(0)
    lows = sorted(sum(rng.choice(diffs) for _ in diffs) / len(diffs) for _ in range(2000))
    assert stats.percentile(lows, 0.025) > 0.0


def test_paired_difference_uses_only_common_states():
    a = {"s0": [1.0, 1.0], "s1": [0.0, 0.0], "only_a": [5.0]}
    b = {"s0": [0.0, 0.0], "s1": [0.0, 0.0], "only_b": [-5.0], "empty": []}
    out = stats.paired_difference(a, b)
    assert out["clusters"] == 2 and out["left_out"] == 2
    assert out["diff"] == 0.5
    with pytest.raises(ValueError, match="share no state"):
        stats.paired_difference({"x": [1.0]}, {"y": [1.0]})


def test_grouped_margin_compares_within_states():
    # state 0's candidates all score high, state 1's low: within each state the positive
    # candidate is 0.5 above the others, while a pooled comparison would mix state levels
    values = [-1.0, -1.5, -1.5, -3.0, -3.5, -3.5, -9.0]
    positive = [True, False, False, True, False, False, False]
    groups = [0, 0, 0, 1, 1, 1, 2]  # state 2 has no positive candidate: left out
    out = stats.grouped_margin(values, positive, groups)
    assert out["states"] == 2 and out["margin"] == 0.5 and out["ci95"] == [0.5, 0.5]
    assert stats.state_margins(values, positive, groups) == {0: 0.5, 1: 0.5}
    assert stats.grouped_margin([1.0], [False], [0]) == {"states": 0, "margin": None,
                                                        "ci95": None}
    with pytest.raises(ValueError, match="differ in length"):
        stats.grouped_margin([1.0], [True, False], [0])


def test_bad_level_or_resamples_is_one_clear_error():
    with pytest.raises(ValueError, match="`level`"):
        stats.cluster_bootstrap({"a": [1.0]}, level=95)
    with pytest.raises(ValueError, match="`resamples`"):
        stats.paired_difference({"a": [1.0]}, {"a": [1.0]}, resamples=0)
