"""Early stopping on an epoch metric, and remembering the best epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from shared.spec import EarlyStoppingSpec


@dataclass
class EarlyStopping:
    """Counts epochs without an improvement of at least `min_delta` in `monitor`."""

    spec: EarlyStoppingSpec
    best: float = field(default=math.nan)
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record an epoch; True when this epoch is the best so far."""
        value = metrics[self.spec.monitor]
        if math.isnan(self.best) or self._better(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        """`patience` epochs in a row without improvement."""
        return self.bad_epochs >= self.spec.patience

    def _better(self, value: float) -> bool:
        if self.spec.mode == "min":
            return value < self.best - self.spec.min_delta
        return value > self.best + self.spec.min_delta
