"""A non-finite loss: where it came from, and what the step that met it does.

Before each step the loop keeps what a diagnosis needs (`NonFiniteGuard.remember`): the
random generators' state, so a re-run draws the same dropout, and under "skip_step" the
buffers (BatchNorm statistics), so the step can be undone. When the loss is NaN or
infinite, `replay_step` re-runs the step's micro-batches one at a time with every hook
armed and `first_nonfinite` names the first layer and tensor that went bad; the guard
then fails the job (hooks.on_nonfinite "fail") or skips the step, up to
MAX_SKIPPED_IN_A_ROW in a row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from shared.spec import HookSpec
from worker.training.callbacks import Event
from worker.training.probes import HookRecorder, TraceRow

Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs, targets) of one micro-batch

# What a re-run of a bad step records: every hook, only what locates a NaN / Inf.
NONFINITE_PROBE = HookSpec(
    kinds=["forward_pre", "forward", "backward", "param_grad", "weights"],
    stats=["norm", "nonfinite"],
)
# hooks.on_nonfinite "skip_step" gives up after this many bad steps in a row: the model
# itself is broken then (NaN weights), not one batch.
MAX_SKIPPED_IN_A_ROW = 10

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


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says at which step and where."""


@dataclass
class RandomState:
    """The generators' state at a step's start, so a diagnostic re-run draws the same."""

    cpu: torch.Tensor
    cuda: list[torch.Tensor] | None

    @classmethod
    def capture(cls, device: torch.device) -> RandomState:
        """The CPU generator's state, and every CUDA generator's on a CUDA device."""
        cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda)

    def restore(self) -> None:
        """Put the generators back as `capture` found them."""
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def buffer_copies(model: nn.Module) -> list[torch.Tensor]:
    """Copies of the model's buffers (BatchNorm statistics)."""
    return [b.detach().clone() for b in model.buffers()]


def restore_buffers(model: nn.Module, saved: list[torch.Tensor]) -> None:
    """Put buffers back as buffer_copies() found them."""
    with torch.no_grad():
        for buffer, copy in zip(model.buffers(), saved, strict=True):
            buffer.copy_(copy)


@dataclass
class Replay:
    """What was kept at a step's start: to re-run it (random state) and undo it (buffers)."""

    rng: RandomState
    buffers: list[torch.Tensor] | None  # kept only where bad steps are skipped

    def restore_buffers(self, model: nn.Module) -> None:
        """Undo the step's changes to the buffers, if they were kept."""
        if self.buffers is not None:
            restore_buffers(model, self.buffers)


class NonFiniteGuard:
    """hooks.on_nonfinite: "fail" ends training at the first non-finite loss; "skip_step"
    drops the step and goes on, until MAX_SKIPPED_IN_A_ROW steps in a row were bad."""

    def __init__(self, *, skip: bool) -> None:
        self.skip = skip
        self.in_a_row = 0

    def remember(self, model: nn.Module, device: torch.device) -> Replay:
        """Before a step: what re-running it (and, when skipping, undoing it) needs."""
        return Replay(RandomState.capture(device), buffer_copies(model) if self.skip else None)

    def passed(self) -> None:
        """A step with a finite loss: the run of bad steps is over."""
        self.in_a_row = 0

    def skipped(self, problem: str, step: int) -> Event:
        """A bad step whose rows were reported: TrainingDiverged under "fail", otherwise
        the event that says the step was skipped."""
        if not self.skip:
            raise TrainingDiverged(problem)
        self.in_a_row += 1
        return Event("skipped_step", problem, {"step": step})

    def give_up_if_stuck(self, problem: str) -> None:
        """TrainingDiverged once MAX_SKIPPED_IN_A_ROW steps in a row were skipped."""
        if self.in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise TrainingDiverged(
                f"{self.in_a_row} steps in a row skipped as non-finite; last: {problem}"
            )


def replay_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[Batch],
    step: int,
    replay: Replay,
    *,
    scale: float,
    run_batch: Callable[[Batch, HookRecorder], object],
) -> list[TraceRow]:
    """Re-run a bad step's micro-batches one at a time with every hook armed (`run_batch`
    does forward and backward); the rows of the first micro-batch that shows a non-finite
    value. Random draws (dropout) replay, and the buffers are put back afterwards."""
    buffers = buffer_copies(model)
    replay.rng.restore()
    probe = HookRecorder(model, NONFINITE_PROBE).attach()
    rows: list[TraceRow] = []
    try:
        for batch in batches:
            optimizer.zero_grad()
            probe.begin_step(step, force=True)
            run_batch(batch, probe)
            rows = probe.collect(scale=scale, scaled=("backward", "param_grad"))
            if first_nonfinite(rows) is not None:
                break  # the micro-batch where it happens, not a later finite one
        return rows
    finally:
        probe.detach()
        restore_buffers(model, buffers)


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
