"""LookAhead preview: the data transform at the heart of the method (docs/method.md, section 2).

``transform`` holds the maths on one (instruction, answer) pair, ``dataset`` applies it to rows of any
supported format and to ``datasets.Dataset``, ``cli`` is the ``lookahead-tuning preview`` command.
"""

from .dataset import MODES, PreviewConfig, PreviewStats, preview_dataset, preview_example, preview_rows
from .transform import (
    DEFAULT_CONNECTOR,
    DEFAULT_M,
    DEFAULT_PREFIX,
    first_answer_tokens,
    first_answer_tokens_batch,
    real_preview,
    virtual_preview,
)

__all__ = [
    "DEFAULT_CONNECTOR",
    "DEFAULT_M",
    "DEFAULT_PREFIX",
    "MODES",
    "PreviewConfig",
    "PreviewStats",
    "first_answer_tokens",
    "first_answer_tokens_batch",
    "preview_dataset",
    "preview_example",
    "preview_rows",
    "real_preview",
    "virtual_preview",
]
