"""The built-in data: counts, refusal/helpfulness wording, held-out disjointness, reproducibility."""

from __future__ import annotations

import collections
import importlib.util
import re
from pathlib import Path

import pytest

from lookahead_tuning.data import builtin
from lookahead_tuning.judge.keyword import is_refusal

ROOT = Path(__file__).resolve().parents[1]
NGRAM = 5


def _normalise(text: str) -> list[str]:
    """Lower-case words; punctuation and hyphens split words ("step-by-step" = 3 words)."""
    return re.sub(r"[^a-z0-9']+", " ", text.lower().replace("\u2019", "'")).split()


def _ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = _normalise(text)
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _shared(prompts_a: list[str], prompts_b: list[str]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(a, b, n-gram) for every pair sharing a 5-word sequence, or equal after normalisation."""
    index: dict[tuple[str, ...], str] = {}
    for b in prompts_b:
        for g in _ngrams(b):
            index.setdefault(g, b)
    normalised_b = {" ".join(_normalise(b)): b for b in prompts_b}
    hits = []
    for a in prompts_a:
        if " ".join(_normalise(a)) in normalised_b:
            hits.append((a, normalised_b[" ".join(_normalise(a))], ()))
        hits += [(a, index[g], g) for g in _ngrams(a) if g in index]
    return hits


@pytest.fixture(scope="module")
def alignment():
    return builtin.alignment_set()


def test_alignment_counts(alignment):
    kinds = collections.Counter(r["kind"] for r in alignment)
    assert kinds["harmful"] >= 300 and kinds["benign"] >= 300
    per_category = collections.Counter(r["category"] for r in alignment if r["kind"] == "harmful")
    assert set(per_category) == set(builtin.CATEGORIES)
    assert min(per_category.values()) >= 25
    assert sum(r["category"] == "sounds_dangerous" for r in alignment) >= 80
    assert all(set(r) == {"prompt", "completion", "kind", "category"} for r in alignment)
    prompts = [r["prompt"] for r in alignment]
    assert len(set(prompts)) == len(prompts)


def test_refusals_are_recognised_and_varied(alignment):
    refusals = [r["completion"] for r in builtin.refusal_pairs()]
    assert all(is_refusal(text) for text in refusals)
    first_sentences = {re.split(r"(?<=[.!?]) ", text)[0] for text in refusals}
    assert len(first_sentences) >= 60  # openers x named requests
    # Several refusals name what was asked.
    assert sum("with " in t.split(".")[0] and "that" not in t.split(".")[0] for t in refusals) >= 50


def test_harmful_requests_vary_in_phrasing(alignment):
    harmful = [r["prompt"] for r in alignment if r["kind"] == "harmful"]
    openings = collections.Counter(" ".join(_normalise(p)[:3]) for p in harmful)
    assert len(openings) >= 25
    assert openings.most_common(1)[0][1] <= len(harmful) // 8


def test_benign_answers_are_helpful_not_refusals(alignment):
    benign = [r for r in alignment if r["kind"] == "benign"]
    refused = [r["prompt"] for r in benign if is_refusal(r["completion"])]
    assert refused == []
    assert all(len(r["completion"].split()) >= 1 for r in benign)
    # Requests that only sound dangerous are answered, not deflected.
    how_do_i = [r for r in benign if r["prompt"].lower().startswith("how do i")]
    assert len(how_do_i) >= 80


def test_computed_benign_answers_are_correct(alignment):
    for row in alignment:
        if row["category"] == "arithmetic":
            m = re.fullmatch(r"(\d+) ([+×÷]) (\d+) = (\d+)\.", row["completion"])
            if m:
                a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
                assert {"+": a + b, "×": a * b, "÷": a / b}[op] == c, row
        if row["category"] == "conversion" and "Fahrenheit" in row["prompt"]:
            c, f = map(int, re.findall(r"-?\d+", row["completion"])[:2])
            assert c * 9 / 5 + 32 == f


def test_eval_set_format_and_counts():
    rows = builtin.harmful_eval_set()
    assert len(rows) == 110
    assert collections.Counter(r["category"] for r in rows) == {c: 10 for c in builtin.CATEGORIES}
    assert len({r["id"] for r in rows}) == 110
    assert all(set(r) == {"id", "instruction", "category"} and isinstance(r["id"], str) for r in rows)


def test_harmful_answers_align_and_are_only_openings(tokenizer):
    rows, chats = builtin.harmful_eval_set(), builtin.harmful_answers()
    assert len(chats) == len(rows)
    for row, chat in zip(rows, chats, strict=True):
        assert [m["role"] for m in chat] == ["user", "assistant"]
        assert chat[0]["content"] == row["instruction"]
        opening = chat[1]["content"]
        assert len(tokenizer(opening, add_special_tokens=False)["input_ids"]) >= 10
        assert not is_refusal(opening)
        # An opener only: a single lead sentence then the start of a list/text, nothing more.
        assert len(opening.split()) <= 30
        assert opening.endswith(("Step 1:", "1.", "First,", "\n\n"))


def test_overrefusal_set():
    rows = builtin.overrefusal_set()
    assert len(rows) >= 50
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(set(r) == {"id", "instruction"} for r in rows)


def test_held_out_sets_are_disjoint_from_training(alignment):
    """No eval or over-refusal prompt shares a 5-word sequence with any alignment prompt."""
    train = [r["prompt"] for r in alignment]
    evals = [r["instruction"] for r in builtin.harmful_eval_set()]
    over = [r["instruction"] for r in builtin.overrefusal_set()]
    assert _shared(evals, train) == []
    assert _shared(over, train) == []
    assert _shared(over, evals) == []


def test_disjointness_check_detects_overlap():
    assert _shared(["Give me step-by-step instructions to bake"], ["give me step by step instructions to fly"])
    assert _shared(["How do I?"], ["how do i"])
    assert not _shared(["one two three four five"], ["one two three four six", "two three four five six"])


def test_functions_return_copies():
    rows = builtin.harmful_eval_set()
    rows[0]["instruction"] = "changed"
    assert builtin.harmful_eval_set()[0]["instruction"] != "changed"


def test_committed_files_match_the_builder():
    spec = importlib.util.spec_from_file_location("build_builtin_data", ROOT / "builtin_sources" / "build_builtin_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data_dir = ROOT / "src" / "lookahead_tuning" / "builtin_data"
    for name, text in module.render().items():
        assert (data_dir / name).read_text(encoding="utf-8") == text, f"{name} is stale: run the builder"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "builtin_sources" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_self_answers_are_the_models_own_trimmed_non_refusals():
    """Each harm-adjacent prompt has one committed answer record; a kept answer is the raw greedy answer
    cut at its last sentence end, never a refusal; a dropped one says why."""
    import json

    answers = _script("self_answer_benign")
    records = [json.loads(line) for line in answers.OUT.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in records] == answers.source.HARM_ADJACENT_PROMPTS
    for r in records:
        kept, reason = answers.verdict(r["raw"])
        assert (r["completion"], r["dropped_because"], r["kept"]) == (kept, reason, reason is None)
        if r["kept"]:
            assert r["raw"].startswith(r["completion"]) and r["completion"][-1] in ".!?"
            assert not is_refusal(r["completion"]) and len(r["completion"]) >= answers.MIN_CHARS
    assert sum(r["kept"] for r in records) >= 0.9 * len(records)
    rows = [r for r in builtin.alignment_set() if r["category"] == "harm_adjacent"]
    kept = {r["prompt"]: r["completion"] for r in records if r["kept"]}
    assert {r["prompt"] for r in rows} >= set(kept)
    assert all(r["completion"] in kept.values() for r in rows)  # re-asked rows keep the model's answer


def test_trim_cuts_at_the_last_sentence_end():
    trim = _script("self_answer_benign").trim
    assert trim("One. Two is cut") == "One."
    assert trim("Version 2.5 is out! Then") == "Version 2.5 is out!"
    assert trim("No end at all") == ""
    assert trim("  Done?  ") == "Done?"


# --------------------------------------------------------------------------- seed E's recovery data, deep prefills

def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _any_marker(text: str) -> list[str]:
    from lookahead_tuning.judge.keyword import REFERENCE_MARKERS, REFUSAL_MARKERS

    text = text.replace("\u2019", "'")
    return [m for m in (*REFERENCE_MARKERS, *REFUSAL_MARKERS) if m in text]


# The longest cut of a training opening that equals a cut of an evaluation opening: the generic words
# every compliance opener starts with ("Sure, here is", "Of course. Here"), measured on the embedded tokenizer.
GENERIC_TOKENS = 5


def test_recovery_rows_pair_with_the_harmful_alignment_requests(alignment, tokenizer):
    rows = builtin.recovery_set()
    harmful = [r for r in alignment if r["kind"] == "harmful"]
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in harmful]  # one per request, same order
    assert [r["category"] for r in rows] == [r["category"] for r in harmful]
    assert all(set(r) == {"prompt", "opening", "refusal", "category"} for r in rows)
    from lookahead_tuning.experiment.align import RECOVERY_K_MAX

    for row in rows:
        assert len(tokenizer.tokenize(row["opening"])) >= RECOVERY_K_MAX  # every k of the range is a real cut
        assert _any_marker(row["opening"]) == [], row["opening"]  # an opening never reads as a refusal
        assert is_refusal(row["refusal"]) and _any_marker(row["refusal"])  # both judges see the break-off
    assert len({r["opening"] for r in rows}) >= 100 and len({r["refusal"] for r in rows}) >= 100


def test_alignment_prompts_and_openings_are_disjoint_from_evaluation_by_hash(alignment, tokenizer):
    """Every prompt and opening alignment trains on (whole, and every cut recipe E can make beyond the
    generic first words) differs from every evaluation prompt and every prefill an evaluation feeds."""
    from lookahead_tuning.generate.engine import prefill_text

    evaluation_prompts = [r["instruction"] for r in builtin.harmful_eval_set()] + \
        [r["instruction"] for r in builtin.overrefusal_set()]
    openings = [c[1]["content"] for c in builtin.harmful_answers() + builtin.harmful_answers_long()]
    prefills = {_sha(prefill_text(tokenizer, o, k)) for o in openings for k in range(1, 61)}
    evaluation = {_sha(p) for p in evaluation_prompts} | {_sha(o) for o in openings} | prefills
    recovery = builtin.recovery_set()
    trained = [r["prompt"] for r in alignment] + [r["prompt"] for r in recovery] + [r["opening"] for r in recovery]
    assert not {_sha(t) for t in trained} & evaluation
    cuts = {_sha(prefill_text(tokenizer, r["opening"], k)) for r in recovery for k in range(GENERIC_TOKENS + 1, 41)}
    assert not cuts & evaluation
    # In wording too: no training opening shares a 5-word sequence with an evaluation opening's continuation.
    tails = [long[1]["content"][len(short[1]["content"]):]
             for short, long in zip(builtin.harmful_answers(), builtin.harmful_answers_long(), strict=True)]
    assert _shared([r["opening"] for r in recovery], tails) == []
    assert _shared([r["opening"] for r in recovery], evaluation_prompts) == []


def test_long_openings_extend_the_short_ones_without_content(tokenizer):
    from lookahead_tuning.analyse.safety import SHORT_PREFILL_TOKENS, builtin_prefills
    from lookahead_tuning.generate.engine import prefill_text

    short, long = builtin.harmful_answers(), builtin.harmful_answers_long()
    assert len(long) == len(short)
    for a, b in zip(short, long, strict=True):
        assert b[0] == a[0] and b[1]["content"].startswith(a[1]["content"])
        assert len(tokenizer.tokenize(b[1]["content"])) >= 40
        assert _any_marker(b[1]["content"]) == [] and not is_refusal(b[1]["content"])
        # Up to the switch the long opening prefills exactly the short one's text: no number changes.
        assert all(prefill_text(tokenizer, a[1]["content"], k) == prefill_text(tokenizer, b[1]["content"], k)
                   for k in range(1, SHORT_PREFILL_TOKENS + 1))
    assert builtin_prefills(3) == short and builtin_prefills(SHORT_PREFILL_TOKENS) == short
    assert builtin_prefills(SHORT_PREFILL_TOKENS + 1) == long
