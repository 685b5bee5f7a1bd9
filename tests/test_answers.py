"""Final-answer extraction and checking on hand-written solver outputs."""

from __future__ import annotations

import threading
from fractions import Fraction

import pytest

from rankguide_edge.errors import ConfigError
from rankguide_edge.tasks.answers import (
    check_answer,
    extract_answer,
    format_number,
    gold_answer,
    grade,
    instruction_for,
    last_boxed,
    normalize_kind,
    numbers_match,
    parse_number,
    prompt_for,
)
from rankguide_edge.tasks.datasets import Problem

# ------------------------------------------------------------------------------------ numeric extraction

NUMERIC_CASES = [
    ("The answer is 1,000.", "1000"),
    ("She pays $5 per hour.\n\nThe answer is $5.", "5"),
    ("Total: 5.00 dollars. The answer is 5.00", "5"),
    ("So the result is 5.", "5"),
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
    ("I think 3 apples and 4 pears, so 7", "7"),
    ("The answer is -3.", "-3"),
    ("The temperature fell to \u22124 degrees.", "-4"),
    ("10-3 = 7", "7"),
    ("The answer is 1/2", "0.5"),
    ("The answer is 2/3 of a cake.", "2/3"),
    ("Therefore \\boxed{\\frac{1}{2}}", "0.5"),
    ("Therefore \\boxed{\\dfrac{3}{4}}", "0.75"),
    ("Therefore $\\boxed{1{,}234}$.", "1234"),
    ("The answer is \\boxed{\\$12.50}", "12.5"),
    ("The answer is 25%.", "25"),
    ("The answer is: **42**", "42"),
    ("Final Answer: The final answer is $18$. I hope it is correct.", "18"),
    ("The answer is 5. Then 10 more apples fell from the tree.", "5"),
    ("It costs -$7 after the refund: the answer is -$7", "-7"),
    ("The answer is 1,234,567 grains", "1234567"),
    ("The answer is .5", "0.5"),
    ("Count 1, 2, 3 and the total is 0.125", "0.125"),
    ("Version 3.5.2", "3.5"),
    ("Step 1: 3 + 4 = 7\n\nThe answer is 7.\n\nStep 3: check 7 * 2 = 14", "7"),
    ("answer = 64", "64"),
]


@pytest.mark.parametrize(("text", "expected"), NUMERIC_CASES)
def test_extract_numeric(text: str, expected: str) -> None:
    assert extract_answer(text, "gsm8k") == expected
    assert extract_answer(text, "svamp") == expected


@pytest.mark.parametrize("text", ["", None, "no numbers here", "The answer is unknown.", "$$", "-"])
def test_extract_numeric_none(text: str | None) -> None:
    assert extract_answer(text, "gsm8k") is None
    assert not check_answer(extract_answer(text, "gsm8k"), "5", "gsm8k")


def test_later_anchor_wins_and_boxed_beats_last_number() -> None:
    text = "The answer is 5.\n\nWait, I made a mistake. The final answer is 6.\n\nCheck: 6 * 2 = 12"
    assert extract_answer(text, "gsm8k") == "6"
    assert extract_answer("We get \\boxed{9}. Double check: 9 + 1 = 10", "gsm8k") == "9"
    # a box without a number falls back to the previous anchor
    assert extract_answer("The answer is 4. \\boxed{\\text{four}}", "gsm8k") == "4"


# ------------------------------------------------------------------------------------ numbers


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1,000", Fraction(1000)),
        ("$5", Fraction(5)),
        ("5.00", Fraction(5)),
        ("5.", Fraction(5)),
        ("-3", Fraction(-3)),
        ("1/2", Fraction(1, 2)),
        ("\\frac{1}{2}", Fraction(1, 2)),
        ("\\frac12", Fraction(1, 2)),
        ("12.5%", Fraction(25, 2)),
        ("\\boxed{7}", Fraction(7)),
        (51.0, Fraction(51)),
        (3, Fraction(3)),
    ],
)
def test_parse_number(text: str | float, value: Fraction) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "abc", "5 apples", "1/0", "x^2", None, True, float("nan")])
def test_parse_number_rejects(text: object) -> None:
    assert parse_number(text) is None  # type: ignore[arg-type]


def test_format_number() -> None:
    assert format_number(Fraction(5)) == "5"
    assert format_number(Fraction(-1, 4)) == "-0.25"
    assert format_number(Fraction(1, 20)) == "0.05"
    assert format_number(Fraction(1, 3)) == "1/3"
    assert format_number(Fraction(1000)) == "1000"
    assert format_number(Fraction("123.4560")) == "123.456"


def test_numbers_match_tolerance() -> None:
    assert numbers_match(Fraction(1, 3), Fraction("0.3333333"))
    assert numbers_match(Fraction(1000000), Fraction("1000000.5"))
    assert not numbers_match(Fraction(1000), Fraction("1000.5"))
    assert numbers_match(Fraction(0), Fraction(0))
    assert not numbers_match(Fraction(0), Fraction("0.001"))


@pytest.mark.parametrize("gold", [0, 1, -7, 72, 1000, 1_000_000, 10**12, 123_456_789_012_345])
def test_integer_golds_compare_exactly(gold: int) -> None:
    """An integer gold accepts only itself: no neighbour, however large the gold, and no near-integer."""
    g = Fraction(gold)
    assert numbers_match(g, g)
    for near in (g + 1, g - 1, g + Fraction(1, 10**7), g - Fraction(1, 10**12)):
        assert not numbers_match(near, g), (near, gold)
    text = format_number(g)
    assert check_answer(f"The answer is {text}.", text, "gsm8k")
    assert not check_answer(f"The answer is {format_number(g + 1)}.", text, "gsm8k")


def test_the_issue_example_and_non_integer_tolerance() -> None:
    assert not check_answer("The answer is 1,000,001.", "1000000", "gsm8k")
    assert not check_answer("1000000.5", "1000000", "svamp")
    assert check_answer("The answer is 1,000,000.00.", "1000000", "gsm8k")  # the same integer, written as a decimal
    # a non-integer gold keeps the relative tolerance (rounded repeating decimals)
    assert check_answer("0.3333333", "1/3", "generic")
    assert not check_answer("0.33", "1/3", "generic")


# ------------------------------------------------------------------------------------ numeric checking


@pytest.mark.parametrize(
    ("prediction", "gold"),
    [
        ("1,000", "1000"),
        ("1000", "1,000"),
        ("$5", "5"),
        ("5.00", "5"),
        ("5.", "5"),
        ("-3", "-3"),
        ("0.5", "1/2"),
        ("\\frac{1}{2}", "0.5"),
        ("The answer is 18 dollars.", "18"),
        ("\\boxed{42}", "42"),
        ("33.333333", "100/3"),
        ("25%", "25"),
    ],
)
def test_check_numeric_accepts(prediction: str, gold: str) -> None:
    assert check_answer(prediction, gold, "gsm8k")
    assert check_answer(prediction, gold, "generic")


@pytest.mark.parametrize(
    ("prediction", "gold"),
    [("4", "5"), ("-5", "5"), ("500", "5"), ("0.5", "5"), ("1001", "1,000"), (None, "5"), ("", "5"), ("  ", "5"),
     ("no idea", "5"), ("5", "not a number")],
)
def test_check_numeric_rejects(prediction: str | None, gold: str) -> None:
    assert not check_answer(prediction, gold, "gsm8k")


# ------------------------------------------------------------------------------------ math


def test_last_boxed_nested_and_fbox() -> None:
    text = "First \\boxed{1}, then $\\boxed{\\frac{\\sqrt{3}}{3}}$ and done."
    assert last_boxed(text) == "\\frac{\\sqrt{3}}{3}"
    assert last_boxed("so \\fbox{x^{2}+1} ok") == "x^{2}+1"
    assert last_boxed("\\boxed{\\left\\{ 1, 2 \\right\\}}") == "\\left\\{ 1, 2 \\right\\}"
    assert last_boxed("\\boxed 5 is it") == "5"
    assert last_boxed("unbalanced \\boxed{\\frac{1}{2}") is None
    assert last_boxed("nothing here") is None


def test_extract_math() -> None:
    assert extract_answer("Thus the answer is $\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}$.", "math") == (
        "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"
    )
    assert extract_answer("The final answer is $\\frac{1}{2}$. I hope it is correct.", "math") == "\\frac{1}{2}"
    assert extract_answer("I am not sure about this one", "math") is None
    assert extract_answer("", "math500") is None


@pytest.mark.parametrize(
    ("prediction", "gold"),
    [
        ("\\frac{1}{2}", "\\frac{1}{2}"),
        ("0.5", "\\frac{1}{2}"),
        ("\\dfrac{1}{2}", "\\frac12"),
        ("\\tfrac{7}{2}", "3.5"),
        ("\\boxed{\\frac{7}{2}}", "\\frac{7}{2}"),
        ("The answer is \\boxed{2\\sqrt{2}}.", "\\sqrt{8}"),
        ("[-2, 7]", "x \\in [-2,7]"),
        ("106", "106^\\circ"),
        ("\\text{Evelyn}", "\\text{Evelyn}"),
        ("Evelyn", "\\text{Evelyn}"),
        ("-2, 1", "1,-2"),
        ("(x+1)^2", "x^2+2x+1"),
        ("\\begin{pmatrix}-2\\\\-14\\\\-7\\end{pmatrix}", "\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}"),
        ("\\left( \\frac{3}{2}, -13 \\right)", "\\left( \\frac{3}{2}, -13 \\right)"),
    ],
)
def test_check_math_accepts(prediction: str, gold: str) -> None:
    assert check_answer(prediction, gold, "math")


@pytest.mark.parametrize(
    ("prediction", "gold"),
    [
        ("\\frac{1}{3}", "\\frac{1}{2}"),
        ("3", "4"),
        ("Evelny", "\\text{Evelyn}"),
        ("\\sqrt{50}", "\\sqrt{51}"),
        ("(2, \\infty)", "[2,\\infty)"),
        (None, "1"),
        ("", "1"),
        (")(((", "5"),
        ("\\frac{", "\\frac{1}{2}"),
        ("x" * 5000, "1"),
    ],
)
def test_check_math_rejects(prediction: str | None, gold: str) -> None:
    assert not check_answer(prediction, gold, "math")


def test_check_math_off_main_thread() -> None:
    results: list[tuple[bool, bool]] = []

    def work() -> None:
        results.append((check_answer("0.5", "\\frac{1}{2}", "math"), check_answer("0.6", "\\frac{1}{2}", "math")))

    t = threading.Thread(target=work)
    t.start()
    t.join(timeout=60)
    assert results == [(True, False)]


# ------------------------------------------------------------------------------------ helpers


def test_kinds_and_instructions() -> None:
    assert normalize_kind("math500") == "math"
    with pytest.raises(ConfigError, match="unknown answer kind"):
        normalize_kind("trivia")
    with pytest.raises(ConfigError):
        extract_answer("5", "trivia")
    numeric, math = instruction_for("gsm8k"), instruction_for("math")
    assert "The answer is N" in numeric and "blank line" in numeric
    assert "\\boxed{}" in math
    assert instruction_for("svamp") == instruction_for("generic") == numeric
    assert prompt_for("  What is 2+2? ", "gsm8k") == "What is 2+2?\n\n" + numeric


def test_gold_answer_and_grade() -> None:
    p = Problem(id="1", question="q", gold="1,200", kind="gsm8k", source="s")
    assert gold_answer(p) == "1200"
    assert grade("Step.\n\nThe answer is 1200.", p) == ("1200", True)
    assert grade("The answer is 12.", p) == ("12", False)
    assert grade("I cannot tell.", p) == (None, False)
    m = Problem(id="2", question="q", gold="\\boxed{\\frac{1}{2}}", kind="math", source="s")
    assert gold_answer(m) == "\\frac{1}{2}"
    assert grade("so $\\boxed{0.5}$", m) == ("0.5", True)


def test_the_committed_bench100_records_regrade_to_their_recorded_verdicts() -> None:
    """``grade`` is what trace, bench and label call: the bench100 records (the 1,686 written before they
    shared it, and the router comparison's since) keep every recorded prediction and verdict when their text is
    graded again."""
    import gzip
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "figures" / "bench100" / "results.jsonl.gz"
    graded = 0
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec.get("error"):
                continue
            problem = Problem(id=rec["id"], question="", gold=rec["gold"], kind="gsm8k", source="bench100")
            assert grade(rec["text"], problem) == (rec["prediction"], rec["correct"]), rec["id"]
            graded += 1
    assert graded >= 1686  # the router comparison appends to the same file as it runs
