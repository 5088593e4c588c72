"""Starting a node's ranks of a distributed job and watching them to the end.

The worker that claimed the job (or a slot of it, on a job over several nodes) spawns
`per_node` processes with torch.multiprocessing's spawn context and supervises them
from the task, while its heartbeat thread keeps the claim. Why spawn and not
`torch.distributed.run`'s elastic agent: the agent installs its own SIGTERM / SIGINT
handlers in the calling process (the Celery worker, whose warm shutdown must keep
working), and its restarts would duplicate what leases and resumable checkpoints
already do for every job; the rendezvous it offers is replaced by the job row (which
workers form the gang) and a TCPStore the first node serves.

Each tick the launcher relays the job's flags down and rank 0's progress up (see
rank_channel). When a rank fails, the others are given a moment to notice (a
collective with a dead peer errors at once on gloo and nccl) and are then killed, so no
rank is left behind; the outcome says whether it was the job's own error (the job
fails) or a crash (a rank killed, a peer gone: the job is retried from its last
resumable checkpoint, using an attempt).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as torch_mp

from worker.rank_channel import RankChannel
from worker.rank_process import RankLaunch, run_rank
from worker.training.callbacks import FitResult

log = logging.getLogger(__name__)

# After the first rank fails, how long the others get to notice before they are killed.
FAILURE_GRACE_SECONDS = 10.0
TICK_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class Flags:
    """What the launcher relays down each tick."""

    cancel: bool = False
    preempt: bool = False
    shutdown: bool = False
    lost: bool = False
    abandon: bool = False  # stop the ranks now, wherever they are (the job is not ours)


@dataclass(frozen=True, slots=True)
class RanksOutcome:
    """How a node's ranks ended: rank 0's FitResult (on its node), the job's own error
    (`error`: the job fails), a crash (`crash`: retry from the last checkpoint) or a lost
    claim."""

    result: FitResult | None = None
    error: str | None = None
    crash: str | None = None
    lost: bool = False


def local_devices(device: str, per_node: int) -> tuple[str, tuple[str, ...] | None]:
    """The device every rank trains on ("cpu" / "cuda") and, on CUDA, the GPU each local
    rank is given (one each, from this worker's CUDA_VISIBLE_DEVICES)."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return "cpu", None
    if not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but this worker has no CUDA device")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [g for g in visible.split(",") if g] if visible else [
        str(i) for i in range(torch.cuda.device_count())
    ]  # fmt: skip
    if len(gpus) < per_node:
        raise RuntimeError(
            f"the job runs {per_node} processes per node, one per GPU; this worker sees "
            f"{len(gpus)} GPU(s)"
        )
    return "cuda", tuple(gpus[:per_node])


def backend_for(requested: str, device: str) -> str:
    """`auto`: nccl on CUDA, gloo on the CPU."""
    if requested == "auto":
        return "nccl" if device == "cuda" else "gloo"
    if requested == "nccl" and device != "cuda":
        raise RuntimeError("distributed.backend 'nccl' needs CUDA; this worker trains on the CPU")
    return requested


def run_ranks(
    launch_for: Callable[[str], RankLaunch],
    *,
    relay: Callable[[tuple[int, int | None, int]], Flags],
) -> RanksOutcome:
    """Spawn this node's ranks, relay flags and progress until they all end, and say how
    they ended. `launch_for(out_dir)` builds the launch; `relay(progress)` is called every
    tick with rank 0's progress and returns the flags to send down."""
    ctx = torch_mp.get_context("spawn")
    channel = RankChannel(ctx)
    out_dir = tempfile.mkdtemp(prefix="trainyard-ranks-")
    try:
        launch = launch_for(out_dir)
        processes = [
            ctx.Process(
                target=run_rank,
                args=(local, launch, channel),
                name=f"rank-{launch.rank(local)}",
            )
            for local in range(launch.per_node)
        ]
        try:
            for process in processes:
                process.start()
        except BaseException:
            _kill(processes)
            raise
        _supervise(processes, channel, relay)
        return _outcome(launch, processes, Path(out_dir))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _supervise(
    processes: list[Any],
    channel: RankChannel,
    relay: Callable[[tuple[int, int | None, int]], Flags],
) -> None:
    failed_at: float | None = None
    try:
        while any(p.exitcode is None for p in processes):
            flags = relay(channel.progress())
            channel.send(cancel=flags.cancel, preempt=flags.preempt, shutdown=flags.shutdown,
                         lost=flags.lost)  # fmt: skip
            if flags.abandon:
                log.warning("the job is no longer this worker's: stopping its ranks")
                _kill(processes)
            wait([p.sentinel for p in processes if p.exitcode is None], timeout=TICK_SECONDS)
            if failed_at is None and any(p.exitcode not in (None, 0) for p in processes):
                failed_at = time.monotonic()
                log.warning("a rank failed; the others get %gs to stop", FAILURE_GRACE_SECONDS)
            if failed_at is not None and time.monotonic() - failed_at > FAILURE_GRACE_SECONDS:
                _kill(processes)
        relay(channel.progress())  # the last progress rank 0 reported
    except BaseException:
        _kill(processes)  # the worker is going (SIGTERM past its grace, an error): so do they
        raise
    finally:
        for process in processes:
            if process.pid is not None:
                process.join()


def _kill(processes: list[Any]) -> None:
    for process in processes:
        if process.pid is not None and process.exitcode is None:
            process.kill()


def _outcome(launch: RankLaunch, processes: list[Any], out_dir: Path) -> RanksOutcome:
    reports = {
        launch.rank(local): _read(out_dir / f"rank-{launch.rank(local)}.json")
        for local in range(len(processes))
    }
    if any(r.get("lost") for r in reports.values()):
        return RanksOutcome(lost=True)
    own = [(rank, r["error"]) for rank, r in sorted(reports.items()) if r.get("error")
           and not r.get("peer")]  # fmt: skip
    if own:
        rank, message = own[0]
        return RanksOutcome(error=message if launch.world_size == 1 else f"rank {rank}: {message}")
    crashes = [
        _exit_text(launch.rank(local), process.exitcode)
        for local, process in enumerate(processes)
        if process.exitcode != 0
    ]
    if crashes:
        return RanksOutcome(crash="; ".join(crashes))
    result = reports.get(0, {}).get("result")
    return RanksOutcome(result=FitResult(**result) if result is not None else None)


def _read(path: Path) -> dict[str, Any]:
    try:
        report: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # killed before it could say
    return report


def _exit_text(rank: int, code: int | None) -> str:
    if code is not None and code < 0:
        return f"rank {rank} was killed by {signal.Signals(-code).name}"
    return f"rank {rank} exited with code {code} (a peer failed or it was stopped)"
