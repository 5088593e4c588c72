"""A claimed distributed job's ranks on this node: their launch and the relay.

The worker that claimed the job, or joined its gang (gang.py), spawns the node's ranks
(rank_launcher) with the address of the job's rendezvous store; on one node it serves
that store itself on the loopback interface. The relay runs each launcher tick: for the
job's first node it copies the job's cancel / preempt flags, this worker's shutdown and
the time limit down to the ranks and rank 0's progress up into the heartbeat; a node
that joined relays only its own shutdown, and whether the gang still stands.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker
from torch.distributed import PrefixStore, TCPStore  # type: ignore[attr-defined]  # from C

from shared.config import Settings
from shared.errors import TrainyardError
from shared.models import Job
from shared.spec import JobSpec
from worker.lease_keeper import LeaseKeeper
from worker.rank_launcher import Flags, RanksOutcome, backend_for, local_devices, run_ranks
from worker.rank_process import RankLaunch, errors_in_store
from worker.shutdown import SHUTTING_DOWN
from worker.training.resume import ResumePoint
from worker.training.time_limit import TimeLimit

Relay = Callable[[tuple[int, int | None, int]], Flags]


class RanksFailed(TrainyardError):
    """A rank's own error (not a crash): the job fails with it."""

    code = "training_failed"


@dataclass(frozen=True, slots=True)
class Node:
    """This node's place in the job: its rank among the nodes and the rendezvous store
    (`served` on node 0, whose worker serves it)."""

    node_rank: int
    host: str
    port: int
    prefix: str  # new for every gang / attempt: a late rank of an earlier one cannot join
    served: TCPStore | None = None


@contextmanager
def serve_store(host: str, port: int, settings: Settings) -> Iterator[TCPStore]:
    """The job's rendezvous store, served by this process (it outlasts any one rank),
    listening on `host` only: TCPStore alone would listen on every interface, and it
    has no authentication (on one node: the loopback)."""
    with socket.create_server((host, port)) as listener:
        yield TCPStore(
            host, listener.getsockname()[1], is_master=True, wait_for_workers=False,
            master_listen_fd=listener.fileno(),
            timeout=timedelta(seconds=settings.rendezvous_timeout),
        )  # fmt: skip


def launch_node(
    job_id: uuid.UUID,
    spec: JobSpec,
    *,
    worker: str,
    settings: Settings,
    node: Node,
    relay: Relay,
    resume: ResumePoint | None,
    initial_state: bytes | None,
) -> RanksOutcome:
    """Spawn this node's ranks of the job and watch them to the end."""
    distributed = spec.train.distributed
    assert distributed is not None
    device, gpus = local_devices(spec.train.device, distributed.per_node)
    backend = backend_for(distributed.backend, device)

    def launch_for(out_dir: str) -> RankLaunch:
        return RankLaunch(
            job_id=str(job_id),
            worker=worker,
            spec_json=spec.model_dump_json(),
            settings_json=settings.model_dump_json(),
            node_rank=node.node_rank,
            per_node=distributed.per_node,
            world_size=distributed.world_size,
            backend=backend,
            device=device,
            store_host=node.host,
            store_port=node.port,
            store_prefix=node.prefix,
            rendezvous_seconds=settings.rendezvous_timeout,
            collective_seconds=settings.collective_timeout,
            gpus=gpus,
            out_dir=out_dir,
            parent_pid=os.getpid(),
            resume=resume,
            initial_state=initial_state,
        )

    job_store = PrefixStore(node.prefix, node.served) if node.served is not None else None
    if job_store is not None:  # every node's ranks check they chose the same
        job_store.set("backend", f"{backend} on {device}")
    outcome = run_ranks(launch_for, relay=relay)
    if job_store is not None and outcome.result is None and not outcome.lost:
        # A rank's own error on any node (the others saw a peer go away): the job's.
        errors = errors_in_store(job_store, distributed.world_size)
        if errors:
            rank, message = min(errors.items())
            return RanksOutcome(error=f"rank {rank}: {message}")
    return outcome


def leader_relay(lease: LeaseKeeper, limit: TimeLimit | None) -> Relay:
    """The first node's relay: the job's flags down, rank 0's progress up."""

    def relay(progress: tuple[int, int | None, int]) -> Flags:
        step, total, epoch = progress
        lease.report(step=step, total=total, epoch=epoch)
        requests = lease.requests
        lost = lease.failure is not None
        return Flags(
            cancel=requests.cancel,
            preempt=requests.preempt,
            shutdown=SHUTTING_DOWN.is_set() or (limit is not None and limit.should_suspend()),
            lost=lost,
            abandon=lost,  # ranks still in the rendezvous would wait for it to time out
        )

    return relay


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """A claimed distributed job, as node 0's worker starts it: the row, its spec, the
    claim (name, heartbeat, time limit) and what the fit starts from."""

    job: Job
    spec: JobSpec
    worker: str
    sessions: sessionmaker[Session]
    settings: Settings
    lease: LeaseKeeper
    limit: TimeLimit | None
    resume: ResumePoint | None
    initial_state: bytes | None

    def launch(self, node: Node) -> RanksOutcome:
        """Start this node's ranks as node 0 and watch them to the end."""
        return launch_node(
            self.job.id, self.spec, worker=self.worker, settings=self.settings, node=node,
            relay=leader_relay(self.lease, self.limit), resume=self.resume,
            initial_state=self.initial_state,
        )  # fmt: skip


def train_one_node(run: ClaimedRun) -> RanksOutcome:
    """Train a claimed single-node distributed job on `world_size` local processes."""
    job = run.job
    with serve_store("127.0.0.1", 0, run.settings) as store:
        prefix = f"{job.id}/{job.attempt}/{uuid.uuid4().hex}"
        return run.launch(Node(node_rank=0, host="127.0.0.1", port=store.port, prefix=prefix,
                               served=store))  # fmt: skip
