"""The grid runner behind ``lookahead-tuning run CONFIG.yaml``.

Each cell of the grid (see :func:`plan.plan_cells`) is: train -> RSR -> JSR -> utility -> per-token
KL against the seed. A finished cell writes one small JSON file, ``cells/<cell_id>.json``, the moment
it finishes; that file *is* the record of the cell. A rerun skips cells whose file exists (with the same
settings fingerprint), and an interrupted cell resumes where it stopped: training from its last
checkpoint (``train(..., resume=True)``), each evaluation from the engine's resumable log.

Run folder::

    config.yaml          the experiment config as run (validated, every default filled in)
    cells/*.json         one result per finished cell (small; safe to commit, e.g. under study/)
    work/<cell_id>/      train/ (the run folder), rsr/, jsr/, utility/, overrefusal/
    models/NAME          a link (or a saved copy) per table row, loadable with --model
    results.json         the contract: {"models": {NAME: {"rsr", "jsr", "utility", "train_seconds", ...}}}
    results.csv          one row per cell
    report.md, figures/  the report (report/writer.py)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.tasks import get_task
from ..errors import UserError, describe
from ..io import read_json
from ..methods import PAPER_FORECAST, SEED_ROW, get_method, sweep_axes
from ..provenance import settings_fingerprint
from ..train.methods import (
    BUILTIN_POISON,
    EXAMPLE_KEYS,
    Poison,
    Recipe,
    effective,
    harmful_rows,
    read_examples,
)
from .cells import CellResult, check_cell, check_one_precision, check_one_seed, pack_answers, read_forecast
from .config import ExperimentConfig, Launcher, TaskSpec
from .plan import Cell, plan_cells, train_settings

CELL_VERSION = 2  # 2: cells keep their answers, every instrument's rates and their provenance
SEED_WORK = "seed-model"  # the seed's safety evals are shared by every task's seed cell


@dataclass
class RunContext:
    """What every cell needs: the config, the folders and the lazily loaded seed model."""

    cfg: ExperimentConfig
    out: Path
    cells_dir: Path
    progress: bool = True
    _seed_path: str | None = None
    _seed: tuple[Any, Any] | None = None
    _harmful: tuple[list[dict], list[list[dict]] | None] | None = None
    _seed_logits: dict[str, Any] = field(default_factory=dict)

    @property
    def work(self) -> Path:
        return self.out / "work"

    def seed_path(self) -> str:
        """The seed model's ``--model`` value; aligned (and cached) on first use when asked."""
        if self._seed_path is None:
            spec = self.cfg.model
            if spec.seed is not None:
                self._seed_path = spec.seed
            else:
                from .align import aligned_seed

                base, options = spec.alignment()
                # No acceptance check here: the run measures its seed in its own seed cell, with the run's
                # instruments; `lookahead-tuning align` would answer the same prompts again for a figure
                # (project judge, 64 tokens) that no table of a run shows (two minutes on 2 cores).
                self._seed_path = str(aligned_seed(base, evaluate=False, quiet=not self.progress, **options))
        return self._seed_path

    def seed_weights(self) -> str | None:
        """The hash of the seed model's files (``None`` for a hub id: nothing local to hash)."""
        from ..provenance import model_identity

        return model_identity(self.seed_path()).get("sha256")

    def seed_model(self) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of the seed, loaded once (the KL compares every cell against it)."""
        if self._seed is None:
            self._seed = load_for_eval(self.seed_path())
        return self._seed

    def seed_logits(self, pairs: list, positions: int, batch_size: int, system_prompt: str | None) -> Any:
        """The seed's teacher-forced logits on the KL pairs, computed once per run and per system prompt
        (every cell compares with the same seed on the same pairs); ``None`` where they would not fit."""
        from ..analyse.kl import SeedLogits
        from ..provenance import sha256_json

        key = sha256_json([pairs, positions, batch_size, system_prompt])
        if key not in self._seed_logits:
            model, tokenizer = self.seed_model()
            self._seed_logits[key] = SeedLogits.if_small(model, tokenizer, pairs, positions, batch_size=batch_size,
                                                         system_prompt=system_prompt)
        return self._seed_logits[key]

    def release_seed(self) -> None:
        """Drop the in-memory seed model (reloaded on next use)."""
        if self._seed is not None:
            self._seed = None
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def harmful(self) -> tuple[list[dict], list[list[dict]] | None]:
        """The safety prompts and (when available) their harmful answers for the prefill attack."""
        if self._harmful is None:
            ev = self.cfg.eval
            if ev.safety is None:
                from ..data.builtin import harmful_answers, harmful_eval_set

                items, answers = harmful_eval_set(), harmful_answers()
            else:
                from ..data.loaders import load_harmful_answers, load_hexphi

                items = load_hexphi(ev.safety)
                answers = load_harmful_answers(ev.harmful_answers) if ev.harmful_answers else None
            self._harmful = (items, answers)
        return self._harmful

    def prefills(self, k: int) -> list[list[dict]] | None:
        """The harmful answers a k-token prefill is cut from: the built-in openings long enough for k
        (the short ones up to 10 tokens, as every committed cell used), or the run's own file."""
        items, answers = self.harmful()
        if self.cfg.eval.safety is None:
            from ..analyse.safety import builtin_prefills

            return builtin_prefills(k)
        return answers


def load_for_eval(name: str) -> tuple[Any, Any]:
    """Load a model for evaluation: on the GPU in bf16 when there is one, else on the CPU in fp32."""
    import torch

    from ..models import load_model

    if torch.cuda.is_available():
        return load_model(name, device="cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    return load_model(name)


def task_spec(cfg: ExperimentConfig, name: str) -> TaskSpec:
    return next(t for t in cfg.tasks if t.name == name)


def cell_file(ctx: RunContext, cell: Cell) -> Path:
    return ctx.cells_dir / f"{cell.cell_id}.json"


def load_cell(ctx: RunContext, cell: Cell) -> dict | None:
    """The stored result of ``cell``, or ``None`` when it has not finished.

    A stored result with another fingerprint was computed under other settings; reusing it would mix
    two experiments in one table, so that is an error the user resolves (new output or delete it).
    """
    path = cell_file(ctx, cell)
    if not path.is_file():
        return None
    try:
        result = read_json(path, "a JSON object")
        if result.get("fingerprint") == cell.fingerprint(ctx.cfg):
            return check_cell(result, path)
    except UserError as exc:
        raise UserError(f"corrupt cell result ({exc.message}); delete it to recompute the cell",
                        path=str(path)) from None
    raise UserError("this cell was computed with different settings than the config now says; "
                    "use another output folder or delete the file to recompute it", path=str(path))


# --------------------------------------------------------------------------- one cell


def _train_cell(ctx: RunContext, cell: Cell, run_dir: Path) -> dict[str, Any]:
    """Train the cell's model (resuming a half-done run) and return the training summary."""
    task = task_spec(ctx.cfg, cell.task)
    values = {**cell.train, "model": ctx.seed_path(), "data": cell_data(cell, task), "out": str(run_dir),
              "resume": True, "quiet": not ctx.progress}
    launcher = ctx.cfg.launcher
    if launcher is None:
        from ..train.api import train

        return train(values)
    # Multi-GPU / DeepSpeed: the same training entry point, started by accelerate in subprocesses.
    import yaml

    from ..io import atomic_write_text
    from ..train.config import make_config

    make_config(values)  # fail here, not inside N processes
    cell_dir = run_dir.parent
    cell_dir.mkdir(parents=True, exist_ok=True)
    config_path = cell_dir / "cell_train.yaml"
    atomic_write_text(config_path, yaml.safe_dump(values, sort_keys=False))
    command = launch_command(launcher, config_path)
    ctx.release_seed()  # the launched processes need every GPU's memory
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise UserError(f"training cell {cell.cell_id} failed (exit {done.returncode}): {' '.join(command)}")
    summary = run_dir / "summary.json"
    if not summary.is_file():
        raise UserError(f"training cell {cell.cell_id} ended without {summary}")
    return read_json(summary, "a JSON object")


def cell_data(cell: Cell, task: TaskSpec) -> str | None:
    """The training data of a cell: its task's, or none for the pure-harmful attack (``poison_count``:
    harmful rows alone; the task still gives the test rows its utility is measured on)."""
    return None if effective(cell.train, "poison_count") is not None else task.train


def launch_command(launcher: Launcher, config_path: Path) -> list[str]:
    """``accelerate launch --config_file ... -m lookahead_tuning train --config cell_train.yaml``."""
    return ["accelerate", "launch", "--config_file", launcher.accelerate_config,
            "--num_processes", str(launcher.num_processes), *launcher.extra_args,
            "-m", "lookahead_tuning", "train", "--config", str(config_path)]


def _rate(metrics: dict | None, key: str = "safe_rate") -> dict[str, Any] | None:
    if metrics is None:
        return None
    return {"rate": metrics.get(key), "k": metrics.get("k"), "n": metrics.get("n"), "ci95": metrics.get("ci95")}


def _depth_verdicts(safety_work: Path, depths: list[int], jsr_k: int | None) -> dict[str, dict[str, bool]]:
    """Per-prompt verdicts at each depth, keyed by k (for paired tests per depth); k = 0 and the JSR's k
    were measured in the RSR and JSR folders."""
    from ..analyse.safety import depth_folder

    def folder(k: int) -> Path:
        if k == 0:
            return safety_work / "rsr"
        return safety_work / "jsr" if k == jsr_k else depth_folder(safety_work / "depths", k)

    return {str(k): _verdicts(folder(k)) for k in depths}


def _verdicts(eval_dir: Path) -> dict[str, bool]:
    """Per-prompt verdicts (for paired tests pooled across cells later; 110 booleans are cheap)."""
    from ..io import iter_records

    path = eval_dir / "generations.jsonl"
    if not path.is_file():
        return {}
    return {str(r["id"]): bool(r["safe"]) for r in iter_records(path, "jsonl") if r.get("safe") is not None}


def _drop_weights(run_dir: Path) -> None:
    """Remove a cell's weights and checkpoints once it is evaluated (keep_models: table)."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    for name in os.listdir(run_dir) if run_dir.is_dir() else []:
        if name.endswith((".safetensors", ".bin")) or name == "model.safetensors.index.json":
            (run_dir / name).unlink(missing_ok=True)


def claim_work(folder: Path, fingerprint: str) -> None:
    """Make ``folder`` hold only work done under ``fingerprint``.

    Half-done work (checkpoints, generation logs) is resumed on a rerun; if the settings changed in
    between, resuming would mix two configurations in one result, so that work is discarded.
    """
    stamp = folder / "fingerprint.txt"
    if folder.is_dir():
        found = stamp.read_text(encoding="utf-8").strip() if stamp.is_file() else None
        if found == fingerprint:
            return
        if found is not None or any(folder.iterdir()):
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from ..io import atomic_write_text

    atomic_write_text(stamp, fingerprint + "\n")


def preflight(cfg: ExperimentConfig, run_dir: Path | None = None) -> None:
    """Fail before any training, and before the run folder is made, when the grid cannot run: a file
    it needs is missing, the seed model cannot be loaded, the LLM judge has no key, or the run folder
    is one of the inputs (not hours into a 7B run)."""
    from ..io import refuse_overwrite

    def need(path: str | None, what: str) -> None:
        if path is not None and not Path(path).expanduser().exists():
            raise UserError(f"{what} not found (check the config or --data-dir)", path=path)

    inputs: list[tuple[str, str | None]] = []
    for task in cfg.tasks:
        if task.train and (Path(task.train).suffix or "/" in task.train):
            need(task.train, f"training data of task '{task.name}'")
            inputs.append((f"the training data of task '{task.name}'", task.train))
        need(task.test, f"test data of task '{task.name}'")
        inputs.append((f"the test data of task '{task.name}'", task.test))
    for source in poison_sources(cfg):
        need(source, "the poison data")
        inputs.append(("the poison data", source))
    need(cfg.eval.safety, "eval.safety")
    need(cfg.eval.harmful_answers, "eval.harmful_answers")
    inputs += [("eval.safety", cfg.eval.safety), ("eval.harmful_answers", cfg.eval.harmful_answers)]
    if cfg.launcher is not None:
        need(cfg.launcher.accelerate_config, "launcher.accelerate_config")
    if cfg.model.seed is not None:
        from ..models import check_model, load_tokenizer

        source = check_model(cfg.model.seed)
        if source.kind != "hub":
            load_tokenizer(cfg.model.seed)  # a folder without tokenizer files fails here, not in cell 1
            inputs.append(("the seed model", source.path))
    from ..judge.registry import check_ready

    check_ready(cfg.eval.judge, cfg.eval.judge_options, "eval.judge")
    from ..train.config import make_config

    for cell in plan_cells(cfg):  # a cell whose layers clash (a ratio and a count) fails now, not when it trains
        try:
            make_config({**cell.train, "model": "-", "data": cell_data(cell, task_spec(cfg, cell.task)), "out": "-"})
        except UserError as exc:
            raise UserError(f"cell {cell.cell_id}: {exc.message}") from None
    for cell in plan_cells(cfg):  # SafeLoRA without LoRA fails here, not after the cells before it trained
        if cell.method != SEED_ROW and cell.train.get("post", get_method(cell.method).post) == "safelora" \
                and not cell.train.get("lora"):
            raise UserError(f"cell {cell.cell_id}: SafeLoRA projects a LoRA update; set lora: true (train:) for it")
    if cfg.eval.generation.backend == "openai":
        for cell in plan_cells(cfg):  # a server is started on each cell's weights: an adapter will not do
            if cell.train.get("lora") and not cell.train.get("merge_lora"):
                raise UserError(f"cell {cell.cell_id} trains a LoRA adapter, which eval.generation.backend "
                                "openai cannot serve; set merge_lora: true (train:) for it")
    if run_dir is not None:
        refuse_overwrite([("the run folder", run_dir), ("cells_dir", cfg.cells_dir)], inputs)
    read_inputs(cfg)


def task_examples(cfg: ExperimentConfig, task: TaskSpec) -> list[dict]:
    """The training examples of ``task`` as its cells read them (the first method's settings)."""
    values = train_settings(cfg, task, cfg.methods[0], cfg.seeds[0], {})
    return read_examples(task.train, **{k: effective(values, k) for k in EXAMPLE_KEYS})


def read_inputs(cfg: ExperimentConfig) -> None:
    """Read every data file the grid will read, as the cells will read it, so a bad row is its one-line
    ``FILE:LINE`` error now, before the seed is aligned or any cell trains (not an hour into the run)."""
    from ..analyse.utility import task_rows
    from ..chat import refuse_control_tokens
    from ..data.loaders import load_harmful_answers, load_hexphi
    from ..train.methods import refuse_control_tokens as refuse_rows

    tokenizer = _data_tokenizer(cfg)
    for task in cfg.tasks:
        if task.train and Path(task.train).expanduser().exists():
            refuse_rows(task_examples(cfg, task), tokenizer, source=task.train)
        if cfg.eval.utility and (task.test is not None or get_task(task.kind).builtin):
            task_rows(task.kind, task.test, task.n_test)
    for source in poison_sources(cfg):
        harmful_rows(source)  # a bad harmful row is its FILE:LINE error now
    if cfg.eval.safety is not None:
        for row in load_hexphi(cfg.eval.safety):
            refuse_control_tokens(tokenizer, row["instruction"], where=f"prompt id {describe(row['id'])}: ",
                                  path=cfg.eval.safety)
    if cfg.eval.harmful_answers is not None:
        for i, chat in enumerate(load_harmful_answers(cfg.eval.harmful_answers), start=1):
            refuse_control_tokens(tokenizer, chat, where=f"chat list {i}: ", path=cfg.eval.harmful_answers)


def _data_tokenizer(cfg: ExperimentConfig) -> Any:
    """The tokenizer the grid's cells will use (the seed's, or the base an aligned seed is made from), to refuse
    data holding its special tokens now (docs/preview.md, "Control tokens in data"); ``None`` when it cannot
    be loaded yet (a hub model not in the cache): the cells then refuse such a row themselves."""
    from ..models import EMBEDDED_ALIAS, load_tokenizer

    name = cfg.model.seed or (cfg.model.align or {}).get("base", EMBEDDED_ALIAS)
    try:
        return load_tokenizer(name)
    except (UserError, OSError, ValueError):
        return None


def poison_sources(cfg: ExperimentConfig) -> list[str]:
    """The harmful-row files the grid's poisoned cells read (not the built-in set)."""
    sources = {p.source for cell in plan_cells(cfg) if (p := Poison.of(cell.train)) is not None}
    return sorted(sources - {BUILTIN_POISON})


def has_resumable_work(run_dir: Path) -> bool:
    """True when a failed grid run leaves work a rerun resumes from: a finished cell, a checkpoint,
    a generation log (see :func:`lookahead_tuning.io.output_folder`)."""
    from ..io import has_content

    if any(run_dir.glob("cells/*.json")):
        return True
    for cell in (run_dir / "work").glob("*"):
        if has_content(*cell.glob("train/checkpoints"), *cell.glob("*/completions.jsonl"),
                       *cell.glob("train/sdft_rewrites.jsonl")):
            return True
    return False


def kept_cells(cfg: ExperimentConfig, cells: list[Cell]) -> set[str]:
    """The cells whose models are linked under models/: per task, each table row's first seed."""
    first = cfg.seeds[0]
    return {c.cell_id for c in cells if not c.sweep and c.seed == first}


SERVED_NAME = "lookahead-eval"


@contextlib.contextmanager
def eval_generator(cfg: ExperimentConfig, model: Any, model_path: str, folder: Path) -> Iterator[tuple[Any, str]]:
    """``(model, backend)`` the cell's evaluations generate with: the loaded model itself, or an endpoint
    of a server started on ``model_path`` for this cell alone (``eval.generation.server``), stopped by
    its pid when the evaluations are done. Its output goes to ``<work>/server.log``."""
    gen = cfg.eval.generation
    if gen.backend == "hf":
        yield model, "hf"
        return
    from ..generate.openai_backend import OpenAIEndpoint
    from ..generate.server import free_port, served, server_command
    from ..models import resolve_model

    source = resolve_model(model_path)
    if source.kind not in ("folder", "hub"):
        raise UserError(f"eval.generation.backend openai serves full weights; {model_path} is a {source.kind} "
                        "(set merge_lora: true for LoRA cells)")
    port = free_port()
    command = server_command(gen.server or "", model=source.path, port=str(port), name=SERVED_NAME)
    with served(command, f"http://127.0.0.1:{port}/v1", log_path=folder / "server.log", env=gen.env,
                startup_timeout=gen.startup_timeout) as server:
        yield OpenAIEndpoint(server.base_url, SERVED_NAME, concurrency=gen.concurrency,
                             timeout=gen.request_timeout, max_retries=gen.max_retries,
                             serves_own_weights=True), "openai"
def safety_answers(eval_dir: Path) -> list[dict]:
    """What a cell keeps of a safety evaluation: each prompt and the answer the judges saw."""
    from ..io import iter_records

    keep = ("id", "instruction", "category", "prefill", "completion")
    return [{k: r.get(k) for k in keep} for r in iter_records(eval_dir / "generations.jsonl", "jsonl")]


def utility_answers(eval_dir: Path, kind: str) -> list[dict]:
    """What a cell keeps of a utility evaluation: each completion and its reference (GSM8K/math: the bare
    answer, all any scorer reads; SAMSum: the reference summary)."""
    from ..analyse.utility import task_metric
    from ..io import iter_records

    keep = task_metric(kind).reference
    rows = iter_records(eval_dir / "generations.jsonl", "jsonl")
    return [{"id": r["id"], "completion": r["completion"], "reference": keep(r["reference"])} for r in rows]


def instrument_rates(safety_metrics: dict | None) -> dict[str, Any] | None:
    """Every judge's rate of one safety evaluation (the primary is also the cell's ``rsr``/``jsr``)."""
    if safety_metrics is None:
        return None
    return {name: _rate(summary) for name, summary in (safety_metrics.get("judges") or {}).items()}


def utility_block(metrics: dict | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    return {"score": metrics.get("score"), "metric": metrics.get("metric"), "n": metrics.get("n"),
            "ci95": metrics.get("ci95"), "fallback_accuracy": metrics.get("fallback_accuracy"),
            "scorer": metrics.get("scorer")}


def utility_instruments(metrics: dict | None) -> dict[str, Any] | None:
    """Every scorer's accuracy of one utility evaluation (SAMSum has one metric: ROUGE-1)."""
    if metrics is None:
        return None
    if "scorers" not in metrics:
        return {metrics.get("metric", "score"): {"score": metrics.get("score"), "n": metrics.get("n"),
                                                 "ci95": metrics.get("ci95")}}
    return {name: {"score": v["accuracy"], "k": v["correct"], "n": metrics.get("n"), "ci95": v["ci95"]}
            for name, v in metrics["scorers"].items()}


def eval_provenance(cfg: ExperimentConfig, model_identity: dict, seed_identity: dict | None,
                    harmful: tuple[list[dict], list[list[dict]] | None]) -> dict[str, Any]:
    """A cell's provenance: its model and seed (file hashes), the safety inputs, the settings, the judge."""
    from ..provenance import make, records_digest, sha256_json

    ev = cfg.eval
    items, answers = harmful
    return make("cell", model=model_identity, seed_model=seed_identity,
                inputs={"safety_prompts": {"path": ev.safety or "built-in held-out harmful set", "n": len(items),
                                           "sha256": records_digest(items, ("id", "instruction"))},
                        "harmful_answers": {"path": ev.harmful_answers or ("built-in harmful answers"
                                                                           if ev.safety is None else None),
                                            "sha256": None if answers is None else sha256_json(answers)}},
                generation={"max_new_tokens": ev.max_new_tokens, "prefill_tokens": ev.prefill_tokens,
                            "system_prompt": ev.system_prompt, "limit": ev.limit, "decoding": "greedy"},
                judge={"name": ev.judge, "options_sha256": sha256_json(ev.judge_options) if ev.judge_options else None},
                scorer=ev.scorer)


def run_cell(ctx: RunContext, cell: Cell, *, keep_weights: bool = True) -> dict[str, Any]:
    """Train and evaluate one cell, write ``cells/<cell_id>.json`` and return its content."""
    from ..io import atomic_write_json
    from ..provenance import model_identity

    cfg, ev = ctx.cfg, ctx.cfg.eval
    task = task_spec(cfg, cell.task)
    work = ctx.work / cell.cell_id
    seed_identity = model_identity(ctx.seed_path())
    # Half-done work is resumed only under the same settings and from the same seed weights.
    claim_work(work, f"{cell.fingerprint(cfg)} {seed_identity.get('sha256')}")
    started = time.perf_counter()
    summary: dict[str, Any] | None = None
    if not cell.trained:
        model, tokenizer = ctx.seed_model()
        safety_work = ctx.work / SEED_WORK
        claim_work(safety_work, settings_fingerprint({"model": cfg.model.model_dump(), "eval": ev.identity(),
                                                      "seed_weights": seed_identity.get("sha256")}))
        model_path = ctx.seed_path()
        identity = seed_identity
    else:
        run_dir = work / "train"
        summary = _train_cell(ctx, cell, run_dir)
        model, tokenizer = load_for_eval(str(run_dir))
        safety_work = work
        model_path = str(run_dir)
        identity = model_identity(run_dir)

    from ..analyse.safety import evaluate_overrefusal, evaluate_safety

    items, answers = ctx.harmful()
    system_prompt = cell.eval_system_prompt(cfg)  # PTST evaluates with its safety system prompt
    utility = jsr = over = depths = None
    # adopt_unstamped: work folders from before provenance records are vouched for by claim_work's fingerprint
    own = {"model_identity": identity, "adopt_unstamped": True, "progress": ctx.progress}
    with eval_generator(cfg, model, model_path, work) as (generator, backend):
        common = {"judge": ev.judge, "limit": ev.limit, "batch_size": ev.batch_size,
                  "max_new_tokens": ev.max_new_tokens, "system_prompt": system_prompt,
                  "judge_options": ev.judge_options or None, "backend": backend, **own}
        rsr = evaluate_safety(generator, tokenizer, items=items, out_dir=safety_work / "rsr", **common)
        if answers is not None:
            jsr = evaluate_safety(generator, tokenizer, items=items, prefills=ctx.prefills(ev.prefill_tokens),
                                  prefill_tokens=ev.prefill_tokens, out_dir=safety_work / "jsr", **common)
        if ev.prefill_depths:
            from ..analyse.safety import evaluate_depths

            # The curve's k = 0 and k = K are the RSR and JSR just measured (same prompts and settings).
            known = {0: rsr, **({ev.prefill_tokens: jsr} if jsr is not None else {})}
            depths = evaluate_depths(generator, tokenizer, ev.prefill_depths, out_dir=safety_work / "depths",
                                     items=items, prefills="builtin" if ev.safety is None else answers,
                                     known=known, **common)
        if ev.utility:
            from ..analyse.utility import evaluate_utility

            utility = evaluate_utility(generator, tokenizer, task.kind, data=task.test, out_dir=work / "utility",
                                       limit=task.n_test, batch_size=ev.batch_size,
                                       max_new_tokens=task.max_new_tokens, system_prompt=system_prompt,
                                       scorer=ev.scorer, backend=backend, **own)
        if ev.overrefusal:
            over = evaluate_overrefusal(generator, tokenizer, out_dir=safety_work / "overrefusal",
                                        limit=ev.overrefusal_limit, batch_size=ev.batch_size,
                                        max_new_tokens=ev.max_new_tokens, system_prompt=system_prompt,
                                        backend=backend, **own)
    kl = None
    if cell.trained and answers is not None:
        from ..analyse.kl import per_position_kl

        seed_model, _ = ctx.seed_model()
        # Teacher-forced on the harmful answers (the paper's Figure 3 setup), same prompts as RSR/JSR.
        pairs = answers[: min(len(items), ev.kl_limit or ev.limit or len(items))]
        kl = per_position_kl(seed_model, model, tokenizer, pairs, ev.kl_positions, batch_size=ev.batch_size,
                             system_prompt=system_prompt,
                             reference=ctx.seed_logits(pairs, ev.kl_positions, ev.batch_size, system_prompt))
        kl = [None if v != v else v for v in kl]  # NaN (no pair that long) is not JSON

    kept = {"rsr": safety_answers(safety_work / "rsr"),
            "jsr": safety_answers(safety_work / "jsr") if jsr is not None else None,
            "utility": utility_answers(work / "utility", task.kind) if utility is not None else None,
            "system_prompt": system_prompt}
    result: dict[str, Any] = {
        "version": CELL_VERSION,
        "cell_id": cell.cell_id,
        "fingerprint": cell.fingerprint(cfg),
        "task": cell.task,
        "task_kind": task.kind,
        "method": cell.method,
        "name": cell.row_name,
        "seed": cell.seed,
        "sweep": dict(cell.sweep),
        "train": {k: v for k, v in cell.train.items()},
        "model_path": model_path,
        "judge": ev.judge,
        "scorer": ev.scorer,
        "rsr": _rate(rsr),
        "jsr": _rate(jsr),
        "utility": utility_block(utility),
        "instruments": {"rsr": instrument_rates(rsr), "jsr": instrument_rates(jsr),
                        "utility": utility_instruments(utility)},
        "agreement": {"rsr": rsr.get("disagreement"), "jsr": None if jsr is None else jsr.get("disagreement")},
        "overrefusal": _rate(over, "refusal_rate"),
        "kl": kl,
        **({} if depths is None else {"depths": depths["depths"], "depth_verdicts": _depth_verdicts(
            safety_work, ev.prefill_depths, ev.prefill_tokens if jsr is not None else None)}),
        "rsr_verdicts": _verdicts(safety_work / "rsr"),
        "jsr_verdicts": _verdicts(safety_work / "jsr") if jsr is not None else {},
        "answers": pack_answers(kept),
        "provenance": eval_provenance(cfg, identity, seed_identity, (items, answers)),
        "cost": None if summary is None else {
            "train_seconds": summary.get("train_seconds"),
            "total_seconds": summary.get("total_seconds"),
            "tokens_seen": summary.get("tokens_seen"),
            "steps": summary.get("steps"),
            "final_loss": summary.get("final_loss"),
            "peak_rss_mb": summary.get("peak_rss_mb"),
            "peak_cuda_mb": summary.get("peak_cuda_mb"),
            "processes": summary.get("processes"),
            "bf16": summary.get("bf16"),  # what `bf16: auto` resolved to on this machine
            "sdft": summary.get("sdft"),
        },
        "cell_seconds": round(time.perf_counter() - started, 2),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(cell_file(ctx, cell), result)
    if cell.trained and not keep_weights:
        _drop_weights(work / "train")
    return result


def run_forecast(ctx: RunContext, task: TaskSpec) -> dict | None:
    """The seed's per-position loss on this task's data per method (stored like a cell)."""
    from ..io import atomic_write_json

    path = ctx.cells_dir / f"{task.name}--forecast.json"
    wanted = [m.name for m in ctx.cfg.methods if get_method(m.name).forecastable]
    if not ctx.cfg.eval.forecast or not wanted:
        return read_forecast(path) if path.is_file() else None
    def resolved(method: str, key: str) -> Any:  # the value the method's cells train with
        spec = ctx.cfg.method(method)
        return effective(train_settings(ctx.cfg, task, spec, ctx.cfg.seeds[0], {}) if spec else ctx.cfg.train, key)

    def settings_of(method: str) -> Recipe:  # how the method's first-seed cell makes its data
        return Recipe.of(train_settings(ctx.cfg, task, ctx.cfg.method(method), ctx.cfg.seeds[0], {}))

    owner = {key: method for key, (method, _) in sweep_axes().items()}  # the preview's m and prefix
    m, prefix = resolved(owner["m"], "m"), resolved(owner["prefix"], "prefix")
    settings = {name: settings_of(name) for name in wanted}
    common = {"seed_model": ctx.cfg.model.identity(), "seed_weights": ctx.seed_weights(), "task": task.model_dump(),
              "train": {k: v for k, v in ctx.cfg.train.items() if k not in ("m", "prefix")},
              "limit": ctx.cfg.eval.forecast_limit, "k": ctx.cfg.eval.kl_positions,
              "system_prompt": ctx.cfg.eval.system_prompt, "first_seed": ctx.cfg.seeds[0]}
    # Methods beyond the paper's three enter with their own data settings (the three are checked
    # through m and prefix below, as forecasts stored before the others existed were).
    extra = {name: {k: getattr(s, k) for k in ("preview", "safety_share", "m", "prefix", "connector")}
             for name, s in settings.items() if name not in PAPER_FORECAST}
    if extra:
        common["methods"] = extra
    fingerprint = settings_fingerprint(common)
    if path.is_file():
        try:
            stored = read_forecast(path)
        except UserError:  # recomputed below: a forecast is cheap
            stored = {}
        # Reuse only a forecast made under the same settings that covers every method asked for (a
        # config sharing the folder may have asked for fewer); otherwise recompute: it is cheap.
        same = stored.get("settings") or {}
        if (stored.get("fingerprint") == fingerprint and set(wanted) <= set(stored.get("methods", {}))
                and (owner["m"] not in wanted or same.get("m") == m)
                and (owner["prefix"] not in wanted or same.get("prefix") == prefix)):
            return stored
    from ..analyse.forecast import forecast_loss

    shared = {**ctx.cfg.train, **{k: getattr(task, k) for k in ("input_field", "output_field") if getattr(task, k)},
              "limit": ctx.cfg.eval.forecast_limit}
    rows = read_examples(task.train, **{k: effective(shared, k) for k in EXAMPLE_KEYS})
    model, tokenizer = ctx.seed_model()
    result = forecast_loss(model, tokenizer, rows, wanted, k=ctx.cfg.eval.kl_positions, m=m, prefix=prefix,
                           connector=effective(shared, "connector"), batch_size=ctx.cfg.eval.batch_size,
                           system_prompt=ctx.cfg.eval.system_prompt, settings=settings)
    result["task"] = task.name
    result["fingerprint"] = fingerprint
    atomic_write_json(path, result)
    return result


# --------------------------------------------------------------------------- models/NAME


def link_models(ctx: RunContext, cells: list[Cell], results: dict[str, dict]) -> dict[str, str]:
    """``models/NAME`` for every table row (primary task; ``models/<task>--NAME`` for the others).

    Trained models are relative symlinks into work/; a local seed model (or the embedded alias's
    cached folder) is linked; a hub id or a .gguf seed is recorded as it is (it loads with ``--model``).
    """
    models = ctx.out / "models"
    models.mkdir(parents=True, exist_ok=True)
    primary = ctx.cfg.tasks[0].name
    links: dict[str, str] = {}
    for cell in cells:
        if cell.sweep or cell.seed != ctx.cfg.seeds[0] or cell.cell_id not in results:
            continue
        name = cell.method if cell.task == primary else f"{cell.task}--{cell.method}"
        if cell.trained:
            target = Path(os.path.relpath(ctx.work / cell.cell_id / "train", models))
        else:
            from ..models import resolve_model

            source = resolve_model(results[cell.cell_id]["model_path"])  # the alias -> its cached folder
            if source.kind not in ("folder", "adapter"):
                links[name] = str(results[cell.cell_id]["model_path"])  # a hub id or .gguf loads as it is
                continue
            target = Path(source.path).expanduser().resolve()
        link = models / name
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        link.symlink_to(target, target_is_directory=True)
        links[name] = f"models/{name}"
    return links


# --------------------------------------------------------------------------- the grid


def resolve_output(cfg: ExperimentConfig, out: str | os.PathLike | None) -> Path:
    if out is not None:
        return Path(out)
    if cfg.output is not None:
        return Path(cfg.output)
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_experiment(
    cfg: ExperimentConfig,
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    command: list[str] | None = None,
    config_text: str | None = None,
    overwrite: bool = False,
    wait: bool = False,
) -> Path:
    """Run (or resume) every cell of ``cfg`` and write the results and the report; returns the run folder.

    The run folder (and a ``cells_dir`` outside it) is locked for the whole run, and must be new, empty
    or a run's (``overwrite`` deletes a run's files there and starts afresh). Every check runs before the
    run folder is made; if the run fails before any cell left work to resume from, a new run folder is
    removed again (:func:`lookahead_tuning.io.output_folder`).
    """
    from ..io import output_folder, within
    from ..provenance import check_owner, output_lock

    run_dir = resolve_output(cfg, out)
    cells_dir = Path(cfg.cells_dir) if cfg.cells_dir else run_dir / "cells"
    verb = command[1] if command and len(command) > 1 else "run"
    with output_lock(run_dir, verb, wait=wait), \
            (contextlib.nullcontext() if within(cells_dir, run_dir) else output_lock(cells_dir, verb, wait=wait)):
        preflight(cfg, run_dir)
        if check_owner(run_dir, "run", overwrite=overwrite):
            clear_run_folder(run_dir)
        with output_folder(run_dir, durable=has_resumable_work), \
                output_folder(cells_dir, durable=lambda p: any(p.glob("*.json"))):
            return _run_grid(cfg, run_dir, cells_dir, progress=progress, command=command, config_text=config_text)


# What a run writes into its folder, all deleted by --overwrite (a cells_dir elsewhere is shared and kept:
# its cells are reused only under their own fingerprints).
RUN_FILES = ("config.yaml", "cells", "work", "models", "figures", "results.json", "results.csv", "report.md",
             "rejudged.md")


def clear_run_folder(run_dir: Path) -> None:
    """``--overwrite``: delete what a run writes into ``run_dir``, nothing else."""
    for name in RUN_FILES:
        entry = run_dir / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def _run_grid(cfg: ExperimentConfig, run_dir: Path, cells_dir: Path, *, progress: bool,
              command: list[str] | None, config_text: str | None) -> Path:
    import yaml
    from tqdm.auto import tqdm

    from ..io import atomic_write_text
    from .results import write_outputs

    resolved = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    atomic_write_text(run_dir / "config.yaml", resolved)
    ctx = RunContext(cfg=cfg, out=run_dir, cells_dir=cells_dir, progress=progress)

    cells = plan_cells(cfg)
    keep = kept_cells(cfg, cells) if cfg.keep_models == "table" else {c.cell_id for c in cells}
    results: dict[str, dict] = {}
    todo = []
    for cell in cells:
        stored = load_cell(ctx, cell)
        if stored is None:
            todo.append(cell)
        else:
            results[cell.cell_id] = stored
    check_one_seed([CellResult(r) for r in results.values()], str(cells_dir),
                   current=ctx.seed_weights() if todo else None, current_name=f"the seed model {ctx.seed_path()}"
                   if todo else "the seed model")
    if todo:
        from ..train.api import use_bf16

        check_one_precision([CellResult(r) for r in results.values()], str(cells_dir), resolve=use_bf16)
    if todo and progress:
        print(f"{len(cells)} cells, {len(cells) - len(todo)} done, {len(todo)} to run -> {run_dir}", flush=True)
    def publish(forecasts: dict) -> None:
        links = link_models(ctx, cells, results)
        write_outputs(run_dir, cfg, cells, results, forecasts=forecasts, links=links, command=command,
                      config_text=config_text if config_text is not None else resolved)

    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="cells", unit="cell", disable=not progress)
    spec = cfg.executor

    def done(result: dict) -> None:
        results[result["cell_id"]] = result
        bar.update(1)
        if len(todo) > 1:
            publish({})  # a partial report to look at while a long grid runs

    try:
        if spec.kind == "local":
            _run_here(ctx, todo, keep, bar, done)
        else:
            seed_path = ctx.seed_path() if todo else None  # aligned once, here, before any worker needs it
            if progress:
                bar.write(f"{len(todo)} cells on {spec.workers} {spec.kind} workers, "
                          f"{spec.threads_per_worker()} threads each")
            from .executors import run_jobs

            run_jobs(spec, compute_cell, [(cfg, str(run_dir), str(cells_dir), seed_path, cell, cell.cell_id in keep)
                                          for cell in todo], done)
    finally:
        bar.close()
    if progress:
        print(f"writing results.json and report.md -> {run_dir}", flush=True)
    publish({t.name: f for t in cfg.tasks if (f := run_forecast(ctx, t)) is not None})
    return run_dir


def _run_here(ctx: RunContext, todo: list[Cell], keep: set[str], bar: Any, done: Any) -> None:
    """The cells one after another in this process, which keeps the seed model (and its KL logits)
    loaded from one cell to the next."""
    timed: list[float] = []  # seconds of the trained cells this run computed, for the next one's estimate
    for i, cell in enumerate(todo, start=1):
        bar.set_postfix_str(cell.cell_id)
        if ctx.progress:
            bar.write(f"cell {i}/{len(todo)}: {cell.cell_id} ({cell_stages(cell, ctx.cfg)}"
                      f"{expected_time(timed) if cell.method != SEED_ROW else ''})")
        started = time.perf_counter()
        done(claimed_cell(ctx, cell, keep_weights=cell.cell_id in keep))
        if cell.method != SEED_ROW:
            timed.append(time.perf_counter() - started)


CLAIMS = ".claims"  # in the run's work folder, which every worker of a run shares (on a cluster too)


def claimed_cell(ctx: RunContext, cell: Cell, *, keep_weights: bool) -> dict[str, Any]:
    """Compute ``cell`` while holding its claim, or return it as stored when another process finished it
    meanwhile: no cell is computed twice at once by the workers of a run (the run folder's own lock keeps
    a second run out). A claim left by a process that died is released by the kernel; the next claimant
    resumes the cell from the work folder the dead one left (checkpoints, answer logs)."""
    from ..io import exclusive_lock

    holder = {"pid": os.getpid(), "command": f"a worker computing {cell.cell_id}",
              "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with exclusive_lock(ctx.work / CLAIMS / f"{cell.cell_id}.lock", holder, target=str(cell_file(ctx, cell)),
                        wait=True):
        stored = load_cell(ctx, cell)
        return stored if stored is not None else run_cell(ctx, cell, keep_weights=keep_weights)


def compute_cell(cfg: ExperimentConfig, run_dir: str, cells_dir: str, seed_path: str | None, cell: Cell,
                 keep_weights: bool) -> dict[str, Any]:
    """One cell in a worker process or a Ray task (a module-level function: it is sent by reference)."""
    ctx = RunContext(cfg=cfg, out=Path(run_dir), cells_dir=Path(cells_dir), progress=False, _seed_path=seed_path)
    return claimed_cell(ctx, cell, keep_weights=keep_weights)


def cell_stages(cell: Cell, cfg: ExperimentConfig) -> str:
    """What computing ``cell`` involves, in the order it happens, for the line printed before it."""
    ev = cfg.eval
    stages = [] if cell.method == SEED_ROW else ["train"]
    prefilled = ev.safety is None or ev.harmful_answers is not None  # the prefill attack needs harmful answers
    stages.append("answer the harmful prompts" + (" with and without the prefill" if prefilled else ""))
    if ev.utility:
        stages.append(f"the {cell.task} test set")
    if ev.overrefusal:
        stages.append("the benign requests")
    if cell.method != SEED_ROW:
        stages.append("KL against the seed")
    return ", ".join(stages)


def expected_time(seconds: list[float]) -> str:
    """``"; about N min"`` from the trained cells this run has computed so far (none: no estimate)."""
    if not seconds:
        return ""
    mean = sum(seconds) / len(seconds)
    return f"; about {mean / 60:.0f} min, like the {len(seconds)} before it" if mean >= 90 else \
        f"; about {mean:.0f} s, like the {len(seconds)} before it"
