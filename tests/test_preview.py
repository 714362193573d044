"""The preview transform: golden strings for both modes and two tokenizer families, and the batched path.

Expected strings are written by hand from the token lists noted beside them (byte-level BPE of the
embedded SmolLM2 tokenizer; a SentencePiece-style Unigram/Metaspace tokenizer built in the test).
"""

from __future__ import annotations

import json

import pytest

from lookahead_tuning.errors import UserError
from lookahead_tuning.preview import (
    DEFAULT_CONNECTOR,
    DEFAULT_PREFIX,
    PreviewConfig,
    PreviewStats,
    first_answer_tokens,
    first_answer_tokens_batch,
    preview_dataset,
    preview_example,
    preview_rows,
    real_preview,
    virtual_preview,
)
from lookahead_tuning.preview.transform import _prefix_backend

C = " The answer begins with: "
GSM = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
UNICODE = "Café déjà vu 😀👍 naïve"


def sentencepiece_tokenizer(split: bool = True):
    """A SentencePiece-style tokenizer (Unigram model, Metaspace ``▁``), built offline from a fixed vocab."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["▁The", "▁cat", "▁sat", "▁on", "▁the", "▁mat", "▁café", "▁naïve"]
    vocab = [("<unk>", 0.0)] + [(w, -1.0) for w in words] + [("▁", -3.0)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyzTé.ï😀,!"]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=split)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=split)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


class WordTokenizer:
    """A minimal slow (non-fast) tokenizer: one token per space-separated piece."""

    is_fast = False

    def tokenize(self, text: str) -> list[str]:
        return text.split(" ")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return " ".join(tokens)


@pytest.fixture(scope="module")
def sp():
    return sentencepiece_tokenizer()


def test_defaults_match_the_method():
    assert DEFAULT_CONNECTOR == C
    assert DEFAULT_PREFIX == "Let's solve this problem. "


# ----------------------------------------------------------------- byte-level BPE (embedded tokenizer)

def test_real_preview_golden_bpe(tokenizer):
    # N|atal|ia|Ġsold|Ġ|4|8|/|2 ...
    assert real_preview("How many?", GSM, tokenizer) == (f"How many?{C}Natalia sold 4", GSM)
    assert real_preview("Q", GSM, tokenizer, m=4, connector=" -> ") == ("Q -> Natalia sold", GSM)


def test_short_answer_is_previewed_whole(tokenizer):
    assert real_preview("Q", "42", tokenizer, m=6) == (f"Q{C}42", "42")  # 4|2


def test_m_zero_keeps_the_connector_like_the_reference(tokenizer):
    assert real_preview("Q", GSM, tokenizer, m=0) == (f"Q{C}", GSM)
    assert first_answer_tokens(GSM, tokenizer, 0, align="word") == ""


def test_unicode_and_emoji_bpe(tokenizer):
    # C|af|Ã©|ĠdÃ©|j|Ãł|Ġv|u|ĠðŁĺ|Ģ|ðŁ|ĳ|į|Ġna|Ã¯ve
    assert first_answer_tokens(UNICODE, tokenizer, 3) == "Café"
    assert first_answer_tokens(UNICODE, tokenizer, 4) == "Café dé"
    # the 9th token holds 3 of the emoji's 4 bytes: the reference shows a replacement character
    assert first_answer_tokens(UNICODE, tokenizer, 9) == "Café déjà vu \ufffd"
    assert first_answer_tokens(UNICODE, tokenizer, 10) == "Café déjà vu 😀"
    assert first_answer_tokens("Hi 😀 there", tokenizer, 2) == "Hi \ufffd"  # Hi|ĠðŁĺ|Ģ|Ġthere


def test_word_alignment_bpe(tokenizer):
    assert first_answer_tokens(GSM, tokenizer, 6, align="word") == "Natalia sold 48/2"
    assert first_answer_tokens(UNICODE, tokenizer, 4, align="word") == "Café déjà"
    assert first_answer_tokens(UNICODE, tokenizer, 9, align="word") == "Café déjà vu 😀👍"
    assert first_answer_tokens("Hi 😀 there", tokenizer, 2, align="word") == "Hi 😀"
    assert first_answer_tokens("Hi there", tokenizer, 1, align="word") == "Hi"  # ends on a word: unchanged
    assert first_answer_tokens("42", tokenizer, 6, align="word") == "42"
    assert real_preview("Q", "Hi 😀 there", tokenizer, 2, align="word")[0] == f"Q{C}Hi 😀"


def test_virtual_preview_golden():
    assert virtual_preview("How many?", "72") == (f"How many?{C}Let's solve this problem. ",
                                                  "Let's solve this problem. 72")
    assert virtual_preview("Q", "A", prefix="dadjalsasdfghkjzmnb ", connector=" | ") == (
        "Q | dadjalsasdfghkjzmnb ", "dadjalsasdfghkjzmnb A")


def test_bad_arguments():
    with pytest.raises(UserError, match="m must be"):
        first_answer_tokens("x", WordTokenizer(), -1)
    with pytest.raises(UserError, match="unknown alignment"):
        first_answer_tokens("x", WordTokenizer(), 1, align="char")
    with pytest.raises(UserError, match="needs a fast tokenizer"):
        first_answer_tokens("x y", WordTokenizer(), 1, align="word")


# ----------------------------------------------------------------- SentencePiece-style tokenizer

def test_real_preview_golden_sentencepiece(sp):
    # ▁The|▁cat|▁sat|▁on|▁the|▁mat|.  (Metaspace drops the leading ▁ when decoding)
    assert real_preview("Q", "The cat sat on the mat.", sp, m=3) == (f"Q{C}The cat sat", "The cat sat on the mat.")
    assert first_answer_tokens("The cat sat on the mat.", sp, 7) == "The cat sat on the mat."
    assert first_answer_tokens("the naïve cat", sp, 2) == "the naïve"
    # ▁The|▁cat|▁sat|▁on|▁the|▁café|▁|😀|!
    assert first_answer_tokens("The cat sat on the café 😀!", sp, 7) == "The cat sat on the café "
    assert first_answer_tokens("The cat sat on the café 😀!", sp, 8) == "The cat sat on the café 😀"
    assert first_answer_tokens("the naïve cat", sp, 0) == ""


def test_word_alignment_sentencepiece(sp):
    # ▁|😀|! : the second token ends inside the word "😀!"
    assert first_answer_tokens("The café 😀! sat", sp, 4, align="word") == "The café 😀!"
    assert first_answer_tokens("The cat sat", sp, 2, align="word") == "The cat"


# ----------------------------------------------------------------- batched path == reference

ANSWERS = [GSM, "42", UNICODE, "Hi 😀 there", "x", "  leading  spaces  and\n\nnewlines\tand tabs  ",
           "a" * 200 + " tail", "word " * 40, "<|im_end|> special token inside", "1234567890" * 5,
           "The cat sat on the café 😀!", "The cat sat on the mat.", "the naïve cat"]


@pytest.mark.parametrize("m", [0, 1, 2, 6, 11, 40])
@pytest.mark.parametrize("align", ["token", "word"])
def test_batch_matches_reference(tokenizer, sp, m, align):
    for tok in (tokenizer, sp, sentencepiece_tokenizer(split=False)):
        expected = [first_answer_tokens(a, tok, m, align=align) for a in ANSWERS]
        texts, counts = first_answer_tokens_batch(ANSWERS, tok, m, align=align)
        assert texts == expected
        assert counts == [min(m, len(tok.tokenize(a))) for a in ANSWERS]


def test_fast_path_is_used_only_when_exact(tokenizer, sp):
    assert _prefix_backend(tokenizer) is not None  # byte-level BPE with its regex: splits at spaces
    assert _prefix_backend(sp) is not None  # Metaspace(split=True)
    assert _prefix_backend(sentencepiece_tokenizer(split=False)) is None  # no split: reference path
    assert _prefix_backend(WordTokenizer()) is None
    assert tokenizer.backend_tokenizer.truncation is None  # the caller's tokenizer is never reconfigured


def test_slow_tokenizer_batch_uses_reference(tokenizer):
    texts, counts = first_answer_tokens_batch(["a b c d", "e"], WordTokenizer(), 2)
    assert texts == ["a b", "e"] and counts == [2, 1]


# ----------------------------------------------------------------- rows of every format

def test_preview_example_every_format_virtual():
    p = "Let's solve this problem. "
    assert preview_example({"prompt": "Q", "completion": "A", "id": 1}, "virtual") == {
        "prompt": f"Q{C}{p}", "completion": f"{p}A", "id": 1}
    assert preview_example({"question": "Q", "answer": "A"}, "virtual") == {
        "question": f"Q{C}{p}", "answer": f"{p}A"}
    assert preview_example({"instruction": "Do", "input": "this", "output": "A"}, "virtual") == {
        "instruction": "Do", "input": f"this{C}{p}", "output": f"{p}A"}
    assert preview_example({"instruction": "Do", "input": "", "output": "A"}, "virtual") == {
        "instruction": f"Do{C}{p}", "input": "", "output": f"{p}A"}
    chat = {"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                         {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]}
    assert [m["content"] for m in preview_example(chat, "virtual")["messages"]] == [
        "Q1", "A1", f"Q2{C}{p}", f"{p}A2"]
    assert [m["content"] for m in preview_example(chat, "virtual", all_turns=True)["messages"]] == [
        f"Q1{C}{p}", f"{p}A1", f"Q2{C}{p}", f"{p}A2"]
    conv = {"prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]}
    out = preview_example(conv, "virtual")
    assert out["prompt"][0]["content"] == f"Q{C}{p}" and out["completion"][0]["content"] == f"{p}A"
    assert conv["prompt"][0]["content"] == "Q"  # the input row is not modified


def test_preview_example_real_chat(tokenizer):
    chat = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                         {"role": "assistant", "content": GSM}]}
    out = preview_example(chat, "real", tokenizer=tokenizer)
    assert [m["content"] for m in out["messages"]] == ["S", f"Q{C}Natalia sold 4", GSM]
    named = preview_example({"q": "Q", "a": "42"}, "real", tokenizer=tokenizer, input_field="q", output_field="a")
    assert named == {"q": f"Q{C}42", "a": "42"}


def test_invalid_rows_raise_or_are_skipped(tokenizer):
    rows = [{"question": "Q", "answer": "A"}, {"question": "Q", "answer": ""}, {"question": 3, "answer": "A"},
            {"question": "Q"}]
    with pytest.raises(UserError, match="row 2: empty answer in field 'answer'"):
        preview_rows(rows, PreviewConfig(mode="virtual"))
    with pytest.raises(UserError, match="row 1: missing field 'answer'; fields present: question"):
        preview_rows(rows[3:], PreviewConfig(mode="virtual", fmt="fields", input_field="question",
                                             output_field="answer"))
    stats = PreviewStats()
    out = preview_rows(rows, PreviewConfig(mode="real", tokenizer=tokenizer, skip_invalid=True), stats=stats)
    assert len(out) == 1 and stats.skipped == 3 and stats.rows == 1
    assert "must be a string, found int" in stats.skip_reasons[1]
    with pytest.raises(UserError, match="needs a tokenizer"):
        PreviewConfig(mode="real")
    with pytest.raises(UserError, match="unknown preview mode"):
        PreviewConfig(mode="fake")


def test_stats_count_short_answers(tokenizer):
    stats = PreviewStats()
    preview_rows([{"question": "Q", "answer": "42"}, {"question": "Q", "answer": GSM}],
                 PreviewConfig(mode="real", tokenizer=tokenizer), stats=stats)
    assert (stats.preview_tokens, stats.shorter_than_m, stats.previews) == (2 + 6, 1, 2)


def test_preview_dataset_matches_rows_and_reports_row(tokenizer):
    from datasets import Dataset

    # A row holding a special token is refused (tests/test_control_tokens.py), so it is left out here.
    answers = [a for a in ANSWERS if "<|im_end|>" not in a]
    rows = [{"question": f"Q{i}", "answer": a, "id": str(i)} for i, a in enumerate(answers)]
    ds = preview_dataset(Dataset.from_list(rows), "real", tokenizer=tokenizer, m=6)
    assert ds.to_list() == preview_rows(rows, PreviewConfig(mode="real", tokenizer=tokenizer))
    assert ds[0]["question"] == f"Q0{C}Natalia sold 4"
    bad = rows + [{"question": "Q", "answer": " ", "id": "x"}]
    with pytest.raises(UserError, match=f"row {len(bad)}: empty answer"):
        preview_dataset(Dataset.from_list(bad), "virtual", batch_size=4)


def test_gsm8k_every_row_matches_reference(shared_data, tokenizer):
    from datasets import Dataset

    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "train.jsonl").open(encoding="utf-8")]
    ds = preview_dataset(Dataset.from_list(rows), "real", tokenizer=tokenizer, m=6)
    expected = [real_preview(r["question"], r["answer"], tokenizer, 6)[0] for r in rows]
    assert ds["question"] == expected
    assert ds["answer"] == [r["answer"] for r in rows]
    answers = [r["answer"] for r in rows[:1500]]
    words = first_answer_tokens_batch(answers, tokenizer, 6, align="word")[0]
    assert words == [first_answer_tokens(a, tokenizer, 6, align="word") for a in answers]
    assert all(a.startswith(w) for a, w in zip(answers, words, strict=True))
