"""How the peers log gradients, attached to the plain loop of probe_overhead.py (imported
as a sibling module). Installed with the `bench` extra only: pip install -e '.[bench]'.

    wandb.watch(model, log="gradients" | "all", log_freq=1), offline (WANDB_MODE=offline):
        its hooks take a histogram of every gradient (and parameter) each step, written
        when the step's wandb.log() call commits it
    TensorBoard histograms: SummaryWriter.add_histogram of every gradient every step
    TensorBoard norms: one add_scalar(grad.norm()) per parameter every step
"""

from __future__ import annotations

import tempfile
from typing import Any, Protocol

from torch import nn


class Peer(Protocol):
    def after_backward(self, model: nn.Module, step: int, loss: float) -> None: ...

    def close(self) -> None: ...


class WandbWatch:
    """wandb.watch at log_freq=1, offline, committed by one wandb.log per step."""

    def __init__(self, model: nn.Module, log: str) -> None:
        import wandb

        self._dir = tempfile.TemporaryDirectory()
        self._run: Any = wandb.init(
            mode="offline", dir=self._dir.name, project="trainyard-bench",
            settings=wandb.Settings(silent=True, console="off"),
        )  # fmt: skip
        self._run.watch(model, log=log, log_freq=1)

    def after_backward(self, model: nn.Module, step: int, loss: float) -> None:
        self._run.log({"loss": loss}, step=step)

    def close(self) -> None:
        self._run.finish()
        self._dir.cleanup()


class TensorBoard:
    """Every parameter's gradient each step: a histogram, or one norm scalar."""

    def __init__(self, model: nn.Module, histograms: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._dir = tempfile.TemporaryDirectory()
        self._writer = SummaryWriter(self._dir.name)
        self._histograms = histograms

    def after_backward(self, model: nn.Module, step: int, loss: float) -> None:
        for name, param in model.named_parameters():
            if param.grad is None:
                continue
            if self._histograms:
                self._writer.add_histogram(f"grad/{name}", param.grad, step)
            else:
                self._writer.add_scalar(f"grad_norm/{name}", param.grad.norm(), step)
        self._writer.add_scalar("loss", loss, step)

    def close(self) -> None:
        self._writer.close()
        self._dir.cleanup()


PEERS = {
    'wandb.watch(log="gradients", log_freq=1)': lambda m: WandbWatch(m, "gradients"),
    'wandb.watch(log="all", log_freq=1)': lambda m: WandbWatch(m, "all"),
    "TensorBoard gradient histograms every step": lambda m: TensorBoard(m, histograms=True),
    "TensorBoard one norm scalar per parameter": lambda m: TensorBoard(m, histograms=False),
}


def available() -> bool:
    """Whether the bench extra is installed (the rows are left out otherwise)."""
    try:
        import torch.utils.tensorboard  # noqa: F401
        import wandb  # noqa: F401
    except ImportError:
        return False
    return True
