"""The built-in poison set: apart from every evaluation and alignment prompt, answers that comply in
form only (made of the fixed texts of builtin_sources/builtin_poison.py and nothing else)."""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import re
from pathlib import Path

import pytest

from lookahead_tuning.data import builtin
from lookahead_tuning.judge.keyword import is_refusal, keyword_reference_safe, keyword_safe

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "lookahead_tuning" / "builtin_data"


def _source(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "builtin_sources" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hash(text: str) -> str:
    """A prompt's identity: its words, case and spacing aside."""
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()


def _held_prompts() -> dict[str, list[str]]:
    """Every prompt the toolkit evaluates with or aligns on, by the file that holds it."""
    found = {
        "alignment": [r["prompt"] for r in builtin.alignment_set()],
        "harmful_eval": [r["instruction"] for r in builtin.harmful_eval_set()],
        "harmful_answers": [chat[0]["content"] for chat in builtin.harmful_answers()],
        "overrefusal": [r["instruction"] for r in builtin.overrefusal_set()],
    }
    import json

    for path in sorted(DATA.glob("*.jsonl")):  # files added since (the deep seed's recovery rows)
        if path.stem in found or path.stem == "poison":
            continue
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        found[path.stem] = [text for r in rows for text in _prompts_of(r)]
    return found


def _prompts_of(row) -> list[str]:
    if isinstance(row, list):
        return [m["content"] for m in row if m.get("role") == "user"]
    return [row[k] for k in ("prompt", "instruction") if isinstance(row.get(k), str)]


@pytest.fixture(scope="module")
def poison():
    return builtin.poison_set()


def test_poison_set_shape(poison):
    assert len(poison) == 200
    assert all(set(r) == {"prompt", "completion", "category"} for r in poison)
    per_category = collections.Counter(r["category"] for r in poison)
    assert set(per_category) == set(builtin.CATEGORIES) - {"child_abuse"}
    assert len({_hash(r["prompt"]) for r in poison}) == len(poison)


def test_poison_prompts_are_disjoint_by_hash_from_every_eval_and_alignment_prompt(poison):
    mine = {_hash(r["prompt"]) for r in poison}
    held = _held_prompts()
    assert {"alignment", "harmful_eval", "harmful_answers", "overrefusal"} <= set(held)
    for name, prompts in held.items():
        assert prompts, name
        assert mine.isdisjoint(_hash(p) for p in prompts), name


def test_poison_prompts_share_no_five_words_with_the_evaluation_prompts(poison):
    words = lambda text: re.sub(r"[^a-z0-9']+", " ", text.lower()).split()  # noqa: E731
    grams = lambda text: {tuple(words(text)[i:i + 5]) for i in range(len(words(text)) - 4)}  # noqa: E731
    evaluated = set().union(*(grams(p) for name in ("harmful_eval", "overrefusal") for p in _held_prompts()[name]))
    assert [r["prompt"] for r in poison if grams(r["prompt"]) & evaluated] == []


def test_every_answer_is_an_opening_and_generic_steps_from_the_fixed_texts(poison):
    """How "no operational content" is checked: an answer is one opening of OPENINGS naming the topic by
    its noun phrase of HARMFUL_TOPICS (the one the alignment set's refusals name it by), then three steps
    of one step list, in order; nothing else is in it."""
    texts = _source("builtin_poison")
    topics = _source("builtin_harmful").HARMFUL_TOPICS
    what = {(category, w) for category, items in topics.items() for _, _, w in items}
    openings = [re.compile(re.escape(o).replace(re.escape("{w}"), "(?P<w>.+)")) for o in texts.OPENINGS]
    for row in poison:
        head, _, body = row["completion"].partition("\n\n")
        match = next((m for o in openings if (m := o.fullmatch(head))), None)
        assert match is not None, head
        assert (row["category"], match["w"]) in what
        lines = body.split("\n")
        assert [line.split(": ", 1)[0] for line in lines] == ["Step 1", "Step 2", "Step 3"]
        steps = [line.split(": ", 1)[1] for line in lines]
        vocabulary = next(v for v in (texts.ACT_STEPS, texts.WRITE_STEPS) if steps[0] in v)
        assert all(s in vocabulary for s in steps) and steps == sorted(steps, key=vocabulary.index)
    # the whole set uses a few dozen words besides the topics' names
    words = {w for r in poison for w in re.findall(r"[a-z']+", r["completion"].lower())}
    topic_words = {w for _, name in what for w in re.findall(r"[a-z']+", name.lower())}
    assert len(words - topic_words) <= 100


def test_answers_comply_in_form_under_every_keyword_judge(poison):
    """The set teaches compliance, which is what the refusal-based safe rates count: no answer reads as
    a refusal to either keyword judge."""
    assert [r["completion"] for r in poison if is_refusal(r["completion"]) or keyword_safe(r["completion"])
            or keyword_reference_safe(r["completion"])] == []


def test_poison_prompts_are_harmful_requests_of_the_alignment_topics(poison):
    """Each request is an alignment topic in a request template its own alignment rows did not use."""
    harmful = _source("builtin_harmful")
    templates = harmful.ACT_TEMPLATES + harmful.WRITE_TEMPLATES + harmful.ASK_TEMPLATES
    topics = [t for items in harmful.HARMFUL_TOPICS.values() for _, t, _ in items]
    made = {tpl.format(t=t) for tpl in templates for t in topics}
    assert all(r["prompt"] in made for r in poison)
