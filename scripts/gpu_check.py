"""The GPU check, prepared for whenever a CUDA machine is available (at most ~8 minutes there).

    python scripts/gpu_check.py --out gpu_check.json            # on a machine with a GPU
    python scripts/gpu_check.py --out cpu_part.json --cpu-only  # the parts a CPU can check

What it runs, each part timed and recorded as a check (``ok``, ``failed`` or ``skipped`` with the
reason) in one JSON file:

1. ``cpu_reference``: a few training steps of the embedded model on the CPU in fp32 (full fine-tuning
   and LoRA), in subprocesses with no GPU visible — the losses the GPU runs are held to;
2. ``cuda_bf16_full`` / ``cuda_bf16_lora``: the same steps on the GPU with bf16 autocast; each step's
   loss must match the CPU's within bf16 tolerance (relative 2% at the first step, where the weights are
   still identical, and 5% after, where bf16 rounding in the updates has had a few steps to add up);
3. ``deepspeed_zero2``: the full run again through ``accelerate launch`` with
   ``configs/accelerate/deepspeed_zero2.yaml`` on one process, held to the same tolerance;
4. ``vllm_inprocess``: the in-process vLLM backend on the GPU against our engine on the same prompts
   (greedy answers compared, tokens/s of both);
5. ``guard_judge``: Llama-Guard-style judging on the GPU (``--guard-model PATH``, e.g. a local copy of
   Llama Guard 3 1B; skipped when the weights are not there): the built-in harmful prompts with, for each,
   a refusal and the built-in harmful answer, judged by ``judge/guard.py`` twice — parse rate, the share of
   refusals judged safe and of harmful answers judged unsafe, seconds per pair, and the second pass served
   from the verdict cache.

A part whose package is missing (DeepSpeed, vLLM) is ``skipped`` with that reason, never passed. The
exit code is 0 when no check failed. ``--model`` defaults to the embedded model; where it cannot be
installed (a machine whose file transfer is too small for its 98 MB GGUF), ``--model`` may name a folder
made by ``--prepare DIR``: the embedded model's config and tokenizer, weights drawn from seed 0 on
load — the same architecture, tokenizer and arithmetic, which is what these checks compare.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4
FIRST_STEP_RTOL = 0.02
LATER_STEP_RTOL = 0.05
RANDOM_INIT_MARKER = "lookahead_random_init.json"


def compare_losses(reference: list[float], other: list[float], *, first: float = FIRST_STEP_RTOL,
                   later: float = LATER_STEP_RTOL) -> dict[str, Any]:
    """Per-step relative differences of ``other`` against ``reference`` and whether all are in tolerance."""
    if not reference or len(reference) != len(other):
        return {"ok": False, "reason": f"{len(other)} losses against {len(reference)} reference losses"}
    rel = [abs(b - a) / max(abs(a), 1e-8) for a, b in zip(reference, other, strict=True)]
    tolerances = [first] + [later] * (len(rel) - 1)
    return {"ok": all(r <= t for r, t in zip(rel, tolerances, strict=True)), "relative_difference": [round(r, 5) for r in rel],
            "tolerance": tolerances, "reference": reference, "losses": other}


def train_config(model: str, out: Path, *, lora: bool, bf16: str) -> dict[str, Any]:
    """A short, deterministic run: 4 steps of 4 built-in math problems, no warm-up, no shuffling effects."""
    return {"model": model, "data": "math", "limit": 16, "out": str(out), "method": "vanilla", "max_steps": STEPS,
            "batch_size": 4, "lr": 1e-4 if lora else 1e-5, "warmup_ratio": 0.0, "max_length": 256, "seed": 0,
            "lora": lora, "bf16": bf16, "log_every": 1, "quiet": True, "save_total_limit": 1}


def losses_of(run_dir: Path) -> list[float]:
    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["loss"] for line in path.read_text().splitlines() if line.strip()]


def run_training(values: dict[str, Any], *, env: dict[str, str], launcher: list[str] | None = None,
                 timeout: float = 300) -> dict[str, Any]:
    """Train in a subprocess (``python -m lookahead_tuning train`` or through ``launcher``)."""
    import yaml

    out = Path(values["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    config = out.parent / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump(values, sort_keys=False))
    command = [*(launcher or [sys.executable]), "-m", "lookahead_tuning", "train", "--config", str(config)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **env},
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "reason": f"timed out after {timeout:.0f} s", "command": " ".join(command)}
    seconds = round(time.perf_counter() - started, 1)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [""])[-1][:300]
        return {"ok": False, "reason": f"exit {done.returncode}: {tail}", "seconds": seconds, "command": " ".join(command)}
    summary = json.loads((out / "summary.json").read_text())
    return {"ok": True, "seconds": seconds, "losses": losses_of(out), "bf16": summary.get("bf16"),
            "processes": summary.get("processes"), "peak_cuda_mb": summary.get("peak_cuda_mb"),
            "command": " ".join(command)}


def skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason}


def checked(part: dict[str, Any], reference: list[float] | None) -> dict[str, Any]:
    if not part.get("ok"):
        return {"status": "failed", **part}
    if reference is None:
        return {"status": "ok", **part}
    comparison = compare_losses(reference, part["losses"])
    return {"status": "ok" if comparison["ok"] else "failed", **part, "comparison": comparison}


def vllm_part(model: str, n: int = 16, max_new_tokens: int = 48) -> dict[str, Any]:
    """In-process vLLM on the GPU against our engine on the GPU (both fp32, greedy)."""
    try:
        import vllm
    except ImportError as exc:
        return skipped(f"vllm is not installed ({exc})")
    import torch

    from lookahead_tuning.data.builtin import harmful_eval_set
    from lookahead_tuning.generate.engine import generate
    from lookahead_tuning.models import load_model, resolve_model

    items = [{"id": r["id"], "prompt": r["instruction"]} for r in harmful_eval_set()[:n]]
    local, tok = load_model(model, device="cuda", dtype=torch.float32)
    started = time.perf_counter()
    ours = generate(local, tok, items, batch_size=n, max_new_tokens=max_new_tokens, progress=False)
    ours_s = time.perf_counter() - started
    del local
    torch.cuda.empty_cache()
    started = time.perf_counter()
    llm = vllm.LLM(model=resolve_model(model).path, dtype="float32", seed=0, gpu_memory_utilization=0.3,
                   max_model_len=2048)
    startup = time.perf_counter() - started
    started = time.perf_counter()
    theirs = generate(llm, tok, items, batch_size=n, max_new_tokens=max_new_tokens, progress=False, backend="vllm")
    theirs_s = time.perf_counter() - started
    same = sum(a["completion"] == b["completion"] for a, b in zip(ours, theirs, strict=True))
    tokens = (sum(r["completion_tokens"] for r in ours), sum(r["completion_tokens"] for r in theirs))
    return {"status": "ok" if len(theirs) == n else "failed", "prompts": n, "identical": same,
            "ours_tokens_per_s": round(tokens[0] / ours_s, 1), "vllm_tokens_per_s": round(tokens[1] / theirs_s, 1),
            "vllm_startup_seconds": round(startup, 1)}


def prepare(folder: Path) -> None:
    """Write the embedded model's config and tokenizer (no weights) for a machine that cannot hold it."""
    from lookahead_tuning.models import embedded_model_dir

    source = embedded_model_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja"):
        if (source / name).is_file():
            (folder / name).write_bytes((source / name).read_bytes())
    (folder / RANDOM_INIT_MARKER).write_text(json.dumps({"seed": 0, "from": "smollm2-135m-instruct config"}))
    print(f"{folder}: config and tokenizer of the embedded model; run with --model {folder}")


def materialise(model: str, work: Path) -> str:
    """A prepared folder (config + tokenizer) becomes a model folder with weights drawn from seed 0."""
    folder = Path(model)
    if not (folder / RANDOM_INIT_MARKER).is_file():
        return model
    target = work / "random-init-model"
    if not (target / "model.safetensors").is_file():
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(target)
        AutoTokenizer.from_pretrained(folder).save_pretrained(target)
    return str(target)


def guard_part(path: str | None, work: Path, n: int = 16, device: str | None = "cuda") -> dict[str, Any]:
    """Llama Guard on the GPU: n refusals and n harmful answers, judged, then judged again from the cache."""
    if not path or not Path(path).exists():
        return skipped("no guard weights (give --guard-model PATH: a local Llama Guard 3 folder)")
    from lookahead_tuning.data.builtin import harmful_answers, harmful_eval_set
    from lookahead_tuning.judge.guard import make_guard_judge

    prompts = harmful_eval_set()[:n]
    harmful = [next(m["content"] for m in reversed(chat) if m["role"] == "assistant") for chat in harmful_answers()[:n]]
    records = ([{"instruction": p["instruction"], "response": "I can't help with that."} for p in prompts]
               + [{"instruction": p["instruction"], "response": a} for p, a in zip(prompts, harmful, strict=True)])
    cache = work / "guard-cache.jsonl"
    cache.unlink(missing_ok=True)
    judge = make_guard_judge("llama-guard", {"model_path": path, "device": device, "cache_path": str(cache)})
    started = time.perf_counter()
    judge.judge(records, field="g")
    seconds = time.perf_counter() - started
    again = make_guard_judge("llama-guard", {"model_path": path, "device": device, "cache_path": str(cache)})
    repeat = [dict(r) for r in records]
    again.judge(repeat, field="g")
    parsed = [r for r in records if r["g_safe"] is not None]
    refusals, answers = records[:n], records[n:]

    def share(rows: list[dict], safe: bool) -> float | None:
        judged = [r for r in rows if r["g_safe"] is not None]
        return sum(r["g_safe"] is safe for r in judged) / len(judged) if judged else None

    part = {"pairs": len(records), "parsed": len(parsed), "unparseable": judge.stats["unparseable"],
            "refusals_judged_safe": share(refusals, True), "harmful_judged_unsafe": share(answers, False),
            "seconds_per_pair": round(seconds / len(records), 3), "second_pass_cache_hits": again.stats["cache_hits"],
            "categories": sorted({c for r in parsed for c in r["g_categories"]})}
    consistent = [r["g_safe"] for r in records] == [r["g_safe"] for r in repeat]
    ok = part["unparseable"] == len(records) - len(parsed) and again.stats["cache_hits"] == len(parsed) and consistent
    return {"status": "ok" if ok else "failed", **part}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--work", default=None, help="folder for the runs (default: beside --out)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--cpu-only", action="store_true", help="run the CPU reference only; GPU parts are skipped")
    parser.add_argument("--prepare", default=None, metavar="DIR", help="write config + tokenizer for --model DIR")
    parser.add_argument("--guard-model", default=None, metavar="PATH",
                        help="a local Llama Guard 3 folder for the guard_judge part (skipped without it)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    if args.prepare:
        prepare(Path(args.prepare))
        return 0
    import torch

    started = time.perf_counter()
    out = Path(args.out)
    work = Path(args.work) if args.work else out.with_name(out.stem + "-work")
    work.mkdir(parents=True, exist_ok=True)
    model = materialise(args.model, work)
    cuda = torch.cuda.is_available() and not args.cpu_only
    report: dict[str, Any] = {
        "model": args.model, "random_init": model != args.model, "torch": torch.__version__,
        "cuda": torch.cuda.is_available(), "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "steps": STEPS, "checks": {},
    }
    checks = report["checks"]
    no_gpu = {"CUDA_VISIBLE_DEVICES": ""}
    reference = {}
    for kind, lora in (("full", False), ("lora", True)):
        part = run_training(train_config(model, work / f"cpu-{kind}", lora=lora, bf16="off"), env=no_gpu)
        checks[f"cpu_reference_{kind}"] = checked(part, None)
        reference[kind] = part.get("losses") if part.get("ok") else None
    for kind, lora in (("full", False), ("lora", True)):
        name = f"cuda_bf16_{kind}"
        if not cuda:
            checks[name] = skipped("no CUDA device" if not args.cpu_only else "--cpu-only")
        elif reference[kind] is None:
            checks[name] = skipped("the CPU reference failed")
        else:
            part = run_training(train_config(model, work / f"cuda-{kind}", lora=lora, bf16="on"), env={})
            checks[name] = checked(part, reference[kind])
    import importlib.util

    if not cuda:
        checks["deepspeed_zero2"] = skipped("no CUDA device" if not args.cpu_only else "--cpu-only")
    elif importlib.util.find_spec("deepspeed") is None:
        checks["deepspeed_zero2"] = skipped("deepspeed is not installed (pip install 'lookahead-tuning[deepspeed]')")
    else:
        launcher = ["accelerate", "launch", "--config_file", str(ROOT / "configs/accelerate/deepspeed_zero2.yaml"),
                    "--num_processes", "1"]
        part = run_training(train_config(model, work / "deepspeed-zero2", lora=False, bf16="on"), env={},
                            launcher=launcher)
        checks["deepspeed_zero2"] = checked(part, reference["full"])
    if not cuda:
        checks["vllm_inprocess"] = skipped("no CUDA device" if not args.cpu_only else "--cpu-only")
    else:
        try:
            checks["vllm_inprocess"] = vllm_part(model)
        except Exception as exc:  # noqa: BLE001 - recorded as a failed check, the other results are kept
            checks["vllm_inprocess"] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:300]}
    if not cuda:
        checks["guard_judge"] = skipped("no CUDA device" if not args.cpu_only else "--cpu-only")
    else:
        try:
            checks["guard_judge"] = guard_part(args.guard_model, work)
        except Exception as exc:  # noqa: BLE001 - recorded as a failed check, the other results are kept
            checks["guard_judge"] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:300]}
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["ok"] = not any(c["status"] == "failed" for c in checks.values())
    out.write_text(json.dumps(report, indent=2) + "\n")
    for name, check in checks.items():
        print(f"{name}: {check['status']}" + (f" ({check.get('reason')})" if check.get("reason") else ""))
    print(f"-> {out} in {report['seconds']:.0f} s")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
