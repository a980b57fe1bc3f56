import pytest

from w4s.benchmarks import get_benchmark
from w4s.benchmarks.base import Item
from w4s.benchmarks.gsm_plus import says_no_answer
from w4s.benchmarks.numeric import extract_number, last_boxed, numbers_match


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("1,234", 1234),
        ("$12.50", 12.5),
        ("12 apples", 12),
        ("\\frac{1}{2}", 0.5),
        ("\\dfrac{3}{4}", 0.75),
        ("1/2", 0.5),
        ("\\boxed{18}", 18),
        ("18.0", 18),
        ("25%", 25),
        ("-7", -7),
        ("The answer is \u22123.", -3),
        ("#### 1,000,000", 1_000_000),
        ("So 2+3=5 and the answer is 5 dollars, not 6.", 5),
        ("I bought 3 packs of 4, so 12 in total", 12),
        ("values 1, 2, 3", 3),  # a list, not the thousands-grouped 123
        ("Answer: \\frac12", 0.5),
        ("\\boxed{1{,}000}", 1000),
        (".5", 0.5),
        (12, 12),
        (3.5, 3.5),
        ("x = 10-5", 5),
    ],
)
def test_extract_number(answer, expected):
    assert extract_number(answer) == pytest.approx(expected)


@pytest.mark.parametrize("answer", [None, True, "no numbers here", "", float("nan")])
def test_extract_number_none(answer):
    assert extract_number(answer) is None


def test_last_boxed_matches_braces():
    assert last_boxed("first \\boxed{1} then \\boxed{\\frac{1}{2}} end") == "\\frac{1}{2}"
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{unclosed") is None


def test_numbers_match_is_exact_for_integers_even_when_huge():
    assert numbers_match("6,277,334,000", 6277334000.0)
    assert not numbers_match("6277334001", 6277334000.0)
    assert numbers_match("18.0", "18")
    assert not numbers_match("17", 18)
    assert not numbers_match("no idea", 18)


def test_gsm_hard_tolerance_accepts_cents_not_tenths():
    bench = get_benchmark("gsm_hard", path="unused.jsonl")
    item = Item("x", "q", 3.3333333)
    assert bench.score(item, "3.33") == 1.0
    assert bench.score(item, "3.3") == 0.0


def test_gsm_plus_none_and_rounded_golds():
    bench = get_benchmark("gsm_plus", path="unused.jsonl")
    none_item = Item("n", "q", "None")
    for answer in ("None", "\\boxed{None}", "The answer cannot be determined.", None,
                   "There is not enough information to answer."):
        assert bench.score(none_item, answer) == 1.0, answer
    assert bench.score(none_item, "42") == 0.0
    rounded = Item("r", "q", 4.33, {"decimals": 2})
    assert bench.score(rounded, "4.3333") == 1.0
    assert bench.score(rounded, "4.33") == 1.0
    assert bench.score(rounded, "4.4") == 0.0
    assert bench.score(rounded, "None") == 0.0
    assert says_no_answer("The answer is 12") is False
