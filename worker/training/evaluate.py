"""Evaluation on a held-out split, and the training mode that respects frozen layers."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from worker.training.ranks import Ranks


def train_mode(model: nn.Module) -> None:
    """model.train(), except normalisation layers whose parameters are all frozen.

    A frozen BatchNorm must not keep updating its running statistics either, or a
    "frozen" body would still change under fine-tuning.
    """
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own = list(module.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                module.eval()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, ...]],
    criterion: nn.Module,
    device: torch.device,
    classification: bool,
    split: str = "val",
    ranks: Ranks | None = None,
) -> dict[str, float]:
    """`<split>_loss` (mean over samples) and, for classification, `<split>_accuracy`.

    In a distributed job (`ranks`) each rank evaluates its share of the split (`loader`)
    and the sums are added over the ranks: every rank gets the metrics of the whole split.
    """
    model.eval()
    # Accumulate on the device and read back once, not once per batch.
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        output = model(x)
        total_loss += criterion(output, y).double() * x.shape[0]
        if classification:
            labels = y.argmax(dim=1) if y.is_floating_point() else y  # one-hot targets
            correct += (output.argmax(dim=1) == labels).sum()
        seen += x.shape[0]
    train_mode(model)
    loss_sum, hits, count = total_loss.item(), float(correct.item()), float(seen)
    if ranks is not None and ranks.distributed:
        loss_sum, hits, count = ranks.sum_values([loss_sum, hits, count])
    metrics = {f"{split}_loss": loss_sum / count}
    if classification:
        metrics[f"{split}_accuracy"] = hits / count
    return metrics
