"""Alerts on the recorded statistics: gradients that explode or vanish, outputs that die."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from shared.spec import AlertSpec
from worker.training.callbacks import Callback, Event
from worker.training.probes import TraceRow

# The event kinds a rule produces; with alerts.stop each one ends the job as pruned.
ALERT_KINDS = frozenset({"vanishing_gradient", "exploding_gradient", "dead_units"})


@dataclass
class AlertWatcher:
    """The spec's rules, each reported once per layer and kind.

    A vanishing gradient counts only after `vanishing_steps` logged steps in a row below
    the threshold (one small norm early in training is normal); the streaks are kept
    across a resume with the rest of the state.
    """

    spec: AlertSpec | None
    seen: set[tuple[str, str, str]] = field(default_factory=set)  # (alert, kind, layer)
    streaks: dict[str, int] = field(default_factory=dict)  # "kind/layer" -> steps below

    def check(self, rows: Sequence[TraceRow]) -> list[Event]:
        """Events for rules that fire for the first time at these rows."""
        if self.spec is None:
            return []
        events = []
        for row in rows:
            if row.rank is not None:  # one rank's share: the whole batch's row decides
                continue
            for name, value, threshold in self._crossed(self.spec, row):
                key = (name, row.kind, row.layer)
                if key in self.seen:
                    continue
                self.seen.add(key)
                events.append(_event(name, row, value, threshold))
        return events

    def _crossed(self, spec: AlertSpec, row: TraceRow) -> Iterator[tuple[str, float, float]]:
        """(alert, value, threshold) for each rule this row breaks."""
        if row.kind == "forward":
            dead = spec.dead_above
            if dead is not None and row.zero_frac is not None and row.zero_frac > dead:
                yield "dead_units", row.zero_frac, dead
            return
        # A non-finite norm is the non-finite check's business (and, under fp16, the
        # GradScaler's): an alert here would use up the layer's one alert.
        if row.kind not in ("backward", "param_grad") or not math.isfinite(row.norm):
            return
        if spec.exploding_above is not None and row.norm > spec.exploding_above:
            yield "exploding_gradient", row.norm, spec.exploding_above
        if spec.vanishing_below is not None:
            streak = f"{row.kind}/{row.layer}"
            below = row.norm < spec.vanishing_below
            self.streaks[streak] = self.streaks.get(streak, 0) + 1 if below else 0
            if self.streaks[streak] >= spec.vanishing_steps:
                yield "vanishing_gradient", row.norm, spec.vanishing_below


def _event(name: str, row: TraceRow, value: float, threshold: float) -> Event:
    if name == "dead_units":
        what = f"output of '{row.layer}' is {value:.0%} zeros"
    else:
        what = f"{row.kind} norm of '{row.layer}' is {value:.3g}"
    return Event(
        kind=name,
        message=f"{what} at step {row.step} (threshold {threshold:g})",
        data={
            "layer": row.layer,
            "kind": row.kind,
            "step": row.step,
            "zero_frac" if name == "dead_units" else "norm": value,
            "threshold": threshold,
        },
    )


class AlertStop(Callback):
    """hooks.alerts.stop: the first alert ends training; `reason` says which and where."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def on_event(self, *, event: Event) -> None:
        if self.reason is None and event.kind in ALERT_KINDS:
            self.reason = f"{event.kind.replace('_', ' ')}: {event.message}"

    def should_stop(self) -> bool:
        return self.reason is not None
