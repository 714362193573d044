"""``lookahead-tuning generate``: answer a prompt file with any ``--model``, resumably."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..chat import TEMPLATES
from ..errors import UserError
from ..io import iter_located_records
from ..models import add_model_arguments, load_model_from_args, load_tokenizer
from .engine import DEFAULT_MAX_BATCH_TOKENS, generate, prefill_text


def _prompt_of(loc, rec: dict):
    """The prompt of one row: HEx-PHI ``instruction`` or TRL prompt-only ``prompt`` (text or messages)."""
    for key in ("instruction", "prompt"):
        value = rec.get(key)
        if isinstance(value, str) and value.strip():
            return value
        if key == "prompt" and isinstance(value, list) and value:
            ok = all(isinstance(m, dict) and isinstance(m.get("role"), str)
                     and isinstance(m.get("content"), str) for m in value)
            if not ok:
                raise loc.error("'prompt' messages must be objects with string 'role' and 'content'")
            if value[-1]["role"] != "user":
                raise loc.error("'prompt' messages must end with a user message")
            return [{"role": m["role"], "content": m["content"]} for m in value]
    found = ", ".join(sorted(rec)) or "none"
    raise loc.error(f"expected a non-empty 'instruction' or 'prompt' (keys found: {found})")


def read_prompts(path: str | os.PathLike) -> list[dict]:
    """Rows ``{"id", "prompt", ...other fields}`` from a prompt file.

    ``.txt``: one prompt per non-empty line. Otherwise any record file :mod:`lookahead_tuning.io` reads
    (JSONL, JSON, CSV, Parquet) with ``instruction`` (HEx-PHI) or ``prompt`` (TRL prompt-only, text or
    messages). The id is the row's ``id`` field, else the 0-based row index as a string.
    """
    p = str(path)
    if p.lower().endswith(".txt"):
        if not os.path.isfile(p):
            raise UserError("no such file", path=p)
        try:
            lines = Path(p).read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as exc:
            raise UserError(f"invalid UTF-8 ({exc.reason}); save the file as UTF-8", path=p) from None
        rows = [{"id": str(i), "prompt": line.strip()} for i, line in enumerate(x for x in lines if x.strip())]
    else:
        rows = []
        for loc, rec in iter_located_records(p):
            prompt = _prompt_of(loc, rec)
            extra = {k: v for k, v in rec.items() if k not in ("id", "prompt", "instruction", "completion")}
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
    generation = {"max_new_tokens": args.max_new_tokens, "sample": args.sample, "temperature": args.temperature,
                  "top_p": args.top_p, "seed": args.seed, "chat_template": args.chat_template,
                  "system_prompt": args.system_prompt, "prefill_tokens": args.prefill_tokens, "backend": args.backend}
    return provenance.make("generate", model=provenance.model_identity(args.model), inputs=inputs,
                           generation=generation)


def run(args: argparse.Namespace) -> int:
    if (args.prefill_file is None) != (args.prefill_tokens is None):
        raise UserError("--prefill-file and --prefill-tokens go together")
    if args.prefill_tokens is not None and args.prefill_tokens < 1:
        raise UserError("--prefill-tokens must be at least 1")
    if not str(args.out).endswith(".jsonl"):
        raise UserError("the output must be a .jsonl file (it is appended to as answers finish)", path=args.out)
    rows = read_prompts(args.prompts)  # validate inputs before the (slow) model load
    from .. import provenance

    sidecar = provenance_file(args.out)
    wanted = generation_provenance(args, rows)
    provenance.check_resume(Path(args.out).parent, wanted, (Path(args.out).name,), overwrite=args.overwrite,
                            name=sidecar.name)
    if args.backend == "vllm":  # vLLM loads the weights itself, from the path or id
        model, tokenizer = args.model, load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    else:
        model, tokenizer = load_model_from_args(args)
    if args.prefill_file:
        attach_prefills(rows, args.prefill_file, args.prefill_tokens, tokenizer)
    provenance.claim(Path(args.out).parent, wanted, (Path(args.out).name,), overwrite=args.overwrite, name=sidecar.name)
    already = 0
    if os.path.exists(args.out):
        from ..io import JsonlLog

        wanted = {r["id"] for r in rows}
        already = len(JsonlLog(args.out).done_ids() & wanted)
    results = generate(
        model, tokenizer, rows, out_path=args.out, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
        top_p=args.top_p, seed=args.seed, template=args.chat_template, system_prompt=args.system_prompt,
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
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-batch-tokens", type=int, default=DEFAULT_MAX_BATCH_TOKENS,
                   help="cap on padded tokens (rows x (prompt + new)) per batch")
    p.add_argument("--prefill-file", help="chat-list JSONL (user, assistant) aligned by row with the prompts")
    p.add_argument("--prefill-tokens", type=int, help="prefill the answer with its first K tokens")
    p.add_argument("--system-prompt", help="system message put before each prompt")
    p.add_argument("--chat-template", choices=TEMPLATES, default="auto",
                   help="auto: the tokenizer's template, else plain (default: auto)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf", help="vllm needs the [vllm] extra and a GPU")
    p.add_argument("--overwrite", action="store_true",
                   help="start OUT afresh even if it holds answers made with other settings (refused otherwise)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)
