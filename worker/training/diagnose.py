"""Where a NaN or Inf came from, and alerts on gradient norms: what the trace rows say."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.spec import AlertSpec
from worker.training.probes import TraceRow

_WHAT = {
    "forward_pre": "input",
    "forward": "output",
    "backward": "gradient",
    "param_grad": "gradient",
    "weights": "weight",
}


# Weights first (they feed everything), then inputs and outputs in the order the forward
# pass met them, then gradients in the order the backward pass produced them.
_PHASE = {"weights": 0, "forward_pre": 1, "forward": 1, "backward": 2, "param_grad": 3}


def first_nonfinite(rows: Sequence[TraceRow]) -> TraceRow | None:
    """The row where a non-finite value shows first: forward order, then backward order."""
    # A counted row is bad when it holds NaN / inf; an uncounted one when its norm is not
    # finite (which can also mean finite values whose squares overflow float32).
    bad = [
        r
        for r in rows
        if (r.nonfinite > 0 if r.nonfinite is not None else not math.isfinite(r.norm))
    ]
    if not bad:
        return None
    return min(bad, key=lambda r: (_PHASE[r.kind], r.seq))


def nonfinite_message(row: TraceRow | None, step: int, loss: float) -> str:
    """One line a user can act on, e.g. non-finite gradient first seen in backward of 'conv2'."""
    if row is None:
        return (
            f"loss became {loss} at step {step} with every recorded input, output and gradient "
            "finite; check the loss and its targets, or lower train.optimizer.lr"
        )
    count = row.nonfinite if row.nonfinite is not None else "some"
    return (
        f"non-finite {_WHAT[row.kind]} first seen in {row.kind} of '{row.layer}' at step {step} "
        f"({count} of {row.numel} values); lower train.optimizer.lr, add "
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
            # A non-finite norm is the non-finite check's business (and, under fp16, the
            # GradScaler's): an alert here would use up the layer's one alert.
            if row.kind not in ("backward", "param_grad") or not math.isfinite(row.norm):
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
