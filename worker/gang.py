"""A job over several nodes (train.distributed.nodes > 1), as its first node and as a
node that joins it.

The worker that claims the job serves the job's rendezvous store (a TCPStore at
TRAINYARD_NODE_ADDRESS : TRAINYARD_RENDEZVOUS_PORT), opens the job's gang in its row and
sends the queue one message per missing node (repository.gangs). Every worker checks for
an open gang of its queue before it claims a job, and joins it. Node 0 waits, holding
the job's lease, until every node has joined, then all start their ranks, which meet in
`init_process_group` through the store. A gang that has not filled within
TRAINYARD_RENDEZVOUS_TIMEOUT is released: the job goes back to the queue and is not
claimed again for as long, so the worker serves other jobs meanwhile, and a job that
needs more nodes than are free never holds one forever.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.db_retry import retry_database
from shared.models import Job
from shared.queues import make_celery, send_job
from shared.repository import Seat
from shared.spec_check import load_stored_spec
from worker.job_inputs import initial_state, resume_point_to_read
from worker.lease_keeper import LeaseKeeper
from worker.rank_launcher import Flags, RanksOutcome
from worker.ranks_job import ClaimedRun, Node, Relay, launch_node, serve_store
from worker.shutdown import SHUTTING_DOWN

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25  # how often node 0 counts the nodes that joined
CHECK_SECONDS = 1.0  # how often a joined node checks that its gang still stands


@dataclass(frozen=True, slots=True)
class GangRun:
    """How node 0's part ended: the gang was released (not filled), or its ranks' outcome."""

    outcome: RanksOutcome | None = None  # None: released (did not fill) or cancelled
    cancelled: bool = False  # cancelled while waiting for the nodes


def node_address(settings: Settings) -> str:
    """Where the other nodes reach this worker's rendezvous store: TRAINYARD_NODE_ADDRESS,
    else this host's address on the route to the broker (the network every worker shares:
    the compose network, a cluster's LAN), else the loopback (the embedded defaults, one
    machine)."""
    if settings.node_address:
        return settings.node_address
    broker = urlsplit(settings.resolved_broker_url())
    if not broker.hostname:
        return "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((broker.hostname, broker.port or 6379))  # no packet is sent
            return str(probe.getsockname()[0])
    except OSError:
        return socket.gethostname()


def lead_gang(run: ClaimedRun) -> GangRun:
    """Node 0: open the gang, wait for the other nodes, train, close the gang."""
    distributed = run.spec.train.distributed
    assert distributed is not None and distributed.nodes > 1
    sessions, settings = run.sessions, run.settings
    host = node_address(settings)
    with serve_store(host, settings.rendezvous_port, settings) as store:
        with session_scope(sessions) as session:
            seat = repository.open_gang(
                session=session, job_id=run.job.id, worker=run.worker, size=distributed.nodes,
                host=host, port=store.port, join_seconds=settings.rendezvous_timeout,
            )  # fmt: skip
        try:
            _call_nodes(run.job, settings, distributed.nodes - 1)
            joined = _wait_for_nodes(sessions, seat, run.lease, settings.rendezvous_timeout)
            if joined < seat.size:
                return _not_filled(sessions, seat, run.worker, run.lease, joined, settings)
            node = Node(node_rank=0, host=host, port=store.port, prefix=seat.gang_id,
                        served=store)  # fmt: skip
            return GangRun(outcome=run.launch(node))
        finally:
            retry_database(
                lambda: _close(sessions, seat),
                what="closing the job's gang",
                window_seconds=settings.db_outage_seconds,
            )


def _not_filled(
    sessions: sessionmaker[Session],
    seat: Seat,
    worker: str,
    lease: LeaseKeeper,
    joined: int,
    settings: Settings,
) -> GangRun:
    """The wait ended before every node joined: cancelled, or back to the queue (at once
    when this worker is shutting down; else not claimable for one wait)."""
    if lease.requests.cancel:
        return GangRun(cancelled=True)
    wait_s = settings.rendezvous_timeout
    if SHUTTING_DOWN.is_set():
        retry_after, reason = 0.0, "the worker is shutting down; back in the queue"
    else:
        retry_after = wait_s
        reason = (
            f"{joined} of {seat.size} nodes joined within {wait_s:g} s "
            f"(TRAINYARD_RENDEZVOUS_TIMEOUT); back in the queue, claimable again in {wait_s:g} s"
        )
    log.info("job %s: %s", seat.job_id, reason)
    with session_scope(sessions) as session:
        repository.release_gang(session=session, seat=seat, worker=worker,
                                retry_after_seconds=retry_after, reason=reason)  # fmt: skip
    return GangRun()


def _close(sessions: sessionmaker[Session], seat: Seat) -> None:
    with session_scope(sessions) as session:
        repository.close_gang(session=session, seat=seat)


def _call_nodes(job: Job, settings: Settings, count: int) -> None:
    """A turn at the job's queue for each missing node: free workers join."""
    try:
        with make_celery(settings) as celery:
            for _ in range(count):
                send_job(celery, job_id=str(job.id), kind=job.kind, queue=job.queue)
    except Exception:
        # Workers that finish their jobs look for open gangs too; the wait decides.
        log.exception("job %s: could not call the other nodes", job.id)


def _wait_for_nodes(
    sessions: sessionmaker[Session], seat: Seat, lease: LeaseKeeper, wait_s: float
) -> int:
    """Nodes joined when all have, or when the wait ends (time, cancel, shutdown, a lost
    claim)."""
    deadline = time.monotonic() + wait_s
    while True:
        with sessions() as session:
            joined = repository.gang_members(session=session, seat=seat)
        if joined >= seat.size:
            return joined
        stop = lease.requests.cancel or SHUTTING_DOWN.is_set() or lease.failure is not None
        if stop or time.monotonic() >= deadline:
            return joined
        time.sleep(POLL_SECONDS)


def join_gang(
    sessions: sessionmaker[Session], job_id: uuid.UUID, worker: str, settings: Settings
) -> Seat | None:
    """A seat in an open gang of the message's queue, if one misses a node."""

    def join() -> Seat | None:
        with session_scope(sessions) as session:
            message_job = session.get(Job, job_id)
            if message_job is None:
                return None
            return repository.join_gang(session=session, queue=message_job.queue, worker=worker)

    return retry_database(join, what="joining a gang", window_seconds=settings.db_outage_seconds)


def follow_gang(
    seat: Seat, *, worker: str, sessions: sessionmaker[Session], settings: Settings
) -> str:
    """A joined node: start this node's ranks and watch them; node 0 records the outcome."""
    with sessions() as session:
        job = session.get(Job, seat.job_id)
        assert job is not None
        spec = load_stored_spec(job.spec, job_id=job.id)
        start = initial_state(session, spec)
    resume = resume_point_to_read(sessions, seat.job_id)
    log.info("job %s: node %d of %d (gang %s)", seat.job_id, seat.node_rank, seat.size,
             seat.gang_id)  # fmt: skip
    node = Node(node_rank=seat.node_rank, host=seat.host, port=seat.port, prefix=seat.gang_id)
    outcome = launch_node(
        seat.job_id, spec, worker=worker, settings=settings, node=node,
        relay=_member_relay(sessions, seat), resume=resume, initial_state=start,
    )  # fmt: skip
    if outcome.error or outcome.crash:
        log.warning("job %s: node %d ended: %s", seat.job_id, seat.node_rank,
                    outcome.error or outcome.crash)  # fmt: skip
    return f"node {seat.node_rank}"


def _member_relay(sessions: sessionmaker[Session], seat: Seat) -> Relay:
    """A joined node relays its own shutdown; when its gang is gone (node 0 ended or
    released it) its ranks are stopped."""
    checked, standing = 0.0, True

    def relay(progress: tuple[int, int | None, int]) -> Flags:
        nonlocal checked, standing
        now = time.monotonic()
        if now - checked >= CHECK_SECONDS:
            checked = now
            try:
                with sessions() as session:
                    standing = repository.gang_is_open(session=session, seat=seat)
            except Exception:
                log.warning("job %s: could not check the gang", seat.job_id, exc_info=True)
        return Flags(shutdown=SHUTTING_DOWN.is_set(), lost=not standing, abandon=not standing)

    return relay
