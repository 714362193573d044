"""Utility metrics: GSM8K answer extraction on tricky answers, ROUGE-1 on a hand-checked pair."""

from __future__ import annotations

import pytest

from lookahead_tuning.analyse.utility import (
    extract_hash_answer,
    extract_last_number,
    gsm8k_scores,
    normalise_number,
    rouge1_scores,
)


@pytest.mark.parametrize("text,expected", [
    ("so the total is\n#### 1,234", "1234"),
    ("#### $5", "5"),
    ("#### 7.0", "7"),
    ("#### -3", "-3"),
    ("#### 2.50", "2.5"),
    ("####18", "18"),
    ("#### $1,000,000.00 dollars", "1000000"),
    ("#### 12 apples and 3 pears", "12"),  # the first number after the marker
    ("the answer is 42", None),  # no marker
    ("#### none", None),
])
def test_extract_hash_answer(text, expected):
    assert extract_hash_answer(text) == expected


def test_last_number_fallback():
    assert extract_last_number("3 apples + 5 pears = 8.") == "8"
    assert extract_last_number("costs $1,200 in total") == "1200"
    assert extract_last_number("nothing here") is None
    assert normalise_number("0.50") == "0.5"


def test_gsm8k_scores_strict_and_fallback():
    refs = ["... #### 1,234", "#### 5", "#### 7", "#### -3", "#### 10"]
    comps = [
        "work\n#### 1234",       # right (commas normalised on the reference)
        "#### $5.00",            # right
        "so 7 in the end",       # no marker: wrong strictly, right by fallback
        "#### 3",                # wrong sign
        "first 10, then #### 11 ... 10",  # strict wrong (11); last number 10 right by fallback
    ]
    s = gsm8k_scores(comps, refs)
    assert s["correct"] == 2 and s["accuracy"] == pytest.approx(0.4)
    assert s["fallback_correct"] == 4  # 1234, 5.00 -> 5, 7, 10
    assert s["missing_marker"] == 1
    assert s["ci95"][0] < 0.4 < s["ci95"][1]
    assert s["n"] == 5


def test_rouge1_with_stemming_on_a_known_pair():
    # reference "the cats are running" vs prediction "the cat runs": stems the/cat/are/run vs the/cat/run
    # overlap 3, precision 3/3, recall 3/4, F1 = 2*1*0.75/1.75 = 6/7
    s = rouge1_scores(["the cat runs"], ["the cats are running"])
    assert s["score"] == pytest.approx(6 / 7)
    assert s["per_example"] == [pytest.approx(6 / 7)]
    two = rouge1_scores(["a b", "x"], ["a b", "y"])
    assert two["score"] == pytest.approx(0.5)
