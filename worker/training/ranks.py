"""Where a fit runs in a data-parallel group, and what its processes agree on.

A fit on one process has `Ranks()` (rank 0 of 1): every method below returns what it is
given, and no collective runs. In a distributed job (torch.distributed, one process per
rank, DistributedDataParallel averaging the gradients in backward) the processes must
take the same decisions at the same steps, or a collective waits forever:

- the loss each step reports and checks for NaN / inf is the mean over all ranks (one
  all_reduce before the optimizer step: a rank whose loss is non-finite sent NaN into
  every rank's averaged gradients);
- stop (cancel), suspend (preempt, shutdown) and "take a resumable checkpoint now" are
  what any rank asked for (rank 0 reads the job's flags, every rank its own node's
  shutdown), asked during the step and agreed in the same all_reduce as the loss;
- each rank evaluates its share of the validation split and the sums are added up, so
  every rank has the same metrics (early stopping and ReduceLROnPlateau decide alike);
- probe rows of rank-local tensors (layer inputs, outputs and output gradients, which
  each rank sees for its share of the batch) are merged into the statistics of the whole
  batch; parameter gradients are already all-reduced, and weights are the same on every
  rank.

These agreements run on `control`, a gloo group on the host (the default group with
gloo; a group of its own next to nccl), so they cost a few microseconds of CPU, not a
device synchronisation.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Kinds whose tensors each rank sees only for its own share of the batch.
RANK_LOCAL_KINDS = frozenset({"forward_pre", "forward", "backward"})


@dataclass(frozen=True, slots=True)
class Asks:
    """What the callbacks asked for after a step."""

    stop: bool = False
    suspend: bool = False
    checkpoint: bool = False


@dataclass
class Ranks:
    """This process's place in the job: rank, world size, and the group to agree on."""

    rank: int = 0
    world_size: int = 1
    control: dist.ProcessGroup | None = None  # None: the default group

    @property
    def distributed(self) -> bool:
        """Whether other processes train this job too."""
        return self.world_size > 1

    @property
    def leads(self) -> bool:
        """Rank 0 owns the outside world: rows, checkpoints, progress."""
        return self.rank == 0

    def step_sync(
        self, total: torch.Tensor, poll: Callable[[], Asks] | None
    ) -> tuple[float, Asks | None]:
        """The step's loss over every rank's share of the batch (the host copy of a single
        process's `total.item()`) and, in a distributed job, what any rank's `poll` asked
        for: one all_reduce of both. Alone: the loss, and None (the loop asks after the
        step)."""
        loss = total.item()
        if not self.distributed:
            return loss, None
        asks = poll() if poll is not None else Asks()
        values = torch.tensor([loss, asks.stop, asks.suspend, asks.checkpoint], dtype=torch.float64)
        dist.all_reduce(values, group=self.control)
        total_loss, stop, suspend, checkpoint = values.tolist()
        agreed = Asks(stop=stop > 0, suspend=suspend > 0, checkpoint=checkpoint > 0)
        return total_loss / self.world_size, agreed

    def sum_values(self, values: list[float]) -> list[float]:
        """`values` added up over the ranks (float64), on every rank."""
        if not self.distributed:
            return values
        summed = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(summed, group=self.control)
        return [float(v) for v in summed.tolist()]

    def same_everywhere(self, value: int, what: str) -> None:
        """Refuse to train when the ranks disagree on `value` (say, the steps the data
        gives each rank: nodes holding different data files)."""
        if not self.distributed:
            return
        mine = torch.tensor([value, -value], dtype=torch.int64)
        dist.all_reduce(mine, op=dist.ReduceOp.MAX, group=self.control)
        high, low = int(mine[0]), -int(mine[1])
        if high != low:
            raise RuntimeError(f"the ranks disagree on {what}: from {low} to {high}")

    def merge_rows(
        self, keys: list[tuple[str, str]], numels: list[int], raw: torch.Tensor
    ) -> tuple[torch.Tensor, list[int], torch.Tensor | None]:
        """Statistics of rank-local tensors over the whole batch.

        `raw` is this rank's (n, 7) host table of stats.reduce() (norm, mean, var, min, max,
        nonzero, nonfinite) for the step's captured tensors, `keys` their (kind, layer) and
        `numels` their element counts, in the same order on every rank (the same model,
        the same hooks; checked). Rows of other kinds are returned as they are. The third
        value is every rank's own table, (world, n, 8): numel, then the raw columns (None
        when nothing was merged).
        """
        kinds = [kind for kind, _ in keys]
        if not self.distributed or not any(kind in RANK_LOCAL_KINDS for kind in kinds):
            return raw, numels, None
        codes = [float(zlib.crc32(f"{kind}:{layer}".encode())) for kind, layer in keys]
        extra = torch.tensor([codes, numels], dtype=torch.float64).T
        local = torch.cat([extra, raw], dim=1)
        tables = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(tables, local, group=self.control)
        stack = torch.stack(tables)[:, :, 1:]  # (world, n, 8): numel, then raw
        if not all(torch.equal(table[:, 0], local[:, 0]) for table in tables):
            raise RuntimeError("the ranks' probe rows differ: they cannot be merged")
        counts = stack[:, :, 0]
        n = counts.sum(0)
        sq = stack[:, :, 1].square().sum(0)
        mean = (stack[:, :, 2] * counts).sum(0) / n
        merged = torch.stack(
            [
                sq.sqrt(),
                mean,
                (sq / n - mean.square()).clamp_min(0.0),  # as stats.reduce() derives it
                stack[:, :, 4].amin(0),
                stack[:, :, 5].amax(0),
                stack[:, :, 6].sum(0),
                stack[:, :, 7].sum(0),
            ],
            dim=1,
        )
        local_rows = [kind in RANK_LOCAL_KINDS for kind in kinds]
        table = torch.where(torch.tensor(local_rows)[:, None], merged, raw)
        totals = [
            int(total) if local else own
            for total, local, own in zip(n.tolist(), local_rows, numels, strict=True)
        ]
        return table, totals, stack

    def gather_rng(self, device: torch.device) -> list[dict[str, torch.Tensor]] | None:
        """Every rank's torch random generators (CPU, and this rank's CUDA device), on
        every rank, for a resumable checkpoint; None in one process (its state has them)."""
        if not self.distributed:
            return None
        states = {"cpu": torch.get_rng_state()}
        if device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(device)
        gathered: list[dict[str, torch.Tensor]] = [{} for _ in range(self.world_size)]
        for name, own in states.items():
            parts = [torch.empty_like(own) for _ in range(self.world_size)]
            dist.all_gather(parts, own, group=self.control)
            for rank_states, part in zip(gathered, parts, strict=True):
                rank_states[name] = part
        return gathered

    def set_rng(self, states: dict[str, torch.Tensor], device: torch.device) -> None:
        """Put this rank's generators back as gather_rng() took them."""
        torch.set_rng_state(states["cpu"])
        if "cuda" in states and device.type == "cuda":
            torch.cuda.set_rng_state(states["cuda"], device)

    def backward_scale(self) -> float:
        """Output gradients are of each rank's mean loss over its share; the job's loss is
        the mean over all ranks, whose gradient is `world_size` times smaller."""
        return float(self.world_size)


def rank_seed(seed: int, rank: int) -> int:
    """The global RNG seed of `rank` after the model is built (dropout differs by rank,
    as it differs by sample in one process); rank 0 of one process keeps the job's stream."""
    return (seed * 1_000_003 + rank) % (2**63 - 1) if rank else seed
