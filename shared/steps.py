"""How many batches, optimizer steps and epochs a training spec takes: the one place that
counts them, for the API's limits and the worker's loop alike."""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared.spec import TrainSpec


def drops_last_batch(samples: int, batch_size: int) -> bool:
    """Whether the training loader drops its last batch: it would hold one sample, which
    BatchNorm cannot train on (and one sample in an epoch changes nothing else)."""
    return samples > 1 and samples % batch_size == 1


def rank_share(samples: int, world_size: int) -> int:
    """The samples each of `world_size` processes takes per epoch (padded up to equal)."""
    return math.ceil(samples / world_size)


@dataclass(frozen=True, slots=True)
class StepPlan:
    """A fit's arithmetic: batches and optimizer steps per epoch, and the totals.

    An optimizer step takes `train.accumulate_steps` batches (an epoch's last step may
    take fewer); training runs `train.epochs` epochs, or `train.max_steps` steps if that
    comes first, and the last epoch may be partial. A distributed job's processes each
    take `ceil(samples / world_size)` of an epoch's samples (the last few repeat, as
    torch's DistributedSampler pads), `batch_size` at a time: batches are counted per
    process, and every process takes the same number.
    """

    samples: int  # training samples per epoch (all processes)
    batches_per_epoch: int  # what the training loader yields
    steps_per_epoch: int
    total_steps: int
    epochs: int  # epochs begun, the last one possibly partial

    @classmethod
    def of(cls, train: TrainSpec, samples: int) -> StepPlan:
        """The plan for `samples` training samples under `train`."""
        share = rank_share(samples, train.world_size)
        batches = math.ceil(share / train.batch_size)
        if drops_last_batch(share, train.batch_size):
            batches -= 1
        per_epoch = math.ceil(batches / train.accumulate_steps)
        limits = [train.max_steps] if train.max_steps is not None else []
        if train.epochs is not None:
            limits.append(train.epochs * per_epoch)
        total = min(limits)  # TrainSpec insists on epochs, max_steps or both
        return cls(
            samples=samples,
            batches_per_epoch=batches,
            steps_per_epoch=per_epoch,
            total_steps=total,
            epochs=math.ceil(total / per_epoch),
        )
