"""Task utility: GSM8K-style accuracy and SAMSum ROUGE-1 F1.

GSM8K accuracy is the share of completions whose answer after ``####`` equals the reference's, by
one of two scorers: ``reference`` (the official evaluation script's string rule, the default, so the
number sits next to the paper's) or ``numeric`` (the project's, :mod:`lookahead_tuning.data.answers`).
Both are always computed and recorded. Models that never learned the ``####`` convention score 0,
which is the paper's definition; the last number in the completion is reported as a *separate* figure
(``fallback_accuracy``) so a reader can tell "can't do the maths" from "doesn't use the answer format".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.answers import MARKER, final_number, gold_number, last_number
from ..data.tasks import BUILTIN_TEST_N, get_task, load_task
from ..errors import UserError
from .stats import wilson_interval

# The GSM8K/math scorers. "reference": the official evaluation script's rule, quirks included;
# "numeric": the project's own (data/answers.py). docs/evaluation.md lists and measures the differences.
SCORERS = ("reference", "numeric")
DEFAULT_SCORER = "reference"


def bare_answer(reference: str) -> str:
    """The ``ground_truth`` the reference scripts read: a GSM8K worked solution reduced to the text
    after its last ``####`` (stripped, as written: ``"1,600"`` keeps its comma); a bare answer as is."""
    text = reference or ""
    return text.rsplit(MARKER, 1)[1].strip() if MARKER in text else text.strip()


def reference_prediction(completion: str | None) -> str | None:
    """The reference script's prediction: the text after the **last** ``####``, ``strip()``-ed, every
    comma removed; ``None`` without a marker. No other normalisation (``$540``, ``20.0``, ``**15**``
    stay as they are)."""
    if not completion or MARKER not in completion:
        return None
    return completion.split(MARKER)[-1].strip().replace(",", "")


def reference_correct(completion: str | None, ground_truth: str) -> bool:
    """The reference rule: ``ground_truth.strip()`` equals :func:`reference_prediction` as a string.

    ``ground_truth`` is the bare answer (see :func:`bare_answer`); one that holds a comma can never
    match, because the prediction has none: a quirk of the reference, kept here.
    """
    prediction = reference_prediction(completion)
    return prediction is not None and (ground_truth or "").strip() == prediction


def numeric_correct(completion: str | None, reference: str) -> bool:
    """The project's rule: the lone number after the first ``####`` equals the gold number."""
    prediction = final_number(completion)
    return prediction is not None and prediction == gold_number(reference)


def gsm8k_verdicts(completions: Sequence[str], references: Sequence[str], scorer: str) -> list[bool]:
    """Per-example correctness under ``scorer`` (``references``: worked solutions or bare answers)."""
    if scorer not in SCORERS:
        raise UserError(f"unknown scorer '{scorer}'; expected one of {', '.join(SCORERS)}")
    if len(completions) != len(references):
        raise ValueError("completions and references differ in length")
    if scorer == "reference":
        return [reference_correct(c, bare_answer(r)) for c, r in zip(completions, references, strict=True)]
    return [numeric_correct(c, r) for c, r in zip(completions, references, strict=True)]


def gsm8k_scores(completions: Sequence[str], references: Sequence[str], scorer: str = DEFAULT_SCORER
                 ) -> dict[str, Any]:
    """Accuracy under ``scorer`` (headline), under every scorer (``scorers``), and by the last number
    (``fallback_accuracy``, the project's rule applied to the last number), with Wilson intervals.

    ``references`` are the gold answers (full GSM8K answers ending ``#### N``, or bare numbers).
    Per-example verdicts come back under ``per_example`` (``{scorer: [bool, ...]}``).
    """
    per_example = {name: gsm8k_verdicts(completions, references, name) for name in SCORERS}
    n = len(completions)
    strict = sum(per_example[scorer])
    fallback = sum(int((last := last_number(c)) is not None and last == gold_number(r))
                   for c, r in zip(completions, references, strict=True))
    return {
        "metric": "accuracy",
        "scorer": scorer,
        "score": strict / n if n else None,
        "accuracy": strict / n if n else None,
        "correct": strict,
        "ci95": list(wilson_interval(strict, n)),
        "scorers": {name: {"accuracy": sum(v) / n if n else None, "correct": sum(v),
                           "ci95": list(wilson_interval(sum(v), n))} for name, v in per_example.items()},
        "fallback_accuracy": fallback / n if n else None,
        "fallback_correct": fallback,
        "fallback_ci95": list(wilson_interval(fallback, n)),
        "disagreement": {"reference vs numeric": {
            "differ": sum(a != b for a, b in zip(per_example["reference"], per_example["numeric"], strict=True)),
            "only_reference_correct": sum(a and not b for a, b in zip(per_example["reference"], per_example["numeric"],
                                                                       strict=True)),
            "only_numeric_correct": sum(b and not a for a, b in zip(per_example["reference"], per_example["numeric"],
                                                                     strict=True)),
            "n": n}},
        "missing_marker": sum(MARKER not in (c or "") for c in completions),
        "n": n,
        "per_example": per_example,
    }


def rouge1_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Mean ROUGE-1 F1 with Porter stemming (``rouge-score``), as in the paper's SAMSum results."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    values = [scorer.score(ref, pred)["rouge1"].fmeasure for pred, ref in zip(predictions, references, strict=True)]
    n = len(values)
    out: dict[str, Any] = {"metric": "rouge1_f1", "score": sum(values) / n if n else None, "n": n}
    if n > 1:
        from .stats import mean_ci

        out["ci95"] = mean_ci(values)["ci95"]
    out["per_example"] = values
    return out


def task_rows(task: str, data: str | None, limit: int | None) -> list[dict]:
    """Test rows ``{"id", "prompt", "reference"}``, with the same prompt wording training uses
    (``data.tasks.load_task``): a model fine-tuned on a task is evaluated in its own format."""
    if get_task(task).builtin:  # generated: --data may name an option of the generator (math:hard)
        rows = load_task(data or task, n=limit or BUILTIN_TEST_N, split="test")
    elif data is None:
        raise UserError(f"--task {task} needs --data FILE (e.g. the {task} test split)")
    else:
        rows = load_task(f"{task}:{data}", split="test")
    # The full gold answer (GSM8K: worked solution ending "#### N"), as the reference scripts expect.
    out = [{"id": str(r["id"]), "prompt": r["prompt"], "reference": r["completion"]} for r in rows]
    return out[:limit] if limit else out


UTILITY_LOG = "generations.jsonl"
UTILITY_OUTPUTS = ("predictions.jsonl", "verdicts.jsonl", "metrics.json")


Scored = tuple[dict[str, Any], list[dict], list[str]]


def _accuracy_rows(rows: Sequence[dict], scorer: str) -> Scored:
    completions = [r["completion"] for r in rows]
    references = [r["reference"] for r in rows]
    metrics = gsm8k_scores(completions, references, scorer)
    per_example = metrics.pop("per_example")
    truths = [bare_answer(ref) for ref in references]
    verdicts = [{"id": r["id"], "correct": per_example[scorer][i],
                 "prediction": reference_prediction(r["completion"]) if scorer == "reference"
                 else final_number(r["completion"]),
                 "ground_truth": truths[i], "correct_by": {name: per_example[name][i] for name in SCORERS}}
                for i, r in enumerate(rows)]
    return metrics, verdicts, truths


def _rouge1_rows(rows: Sequence[dict], scorer: str) -> Scored:
    references = [r["reference"] for r in rows]
    metrics = rouge1_scores([r["completion"] for r in rows], references)
    values = metrics.pop("per_example")
    verdicts = [{"id": r["id"], "rouge1_f1": v} for r, v in zip(rows, values, strict=True)]
    return metrics, verdicts, [ref.strip() for ref in references]


@dataclass(frozen=True)
class Metric:
    """How a task's utility is scored; a task (``data.tasks.Task.metric``) names one."""

    name: str  # what metrics.json, cells and results.json call it
    about: str  # the report's words for it ("{scorer}": the run's scorer)
    score: Callable[[Sequence[dict], str], Scored]  # (rows, scorer) -> (metrics, verdicts, ground truths)
    reference: Callable[[str], str]  # what a cell keeps of a reference: all any of its scorers reads
    scorers: tuple[str, ...] = ()  # instruments it is scored by, each recorded (re-judged by name)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", "accuracy of the answer after `####` (math, GSM8K; scorer: {scorer})", _accuracy_rows,
           bare_answer, SCORERS),
    Metric("rouge1_f1", "ROUGE-1 F1 (SAMSum)", _rouge1_rows, str),
)}


def task_metric(task: str) -> Metric:
    """The metric the registered task ``task`` is scored by."""
    return METRICS[get_task(task).metric]


def score_rows(task: str, rows: Sequence[dict], scorer: str = DEFAULT_SCORER) -> tuple[dict, list[dict], dict]:
    """Score ``rows`` (``{"id", "completion", "reference"}``) for ``task`` by its metric.

    Returns ``(metrics, verdicts, reference_file)``: the metrics, one verdict per row
    (``{"id", "correct", "prediction", "ground_truth", "correct_by": {scorer: bool}}`` for GSM8K/math,
    ``{"id", "rouge1_f1"}`` for SAMSum) and the predictions in the reference scripts' shape
    (``{"results": [{"ground_truth": <bare answer or summary>, "completion"}]}``).
    """
    metric = task_metric(task)
    if scorer not in SCORERS:
        raise UserError(f"unknown scorer '{scorer}'; expected one of {', '.join(SCORERS)}")
    metrics, verdicts, truths = metric.score(rows, scorer)
    completions = [r["completion"] for r in rows]
    reference_file = {"results": [{"ground_truth": t, "completion": c} for t, c in zip(truths, completions, strict=True)]}
    return metrics, verdicts, reference_file


def write_utility_outputs(out: Path, metrics: dict, verdicts: list[dict], reference_file: dict) -> None:
    """``predictions.jsonl`` (the reference shape, one line), ``verdicts.jsonl`` and ``metrics.json``."""
    import json

    from ..io import atomic_write_json, atomic_write_text, write_records

    atomic_write_text(out / "predictions.jsonl", json.dumps(reference_file, ensure_ascii=False) + "\n")
    write_records(out / "verdicts.jsonl", verdicts)
    atomic_write_json(out / "metrics.json", metrics)


def utility_provenance(model: dict | None, task: str, rows: Sequence[dict], *, data: str | None,
                       max_new_tokens: int | None, system_prompt: str | None, scorer: str,
                       predictions_path: str | None = None, predictions_sha256: str | None = None,
                       source: dict | None = None) -> dict:
    from ..provenance import make, records_digest

    if predictions_sha256 is not None:
        inputs = {"predictions": {"path": predictions_path, "sha256": predictions_sha256, "n": len(rows)}}
        generation: dict[str, Any] = {}
    else:
        inputs = {"test_rows": {"path": data or "built-in math test split", "n": len(rows),
                                "sha256": records_digest(list(rows), ("id", "prompt", "reference"))}}
        generation = {"max_new_tokens": max_new_tokens, "system_prompt": system_prompt, "decoding": "greedy",
                      "template": "auto"}
        if source:
            generation["source"] = source
    return make(f"eval utility {task}", model=model, inputs=inputs, generation=generation, scorer=scorer)


def evaluate_utility(
    model,
    tokenizer,
    task: str,
    *,
    data: str | None = None,
    out_dir: str | Path,
    limit: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    system_prompt: str | None = None,
    progress: bool = True,
    backend: str = "hf",
    scorer: str = DEFAULT_SCORER,
    model_identity: dict | None = None,
    overwrite: bool = False,
    adopt_unstamped: bool = False,
) -> dict[str, Any]:
    """Generate greedy answers for a task's test rows and score them; returns ``metrics.json``.

    Writes ``provenance.json``, ``generations.jsonl`` (resumable, engine format) and
    :func:`write_utility_outputs`' files under ``out_dir``. A folder holding answers made under other
    settings is refused unless ``overwrite`` (see :func:`lookahead_tuning.analyse.safety.evaluate_safety`).
    """
    from .. import provenance
    from ..generate.engine import answer_source, generate, generation_settings

    spec = get_task(task)
    if scorer not in SCORERS:
        raise UserError(f"unknown scorer '{scorer}'; expected one of {', '.join(SCORERS)}")
    rows = task_rows(task, data, limit)
    if not rows:
        raise UserError("no test rows to evaluate", path=data)
    max_new = max_new_tokens or spec.max_new_tokens
    prov = utility_provenance(model_identity or provenance.weights_identity(model), task, rows, data=data,
                              max_new_tokens=max_new, system_prompt=system_prompt, scorer=scorer,
                              source=answer_source(backend, model))
    out = Path(out_dir)
    provenance.claim(out, prov, (UTILITY_LOG,), UTILITY_OUTPUTS, overwrite=overwrite, adopt_unstamped=adopt_unstamped)
    items = [{"id": r["id"], "prompt": r["prompt"], "prefill": None, "reference": r["reference"]} for r in rows]
    results = generate(model, tokenizer, items, out_path=out / UTILITY_LOG, batch_size=batch_size,
                       max_new_tokens=max_new, system_prompt=system_prompt, progress=progress, backend=backend)
    metrics, verdicts, reference_file = score_rows(task, results, scorer)
    metrics.update({"task": task, "data": str(data) if data else None, "max_new_tokens": max_new,
                    "system_prompt": system_prompt,
                    "generation": generation_settings(model, backend=backend, max_new_tokens=max_new,
                                                      system_prompt=system_prompt),
                    "provenance": prov})
    write_utility_outputs(out, metrics, verdicts, reference_file)
    return metrics


def score_predictions(path: str | os.PathLike, task: str, *, out_dir: str | Path, scorer: str = DEFAULT_SCORER,
                      overwrite: bool = False) -> dict[str, Any]:
    """Score predictions made elsewhere (:func:`read_predictions`), with no model; returns ``metrics.json``."""
    from .. import provenance
    from .external import read_predictions

    rows = read_predictions(path)
    metrics, verdicts, reference_file = score_rows(task, rows, scorer)
    prov = utility_provenance(None, task, rows, data=None, max_new_tokens=None, system_prompt=None, scorer=scorer,
                              predictions_path=str(path), predictions_sha256=provenance.file_sha256(path))
    out = Path(out_dir)
    provenance.claim(out, prov, (UTILITY_LOG,), UTILITY_OUTPUTS, overwrite=overwrite)
    metrics.update({"task": task, "data": str(path), "max_new_tokens": None, "system_prompt": None,
                    "provenance": prov})
    write_utility_outputs(out, metrics, verdicts, reference_file)
    return metrics
