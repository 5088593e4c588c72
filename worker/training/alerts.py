"""Alerts on gradient norms: a layer's gradients crossing the spec's thresholds."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.spec import AlertSpec
from worker.training.callbacks import Event
from worker.training.probes import TraceRow


@dataclass
class AlertWatcher:
    """Gradient norms crossing the spec's thresholds, reported once per layer and kind."""

    spec: AlertSpec | None
    seen: set[tuple[str, str, str]] = field(default_factory=set)  # (alert, kind, layer)

    def check(self, rows: Sequence[TraceRow]) -> list[Event]:
        """Events for rows crossing a threshold for the first time."""
        if self.spec is None:
            return []
        events = []
        for row in rows:
            # A non-finite norm is the non-finite check's business (and, under fp16, the
            # GradScaler's): an alert here would use up the layer's one alert.
            if row.kind not in ("backward", "param_grad") or not math.isfinite(row.norm):
                continue
            if row.rank is not None:  # one rank's share: the whole batch's row decides
                continue
            for name, limit, crossed in (
                ("vanishing_gradient", self.spec.vanishing_below, operator.lt),
                ("exploding_gradient", self.spec.exploding_above, operator.gt),
            ):
                key = (name, row.kind, row.layer)
                if limit is None or key in self.seen or not crossed(row.norm, limit):
                    continue
                self.seen.add(key)
                events.append(
                    Event(
                        kind=name,
                        message=f"{row.kind} norm of '{row.layer}' is {row.norm:.3g} at step "
                        f"{row.step} (threshold {limit:g})",
                        data={
                            "layer": row.layer,
                            "kind": row.kind,
                            "step": row.step,
                            "norm": row.norm,
                            "threshold": limit,
                        },
                    )
                )
        return events
