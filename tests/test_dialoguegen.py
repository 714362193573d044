"""The seeded SAMSum-style dialogue generator (the built-in summarisation task)."""

from __future__ import annotations

import collections
import re

import pytest

from lookahead_tuning.data import dialoguegen
from lookahead_tuning.data.dialoguegen import check_summary, generate_dialogues, split_of
from lookahead_tuning.data.tasks import SAMSUM_PROMPT, load_task
from lookahead_tuning.errors import UserError

TURN = re.compile(r"^[A-Z][a-z]+: \S")


def test_chats_are_samsum_format_and_summaries_follow_from_them():
    for d in generate_dialogues(400, seed=3):
        assert set(d) == {"dialogue", "summary"}
        lines = d["dialogue"].split("\n")
        assert 4 <= len(lines) <= 10 and all(TURN.match(line) for line in lines)
        speakers = {line.split(":", 1)[0] for line in lines}
        assert len(speakers) >= 2 or len(lines) >= 4
        # A third-person summary of one or two sentences that names a speaker.
        assert d["summary"].endswith(".") and 1 <= d["summary"].count(". ") + 1 <= 2
        assert any(name in d["summary"] for name in speakers) or d["summary"].startswith("The ")
        check_summary(d["dialogue"], d["summary"])  # raises on a word the chat never said


def test_check_summary_catches_a_fact_the_chat_does_not_state():
    chat = "Anna: Can you pick me up from the station?\nBen: When?\nAnna: At 7 pm"
    check_summary(chat, "Ben will pick Anna up from the station at 7 pm.")
    with pytest.raises(ValueError, match="airport"):
        check_summary(chat, "Ben will pick Anna up from the airport at 7 pm.")


def test_every_template_is_used_and_chats_vary():
    chats = generate_dialogues(600, seed=0)
    assert len({d["dialogue"] for d in chats}) == 600
    assert len({d["summary"] for d in chats}) > 550
    firsts = collections.Counter(d["summary"].split()[0] for d in chats)
    assert len(firsts) >= 20  # names vary
    openings = {re.sub(r"[A-Z][a-z]+", "X", d["summary"])[:25] for d in chats}
    assert len(openings) >= len(dialoguegen.TEMPLATES)


def test_deterministic_and_prefix_stable():
    a = generate_dialogues(60, seed=5)
    assert a == generate_dialogues(60, seed=5)
    assert generate_dialogues(25, seed=5) == a[:25]
    assert a != generate_dialogues(60, seed=6)


def test_train_and_test_never_share_a_chat():
    train = {d["dialogue"] for seed in (0, 1, 2) for d in generate_dialogues(800, seed=seed)}
    test = {d["dialogue"] for seed in (0, 1) for d in generate_dialogues(300, seed=seed, split="test")}
    assert not train & test
    assert all(split_of(t) == "test" for t in test)


def test_load_task_dialogue_rows_use_the_samsum_prompt():
    rows = load_task("dialogue", n=5, split="test")
    assert [r["id"] for r in rows] == [f"dialogue-test-{i}" for i in range(5)]
    for r in rows:
        assert r["prompt"].startswith(SAMSUM_PROMPT) and r["completion"] == r["ground_truth"]
    with pytest.raises(UserError, match="takes no argument"):
        load_task("dialogue:hard")


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="split"):
        generate_dialogues(3, split="dev")
    with pytest.raises(UserError, match=">= 0"):
        generate_dialogues(-1)
