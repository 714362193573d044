"""Where a grid's cells are computed: here one after another, in N local processes, or as Ray tasks.

The executors only schedule: each job is the same function (``runner.compute_cell``) on one cell, which
claims the cell, computes it exactly as the sequential runner does and writes it where that runner
writes it. So the run folder, ``results.json`` and the report do not depend on the executor; only the
clock fields do (docs/experiment.md, "Many workers"). A worker that dies mid-cell leaves its work
folder (checkpoints, answer logs) and its claim is released by the kernel: the job is handed out again
and the next claimant resumes the cell where it stopped.

Ray is an optional dependency (``pip install 'lookahead-tuning[ray]'``), imported only here and only
for ``executor: ray``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import UserError
from ..validate import PositiveInt

ExecutorKind = Literal["local", "processes", "ray"]
EXECUTORS: tuple[str, ...] = ("local", "processes", "ray")
RAY_VERSION = "2.60.0"  # the version the tests ran with (pyproject's [ray] extra pins it)
# A pool whose workers die (killed, out of memory) is started again for the jobs left; a round that
# finishes none of them stops the run instead of retrying forever.
MAX_ROUNDS = 4


class ExecutorSpec(BaseModel):
    """How to spread a run's cells (``executor:`` in a run config, or ``run --executor/--workers``).

    It decides no number, so it is no part of any cell's fingerprint."""

    model_config = ConfigDict(extra="forbid")

    kind: ExecutorKind = "local"
    workers: PositiveInt = Field(default=1, description="processes: how many; ray: cells in flight at once")
    threads: PositiveInt | None = Field(default=None, description="torch threads per worker (default: the "
                                        "machine's cores divided among the workers)")
    address: str | None = Field(default=None, description="ray: the cluster to join (default: start one here)")
    gpus_per_cell: float = Field(default=0.0, ge=0.0, description="ray: GPUs each cell asks for")

    @model_validator(mode="after")
    def _workers_need_an_executor(self) -> ExecutorSpec:
        if self.kind == "local" and self.workers > 1:
            raise ValueError("workers > 1 needs executor 'processes' or 'ray' (local computes one cell at a time)")
        return self

    def threads_per_worker(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // self.workers)


Job = tuple[Any, ...]


def run_jobs(spec: ExecutorSpec, fn: Callable[..., dict], jobs: Sequence[Job],
             on_done: Callable[[dict], None]) -> None:
    """Call ``fn(*job)`` for every job under ``spec``, handing each result to ``on_done`` as it arrives
    (in completion order; the caller files results by cell, so the order decides nothing)."""
    if not jobs:
        return
    if spec.kind == "local":
        for job in jobs:
            on_done(fn(*job))
    elif spec.kind == "processes":
        _run_processes(spec, fn, list(jobs), on_done)
    else:
        _run_ray(spec, fn, list(jobs), on_done)


def _init_worker(threads: int, gpus: list[str]) -> None:
    import multiprocessing

    import torch

    torch.set_num_threads(threads)
    if gpus:  # one GPU per worker process, round robin on a multi-GPU node
        index = (multiprocessing.current_process()._identity or (1,))[0] - 1
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]


def _visible_gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [g for g in listed.split(",") if g.strip()] if listed else [str(i) for i in range(torch.cuda.device_count())]


def _run_processes(spec: ExecutorSpec, fn: Callable[..., dict], jobs: list[Job],
                   on_done: Callable[[dict], None]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: a forked child would inherit torch's thread pool and any open model state.
    context = multiprocessing.get_context("spawn")
    left = list(jobs)
    for _ in range(MAX_ROUNDS):
        finished: set[int] = set()
        broken = False
        with ProcessPoolExecutor(max_workers=min(spec.workers, len(left)), mp_context=context,
                                 initializer=_init_worker, initargs=(spec.threads_per_worker(), _visible_gpus())) as pool:
            futures = {pool.submit(fn, *job): i for i, job in enumerate(left)}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                finished.add(futures[future])
                on_done(result)
        left = [job for i, job in enumerate(left) if i not in finished]
        if not left:
            return
        if not broken or not finished:
            break
    raise UserError(f"{len(left)} cells were not computed: their worker processes died (killed, or out of "
                    "memory); rerun the same command to resume them")


def _run_ray(spec: ExecutorSpec, fn: Callable[..., dict], jobs: list[Job], on_done: Callable[[dict], None]) -> None:
    try:
        import ray
    except ImportError:
        raise UserError(f"executor 'ray' needs Ray: pip install 'lookahead-tuning[ray]' (ray=={RAY_VERSION})") from None
    started_here = not ray.is_initialized()
    if started_here:
        options: dict[str, Any] = {"address": spec.address} if spec.address else {
            "num_cpus": spec.workers * spec.threads_per_worker()}
        ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True, **options)
    try:
        # max_retries: a task whose worker died is run again, and resumes from what the dead one left.
        remote = ray.remote(num_cpus=spec.threads_per_worker(), num_gpus=spec.gpus_per_cell,
                            max_retries=MAX_ROUNDS)(_in_ray_worker)
        pending = [remote.remote(spec.threads_per_worker(), fn, *job) for job in jobs[: spec.workers]]
        queued = list(jobs[spec.workers:])
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                on_done(ray.get(done[0]))
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, UserError):  # the cell's own one-line error, as the local runner gives it
                    raise UserError(cause.message, path=cause.path, line=cause.line) from None
                raise
            if queued:
                pending.append(remote.remote(spec.threads_per_worker(), fn, *queued.pop(0)))
    finally:
        if started_here:
            ray.shutdown()


def _in_ray_worker(threads: int, fn: Callable[..., dict], *job: Any) -> dict:
    import torch

    torch.set_num_threads(threads)
    return fn(*job)
