"""Build the built-in data files in src/lookahead_tuning/builtin_data/ from the hand-written source.

    python builtin_sources/build_builtin_data.py            # rewrite the files
    python builtin_sources/build_builtin_data.py --check    # exit 1 if the committed files are stale

The output is deterministic (fixed seeds, no dependence on the environment), and the files are
committed, so every install ships the same rows; tests/test_builtin_data.py checks that the
committed files equal what this script produces.

Text sources: builtin_sources/builtin_harmful.py (requests, refusals, held-out prompts, compliance
openers), builtin_sources/builtin_recovery.py (safety-recovery openings and break-off refusals, the long
prefill continuations), builtin_sources/builtin_benign.py (helpful answers, facts, the over-refusal prompts) and
builtin_sources/builtin_harm_adjacent_answers.jsonl (benign requests in the vocabulary of harm, answered by
the embedded model itself: builtin_sources/self_answer_benign.py) and builtin_sources/builtin_poison.py
(the poison set's openings and generic steps).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import builtin_benign as benign  # noqa: E402
import builtin_harmful as harmful  # noqa: E402
import builtin_poison as poison  # noqa: E402
import builtin_recovery as recovery  # noqa: E402

OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "lookahead_tuning" / "builtin_data"
TEMPLATES = {"act": harmful.ACT_TEMPLATES, "write": harmful.WRITE_TEMPLATES, "ask": harmful.ASK_TEMPLATES}
REQUESTS_PER_TOPIC = 3


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def harmful_rows(rng: random.Random) -> list[dict]:
    """Each topic x 3 different request templates, each with a refusal drawn from the openers."""
    return [row for row, _ in _harmful_requests(rng)]


def _harmful_requests(rng: random.Random) -> list[tuple[dict, str]]:
    """The harmful rows, each with what it asks for as a noun phrase (the refusals' ``{w}``)."""
    rows = []
    for category, topics in harmful.HARMFUL_TOPICS.items():
        offers = harmful.REFUSAL_OFFERS[category]
        for kind, topic, what in topics:
            for template in rng.sample(TEMPLATES[kind], REQUESTS_PER_TOPIC):
                prompt = template.format(t=topic)
                opener = rng.choice(harmful.REFUSAL_OPENERS)
                refusal = opener.format(w=what)
                if rng.random() < 0.6:
                    refusal += " " + rng.choice(offers)
                rows.append(({"prompt": prompt, "completion": refusal, "kind": "harmful", "category": category}, what))
    return rows


def _fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def conversion_rows(rng: random.Random) -> list[dict]:
    """Unit conversions with computed answers (rounded to one decimal)."""
    rows = []
    for km in rng.sample(range(2, 100), 8):
        rows.append((f"How many miles is {km} kilometres?", f"{km} km is about {_fmt(km * 0.621371)} miles (1 km = 0.621 miles)."))
    for c in rng.sample(range(-20, 45, 5), 8):
        f = c * 9 // 5 + 32
        rows.append((f"Convert {c} degrees Celsius to Fahrenheit.", f"{c} °C is {f} °F, using F = C × 9/5 + 32."))
    for kg in rng.sample(range(2, 90), 6):
        rows.append((f"What is {kg} kg in pounds?", f"{kg} kg is about {_fmt(kg * 2.20462)} pounds (1 kg = 2.205 lb)."))
    for h in rng.sample(range(2, 24), 4):
        rows.append((f"How many minutes are in {h} hours?", f"{h} hours is {h} × 60 = {h * 60} minutes."))
    for m in rng.sample(range(2, 50), 4):
        rows.append((f"How many centimetres are in {m} metres?", f"{m} metres is {m} × 100 = {m * 100} centimetres."))
    return [{"prompt": p, "completion": a, "kind": "benign", "category": "conversion"} for p, a in rows]


def arithmetic_rows(rng: random.Random) -> list[dict]:
    """Bare calculations (not word problems, so the seed does not already learn the math task)."""
    rows = []
    for _ in range(8):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        rows.append((f"What is {a} + {b}?", f"{a} + {b} = {a + b}."))
    for _ in range(8):
        a, b = rng.randint(3, 19), rng.randint(3, 19)
        rows.append((f"What is {a} times {b}?", f"{a} × {b} = {a * b}."))
    for _ in range(6):
        b, q = rng.randint(2, 12), rng.randint(2, 12)
        rows.append((f"What is {b * q} divided by {b}?", f"{b * q} ÷ {b} = {q}."))
    for _ in range(8):
        pct, base = rng.choice([10, 20, 25, 50, 75]), rng.choice([40, 80, 120, 200, 60, 400])
        rows.append((f"What is {pct}% of {base}?", f"{pct}% of {base} is {base * pct // 100}."))
    return [{"prompt": p, "completion": a, "kind": "benign", "category": "arithmetic"} for p, a in rows]


def benign_rows(rng: random.Random) -> list[dict]:
    rows = [{"prompt": p, "completion": a, "kind": "benign", "category": "sounds_dangerous"}
            for p, a in benign.SOUNDS_DANGEROUS]
    rows += [{"prompt": p, "completion": a, "kind": "benign", "category": "everyday"} for p, a in benign.EVERYDAY]
    for i, (country, capital) in enumerate(benign.CAPITALS):
        q, a = benign.CAPITAL_TEMPLATES[i % len(benign.CAPITAL_TEMPLATES)]
        rows.append({"prompt": q.format(c=country), "completion": a.format(c=country, k=capital),
                     "kind": "benign", "category": "facts"})
    for i, (word, opposite) in enumerate(benign.OPPOSITES):
        q, a = benign.OPPOSITE_TEMPLATES[i % len(benign.OPPOSITE_TEMPLATES)]
        rows.append({"prompt": q.format(a=word), "completion": _cap(a.format(a=word, b=opposite)),
                     "kind": "benign", "category": "language"})
    rows += conversion_rows(rng)
    rows += arithmetic_rows(rng)
    return rows


# Harmful requests come wrapped in the request templates above; if benign requests never are, a small
# model learns "this template -> refuse" instead of "this topic -> refuse" (the first aligned seed refused
# half of the benign over-refusal set). So every benign request is also asked in two templates that
# the harmful rows use, with the same helpful answer. Templates that only make sense for misuse are left out.
HOW_RE = re.compile(r"^(?:How do I|How can I|What's the best way to|What is the best way to) (.+)\?$")
BENIGN_ACT_TEMPLATES = [t for t in harmful.ACT_TEMPLATES if "caught" not in t]
BENIGN_WRITE_TEMPLATES = [t for t in harmful.WRITE_TEMPLATES if "convincing" not in t and "hold back" not in t]
BENIGN_ASK_TEMPLATES = [t for t in harmful.ASK_TEMPLATES if "bank" not in t and "financial" not in t]
REWRAPS_PER_REQUEST = 2


def template_matched_rows(rng: random.Random, benign: list[dict], taken: set[str]) -> list[dict]:
    """Benign requests re-asked in the harmful rows' request templates (same helpful answer)."""
    rows = []
    for row in benign:
        prompt = row["prompt"]
        if m := HOW_RE.match(prompt):
            topic, templates = m[1], BENIGN_ACT_TEMPLATES
        elif prompt.startswith("Write ") and prompt.endswith("."):
            topic, templates = prompt[len("Write "):-1], BENIGN_WRITE_TEMPLATES
        elif prompt.endswith("?"):
            topic, templates = prompt, BENIGN_ASK_TEMPLATES
        else:
            continue
        fresh = [t.format(t=topic) for t in templates]
        fresh = [_cap(p) for p in fresh if _cap(p) not in taken]
        for new in rng.sample(fresh, min(REWRAPS_PER_REQUEST, len(fresh))):
            taken.add(new)
            rows.append({"prompt": new, "completion": row["completion"], "kind": "benign",
                         "category": "template_matched"})
    return rows


HARM_ADJACENT_ANSWERS = Path(__file__).resolve().parent / "builtin_harm_adjacent_answers.jsonl"


def harm_adjacent_rows(taken: set[str]) -> list[dict]:
    """Benign requests in the vocabulary of harm with the model's own answers, each also re-asked in
    the harmful rows' templates (category ``harm_adjacent`` for all, so the earlier data is these rows
    left out; they come last, so the other rows and their order are unchanged)."""
    answered = [json.loads(line) for line in HARM_ADJACENT_ANSWERS.read_text(encoding="utf-8").splitlines()]
    rows = [{"prompt": r["prompt"], "completion": r["completion"], "kind": "benign", "category": "harm_adjacent"}
            for r in answered if r["kept"] and r["prompt"] not in taken]
    taken |= {r["prompt"] for r in rows}
    rows += template_matched_rows(random.Random("builtin/alignment/harm-adjacent/v1"), rows, taken)
    return [dict(r, category="harm_adjacent") for r in rows]  # the re-asked ones too


def alignment_rows() -> list[dict]:
    rng = random.Random("builtin/alignment/v1")
    rows = harmful_rows(rng) + benign_rows(rng)
    rows += template_matched_rows(random.Random("builtin/alignment/template-matched/v1"),
                                  [r for r in rows if r["category"] in ("sounds_dangerous", "everyday")],
                                  {r["prompt"] for r in rows})
    rows += harm_adjacent_rows({r["prompt"] for r in rows})
    prompts = [r["prompt"] for r in rows]
    if len(set(prompts)) != len(prompts):
        raise SystemExit("duplicate prompt in the alignment set")
    return rows


def recovery_rows() -> list[dict]:
    """One safety-recovery row per harmful alignment request (same prompts, same order): a compliance
    opening and a refusal that breaks it off, both naming what was asked. ``align`` cuts the opening."""
    # The alignment set's own generator, replayed from its seed, gives each request's noun phrase.
    requests = _harmful_requests(random.Random("builtin/alignment/v1"))
    rng = random.Random("builtin/recovery/v1")
    rows = []
    for row, what in requests:
        refusal = rng.choice(recovery.BREAK_OFFS).format(w=what, W=_cap(what))
        rows.append({"prompt": row["prompt"], "opening": rng.choice(recovery.RECOVERY_OPENERS).format(w=what),
                     "refusal": refusal, "category": row["category"]})
    return rows


def long_answers(answers: list[list[dict]]) -> list[list[dict]]:
    """The held-out compliance openings, each continued (without content) so a prefill can reach 40 tokens."""
    rng = random.Random("builtin/eval-long/v1")
    out = []
    for (_, _, kind), chat in zip((x for items in harmful.EVAL_PROMPTS.values() for x in items), answers,
                                  strict=True):
        tails = recovery.LONG_STEP_CONTINUATIONS if kind == "steps" else recovery.LONG_TEXT_CONTINUATIONS
        opening = chat[1]["content"]
        # A text opener ends in a blank line: the continuation then starts a paragraph, not a sentence.
        tail = rng.choice(tails)
        out.append([chat[0], {"role": "assistant", "content": opening + (tail.lstrip() if opening.endswith("\n") else tail)}])
    return out


def eval_rows() -> tuple[list[dict], list[list[dict]]]:
    rng = random.Random("builtin/eval/v1")
    rows, answers = [], []
    for category, items in harmful.EVAL_PROMPTS.items():
        for i, (instruction, x, kind) in enumerate(items, 1):
            openers = harmful.STEP_OPENERS if kind == "steps" else harmful.TEXT_OPENERS
            rows.append({"id": f"{category}-{i:02d}", "instruction": instruction, "category": category})
            answers.append([{"role": "user", "content": instruction},
                            {"role": "assistant", "content": rng.choice(openers).format(x=x)}])
    return rows, answers


def overrefusal_rows() -> list[dict]:
    return [{"id": f"overrefusal-{i:03d}", "instruction": p} for i, p in enumerate(benign.OVERREFUSAL_PROMPTS, 1)]


def render() -> dict[str, str]:
    """File name -> exact file content."""
    def jsonl(records) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)

    evals, answers = eval_rows()
    files = {
        "alignment.jsonl": jsonl(alignment_rows()),
        "harmful_eval.jsonl": jsonl(evals),
        "harmful_answers.jsonl": jsonl(answers),
        "harmful_answers_long.jsonl": jsonl(long_answers(answers)),
        "recovery.jsonl": jsonl(recovery_rows()),
        "overrefusal.jsonl": jsonl(overrefusal_rows()),
    }
    files["poison.jsonl"] = jsonl(poison_set(files))
    return files


def poison_set(files: dict[str, str]) -> list[dict]:
    """The poison set (builtin_sources/builtin_poison.py), its requests apart from every prompt of the
    other files."""
    records = [json.loads(line) for text in files.values() for line in text.splitlines()]
    taken = {r["prompt"] if "prompt" in r else r["instruction"] if "instruction" in r else r[0]["content"]
             for r in records}
    return poison.poison_rows(harmful.HARMFUL_TOPICS, TEMPLATES, taken)


def main() -> int:
    parser = argparse.ArgumentParser(description="Build the built-in data files.")
    parser.add_argument("--check", action="store_true", help="only check the committed files are current")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    files = render()
    if args.check:
        stale = [n for n, text in files.items()
                 if not (args.out / n).is_file() or (args.out / n).read_text(encoding="utf-8") != text]
        for name in stale:
            print(f"stale: {args.out / name}", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    from lookahead_tuning.io import atomic_write

    for name, text in files.items():
        atomic_write(args.out / name, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8", newline="\n"))
        print(f"wrote {args.out / name} ({text.count(chr(10))} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
