"""One rank of a distributed job: a process the claiming worker spawned.

It joins the job's process group through the TCPStore the job's first node serves
(torch.distributed's c10d rendezvous: every rank connects, `init_process_group` returns
once all `world_size` have), trains its replica with fit(), and leaves a one-line
account in `rank-N.json` for the worker: the FitResult (rank 0), or what went wrong.
Rank 0 writes the job's rows and checkpoints itself, under the claiming worker's name.

Logs and prints carry a `rank N` prefix and go where the worker's go. The process dies
with the worker that spawned it (PR_SET_PDEATHSIG): no rank outlives its worker.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

import torch
import torch.distributed as dist
from torch.distributed import PrefixStore, TCPStore  # type: ignore[attr-defined]  # re-exported from C

from shared.config import Settings
from shared.db import make_engine, make_session_factory
from shared.errors import LeaseLost, SpecError
from shared.spec import JobSpec
from worker.messages import user_message
from worker.rank_channel import ChannelLease, NodeAsks, RankChannel, ShutdownFlag
from worker.training.callbacks import Callback
from worker.training.loop import fit
from worker.training.ranks import Ranks
from worker.training.resume import ResumePoint

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RankLaunch:
    """Everything a node's ranks need, sent once at spawn (plain values and our own
    checkpoint bytes; the spec and settings travel as JSON)."""

    job_id: str
    worker: str  # the name the job's claim is held under (rank 0 writes as it)
    spec_json: str
    settings_json: str
    node_rank: int
    per_node: int
    world_size: int
    backend: str  # "gloo" | "nccl"
    device: str  # "cpu" | "cuda"
    store_host: str
    store_port: int
    store_prefix: str  # one per attempt: a late rank of an earlier gang cannot join
    rendezvous_seconds: float
    collective_seconds: float
    gpus: tuple[str, ...] | None  # CUDA_VISIBLE_DEVICES of each local rank
    out_dir: str
    parent_pid: int  # the worker that spawned the ranks
    resume: ResumePoint | None = None
    initial_state: bytes | None = None

    def rank(self, local_rank: int) -> int:
        """The global rank of this node's `local_rank`-th process."""
        return self.node_rank * self.per_node + local_rank


def run_rank(local_rank: int, launch: RankLaunch, channel: RankChannel) -> None:
    """The spawned process's entry point."""
    rank = launch.rank(local_rank)
    _die_with_parent(launch.parent_pid)
    # Signals are the worker's to handle (Ctrl-C in a terminal, SIGTERM to the process
    # group): it relays a shutdown, and the ranks checkpoint and stop together.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _prefix_output(rank)
    if launch.gpus is not None:  # before CUDA starts in this process: one GPU per rank
        os.environ["CUDA_VISIBLE_DEVICES"] = launch.gpus[local_rank]
    if "OMP_NUM_THREADS" not in os.environ:
        # The node's cores shared out, as torchrun does: per_node processes each using
        # every core would fight over them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // launch.per_node))
    report: dict[str, Any]
    code = 0
    job_store: Any = None
    try:
        job_store = _job_store(launch)
        result = _train(rank, launch, channel, job_store)
        report = {"result": dataclasses.asdict(result)} if result is not None else {"done": True}
    except LeaseLost:
        report = {"lost": True}
    except Exception as exc:
        log.exception("rank %d failed", rank)
        report = {"error": user_message(exc), "peer": _peer_failure(exc)}
        code = 1
        if not report["peer"] and job_store is not None:
            _tell_node_0(job_store, rank, report["error"])
    # The account first: tearing a group down after a failure can block.
    Path(launch.out_dir, f"rank-{rank}.json").write_text(json.dumps(report))
    if code == 0 and dist.is_initialized():
        dist.destroy_process_group()
    logging.shutdown()
    if code:
        os._exit(code)  # no interpreter teardown (a dead peer's group could block it)
    sys.exit(0)


def _job_store(launch: RankLaunch) -> Any:
    """The job's rendezvous store (node 0 serves it), under this gang's prefix."""
    store = TCPStore(
        launch.store_host, launch.store_port, is_master=False,
        timeout=timedelta(seconds=launch.rendezvous_seconds), wait_for_workers=False,
    )  # fmt: skip
    return PrefixStore(launch.store_prefix, store)


def _tell_node_0(job_store: Any, rank: int, message: str) -> None:
    """Leave this rank's own error where node 0's worker reads it (errors_in_store): the
    other ranks only see a peer go away."""
    try:
        job_store.set(f"error/{rank}", message)
    except Exception:
        log.warning("rank %d: could not report its error to node 0", rank, exc_info=True)


def errors_in_store(job_store: Any, world_size: int) -> dict[int, str]:
    """The ranks' own errors that reached the job's store, by rank."""
    errors = {}
    for rank in range(world_size):
        key = f"error/{rank}"
        if job_store.check([key]):
            errors[rank] = job_store.get(key).decode(errors="replace")
    return errors


def _train(rank: int, launch: RankLaunch, channel: RankChannel, job_store: Any) -> Any:
    settings = Settings.model_validate_json(launch.settings_json)
    spec = JobSpec.model_validate_json(launch.spec_json)
    _same_backend_as_node_0(job_store, launch)
    _rendezvous(job_store, launch)
    dist.init_process_group(
        launch.backend,
        store=job_store,
        rank=rank,
        world_size=launch.world_size,
        timeout=timedelta(seconds=launch.collective_seconds),
    )
    # Agreements are host values: beside nccl they need a gloo group of their own.
    control = (
        dist.new_group(backend="gloo", timeout=timedelta(seconds=launch.collective_seconds))
        if launch.backend == "nccl"
        else None
    )
    assert control is None or isinstance(control, dist.ProcessGroup)
    ranks = Ranks(rank=rank, world_size=launch.world_size, control=control)
    callbacks: list[Callback]
    if ranks.leads:
        from worker.sinks import DatabaseSink  # rank 0 only: the others touch no database

        sessions = make_session_factory(make_engine(settings.resolved_database_url()))
        callbacks = [
            DatabaseSink(
                sessions=sessions,
                job_id=uuid.UUID(launch.job_id),
                worker=launch.worker,
                settings=settings,
                lease=ChannelLease(channel, launch.job_id),
                shutting_down=ShutdownFlag(channel),
                keep_raw_steps=spec.hooks.keep_raw_steps,
                traced=bool(spec.hooks.kinds),
            )
        ]
    else:
        callbacks = [NodeAsks(channel)]
    log.info("rank %d of %d joined (%s, %s)", rank, launch.world_size, launch.backend,
             launch.device)  # fmt: skip
    result = fit(
        spec,
        callbacks=callbacks,
        device=launch.device,
        max_params=settings.max_params,
        data_dir=settings.data_dir,
        initial_state=launch.initial_state,
        resume=launch.resume,
        checkpoint_seconds=settings.checkpoint_seconds,
        ranks=ranks,
    )
    return result if ranks.leads else None


class RendezvousTimeout(RuntimeError):
    """Not every rank reached the job's store in time (a node died after joining)."""


def _same_backend_as_node_0(job_store: Any, launch: RankLaunch) -> None:
    """Every node must train on the same device kind with the same backend (a gang over
    a CPU and a GPU worker cannot): node 0's worker put its choice in the store."""
    chosen = job_store.get("backend").decode()
    mine = f"{launch.backend} on {launch.device}"
    if chosen != mine:
        raise SpecError.at(
            "train.distributed.backend",
            f"node {launch.node_rank} would train with {mine}, node 0 with {chosen}: "
            "set train.device (and backend) so that every node can run it",
        )


def _rendezvous(store: Any, launch: RankLaunch) -> None:
    """Wait, at most the rendezvous timeout, until every rank has reached the store:
    init_process_group would wait for a missing rank as long as a collective may take."""
    store.add("ranks_joined", 1)
    deadline = time.monotonic() + launch.rendezvous_seconds
    while (joined := int(store.add("ranks_joined", 0))) < launch.world_size:
        if time.monotonic() > deadline:
            raise RendezvousTimeout(
                f"{joined} of {launch.world_size} ranks joined within "
                f"{launch.rendezvous_seconds:g} s (TRAINYARD_RENDEZVOUS_TIMEOUT)"
            )
        time.sleep(0.05)


def _peer_failure(exc: BaseException) -> bool:
    """Whether the error says another rank went away (its own failure is the cause)."""
    if isinstance(exc, dist.DistError | RendezvousTimeout):
        return True
    text = str(exc)
    return any(
        words in text
        for words in ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                      "Socket Timeout", "timed out", "NCCL", "gloo")
    )  # fmt: skip


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the worker that spawned it dies (Linux), and end at once
    if it already has (it died while this process was starting)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)


class _Prefixed:
    """A text stream that starts every line with a prefix."""

    def __init__(self, stream: TextIO, prefix: str) -> None:
        self._stream, self._prefix, self._at_start = stream, prefix, True

    def write(self, text: str) -> int:
        out = []
        for piece in text.splitlines(keepends=True):
            if self._at_start:
                out.append(self._prefix)
            out.append(piece)
            self._at_start = piece.endswith("\n")
        self._stream.write("".join(out))
        self._stream.flush()
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _prefix_output(rank: int) -> None:
    sys.stdout = _Prefixed(sys.stdout, f"rank {rank}: ")
    sys.stderr = _Prefixed(sys.stderr, f"rank {rank}: ")
    logging.basicConfig(
        level=logging.INFO,
        format="[%(asctime)s: %(levelname)s] %(name)s: %(message)s",  # after "rank N: "
        force=True,
    )
