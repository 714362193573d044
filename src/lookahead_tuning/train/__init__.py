"""Training: the config, the method data pipeline, the collator, the Trainer subclass and its losses.

The package is also the top-level ``train`` function (``from lookahead_tuning import train;
train(config)``): ``lookahead_tuning.train`` is this package once any of its modules is imported, so
the package itself is callable and hands the call to :func:`.api.train`.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _TrainPackage(types.ModuleType):
    def __call__(self, config: Any) -> dict[str, Any]:
        """Train one model as ``config`` (a ``TrainConfig`` or a dict of its keys) says; see :func:`.api.train`."""
        from .api import train

        return train(config)


sys.modules[__name__].__class__ = _TrainPackage
