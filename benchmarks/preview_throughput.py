"""Throughput and peak memory of ``lookahead-tuning preview`` on GSM8K repeated to ~1M rows.

Usage (from the repository root)::

    nice -n 10 python benchmarks/preview_throughput.py [--rows 1000000] [--modes real virtual]

It writes a JSON-lines input of ``--rows`` rows (GSM8K train cycled) to a temporary folder, then runs
each mode in a fresh subprocess through the same function the CLI uses (``run_preview``: stream,
batched preview, atomic write), and reports rows/s over that call (reading, transforming and writing;
interpreter start-up and tokenizer loading excluded) and the subprocess's peak RSS
(``resource.getrusage``), which includes the interpreter, torch/transformers imports and the tokenizer.
On a shared machine wall-clock rows/s falls with the load, so it also reports the CPU seconds the
call used (user + system; the Rust tokenizer may use both cores) and the 1-minute load average.
Targets on the 2-core dev machine: virtual >= 100k rows/s, real >= 20k rows/s, peak RSS < 500 MB.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


def make_input(source: Path, rows: int, out: Path) -> None:
    lines = [line.rstrip("\n") for line in source.open(encoding="utf-8") if line.strip()]
    with out.open("w", encoding="utf-8") as fh:
        for line in itertools.islice(itertools.cycle(lines), rows):
            fh.write(line + "\n")


def worker(mode: str, src: str, dst: str, tokenizer: str, m: int) -> None:
    from lookahead_tuning.models import load_tokenizer
    from lookahead_tuning.preview.cli import run_preview
    from lookahead_tuning.preview.dataset import PreviewConfig

    config = PreviewConfig(mode=mode, tokenizer=load_tokenizer(tokenizer), m=m)
    before = resource.getrusage(resource.RUSAGE_SELF)
    summary = run_preview(src, dst, config, progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"mode": mode, "rows": summary.rows, "seconds": round(summary.seconds, 3),
                      "rows_per_s": round(summary.rows / summary.seconds),
                      "cpu_seconds": round(cpu, 3), "rows_per_cpu_s": round(summary.rows / cpu),
                      "load_avg_1m": round(os.getloadavg()[0], 2), "peak_rss_mb": round(peak_mb, 1)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--modes", nargs="+", default=["virtual", "real"], choices=["virtual", "real"])
    parser.add_argument("--data", type=Path, default=GSM8K, help="a JSON-lines source (default: GSM8K train)")
    parser.add_argument("--tokenizer", default="smollm2-135m-instruct")
    parser.add_argument("--m", type=int, default=6)
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.tokenizer, args.m)
        return 0
    if not args.data.is_file():
        print(f"error: {args.data} is absent (the shared GSM8K data)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="preview-bench-") as tmp:
        src = Path(tmp) / "input.jsonl"
        make_input(args.data, args.rows, src)
        print(f"input: {args.rows} rows of {args.data.name} ({src.stat().st_size / 1e6:.0f} MB)")
        for mode in args.modes:
            dst = Path(tmp) / f"out-{mode}.jsonl"
            cmd = [sys.executable, __file__, "--worker", mode, str(src), str(dst),
                   "--tokenizer", args.tokenizer, "--m", str(args.m)]
            result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return result.returncode
            print(result.stdout.strip().splitlines()[-1])
            dst.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
