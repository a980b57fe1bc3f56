import math

import pytest

from w4s.reward import reward, rwr_weight


@pytest.mark.parametrize(
    ("acc", "best", "last", "expected"),
    [
        (0.9, 0.8, 0.5, 1.0),  # beats the best so far
        (0.7, 0.8, 0.5, 0.5),  # beats only the last iteration
        (0.5, 0.8, 0.5, 0.0),  # ties the last: no reward
        (0.2, 0.8, 0.5, -0.1),  # below 0.3: penalty
        (0.25, 0.1, 0.1, 0.9),  # a new best that is still below 0.3
        (None, 0.0, 0.0, -0.1),  # skipped candidate counts as 0
    ],
)
def test_reward_cases(acc, best, last, expected):
    assert reward(acc, best_so_far=best, last=last) == pytest.approx(expected)


def test_rwr_weights_match_the_paper_table():
    assert rwr_weight(1.0) == pytest.approx(12.18, abs=0.01)
    assert rwr_weight(0.5) == pytest.approx(3.49, abs=0.01)
    assert rwr_weight(0.0) == 1.0
    assert rwr_weight(-0.1) == pytest.approx(math.exp(-0.25))
