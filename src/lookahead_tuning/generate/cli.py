"""``lookahead-tuning generate``: answer a prompt file with any ``--model``, resumably."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..chat import TEMPLATES
from ..errors import UserError
from ..io import iter_located_records, read_utf8, refuse_overwrite
from ..models import add_model_arguments, load_model_from_args, load_tokenizer
from ..provenance import add_lock_arguments
from ..validate import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, SEED, TEMPERATURE, TOP_P, text_arg
from .engine import BACKENDS, DEFAULT_MAX_BATCH_TOKENS, check_prompts, generate, prefill_text

_ENDPOINT_FLAGS = {"base_url": "--base-url", "served_model": "--served-model"}


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """``--backend`` and the server flags, the same in ``generate``, ``eval safety`` and ``eval utility``."""
    g = p.add_argument_group("generation backend")
    g.add_argument("--backend", choices=BACKENDS, default="hf",
                   help="hf: transformers here (default); vllm: vLLM here (the [vllm] extra); openai: any "
                        "OpenAI-compatible server (vLLM, llama.cpp, a hosted API) via --base-url")
    g.add_argument("--base-url", type=text_arg, default=None, help="openai: the server's base URL, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--served-model", type=text_arg, default=None,
                   help="openai: the model name the server serves (its weights should be --model's: --model "
                        "gives the tokenizer and chat template the prompts are rendered with)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="openai: environment variable holding the API key (unset: none is sent)")
    g.add_argument("--concurrency", type=POSITIVE_INT, default=8, help="openai: requests in flight at once (default 8)")
    g.add_argument("--request-timeout", type=POSITIVE, default=600.0, help="openai: seconds per request (default 600)")
    g.add_argument("--max-retries", type=NON_NEGATIVE_INT, default=4,
                   help="openai: retries of a failed request, with exponential backoff (default 4)")


def _endpoint(args: argparse.Namespace):
    from .openai_backend import OpenAIEndpoint

    return OpenAIEndpoint(args.base_url, args.served_model, api_key_env=args.api_key_env,
                          concurrency=args.concurrency, timeout=args.request_timeout, max_retries=args.max_retries)


def source_from_args(args: argparse.Namespace) -> dict | None:
    """:func:`~.engine.answer_source` of the backend the flags choose, before anything is loaded."""
    from .engine import answer_source

    backend = getattr(args, "backend", "hf")
    return answer_source(backend, _endpoint(args) if backend == "openai" else None)


def load_generator(args: argparse.Namespace):
    """``(model, tokenizer)`` for :func:`generate` as ``--backend`` says: weights loaded here (hf), a
    path for vLLM to load, or an :class:`OpenAIEndpoint` (only the tokenizer is loaded here)."""
    backend = getattr(args, "backend", "hf")
    given = [flag for key, flag in _ENDPOINT_FLAGS.items() if getattr(args, key, None)]
    if backend != "openai" and given:
        raise UserError(f"{given[0]} is for --backend openai (the backend is {backend})")
    trust = getattr(args, "trust_remote_code", False)
    if backend == "openai":
        return _endpoint(args), load_tokenizer(args.model, trust_remote_code=trust)
    if backend == "vllm":  # vLLM loads the weights itself, from the path or id
        return args.model, load_tokenizer(args.model, trust_remote_code=trust)
    return load_model_from_args(args)


def _prompt_of(loc, rec: dict) -> tuple[str, str | list[dict[str, str]]]:
    """The prompt of one row and the key it came from: HEx-PHI ``instruction``, TRL prompt-only
    ``prompt`` (text or messages) or an OpenAI-style ``messages`` request (tool calls and results
    included, as :func:`~lookahead_tuning.data.formats.prompt_chat` renders them)."""
    from ..data.formats import ExampleError, prompt_chat

    for key in ("instruction", "prompt", "messages"):
        value = rec.get(key)
        if key != "messages" and isinstance(value, str) and value.strip():
            return key, value
        if key != "instruction" and isinstance(value, list) and value:
            try:
                return key, prompt_chat(value, key)
            except ExampleError as exc:
                raise loc.error(exc.message) from None
    found = ", ".join(sorted(rec)) or "none"
    raise loc.error(f"expected a non-empty 'instruction' or 'prompt', or chat 'messages' (keys found: {found})")


def read_prompts(path: str | os.PathLike) -> list[dict]:
    """Rows ``{"id", "prompt", ...other fields}`` from a prompt file.

    ``.txt``: one prompt per non-empty line. Otherwise any record file :mod:`lookahead_tuning.io` reads
    (JSONL, JSON, CSV, Parquet) with ``instruction`` (HEx-PHI) or ``prompt`` (TRL prompt-only, text or
    messages). The id is the row's ``id`` field, else the 0-based row index as a string.
    """
    p = str(path)
    if p.lower().endswith(".txt"):
        _, text = read_utf8(p)
        # Lines end at \n (and \r\n) only: str.splitlines would also cut at U+2028 inside a prompt.
        lines = [line.removesuffix("\r") for line in text.split("\n")]
        rows = [{"id": str(i), "prompt": line.strip()} for i, line in enumerate(x for x in lines if x.strip())]
    else:
        rows = []
        for loc, rec in iter_located_records(p):
            source, prompt = _prompt_of(loc, rec)
            extra = {k: v for k, v in rec.items() if k not in ("id", "prompt", "instruction", "completion", source)}
            rows.append({**extra, "id": str(rec.get("id", loc.row - 1)), "prompt": prompt})
    if not rows:
        raise UserError("no prompts in file", path=p)
    seen: set[str] = set()
    for row in rows:
        if row["id"] in seen:
            raise UserError(f"duplicate id '{row['id']}'", path=p)
        seen.add(row["id"])
    return rows


def attach_prefills(rows: list[dict], prefill_path: str, k: int, tokenizer) -> None:
    """Set each row's ``prefill`` to the first ``k`` tokens of the aligned harmful answer (by row)."""
    from ..data.loaders import load_harmful_answers

    chats = load_harmful_answers(prefill_path)
    if len(chats) != len(rows):
        raise UserError(f"has {len(chats)} chat lists but the prompt file has {len(rows)} prompts; "
                        "they are aligned by row", path=prefill_path)
    for row, chat in zip(rows, chats, strict=True):
        answer = next((m["content"] for m in chat if m.get("role") == "assistant"), None)
        if answer is None:
            raise UserError(f"chat list for prompt id '{row['id']}' has no assistant message", path=prefill_path)
        row["prefill"] = prefill_text(tokenizer, answer, k)


def provenance_file(out: str | os.PathLike) -> Path:
    """Where ``generate --out answers.jsonl`` records what produced it: ``answers.provenance.json``."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".provenance.json")


def generation_provenance(args: argparse.Namespace, rows: list[dict]) -> dict:
    """Model identity (from its files), the prompts and prefills, and every setting that decides the answers."""
    from .. import provenance
    from ..models import check_model

    if args.backend == "hf":
        check_model(args.model, allow_pickle=args.allow_pickle)
    inputs = {"prompts": {"path": str(args.prompts), "n": len(rows),
                          "sha256": provenance.records_digest(rows, ("id", "prompt"))}}
    if args.prefill_file:
        inputs["prefills"] = {"path": str(args.prefill_file), "sha256": provenance.file_sha256(args.prefill_file)}
    generation = {"max_new_tokens": args.max_new_tokens, "sample": args.sample,
                  "temperature": 1.0 if args.temperature is None else args.temperature,
                  "top_p": 1.0 if args.top_p is None else args.top_p, "seed": args.seed,
                  "chat_template": args.chat_template, "system_prompt": args.system_prompt,
                  "prefill_tokens": args.prefill_tokens, "backend": args.backend}
    source = source_from_args(args)
    if source:
        generation["source"] = source
    return provenance.make("generate", model=provenance.model_identity(args.model), inputs=inputs,
                           generation=generation)


def run(args: argparse.Namespace) -> int:
    if (args.prefill_file is None) != (args.prefill_tokens is None):
        raise UserError("--prefill-file and --prefill-tokens go together")
    unused = [flag for flag, value in (("--temperature", args.temperature), ("--top-p", args.top_p))
              if value is not None and not args.sample]
    if unused:  # greedy decoding ignores them: say so rather than answer as if they applied
        raise UserError(f"{unused[0]} applies only with --sample (decoding is greedy without it)")
    if not str(args.out).endswith(".jsonl"):
        raise UserError("the output must be a .jsonl file (it is appended to as answers finish)", path=args.out)
    refuse_overwrite([("--out", args.out)], [("--prompts", args.prompts), ("--prefill-file", args.prefill_file)])
    from .. import provenance

    # One process at a time appends to OUT: two would each answer every prompt the other had not yet.
    with provenance.take_output(args.out, "generate", wait=args.wait, folder=False):
        return _answer(args)


def _answer(args: argparse.Namespace) -> int:
    from .. import provenance

    rows = read_prompts(args.prompts)  # validate inputs before the (slow) model load

    sidecar = provenance_file(args.out)
    wanted = generation_provenance(args, rows)
    provenance.check_resume(Path(args.out).parent, wanted, (Path(args.out).name,), overwrite=args.overwrite,
                            name=sidecar.name)
    model, tokenizer = load_generator(args)
    if args.prefill_file:
        attach_prefills(rows, args.prefill_file, args.prefill_tokens, tokenizer)
    check_prompts(tokenizer, rows, system_prompt=args.system_prompt)  # before the provenance file is written
    provenance.claim(Path(args.out).parent, wanted, (Path(args.out).name,), overwrite=args.overwrite, name=sidecar.name)
    already = 0
    if os.path.exists(args.out):
        from ..io import JsonlLog

        wanted = {r["id"] for r in rows}
        already = len(JsonlLog(args.out).done_ids() & wanted)
    results = generate(
        model, tokenizer, rows, out_path=args.out, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, do_sample=args.sample,
        temperature=1.0 if args.temperature is None else args.temperature,
        top_p=1.0 if args.top_p is None else args.top_p, seed=args.seed, template=args.chat_template, system_prompt=args.system_prompt,
        progress=not args.quiet and sys.stderr.isatty(), max_batch_tokens=args.max_batch_tokens,
        backend=args.backend,
    )
    if not args.quiet:
        print(f"{args.out}: {len(results) - already} new answers, {already} already there, {len(results)} total")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="answer a prompt file with a model (batched, resumable)",
        description="Answer every prompt of a file; results are appended to OUT as they finish and a "
        "rerun with the same OUT only answers what is missing.",
    )
    add_model_arguments(p)
    p.add_argument("--prompts", required=True,
                   help="prompt file: JSONL with 'instruction' or 'prompt' (text or messages), or .txt, one per line")
    p.add_argument("--out", required=True, help="output JSONL (resumed if it exists and was made with the same "
                   "model, prompts and settings; OUT's .provenance.json beside it says what made it)")
    p.add_argument("--max-new-tokens", type=POSITIVE_INT, default=64)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16)
    p.add_argument("--max-batch-tokens", type=POSITIVE_INT, default=DEFAULT_MAX_BATCH_TOKENS,
                   help="cap on padded tokens (rows x (prompt + new)) per batch")
    p.add_argument("--prefill-file", help="chat-list JSONL (user, assistant) aligned by row with the prompts")
    p.add_argument("--prefill-tokens", type=POSITIVE_INT, help="prefill the answer with its first K tokens")
    p.add_argument("--system-prompt", type=text_arg, help="system message put before each prompt")
    p.add_argument("--chat-template", choices=TEMPLATES, default="auto",
                   help="auto: the tokenizer's template, else plain (default: auto)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=TEMPERATURE, default=None, help="with --sample (default 1.0)")
    p.add_argument("--top-p", type=TOP_P, default=None, help="with --sample (default 1.0)")
    p.add_argument("--seed", type=SEED, default=0)
    add_backend_arguments(p)
    p.add_argument("--overwrite", action="store_true",
                   help="start OUT afresh even if it holds answers made with other settings (refused otherwise)")
    add_lock_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)
