"""Utility metrics: the one final-number parser, both GSM8K scorers, ROUGE-1 on a hand-checked pair."""

from __future__ import annotations

import pytest

from lookahead_tuning.analyse.utility import (
    bare_answer,
    gsm8k_scores,
    gsm8k_verdicts,
    numeric_correct,
    reference_correct,
    reference_prediction,
    rouge1_scores,
)
from lookahead_tuning.data.answers import final_number, gold_number, last_number, lone_number


@pytest.mark.parametrize("text,expected", [
    ("so the total is\n#### 1,234", "1234"),
    ("#### $5", "5"),
    ("#### 7.0", "7"),
    ("#### -3", "-3"),
    ("#### 2.50", "2.5"),
    ("####18", "18"),
    ("#### $1,000,000.00 dollars", "1000000"),
    ("#### 12 apples and 3 pears", "12"),  # units and words after the answer are fine
    ("#### **15**", "15"),
    ("#### 260.", "260"),
    ("#### 007", "7"),
    ("####\n42", "42"),
    ("#### 694\n#### 695", "694"),  # the first marker: what follows is usually an invented next question
    ("the answer is 42", None),  # no marker
    ("#### none", None),
])
def test_final_number(text, expected):
    assert final_number(text) == expected


# The bug class: a number that only starts a longer numeric expression was read as the answer
# (`#### 7/2` counted as 7). Each of these must be "no answer", never its first number.
@pytest.mark.parametrize("text,gold", [
    ("#### 7/2", "7"),             # fraction
    ("#### 26 1/2", "26"),         # mixed number
    ("#### 26\u00bd", "26"),       # mixed number with a vulgar fraction character
    ("#### 109-114", "109"),       # range
    ("#### 109 - 114", "109"),
    ("#### 5\u20137", "5"),        # range with an en dash
    ("#### 5 to 6", "5"),          # range in words
    ("#### 3:1", "3"),             # ratio
    ("#### 2 x 4", "2"),           # arithmetic left undone
    ("#### 5 + 3 = 8", "5"),
    ("#### 10 800", "10"),         # two numbers (or space-grouped thousands): not one answer
    ("#### 5,600-5,605", "5600"),
])
def test_a_number_inside_a_longer_expression_is_not_the_answer(text, gold):
    assert final_number(text) is None
    assert not numeric_correct(text, f"#### {gold}")
    assert not numeric_correct(text, gold)
    assert gsm8k_scores([text], [gold], "numeric")["correct"] == 0


def test_words_after_a_lone_number_still_count():
    assert numeric_correct("#### 5 total", "5") and numeric_correct("#### 7 (seven)", "7")
    assert numeric_correct("#### 50%", "50")


def test_last_number_fallback():
    assert last_number("3 apples + 5 pears = 8.") == "8"
    assert last_number("costs $1,200 in total") == "1200"
    assert last_number("it fell to -4 degrees") == "-4"
    assert last_number("nothing here") is None
    assert lone_number("0.50") == "0.5"
    assert gold_number("Adding gives 5.\n#### 5") == gold_number("5") == "5"


def test_reference_rule_is_the_literal_string_after_the_last_marker():
    assert reference_prediction("#### 694\n#### 695") == "695"
    assert reference_prediction("So 1,600.\n#### 1,600 ") == "1600"
    assert reference_prediction("no marker 5") is None
    assert reference_correct("####160", "160") and reference_correct("#### 45\n", "45")
    for text, gold in (("#### $540", "540"), ("#### 20.0", "20"), ("#### 260.", "260"), ("#### **15**", "15"),
                       ("#### 7/2", "7"), ("#### 260 dollars", "260")):
        assert not reference_correct(text, gold)
    assert not reference_correct("#### 1,600", "1,600")  # a gold answer with a comma never matches (kept quirk)
    assert bare_answer("Adding gives 1,600 apples.\n#### 1,600") == "1,600"
    assert bare_answer(" 72 ") == "72"


def test_gsm8k_scores_both_scorers_and_fallback():
    refs = ["... #### 1,234", "#### 5", "#### 7", "#### -3", "#### 10"]
    comps = [
        "work\n#### 1234",       # numeric only (the reference keeps the gold's comma, see below)
        "#### $5.00",            # numeric only
        "so 7 in the end",       # no marker: wrong by both, right by fallback
        "#### 3",                # wrong sign
        "first 10, then #### 11 ... 10",  # wrong; last number 10 right by fallback
    ]
    s = gsm8k_scores(comps, refs, "numeric")
    assert s["scorer"] == "numeric" and s["correct"] == 2 and s["accuracy"] == pytest.approx(0.4)
    assert s["fallback_correct"] == 4  # 1234, 5.00 -> 5, 7, 10
    assert s["missing_marker"] == 1 and s["n"] == 5
    assert s["ci95"][0] < 0.4 < s["ci95"][1]
    # the reference compares strings: "1,234" (gold keeps its comma) never equals "1234"; "$5.00" != "5"
    assert s["scorers"]["reference"]["correct"] == 0
    assert gsm8k_scores(comps, refs)["scorer"] == "reference"  # the default
    assert s["per_example"]["numeric"] == gsm8k_verdicts(comps, refs, "numeric") == [True, True, False, False, False]


def test_rouge1_with_stemming_on_a_known_pair():
    # reference "the cats are running" vs prediction "the cat runs": stems the/cat/are/run vs the/cat/run
    # overlap 3, precision 3/3, recall 3/4, F1 = 2*1*0.75/1.75 = 6/7
    s = rouge1_scores(["the cat runs"], ["the cats are running"])
    assert s["score"] == pytest.approx(6 / 7)
    assert s["per_example"] == [pytest.approx(6 / 7)]
    two = rouge1_scores(["a b", "x"], ["a b", "y"])
    assert two["score"] == pytest.approx(0.5)
