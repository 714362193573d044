"""The seeded GSM8K-style problem generator."""

from __future__ import annotations

import collections
import re

import pytest

from lookahead_tuning.data import mathgen
from lookahead_tuning.data.answers import final_number
from lookahead_tuning.data.mathgen import check_solution, generate_problems, split_of
from lookahead_tuning.errors import UserError

STEPS = {"easy": 1, "medium": 2, "hard": 3}


@pytest.mark.parametrize("level", ["easy", "medium", "hard", "default", "mixed"])
def test_answers_are_gsm8k_format_and_correct(level):
    for p in generate_problems(300, seed=1, level=level):
        answer = p["answer"]
        assert set(p) == {"question", "answer"}
        assert "<<" not in answer and re.search(r"\n#### \d+$", answer)
        final = int(answer.rsplit("#### ", 1)[1])
        check_solution(answer, final)  # raises on any wrong step
        assert final_number(answer) == str(final)
        # GSM8K style: the solution opens by restating a quantity from the question.
        first_number = re.search(r"\d+", answer)[0]
        assert re.search(rf"\b{first_number}\b", p["question"])
        assert answer.split()[0].strip("'s") in p["question"]


@pytest.mark.parametrize("level", ["easy", "medium", "hard"])
def test_levels_have_their_step_count_and_variety(level):
    problems = generate_problems(200, level=level)
    for p in problems:
        lines = p["answer"].split("\n")[:-1]
        assert len(re.findall(r"\d+ [-+*/] \d+ = \$?\d+", "\n".join(lines))) >= STEPS[level]
        assert len(lines) == STEPS[level]
    shapes = collections.Counter(re.sub(r"\d+", "N", p["question"]).split()[-3] for p in problems)
    assert len({p["question"] for p in problems}) == 200
    assert len(shapes) >= 4
    assert len({p["question"].split()[0] for p in problems}) >= 10
    assert len(mathgen.LEVELS[level]) >= 6


def test_default_mixes_one_and_two_step_problems():
    counts = collections.Counter(len(p["answer"].split("\n")) - 1 for p in generate_problems(400))
    assert set(counts) == {1, 2} and min(counts.values()) > 120


def test_deterministic_and_prefix_stable():
    a = generate_problems(50, seed=7, level="medium")
    assert a == generate_problems(50, seed=7, level="medium")
    assert generate_problems(20, seed=7, level="medium") == a[:20]
    assert a != generate_problems(50, seed=8, level="medium")


@pytest.mark.parametrize("level", ["easy", "default", "hard"])
def test_train_and_test_never_share_a_question(level):
    train = {p["question"] for seed in (0, 1, 2) for p in generate_problems(700, seed=seed, level=level)}
    test = {p["question"] for seed in (0, 1) for p in generate_problems(300, seed=seed, level=level, split="test")}
    assert not train & test
    assert all(split_of(q) == "train" for q in train) and all(split_of(q) == "test" for q in test)


def test_check_solution_rejects_wrong_arithmetic():
    with pytest.raises(ValueError, match="wrong step"):
        check_solution("Tom has 3 bags with 4 apples each, so he has 3 * 4 = 13 apples.\n#### 13", 13)
    with pytest.raises(ValueError, match="final answer"):
        check_solution("Tom has 3 + 4 = 7 apples.\n#### 8", 8)
    check_solution("Tom has 3 bags with 4 apples each, so he has 3 * 4 = 12 apples.\n#### 12", 12)


def test_final_number_with_last_number_fallback():
    assert final_number("so 3 + 4 = 7\n#### 7", fallback_last=True) == "7"
    assert final_number("The answer is $1,250.", fallback_last=True) == "1250"
    assert final_number("It is 12.0 apples", fallback_last=True) == "12"
    assert final_number("#### -3", fallback_last=True) == "-3"
    assert final_number("no digits", fallback_last=True) is None


def test_errors():
    with pytest.raises(UserError, match="unknown math level"):
        generate_problems(3, level="impossible")
    with pytest.raises(UserError, match="unknown split"):
        generate_problems(3, split="dev")
    with pytest.raises(UserError, match=">= 0"):
        generate_problems(-1)
    assert generate_problems(0) == []
