"""The experiment runner: a grid of methods x tasks x sweep points x seeds, the demo and the dry run."""

from .config import ExperimentConfig, load_experiment, make_experiment
from .plan import Cell, plan_cells

__all__ = ["Cell", "ExperimentConfig", "load_experiment", "make_experiment", "plan_cells", "run_experiment"]


def run_experiment(*args, **kwargs):
    """See :func:`lookahead_tuning.experiment.runner.run_experiment` (imported lazily: it pulls in torch)."""
    from .runner import run_experiment as _run

    return _run(*args, **kwargs)
