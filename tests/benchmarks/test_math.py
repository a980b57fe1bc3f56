import pytest

from w4s.benchmarks.base import Item
from w4s.benchmarks.math import MATH500, math_equal


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("0.5", "\\frac{1}{2}"),
        ("1/2", "\\frac12"),
        ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}"),
        ("So we get \\boxed{(3, \\frac{\\pi}{2})}.", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\\boxed{1+x^2}", "x^2+1"),
        ("25", "025"),
        ("\\text{Monday}", "\\text{Monday}"),
        ("10", "10"),
        ("\\boxed{[-2, 7)}", "[-2,7)"),
        ("The answer is $\\frac{1}{2}$.", "\\frac12"),
        ("So the final answer is 0.5", "\\frac{1}{2}"),
        ("Answer: \\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
        ("The answer is: 7", "7"),
    ],
)
def test_equivalent_answers(answer, gold):
    assert math_equal(answer, gold)


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("\\boxed{11}", "10"),
        ("The answer is 13", "12"),
        ("x" * 5000, "1"),
        ("0.51", "\\frac{1}{2}"),
        ("x^2-1", "x^2+1"),
        (None, "1"),
        ("", "1"),
    ],
)
def test_different_answers(answer, gold):
    assert not math_equal(answer, gold)


def test_math_scores_in_a_worker_thread():
    """math-verify's SIGALRM timeout exists only on the main thread; scoring must still work."""
    from concurrent.futures import ThreadPoolExecutor

    bench = MATH500(path="unused.jsonl")
    item = Item("m", "q", "\\frac{3}{4}")
    with ThreadPoolExecutor(2) as pool:
        scores = list(pool.map(lambda a: bench.score(item, a), ["0.75", "\\boxed{3/4}", "1"]))
    assert scores == [1.0, 1.0, 0.0]
