"""The LookAhead preview of one (instruction, answer) pair (docs/method.md, section 2).

Real-answer preview, with m answer tokens and connector C::

    instruction' = instruction + C + first_m_tokens(answer)      answer' = answer

Virtual-answer preview, with a fixed prefix P::

    instruction' = instruction + C + P                           answer' = P + answer

``first_m_tokens`` keeps the reference implementation's semantics exactly:
``tokenizer.convert_tokens_to_string(tokenizer.tokenize(answer)[:m])``. Consequences worth knowing:
an answer shorter than m tokens is previewed whole; ``m = 0`` previews nothing but the connector is
still appended (``instruction + C``), as in the reference; a byte-level BPE token can end inside a
multi-byte character, which then shows as U+FFFD in the preview. ``align="word"`` (opt-in) avoids the
last point: it extends the m tokens to the end of the word they stop in and returns that verbatim
prefix of the answer.

:func:`first_answer_tokens_batch` computes the same strings for many answers at once, fast, by
tokenizing only a short prefix of each answer (see its docstring for why that is exact).
"""

from __future__ import annotations

import copy
import json
import re
import weakref
from collections.abc import Sequence
from typing import Any

from ..errors import UserError

DEFAULT_CONNECTOR = " The answer begins with: "
DEFAULT_PREFIX = "Let's solve this problem. "
DEFAULT_M = 6
ALIGNS = ("token", "word")

_WORD_REST = re.compile(r"\S*")


def _check(m: int, align: str) -> None:
    if isinstance(m, bool) or not isinstance(m, int) or m < 0:
        raise UserError(f"m must be a whole number >= 0, got {m!r}")
    if align not in ALIGNS:
        raise UserError(f"unknown alignment '{align}'; expected one of {', '.join(ALIGNS)}")


def _extend_to_word_end(answer: str, end: int) -> int:
    """Move ``end`` past the rest of the word it falls in (a word = a run of non-whitespace)."""
    if 0 < end < len(answer) and not answer[end - 1].isspace():
        return _WORD_REST.match(answer, end).end()
    return end


def _word_end_offset(offsets: Sequence[tuple[int, int]], m: int) -> int:
    return max((e for _, e in offsets[:m]), default=0)


def first_answer_tokens(answer: str, tokenizer: Any, m: int, *, align: str = "token") -> str:
    """The first ``m`` tokens of ``answer`` as text (the reference semantics; see the module docstring).

    ``align="word"`` needs a fast tokenizer (offsets) and returns ``answer[:k]`` where ``k`` is the end of
    the word in which the m-th token ends, so no word or character is cut.
    """
    _check(m, align)
    if align == "token":
        return tokenizer.convert_tokens_to_string(tokenizer.tokenize(answer)[:m])
    if m == 0:
        return ""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("--align word needs a fast tokenizer (one with a tokenizer.json)")
    enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    return answer[: _extend_to_word_end(answer, _word_end_offset(enc["offset_mapping"], m))]


def real_preview(
    instruction: str,
    answer: str,
    tokenizer: Any,
    m: int = DEFAULT_M,
    connector: str = DEFAULT_CONNECTOR,
    *,
    align: str = "token",
) -> tuple[str, str]:
    """Real-answer preview: ``(instruction + connector + first m answer tokens, answer)``."""
    return instruction + connector + first_answer_tokens(answer, tokenizer, m, align=align), answer


def virtual_preview(
    instruction: str,
    answer: str,
    prefix: str = DEFAULT_PREFIX,
    connector: str = DEFAULT_CONNECTOR,
) -> tuple[str, str]:
    """Virtual-answer preview: ``(instruction + connector + prefix, prefix + answer)``."""
    return instruction + connector + prefix, prefix + answer


# --------------------------------------------------------------------------- batched real preview

# Pre-tokenizers that always cut the text at a space: tokens never span a space, so the tokens of a
# prefix that ends right before a space are exactly the leading tokens of the whole text.
_PER_CHAR_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Prepend", "BertNormalizer", "StripAccents"}


def _splits_at_spaces(pre: dict | None) -> bool:
    if not pre:
        return False
    kind = pre.get("type")
    if kind == "ByteLevel":
        return bool(pre.get("use_regex", True))
    if kind == "Metaspace":
        return bool(pre.get("split", True))
    if kind in ("Whitespace", "WhitespaceSplit", "BertPreTokenizer"):
        return True
    if kind == "Split":  # e.g. Llama-3/Qwen regexes, which isolate whitespace runs
        regex = (pre.get("pattern") or {}).get("Regex") or ""
        return "\\s" in regex
    if kind == "Sequence":
        return any(_splits_at_spaces(p) for p in pre.get("pretokenizers", []))
    return False


def _normalizer_is_local(norm: dict | None) -> bool:
    if not norm:
        return True
    if norm.get("type") == "Sequence":
        return all(_normalizer_is_local(n) for n in norm.get("normalizers", []))
    return norm.get("type") in _PER_CHAR_NORMALIZERS


_PREFIX_BACKENDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _prefix_backend(tokenizer: Any) -> Any | None:
    """A private copy of the tokenizer's Rust backend when prefix tokenization is provably exact, else None."""
    try:
        return _PREFIX_BACKENDS[tokenizer]
    except (KeyError, TypeError):
        pass
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    result = None
    if backend is not None:
        cfg = json.loads(backend.to_str())
        spaced_added = any(any(c.isspace() for c in t.get("content", "")) for t in cfg.get("added_tokens", []))
        if _splits_at_spaces(cfg.get("pre_tokenizer")) and _normalizer_is_local(cfg.get("normalizer")) and not spaced_added:
            result = copy.deepcopy(backend)  # our own copy: never touch the caller's truncation/padding
            result.no_truncation()
            result.no_padding()
    try:
        _PREFIX_BACKENDS[tokenizer] = result
    except TypeError:
        pass
    return result


def _cut_before_space(answer: str, start: int) -> str:
    """``answer`` up to the first space at or after ``start`` that follows a non-space (else all of it)."""
    i = start
    while True:
        c = answer.find(" ", i)
        if c < 0:
            return answer
        if c > 0 and not answer[c - 1].isspace():
            return answer[:c]
        i = c + 1


def first_answer_tokens_batch(
    answers: Sequence[str], tokenizer: Any, m: int, *, align: str = "token"
) -> tuple[list[str], list[int]]:
    """:func:`first_answer_tokens` for many answers; also returns how many tokens each preview holds.

    A count below ``m`` means the whole answer was shorter than m tokens.

    Why it is fast and still exact: only the first m tokens matter, so each answer is cut right before
    a space that follows a word (a prefix of about 4m characters, doubled when it holds fewer than m
    tokens) and only that prefix is tokenized, in one Rust batch call. For tokenizers whose
    pre-tokenizer always splits at spaces (byte-level BPE with its regex, Metaspace with ``split``,
    whitespace/BERT splitters) and whose normalizer works per character, no token spans that space, so
    the prefix's tokens are exactly the first tokens of the whole answer. Any other tokenizer (slow
    tokenizers, SentencePiece-BPE without splitting such as Llama-2's, added tokens containing spaces)
    takes the per-example reference path.
    """
    _check(m, align)
    n = len(answers)
    if m == 0:
        return [""] * n, [0] * n
    backend = _prefix_backend(tokenizer)
    if backend is None:
        if align == "word" and not getattr(tokenizer, "is_fast", False):
            raise UserError("--align word needs a fast tokenizer (one with a tokenizer.json)")
        texts, counts = [], []
        for answer in answers:
            if align == "word":
                enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
                offsets = enc["offset_mapping"]
                counts.append(min(m, len(offsets)))
                texts.append(answer[: _extend_to_word_end(answer, _word_end_offset(offsets, m))])
            else:
                tokens = tokenizer.tokenize(answer)[:m]
                counts.append(len(tokens))
                texts.append(tokenizer.convert_tokens_to_string(tokens))
        return texts, counts

    texts = [""] * n
    counts = [0] * n
    pending = list(range(n))
    length = 4 * m + 2  # GSM8K-like text averages 3-4 characters per token; a miss costs a retry
    while pending:
        cuts = [_cut_before_space(answers[i], length) for i in pending]
        encodings = backend.encode_batch(cuts, add_special_tokens=False)
        retry = []
        for i, cut, enc in zip(pending, cuts, encodings, strict=True):
            tokens = enc.tokens
            if len(tokens) < m and len(cut) < len(answers[i]):
                retry.append(i)  # the prefix was too short to hold m tokens: cut longer next round
                continue
            counts[i] = min(m, len(tokens))
            if align == "word":
                answer = answers[i]
                texts[i] = answer[: _extend_to_word_end(answer, _word_end_offset(enc.offsets, m))]
            else:
                texts[i] = tokenizer.convert_tokens_to_string(tokens[:m])
        pending = retry
        length *= 2
    return texts, counts
