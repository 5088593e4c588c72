"""Data-parallel throughput: fit() on 1 and 2 processes against plain PyTorch loops.

    .venv/bin/python bench/ddp_scaling.py [--steps 150] [--rounds 3] [--device cpu|cuda]
                                          [--model lenet|mlp] [--world 2]

Measured in one run, interleaved, medians of `--rounds`:
- the plain loop (the seed's zero_grad / forward / loss / backward / step) in one process;
- fit() in one process (what a job without `train.distributed` runs);
- a plain DDP loop on `--world` processes (DistributedDataParallel, DistributedSampler,
  gloo on the CPU / nccl on CUDA: what a user would write for torchrun);
- fit() on `--world` ranks, as a distributed job's worker runs them (the per-step loss
  and flag agreements, rank 0's probes merged over the ranks).
Each process trains at batch 64 on synthetic samples (weak scaling: the world's batch is
64 x world), with no database: this is the training loop's own speed. On the CPU every
process gets one intra-op thread, so the world of 2 uses the two cores the single
process leaves to the OS and the loader; samples/s of 2 processes over 1 is the scaling.

On a GPU (`--device cuda`): world 1 only (one GPU per rank), fit() against the plain
single-GPU loop, samples/s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp
from torch import nn
from torch.distributed import PrefixStore, TCPStore  # type: ignore[attr-defined]
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from shared.net.build import build_model
from shared.spec import JobSpec
from worker.training.callbacks import Callback
from worker.training.data import make_datasets
from worker.training.loop import fit
from worker.training.ranks import Ranks

MODELS = {"mlp": ("neural_network", [1, 28, 28]), "lenet": ("lenet", [1, 32, 32])}
BATCH = 64
WARMUP = 10  # steps left out of every rate


def spec(model: str, steps: int, world: int, device: str, hooks: dict[str, Any]) -> JobSpec:
    """`steps` steps of BATCH samples per process, one epoch, no validation."""
    preset, shape = MODELS[model]
    train: dict[str, Any] = {"epochs": 1, "batch_size": BATCH, "device": device,
                             "optimizer": {"name": "SGD", "lr": 0.01}}  # fmt: skip
    if world > 1:
        train["distributed"] = {"world_size": world}
    return JobSpec.model_validate(
        {
            "model": {"preset": preset},
            "data": {
                "dataset": "synthetic",
                "input_shape": shape,
                "size": BATCH * steps * world,
                "val_fraction": 0.0,
            },
            "train": train,
            "hooks": hooks,
        }
    )


class Stamps(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, *, step: int, epoch: int, loss: float, traces: list[Any]) -> None:
        self.times.append(time.perf_counter())


def rate(stamps: list[float]) -> float:
    """Steps/s of the steady loop (from the end of step WARMUP to the last)."""
    return (len(stamps) - WARMUP) / (stamps[-1] - stamps[WARMUP - 1])


def plain_steps(job: JobSpec, device: str, rank: int, world: int) -> float:
    """The plain loop; with world > 1 torchrun-style DDP with a DistributedSampler."""
    torch.manual_seed(0)
    model: nn.Module = build_model(job.model).to(device)
    if world > 1:
        model = DistributedDataParallel(model, device_ids=[device] if device != "cpu" else None)
    data = make_datasets(job.data, seed=0, loss=job.train.loss, data_dir=None).train
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, seed=0) if world > 1 else None
    loader = DataLoader(data, batch_size=BATCH, sampler=sampler, shuffle=sampler is None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss()
    stamps = []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()
        stamps.append(time.perf_counter())
    return rate(stamps)


def fit_steps(job: JobSpec, device: str, rank: int, world: int) -> float:
    stamps = Stamps()
    fit(job, callbacks=[stamps], device=device, ranks=Ranks(rank=rank, world_size=world))
    return rate(stamps.times)


RUNNERS = {"plain": plain_steps, "fit": fit_steps}


def _rank(rank: int, runner: str, job_json: str, device: str, world: int, port: int,
          out: str) -> None:  # fmt: skip
    torch.set_num_threads(1)
    store = TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=120))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend, store=PrefixStore(runner, store), rank=rank,
                            world_size=world)  # fmt: skip
    try:
        steps = RUNNERS[runner](JobSpec.model_validate_json(job_json), device, rank, world)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        Path(out).write_text(str(steps))


def on_ranks(runner: str, job: JobSpec, device: str, world: int) -> float:
    """Steps/s of rank 0 of `world` spawned processes."""
    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    with tempfile.NamedTemporaryFile(suffix=".rate") as out:
        torch_mp.start_processes(
            _rank, args=(runner, job.model_dump_json(), device, world, store.port, out.name),
            nprocs=world, start_method="spawn",
        )  # fmt: skip
        return float(Path(out.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="lenet", choices=sorted(MODELS))
    parser.add_argument("--world", type=int, default=2)
    args = parser.parse_args()
    device = args.device
    torch.set_num_threads(1)
    hooks_off: dict[str, Any] = {"kinds": []}
    one = spec(args.model, args.steps, 1, device, hooks_off)
    runs = {
        "plain loop, 1 process": lambda: plain_steps(one, device, 0, 1),
        "fit(), 1 process": lambda: fit_steps(one, device, 0, 1),
        "fit(), 1 process, default probes": lambda: fit_steps(
            spec(args.model, args.steps, 1, device, {}), device, 0, 1
        ),
    }
    if device == "cpu" and args.world > 1:
        many = spec(args.model, args.steps, args.world, device, hooks_off)
        probed = spec(args.model, args.steps, args.world, device, {})
        w = args.world
        runs |= {
            f"plain DDP loop, {w} processes": lambda: on_ranks("plain", many, device, w),
            f"fit(), {w} ranks": lambda: on_ranks("fit", many, device, w),
            f"fit(), {w} ranks, default probes": lambda: on_ranks("fit", probed, device, w),
        }
    for run in runs.values():  # warm-up
        run()
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            results[name].append(run())
    print(
        f"\n{args.model} on {device}, batch {BATCH} per process, {args.steps} steps, "
        f"1 intra-op thread per process, medians of {args.rounds} interleaved rounds"
    )
    base_name = "plain loop, 1 process"
    base = statistics.median(results[base_name])
    for name, values in results.items():
        steps = statistics.median(values)
        world = args.world if "DDP" in name or "ranks" in name else 1
        samples = steps * BATCH * world
        line = f"  {name:<34} {steps:7.1f} steps/s {samples:9.0f} samples/s"
        print(f"{line}  {samples / (base * BATCH):5.2f}x plain 1-process samples/s")
    if device == "cpu" and args.world > 1:
        plain_ddp = statistics.median(results[f"plain DDP loop, {args.world} processes"])
        ours = statistics.median(results[f"fit(), {args.world} ranks"])
        print(f"  fit() on {args.world} ranks / plain DDP loop: {ours / plain_ddp:.2f}x")


if __name__ == "__main__":
    main()
