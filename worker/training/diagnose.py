"""Where a NaN or Inf came from, and alerts on gradient norms: what the trace rows say."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.spec import AlertSpec
from worker.training.probes import KIND_ORDER, TraceRow

_WHAT = {
    "forward_pre": "input",
    "forward": "output",
    "backward": "gradient",
    "param_grad": "gradient",
    "weights": "weight",
}


def first_nonfinite(rows: Sequence[TraceRow]) -> TraceRow | None:
    """The row where a non-finite value shows first: forward order, then backward order."""
    bad = [r for r in rows if r.nonfinite > 0]
    if not bad:
        return None
    return min(bad, key=lambda r: (KIND_ORDER[r.kind] if r.kind != "weights" else -1, r.seq))


def nonfinite_message(row: TraceRow | None, step: int, loss: float) -> str:
    """One line a user can act on, e.g. non-finite gradient first seen in backward of 'conv2'."""
    if row is None:
        return (
            f"loss became {loss} at step {step} with every recorded input, output and gradient "
            "finite; check the loss and its targets, or lower train.optimizer.lr"
        )
    return (
        f"non-finite {_WHAT[row.kind]} first seen in {row.kind} of '{row.layer}' at step {step} "
        f"({row.nonfinite} of {row.numel} values); lower train.optimizer.lr, add "
        "train.grad_clip, or check that layer"
    )


@dataclass
class Event:
    """A job event produced by training (kind, one-line message, structured data)."""

    kind: str
    message: str
    data: dict[str, object] = field(default_factory=dict)


@dataclass
class AlertWatcher:
    """Gradient norms crossing the spec's thresholds, reported once per layer and kind."""

    spec: AlertSpec | None
    _seen: set[tuple[str, str, str]] = field(default_factory=set)

    def check(self, rows: Sequence[TraceRow]) -> list[Event]:
        """Events for rows crossing a threshold for the first time."""
        if self.spec is None:
            return []
        events = []
        for row in rows:
            if row.kind not in ("backward", "param_grad"):
                continue
            for name, limit, crossed in (
                ("vanishing_gradient", self.spec.vanishing_below, lambda n, x: n < x),
                ("exploding_gradient", self.spec.exploding_above, lambda n, x: n > x),
            ):
                key = (name, row.kind, row.layer)
                if limit is None or key in self._seen or not crossed(row.norm, limit):
                    continue
                self._seen.add(key)
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
