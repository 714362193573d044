"""``lookahead-tuning preview INPUT OUTPUT --mode {real,virtual}``: the preview transform on a file.

Rows stream through in chunks (read a chunk, preview it with one batched tokenizer call, write it to a
temporary file), so JSON lines and CSV inputs of any size run in flat memory; the temporary file
replaces OUTPUT only when every row succeeded. The reference script's flag spellings
(``--input_file --output_file --input_format --output_format --input_field --output_field --m --P
--connector --tokenizer_path``) are accepted, so its README commands work unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.formats import FORMATS as DATA_FORMATS
from ..errors import UserError
from ..io import FORMATS as FILE_FORMATS
from ..io import file_format, iter_located_records, refuse_overwrite, write_records
from ..validate import NON_NEGATIVE_INT, text_arg
from .dataset import MODES, PreviewConfig, PreviewStats, preview_rows
from .transform import ALIGNS, DEFAULT_CONNECTOR, DEFAULT_M, DEFAULT_PREFIX

CHUNK_ROWS = 4096


@dataclass
class PreviewSummary:
    """The figures the command prints (also returned to Python callers and the benchmark)."""

    rows: int
    skipped: int
    previews: int
    mean_preview_tokens: float | None
    shorter_than_m: int | None
    mean_added_prompt_tokens: float | None
    seconds: float
    skip_reasons: list[str]

    def lines(self, mode: str, output: str) -> list[str]:
        rate = self.rows / self.seconds if self.seconds > 0 else float("inf")
        def fmt(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.2f}"
        out = [
            f"{mode} preview: {self.rows} rows -> {output} in {self.seconds:.2f} s ({rate:,.0f} rows/s)",
            f"  mean preview tokens: {fmt(self.mean_preview_tokens)}; rows shorter than m: "
            f"{'n/a' if self.shorter_than_m is None else self.shorter_than_m}; "
            f"mean added prompt tokens: {fmt(self.mean_added_prompt_tokens)}; skipped rows: {self.skipped}",
        ]
        out += [f"  skipped: {reason}" for reason in self.skip_reasons]
        return out


def _count_tokens(tokenizer: Any, text: str) -> int | None:
    if tokenizer is None:
        return None
    return len(tokenizer.tokenize(text)) if text else 0


def _chunks(path: str, fmt: str | None, size: int) -> Iterator[tuple[list[dict], list]]:
    rows: list[dict] = []
    locations: list = []
    for loc, row in iter_located_records(path, fmt):
        rows.append(row)
        locations.append(loc)
        if len(rows) >= size:
            yield rows, locations
            rows, locations = [], []
    if rows:
        yield rows, locations


def run_preview(
    input_path: str,
    output_path: str,
    config: PreviewConfig,
    *,
    input_format: str | None = None,
    output_format: str | None = None,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    export: str | None = None,
) -> PreviewSummary:
    """Preview a whole file into ``output_path`` atomically (nothing is written if any row fails).

    An ``output_path`` that is the input (by inode or resolved path: a symlink, a hard link, ``./x``)
    is refused: replacing it would destroy the data. ``export`` (``llama-factory`` | ``axolotl``):
    write the rows in that trainer's format and the file that registers them beside ``output_path``
    (see :mod:`lookahead_tuning.preview.export`).
    """
    from .export import check_export_path, export_rows, write_export_config

    file_format(input_path, input_format)  # fail on an unknown format before any work
    whole = file_format(output_path, output_format, write=True) == "hf"  # a dataset folder replaces OUTPUT whole
    refuse_overwrite([("OUTPUT", output_path)], [("INPUT", input_path)], replaced=[("OUTPUT", output_path)] * whole)
    if export is not None:
        check_export_path(output_path, export)
    stats = PreviewStats()
    start = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(unit=" rows", disable=not progress, delay=1.0, file=sys.stderr, desc=f"{config.mode} preview")

    def rows() -> Iterator[dict]:
        for chunk, locations in _chunks(input_path, input_format, chunk_rows):
            out = preview_rows(chunk, config, locations=locations, stats=stats)
            bar.update(len(chunk))
            if export is not None:
                try:
                    out = list(export_rows(out, export, config, start=stats.rows - len(out) + 1))
                except UserError as exc:  # the row is INPUT's (counted after the preview)
                    if exc.path is not None:
                        raise
                    raise UserError(exc.message, path=input_path) from None
            yield from out

    existed = os.path.lexists(output_path)
    try:
        write_records(output_path, rows(), output_format)
    finally:
        bar.close()
    if export is not None:
        try:
            write_export_config(output_path, export, config.fmt)
        except BaseException:
            if not existed:  # rows nothing registers are not left behind
                Path(output_path).unlink(missing_ok=True)
            raise
    seconds = time.perf_counter() - start

    n = stats.previews
    if config.mode == "real":
        connector_tokens = _count_tokens(config.tokenizer, config.connector)
        mean_preview = stats.preview_tokens / n if n else 0.0
        added = connector_tokens + mean_preview if n else 0.0
        shorter: int | None = stats.shorter_than_m
    else:
        mean_preview, shorter = None, None
        added_count = _count_tokens(config.tokenizer, config.connector + config.prefix)
        added = float(added_count) if added_count is not None else None
    return PreviewSummary(rows=stats.rows, skipped=stats.skipped, previews=n, mean_preview_tokens=mean_preview,
                          shorter_than_m=shorter, mean_added_prompt_tokens=added, seconds=seconds,
                          skip_reasons=stats.skip_reasons)


def _load_tokenizer(name: str, required: bool) -> Any:
    from ..models import load_tokenizer

    try:
        return load_tokenizer(name)
    except (UserError, OSError, ValueError):
        if required:
            raise
        return None  # virtual mode only uses it for the summary's token count


def _local(name: str | None) -> str | None:
    """A ``--tokenizer`` value that is a path on this machine (a file or folder), else ``None``."""
    import os

    return name if name and os.path.exists(os.path.expanduser(name)) else None


def run(args: argparse.Namespace) -> int:
    """Entry point of ``lookahead-tuning preview``."""
    from ..models import EMBEDDED_ALIAS

    input_path = args.input or args.input_file
    output_path = args.output or args.output_file
    if not input_path or not output_path:
        raise UserError("give INPUT and OUTPUT (or --input_file and --output_file)")
    if args.input and args.input_file and args.input != args.input_file:
        raise UserError("INPUT and --input_file disagree; give one of them")
    if args.output and args.output_file and args.output != args.output_file:
        raise UserError("OUTPUT and --output_file disagree; give one of them")
    refuse_overwrite([("OUTPUT", output_path)], [("INPUT", input_path), ("--tokenizer", _local(args.tokenizer))])
    if args.input_field is not None and args.input_field == args.output_field:
        raise UserError(f"--input-field and --output-field are both '{args.input_field}'; the instruction and "
                        "the answer must be two fields")
    tokenizer = _load_tokenizer(args.tokenizer or EMBEDDED_ALIAS, required=args.mode == "real")
    config = PreviewConfig(
        mode=args.mode, tokenizer=tokenizer, m=args.m, prefix=args.prefix, connector=args.connector,
        fmt=args.format, input_field=args.input_field, output_field=args.output_field,
        all_turns=args.all_turns, align=args.align, skip_invalid=args.skip_invalid,
    )
    summary = run_preview(input_path, output_path, config, input_format=args.input_format,
                          output_format=args.output_format, progress=not args.quiet, export=args.export)
    for line in summary.lines(args.mode, output_path):
        print(line)
    if args.export:
        from pathlib import Path

        from .export import CHAT_FORMATS

        if args.export == "axolotl":
            registered = Path(output_path).with_name(Path(output_path).stem + ".axolotl.yaml")
            print(f"  axolotl: chat_template rows; dataset config {registered}")
        else:
            shape = "ShareGPT" if config.fmt in CHAT_FORMATS else "Alpaca"
            print(f"  LLaMA-Factory: {shape} rows; entry '{Path(output_path).stem}' in "
                  f"{Path(output_path).with_name('dataset_info.json')}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``preview`` on the top-level parser (see ``lookahead_tuning.cli``)."""
    p = subparsers.add_parser(
        "preview",
        help="add the LookAhead answer preview to a training set",
        description="Rewrite a training set with the LookAhead preview (real: the first m answer tokens; "
        "virtual: a fixed prefix). Inference prompts are never previewed.",
    )
    p.add_argument("input", nargs="?", metavar="INPUT", help="file (.json .jsonl .csv .parquet) or dataset folder")
    p.add_argument("output", nargs="?", metavar="OUTPUT", help="where to write; replaced atomically")
    p.add_argument("--input_file", "--input-file", dest="input_file", help=argparse.SUPPRESS)
    p.add_argument("--output_file", "--output-file", dest="output_file", help=argparse.SUPPRESS)
    p.add_argument("--mode", required=True, choices=MODES, help="real: preview the first m answer tokens; "
                   "virtual: preview a fixed prefix that is also prepended to the answer")
    p.add_argument("--m", type=NON_NEGATIVE_INT, default=DEFAULT_M, help="answer tokens to preview (real mode; default 6)")
    p.add_argument("--tokenizer", "--tokenizer_path", "--tokenizer-path", dest="tokenizer", default=None,
                   metavar="NAME_OR_PATH",
                   help="the target model's tokenizer: folder, .gguf, hub id or smollm2-135m-instruct (default)")
    p.add_argument("--prefix", "--P", dest="prefix", type=text_arg, default=DEFAULT_PREFIX, metavar="TEXT",
                   help=f"virtual mode's answer prefix (default {DEFAULT_PREFIX!r})")
    p.add_argument("--connector", type=text_arg, default=DEFAULT_CONNECTOR, metavar="TEXT",
                   help=f"text between the instruction and the preview (default {DEFAULT_CONNECTOR!r})")
    p.add_argument("--input-field", "--input_field", dest="input_field", metavar="F",
                   help="field holding the instruction (implies --format fields)")
    p.add_argument("--output-field", "--output_field", dest="output_field", metavar="F",
                   help="field holding the answer (implies --format fields)")
    p.add_argument("--format", default="auto", choices=("auto", *DATA_FORMATS),
                   help="row format (default: detected from the first row)")
    p.add_argument("--input-format", "--input_format", dest="input_format", choices=FILE_FORMATS,
                   help="file format of INPUT (default: from the extension)")
    p.add_argument("--output-format", "--output_format", dest="output_format", choices=FILE_FORMATS,
                   help="file format of OUTPUT (default: from the extension)")
    p.add_argument("--align", default="token", choices=ALIGNS,
                   help="token: exactly m tokens (the paper's); word: extend to the end of the word")
    p.add_argument("--all-turns", action="store_true", help="preview every assistant turn of a chat, not just the last")
    p.add_argument("--skip-invalid", action="store_true",
                   help="drop rows with missing/non-string fields or empty answers (counted) instead of failing")
    p.add_argument("--export", choices=("llama-factory", "axolotl"), default=None,
                   help="write OUTPUT (.json/.jsonl) for another trainer: llama-factory (Alpaca or ShareGPT rows "
                        "+ a dataset_info.json entry) or axolotl (chat_template rows + <name>.axolotl.yaml)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p
