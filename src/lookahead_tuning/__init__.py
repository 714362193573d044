"""LookAhead Tuning: safer fine-tuning through partial answer previews.

The pipeline, one sub-package per stage:
data -> preview -> train -> generate -> judge -> analyse -> report, with experiment/ running grids of it.

The names below are the public Python API, one per verb of the command line (README, "From Python").
They are imported on first use, so ``import lookahead_tuning`` stays fast and pulls in neither torch
nor transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it (relative to this package)
_API: dict[str, str] = {
    # preview: the method's data transform
    "real_preview": "preview.transform",
    "virtual_preview": "preview.transform",
    "first_answer_tokens": "preview.transform",
    "preview_dataset": "preview.dataset",
    "preview_rows": "preview.dataset",
    # methods and training
    "METHODS": "methods",
    "get_method": "methods",
    "TrainConfig": "train.config",
    "train": "",  # the train package itself, which is callable (train/__init__.py): a name can't be both
    "method_examples": "train.methods",
    "aligned_seed": "experiment.align",
    # models, data, generation
    "load_model": "models",
    "load_tokenizer": "models",
    "load_task": "data.tasks",
    # evaluation and analysis
    "evaluate_safety": "analyse.safety",
    "evaluate_overrefusal": "analyse.safety",
    "evaluate_utility": "analyse.utility",
    "per_position_kl": "analyse.kl",
    "forecast_loss": "analyse.forecast",
    # experiments
    "load_experiment": "experiment.config",
    "run_experiment": "experiment.runner",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'lookahead_tuning' has no attribute '{name}'")
    if not module:
        return importlib.import_module(f".{name}", __name__)
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
