"""Batched, resumable generation: the one place every evaluation turns prompts into answers.

Prompts are rendered with :func:`lookahead_tuning.chat.render_prompt` (the same function training
uses), sorted by token length so a batch holds prompts of similar length, left-padded so every row's
next token sits in the last column, and decoded greedily by default. Each finished batch is appended
to a :class:`~lookahead_tuning.io.JsonlLog` keyed by id, so a killed run resumes where it stopped with
no duplicate and no lost record.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..chat import (
    Messages,
    control_token_in,
    control_token_message,
    encode_text,
    refuse_control_tokens,
    render_prompt,
    stop_token_ids,
)
from ..errors import UserError, describe
from ..io import JsonlLog

# hf: transformers in this process; vllm: vLLM in this process; openai: any OpenAI-compatible server
# (generate/openai_backend.py), with ``model`` an OpenAIEndpoint.
BACKENDS = ("hf", "vllm", "openai")
# Upper bound on padded tokens (prompt + new) per batch: keeps the KV cache of a batch of long
# prompts within a few GB for a small model while leaving short-prompt batches at full size.
DEFAULT_MAX_BATCH_TOKENS = 32768


def prefill_text(tokenizer, answer: str, k: int) -> str:
    """The first ``k`` tokens of ``answer`` as text: the assistant-turn prefill of a prefilling attack.

    Counted in the model's own tokens (``tokenize`` then ``convert_tokens_to_string``), the same unit
    as the real preview, so "k = 3" means the same amount of answer for every model.
    """
    if k <= 0:
        return ""
    return tokenizer.convert_tokens_to_string(tokenizer.tokenize(answer)[:k])


def _check_items(items: Sequence[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for i, item in enumerate(items):
        if "id" not in item or "prompt" not in item:
            raise UserError(f"generation item {i} needs 'id' and 'prompt' (keys found: {', '.join(sorted(item))})")
        item = dict(item)
        item["id"] = str(item["id"])
        if item["id"] in seen:
            raise UserError(f"duplicate id '{item['id']}' in generation items")
        seen.add(item["id"])
        out.append(item)
    return out


def check_prompts(tokenizer, items: Iterable[dict], *, system_prompt: str | None = None) -> None:
    """Refuse, by id and before anything is written, a prompt or prefill (or the system prompt) that holds a
    special token of ``tokenizer`` as text (docs/preview.md, "Control tokens in data")."""
    token = control_token_in(tokenizer, system_prompt) if system_prompt else None
    if token:
        raise UserError(control_token_message(token, "the system prompt"))
    for item in items:
        refuse_control_tokens(tokenizer, item["prompt"], item.get("prefill") or None,
                              where=f"prompt id {describe(str(item['id']))}: ")


def plan_batches(lengths: Sequence[int], batch_size: int, max_new_tokens: int,
                 max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS) -> list[list[int]]:
    """Group item indices into batches of similar prompt length, longest first.

    Longest first makes an out-of-memory batch fail at once rather than at the end of a long run. A
    batch closes at ``batch_size`` rows or when its padded size (rows x (longest prompt + new tokens))
    would exceed ``max_batch_tokens``; a single row always fits.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = (lengths[current[0]] if current else lengths[i]) + max_new_tokens
        too_big = max_batch_tokens is not None and (len(current) + 1) * width > max_batch_tokens
        if current and (len(current) >= batch_size or too_big):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _batch_seed(seed: int, ids: Iterable[str]) -> int:
    # Seeded by the batch's ids, not its position: a resumed run samples the same answers.
    return (seed * 1_000_003 + zlib.crc32("\x1f".join(ids).encode())) % (2**31)


def _completion_text(tokenizer, prompt_ids: list[int], new_ids: list[int]) -> str:
    """Decode only the new tokens, with the spacing they have after the prompt.

    SentencePiece drops a word's leading space when the word is decoded alone, so decode prompt and
    prompt+answer and take the difference; fall back to the bare answer if the prompt text shifts.
    """
    tail = prompt_ids[-16:]  # enough context for the join; decoding the whole prompt is wasted work
    before = tokenizer.decode(tail, skip_special_tokens=True)
    both = tokenizer.decode(tail + new_ids, skip_special_tokens=True)
    if both.startswith(before):
        return both[len(before):]
    return tokenizer.decode(new_ids, skip_special_tokens=True)


def _generate_batch(model, prompts: list[list[int]], *, pad_id: int, stop_ids: list[int],
                    max_new_tokens: int, do_sample: bool, temperature: float, top_p: float,
                    seed: int) -> list[tuple[list[int], str]]:
    """Generate for one batch of token-id prompts; returns (new ids up to the stop, finish reason)."""
    import torch
    from transformers import GenerationConfig

    width = max(len(p) for p in prompts)
    device = next(model.parameters()).device
    # Left padding: every prompt ends in the last column, so position -1 is each row's next token.
    input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    options: dict[str, Any] = {"do_sample": do_sample}
    if do_sample:
        options.update(temperature=temperature, top_p=top_p, top_k=0)
        torch.manual_seed(seed)
    config = GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=stop_ids, pad_token_id=pad_id,
                              **options)
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    results = []
    for row in out[:, width:].tolist():
        cut = next((j for j, t in enumerate(row) if t in stop_ids), None)
        results.append((row if cut is None else row[:cut], "length" if cut is None else "stop"))
    return results


def _generate_hf(model, tokenizer, batches: list[list[dict]], encoded: dict[str, list[int]], *,
                 write: Callable[[dict], None], progress: bool, texts: dict[str, str], **options: Any) -> None:
    import torch
    from tqdm.auto import tqdm

    stop_ids = stop_token_ids(tokenizer, options.pop("template"))
    extra_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for t in extra_eos if isinstance(extra_eos, list) else [extra_eos]:
        if t is not None and t not in stop_ids:
            stop_ids.append(t)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    seed = options.pop("seed")
    was_training = model.training
    model.eval()
    n_tokens, start = 0, time.perf_counter()
    bar = tqdm(total=sum(len(b) for b in batches), unit="prompt", desc="generate", disable=not progress)
    try:
        with torch.inference_mode():
            for batch in batches:
                ids = [item["id"] for item in batch]
                outputs = _generate_batch(model, [encoded[i] for i in ids], pad_id=pad_id, stop_ids=stop_ids,
                                          seed=_batch_seed(seed, ids), **options)
                for item, (new_ids, reason) in zip(batch, outputs, strict=True):
                    text = _completion_text(tokenizer, encoded[item["id"]], new_ids)
                    write({**item, "completion": text, "finish_reason": reason, "completion_tokens": len(new_ids)})
                    n_tokens += len(new_ids)
                bar.update(len(batch))
                bar.set_postfix(tok_s=f"{n_tokens / max(time.perf_counter() - start, 1e-9):.1f}")
    finally:
        bar.close()
        if was_training:
            model.train()


def _generate_vllm(model, tokenizer, batches: list[list[dict]], encoded: dict[str, list[int]], *,
                   write: Callable[[dict], None], progress: bool, texts: dict[str, str], **options: Any) -> None:
    """The same contract on vLLM (GPU): ``model`` is a model path/id or a ``vllm.LLM``."""
    try:
        import vllm
    except ImportError:
        raise UserError("backend 'vllm' needs vLLM and a GPU; install with: pip install 'lookahead-tuning[vllm]'") from None
    llm = model if isinstance(model, vllm.LLM) else vllm.LLM(model=str(model), seed=options["seed"])
    stop_ids = stop_token_ids(tokenizer, options["template"])
    params = vllm.SamplingParams(
        max_tokens=options["max_new_tokens"], stop_token_ids=stop_ids, seed=options["seed"],
        temperature=options["temperature"] if options["do_sample"] else 0.0,
        top_p=options["top_p"] if options["do_sample"] else 1.0,
    )
    for batch in batches:  # vLLM batches internally; our batches only set how often the log is written
        prompts = [{"prompt_token_ids": encoded[item["id"]]} for item in batch]
        for item, out in zip(batch, llm.generate(prompts, params, use_tqdm=progress), strict=True):
            new_ids = [t for t in out.outputs[0].token_ids if t not in stop_ids]
            reason = "length" if out.outputs[0].finish_reason == "length" else "stop"
            write({**item, "completion": _completion_text(tokenizer, encoded[item["id"]], new_ids),
                   "finish_reason": reason, "completion_tokens": len(new_ids)})


def answer_source(backend: str = "hf", model=None) -> dict[str, Any] | None:
    """Where the answers come from when it is not the ``--model`` weights themselves: for the ``openai``
    backend the server (public URL, served model), which provenance records so that answers a folder
    holds from one server are never resumed as another's. ``None`` for ``hf`` and ``vllm`` (both load
    ``--model``, which the model identity already names)."""
    if backend != "openai":
        return None
    from ..endpoint import public_url

    if getattr(model, "serves_own_weights", False):
        return {"backend": "openai", "served": "the model's own weights, by a server started for this run"}
    return {"backend": "openai", "base_url": public_url(model.base_url), "served_model": model.served_model}


def generation_settings(model=None, *, backend: str = "hf", max_new_tokens: int = 64, do_sample: bool = False,
                        temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, template: str = "auto",
                        system_prompt: str | None = None) -> dict[str, Any]:
    """The settings that decide what :func:`generate` answers, as one dict for ``metrics.json``.

    Takes :func:`generate`'s own arguments; for the ``openai`` backend it adds the endpoint's
    :meth:`~.openai_backend.OpenAIEndpoint.settings` (public URL, served model, concurrency), for
    ``vllm`` the model it loads. Sampling keys appear only when sampling.
    """
    settings: dict[str, Any] = {"backend": backend, "decoding": "sampling" if do_sample else "greedy",
                                "max_new_tokens": max_new_tokens, "chat_template": template,
                                "system_prompt": system_prompt}
    if do_sample:
        settings.update(temperature=temperature, top_p=top_p, seed=seed)
    if backend == "openai" and hasattr(model, "settings"):
        settings["endpoint"] = model.settings()
    elif backend == "vllm" and isinstance(model, (str, os.PathLike)):
        settings["vllm_model"] = str(model)
    return settings


def generate(
    model,
    tokenizer,
    items: Sequence[dict],
    *,
    out_path: str | os.PathLike | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    template: str = "auto",
    system_prompt: str | None = None,
    progress: bool = True,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    backend: str = "hf",
) -> list[dict]:
    """Answer every item; return the items plus ``completion`` (and ``finish_reason``,
    ``completion_tokens``), in input order.

    ``items`` are ``{"id", "prompt", "prefill"?, ...}``: ``prompt`` is text or messages, ``prefill``
    starts the assistant's answer (prefilling attack) and is *not* part of ``completion``. Greedy
    decoding unless ``do_sample``; sampling is seeded per batch from ``seed`` and the batch's ids.

    With ``out_path`` each result is appended to that JSONL log as its batch finishes, and items whose
    id is already there are not generated again (their logged result is returned), so rerunning an
    interrupted call finishes the job with no duplicate.

    ``backend``: ``hf`` (``model`` is a transformers model), ``vllm`` (a model path/id or a ``vllm.LLM``)
    or ``openai`` (an :class:`~.openai_backend.OpenAIEndpoint`: any OpenAI-compatible server, sent the
    prompt text rendered here). :func:`generation_settings` describes a call's settings.
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown generation backend '{backend}'; expected one of {', '.join(BACKENDS)}")
    if batch_size < 1 or max_new_tokens < 1:
        raise UserError("batch size and max new tokens must be at least 1")
    if do_sample:  # transformers raises a multi-line ValueError on temperature 0 deep inside generate()
        from ..validate import TEMPERATURE, TOP_P

        TEMPERATURE.check(temperature, "temperature")
        TOP_P.check(top_p, "top_p")
    items = _check_items(items)
    check_prompts(tokenizer, items, system_prompt=system_prompt)
    log = JsonlLog(out_path) if out_path is not None else None
    done: dict[str, dict] = {}
    if log is not None:
        wanted = {item["id"] for item in items}
        done = {str(r["id"]): r for r in log.records() if str(r["id"]) in wanted}
    pending = [item for item in items if item["id"] not in done]

    encoded: dict[str, list[int]] = {}
    texts: dict[str, str] = {}  # the rendered prompts: what a server is sent (openai backend)
    for item in pending:
        prompt: str | Messages = item["prompt"]
        texts[item["id"]] = render_prompt(tokenizer, prompt, system_prompt=system_prompt,
                                          prefill=item.get("prefill") or None, template=template)
        encoded[item["id"]] = encode_text(tokenizer, texts[item["id"]])
    order = plan_batches([len(encoded[item["id"]]) for item in pending], batch_size, max_new_tokens,
                         max_batch_tokens)
    batches = [[pending[i] for i in batch] for batch in order]

    results = dict(done)

    def write(record: dict) -> None:
        if log is not None:
            log.append(record)
        results[record["id"]] = record

    if backend == "openai":
        from .openai_backend import generate_openai as run
    else:
        run = _generate_vllm if backend == "vllm" else _generate_hf
    try:
        if batches:
            run(model, tokenizer, batches, encoded, write=write, progress=progress, texts=texts,
                max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p,
                seed=seed, template=template)
    finally:
        if log is not None:
            log.close()
    return [results[item["id"]] for item in items]
