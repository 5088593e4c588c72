"""A claimed distributed job on this node: its rendezvous, its ranks, the relay.

On one node the worker that claimed the job serves the job's TCPStore on the loopback
interface and spawns all `world_size` ranks (rank_launcher). The heartbeat thread that
holds the claim keeps running in this process; each tick of the launcher copies the
job's cancel / preempt flags, this worker's shutdown and the time limit down to the
ranks, and rank 0's progress up into the heartbeat.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from torch.distributed import TCPStore  # type: ignore[attr-defined]  # re-exported from C

from shared.config import Settings
from shared.errors import TrainyardError
from shared.models import Job
from shared.spec import JobSpec
from worker.lease_keeper import LeaseKeeper
from worker.rank_launcher import Flags, RanksOutcome, backend_for, local_devices, run_ranks
from worker.rank_process import RankLaunch
from worker.shutdown import SHUTTING_DOWN
from worker.training.resume import ResumePoint
from worker.training.time_limit import TimeLimit


class RanksFailed(TrainyardError):
    """A rank's own error (not a crash): the job fails with it."""

    code = "training_failed"


def train_on_ranks(
    job: Job,
    spec: JobSpec,
    *,
    worker: str,
    settings: Settings,
    lease: LeaseKeeper,
    limit: TimeLimit | None,
    resume: ResumePoint | None,
    initial_state: bytes | None,
) -> RanksOutcome:
    """Train a claimed single-node distributed job on `world_size` local processes."""
    distributed = spec.train.distributed
    assert distributed is not None and distributed.world_size > 1
    if distributed.nodes > 1:
        raise RanksFailed(
            f"train.distributed.nodes is {distributed.nodes}: jobs over several nodes are "
            "claimed by that many workers together"
        )
    device, gpus = local_devices(spec.train.device, distributed.per_node)
    backend = backend_for(distributed.backend, device)
    # The store lives in this process, not in rank 0: it outlasts any one rank.
    store = TCPStore(
        "127.0.0.1", 0, is_master=True, wait_for_workers=False,
        timeout=timedelta(seconds=settings.rendezvous_timeout_seconds),
    )  # fmt: skip

    def launch_for(out_dir: str) -> RankLaunch:
        return RankLaunch(
            job_id=str(job.id),
            worker=worker,
            spec_json=spec.model_dump_json(),
            settings_json=settings.model_dump_json(),
            node_rank=0,
            per_node=distributed.per_node,
            world_size=distributed.world_size,
            backend=backend,
            device=device,
            store_host="127.0.0.1",
            store_port=store.port,
            store_prefix=f"{job.id}/{job.attempt}/{uuid.uuid4().hex}",
            rendezvous_seconds=settings.rendezvous_timeout_seconds,
            collective_seconds=settings.collective_timeout_seconds,
            gpus=gpus,
            out_dir=out_dir,
            resume=resume,
            initial_state=initial_state,
        )

    def relay(progress: tuple[int, int | None, int]) -> Flags:
        step, total, epoch = progress
        lease.report(step=step, total=total, epoch=epoch)
        requests = lease.requests
        return Flags(
            cancel=requests.cancel,
            preempt=requests.preempt,
            shutdown=SHUTTING_DOWN.is_set() or (limit is not None and limit.should_suspend()),
            lost=lease.failure is not None,
        )

    return run_ranks(launch_for, relay=relay)  # the store closes with this frame
