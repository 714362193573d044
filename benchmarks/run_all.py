"""Run the benchmark suite and write ``benchmarks/RESULTS.md``.

    nice -n 10 python benchmarks/run_all.py                 # the full suite (about 20 minutes on 2 cores)
    python benchmarks/run_all.py --quick                    # tiny sizes and a tiny model: a smoke test
    python benchmarks/run_all.py --only preview_throughput --repeats 5

Each benchmark script in this folder (whichever of ``preview_throughput.py``, ``generation_speed.py``,
``train_cost.py`` and ``eval_time.py`` exist) runs ``--repeats`` times in a fresh process; every JSON
object it prints is collected, and each numeric figure is reported as the median over the runs with its
range. Ratios (batched vs one-at-a-time generation, each method vs vanilla, real vs virtual preview) are
computed *within* one run, where both sides saw the same machine load, and then the median is taken.
The machine is described (CPU model, cores, RAM, library versions, git commit) together with the load
average before and after each benchmark, because a loaded shared machine moves wall-clock figures.

``--quick`` uses small sizes and a 2-layer model built on the fly (the embedded tokenizer's vocabulary),
so its figures only show the suite works; it writes ``benchmarks/RESULTS-quick.md`` unless ``--out``
says otherwise. Only the full run writes ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Bench:
    """One benchmark script: its arguments for the full and the quick suite, and the ratios to derive."""

    name: str
    full: list[str]
    quick: list[str]
    # Ratios computed inside one run, from that run's printed objects: name -> function(objects) -> value.
    ratios: dict[str, Callable[[list[dict]], float | None]] = field(default_factory=dict)
    # The script repeats and takes medians itself (interleaving methods); run it once.
    repeats_inside: bool = False
    needs: list[str] = field(default_factory=list)  # files the full run needs (skipped with a note if absent)

    @property
    def script(self) -> Path:
        return HERE / f"{self.name}.py"


def _by_mode(objects: list[dict], mode: str, key: str) -> float | None:
    for obj in objects:
        if obj.get("mode") == mode and isinstance(obj.get(key), (int, float)):
            return float(obj[key])
    return None


def _preview_ratio(objects: list[dict]) -> float | None:
    real, virtual = _by_mode(objects, "real", "rows_per_s"), _by_mode(objects, "virtual", "rows_per_s")
    return round(virtual / real, 3) if real and virtual else None


def _first(objects: list[dict], key: str) -> float | None:
    for obj in objects:
        value = obj.get(key)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def suite(quick: bool, tiny_model: str | None, quick_data: str | None) -> list[Bench]:
    """The benchmarks, with the sizes of the full and the quick run."""
    model = ["--model", tiny_model] if tiny_model else []
    return [
        Bench("preview_throughput", ["--rows", "200000"],
              ["--rows", "2000", *(["--data", quick_data] if quick_data else [])],
              ratios={"virtual_over_real_rows_per_s": _preview_ratio},
              needs=[str(ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl")]),
        Bench("generation_speed", ["--prompts", "16"], ["--prompts", "4", "--max-new-tokens", "4", "--batch-size", "4", *model],
              ratios={"batched_over_single_speedup": lambda objs: _first(objs, "speedup")}),
        Bench("train_cost", ["--repeats", "3", "--steps", "4"],
              ["--rows", "8", "--steps", "1", "--batch-size", "4", "--repeats", "1",
               "--methods", "vanilla,lookahead-real,lookahead-virtual", *model],
              repeats_inside=True),
        Bench("eval_time", ["--batch-size", "64", "--max-new-tokens", "48"], ["--limit", "2", "--max-new-tokens", "2", "--batch-size", "2", *model]),
    ]


# --------------------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    """What the figures ran on."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "logical_cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    info["ram_gb"] = round(int(line.split()[1]) / 2**20, 1)
                    break
    except OSError:
        info.setdefault("cpu", platform.processor() or platform.machine())
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    for package in ("torch", "transformers", "tokenizers", "lookahead_tuning"):
        try:
            from importlib.metadata import version

            info[package] = version(package.replace("_", "-"))
        except Exception:  # noqa: BLE001 - a missing package is reported as such
            info[package] = "not installed"
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    if commit.returncode == 0:
        info["git_commit"] = commit.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    return info


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# --------------------------------------------------------------------------- running and summarising


def json_objects(text: str) -> list[dict]:
    """Every top-level JSON object printed in ``text`` (one-line or indented), in order."""
    decoder = json.JSONDecoder()
    objects: list[dict] = []
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    skip_until = 0
    for start, line in zip(offsets, lines, strict=False):
        if start < skip_until or not line.startswith("{"):
            continue
        try:
            obj, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            objects.append(obj)
            skip_until = end
    return objects


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are kept as values."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def label(obj: dict, index: int) -> str:
    """A stable name for the i-th object a script prints (its ``mode`` when it has one)."""
    return str(obj.get("mode", index))


def summarise(runs: list[list[dict]]) -> dict[str, dict[str, Any]]:
    """Per printed object and figure: the median over runs and every run's value.

    Numbers (not booleans) get a median; anything else keeps the first run's value.
    """
    table: dict[str, dict[str, Any]] = {}
    for objects in runs:
        for i, obj in enumerate(objects):
            for key, value in flatten(obj).items():
                table.setdefault(f"{label(obj, i)}:{key}", {"values": []})["values"].append(value)
    for entry in table.values():
        values = entry["values"]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(values):
            entry["median"] = statistics.median(numbers)
        else:
            entry["median"] = values[0]
    return table


def run_bench(bench: Bench, args: list[str], repeats: int, timeout: float | None) -> dict[str, Any]:
    """Run one script ``repeats`` times; collect its JSON output, ratios and the load around it."""
    command = [sys.executable, str(bench.script.relative_to(ROOT)), *args]
    shown = "python " + " ".join(shlex.quote(a) for a in command[1:])
    record: dict[str, Any] = {"command": shown, "runs": [], "ratios": {}, "load_before": load_average(),
                              "seconds": [], "errors": []}
    times = 1 if bench.repeats_inside else repeats
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    for i in range(times):
        print(f"[{bench.name}] run {i + 1}/{times}: {shown}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            record["errors"].append(f"run {i + 1}: timed out after {timeout} s")
            continue
        record["seconds"].append(round(time.perf_counter() - started, 1))
        if proc.returncode != 0:
            record["errors"].append(f"run {i + 1}: exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
            continue
        objects = json_objects(proc.stdout)
        if not objects:
            record["errors"].append(f"run {i + 1}: printed no JSON figures")
            continue
        record["runs"].append(objects)
        for name, fn in bench.ratios.items():
            value = fn(objects)
            if value is not None:
                record["ratios"].setdefault(name, []).append(value)
    record["load_after"] = load_average()
    record["summary"] = summarise(record["runs"])
    return record


# --------------------------------------------------------------------------- the report


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, (list, dict)):
        return "`" + json.dumps(value)[:80] + "`"
    return str(value)


def render(results: dict[str, Any]) -> str:
    """RESULTS.md: the machine, then per benchmark its command, ratios and median figures."""
    info = results["machine"]
    kind = ("quick smoke run: tiny sizes and a tiny model, not figures to quote" if results["quick"]
            else "full suite")
    lines = [
        "# Benchmark results",
        "",
        f"Produced by `{results['command']}` on {results['date']} ({kind}).",
        f"Every figure is the median of {results['repeats']} runs in fresh processes (range in brackets); "
        "ratios are computed within each run, then their median is taken. `train_cost` repeats and "
        "interleaves the methods itself, so it runs once.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in info.items()]
    lines += [f"| load average (1, 5, 15 min) before / after the suite | {results['load_before']} / "
              f"{results['load_after']} |", ""]
    for name, rec in results["benchmarks"].items():
        lines += [f"## {name}", ""]
        if rec.get("skipped"):
            lines += [f"Skipped: {rec['skipped']}", ""]
            continue
        lines += [f"Command (from the repository root): `{rec['command']}`", "",
                  f"Load average before / after: {rec['load_before']} / {rec['load_after']}; "
                  f"wall seconds per run: {rec['seconds']}", ""]
        for error in rec["errors"]:
            lines += [f"- **failed**: {error}"]
        if rec["errors"]:
            lines.append("")
        if rec["ratios"]:
            lines += ["| ratio (within one run) | median | per run |", "|---|---|---|"]
            for ratio, values in rec["ratios"].items():
                lines.append(f"| {ratio} | {_fmt(statistics.median(values))} | {_fmt(values)} |")
            lines.append("")
        if rec["summary"]:
            lines += ["| figure | median | range |", "|---|---|---|"]
            for key, entry in rec["summary"].items():
                values = entry["values"]
                numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
                spread = f"{_fmt(min(numbers))} - {_fmt(max(numbers))}" if len(numbers) > 1 else ""
                lines.append(f"| {key} | {_fmt(entry['median'])} | {spread} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def make_tiny_model(folder: Path) -> str:
    """A 2-layer Llama with the embedded tokenizer (the test suite's fixture), for --quick."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lookahead_tuning.models import EMBEDDED_ALIAS, load_tokenizer

    tokenizer = load_tokenizer(EMBEDDED_ALIAS)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def make_quick_data(path: Path) -> str:
    """GSM8K-format rows from the built-in generator, for the preview benchmark without the shared data."""
    from lookahead_tuning.data.mathgen import generate_problems

    path.write_text("".join(json.dumps(r) + "\n" for r in generate_problems(200, seed=0)), encoding="utf-8")
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and a tiny model: a smoke test")
    parser.add_argument("--repeats", type=int, default=None, help="runs per benchmark (default 3; --quick 2)")
    parser.add_argument("--only", nargs="+", default=None, help="run only these benchmarks (script names)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the report (default benchmarks/RESULTS.md; --quick: benchmarks/RESULTS-quick.md)")
    parser.add_argument("--json", type=Path, default=None, help="also write every raw figure as JSON here")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark run (default: none)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)
    out = args.out or HERE / ("RESULTS-quick.md" if args.quick else "RESULTS.md")

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        tiny = make_tiny_model(Path(tmp) / "tiny") if args.quick else None
        data = make_quick_data(Path(tmp) / "math.jsonl") if args.quick else None
        benches = [b for b in suite(args.quick, tiny, data) if b.script.is_file()]
        if args.only:
            unknown = set(args.only) - {b.name for b in benches}
            if unknown:
                parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
            benches = [b for b in benches if b.name in args.only]
        results: dict[str, Any] = {
            "command": "python benchmarks/run_all.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "quick": args.quick, "repeats": repeats,
            "machine": machine(), "load_before": load_average(), "benchmarks": {},
        }
        for bench in benches:
            missing = [n for n in bench.needs if not args.quick and not Path(n).exists()]
            if missing:
                results["benchmarks"][bench.name] = {"skipped": f"needs {', '.join(missing)}"}
                continue
            results["benchmarks"][bench.name] = run_bench(bench, bench.quick if args.quick else bench.full, repeats,
                                                          args.timeout)
        results["load_after"] = load_average()
        if args.quick:  # the temporary folder's name means nothing to a reader
            text = json.dumps(results).replace(str(tiny), "TINY_MODEL").replace(str(data), "MATH_JSONL")
            results = json.loads(text)

    from lookahead_tuning.io import atomic_write_json, atomic_write_text

    atomic_write_text(out, render(results))
    if args.json:
        atomic_write_json(args.json, results)
    failed = [n for n, r in results["benchmarks"].items() if r.get("errors") and not r.get("runs")]
    print(f"wrote {out}" + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
