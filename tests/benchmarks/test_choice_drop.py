import pytest

from w4s.benchmarks.choice import extract_choice
from w4s.benchmarks.drop import best_f1, drop_f1, normalize_answer


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("C", "C"),
        ("(C)", "C"),
        ("The answer is (C).", "C"),
        ("**Answer: D**", "D"),
        ("answer is B because the rest are wrong", "B"),
        ("\\boxed{E}", "E"),
        ("\\boxed{\\text{(E)}}", "E"),
        ("C. Paris", "C"),
        ("A: Let's think step by step. ... The answer is (H).", "H"),
        ("A cat sits on the mat. I'd pick (B).", "B"),
        ("Option (A) is wrong and (B) is wrong; the answer is C", "C"),
        ("Paris", "B"),  # equals an option's text
        ("the answer is an integer", None),  # 'an' is not a letter choice
        ("K", None),  # outside the options
        ("", None),
        (None, None),
    ],
)
def test_extract_choice(answer, expected):
    assert extract_choice(answer, 10, ["London", "Paris", "Rome"]) == expected


def test_choice_limited_to_the_number_of_options():
    assert extract_choice("The answer is (E)", 4) is None
    assert extract_choice("The answer is (D)", 4) == "D"


def test_normalize_answer():
    assert normalize_answer("The  Eagles!") == "eagles"
    assert normalize_answer("2.0 yards") == "2.0 yards"
    assert normalize_answer("12") == "12.0"
    assert normalize_answer("well-known") == "well known"


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("Eagles", "the Eagles", 1.0),
        ("12", "12.0", 1.0),
        ("12 yards", "12", 0.67),
        ("13", "12", 0.0),  # numbers must match
        ("13 yards", "12 yards", 0.0),
        ("Tom Brady", "Brady", 0.67),
        ("", "Brady", 0.0),
        (["Tom", "Jerry"], ["Jerry", "Tom"], 1.0),  # multi-span answers are aligned
        (["Tom"], ["Jerry", "Tom"], 0.5),
    ],
)
def test_drop_f1(answer, reference, expected):
    assert drop_f1(answer, reference) == pytest.approx(expected)


def test_best_f1_takes_the_best_reference():
    assert best_f1("1999", ["1998", "1999"]) == 1.0
    assert best_f1(1999, ["1999"]) == 1.0
    assert best_f1(None, ["x"]) == 0.0
