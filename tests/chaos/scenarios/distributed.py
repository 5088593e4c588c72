"""Faults of a job over two nodes: one node's worker SIGKILLed mid-training."""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path
from typing import Any

from tests.chaos.cluster import Cluster
from tests.chaos.scenarios.common import SPEC, TINY, Outcome, running_at_least

# SPEC on two ranks (a global batch of 128: 11 steps an epoch), on one node and on two.
# Six epochs (66 steps), so that a kill at step 20 at the latest always lands before the
# end: with three, a job on a quiet machine could finish the last steps before the kill.
ONE_NODE: dict[str, Any] = copy.deepcopy(SPEC)
ONE_NODE["train"]["epochs"] = 6
ONE_NODE["train"]["distributed"] = {"world_size": 2}
TWO_NODES: dict[str, Any] = copy.deepcopy(ONE_NODE)
TWO_NODES["train"]["distributed"] = {"world_size": 2, "nodes": 2}
RENDEZVOUS = 8.0  # TRAINYARD_RENDEZVOUS_TIMEOUT in the cluster


def kill_gang_node(cluster: Cluster, rng: random.Random | None = None) -> Outcome:
    """SIGKILL the worker of node 1 of a two-node job at a random step. With one worker
    left the job must wait without holding it (another job runs meanwhile); once a second
    worker starts, the job resumes from its checkpoint and ends as the one-node run did."""
    rng = rng or random.Random()
    out = Outcome(
        "node 1's worker of a 2-node job SIGKILLed mid-training; a new one started later",
        "every rank logs to its worker's log as `rank N: `; no rank left behind; the lone "
        "worker runs another job meanwhile; the job resumes "
        "from a checkpoint once 2 workers are up: losses and final sha256 identical to "
        "the same job on one node",
    )
    cluster.reset()
    cluster.ensure_workers(2)
    one = cluster.submit_ok(ONE_NODE)
    ref = cluster.wait_final(one)
    if not out.check(ref["status"] == "succeeded", f"one-node run {ref['status']}: {ref['error']}"):
        return out
    job = cluster.submit_ok(TWO_NODES)
    at = rng.randint(6, 20)
    row = cluster.wait_job(job, running_at_least(at), f"to train past step {at}")
    leader = cluster.worker_named(row["worker"])
    followers = [w for w in cluster.workers if w is not leader and w.alive()]
    if not out.check(leader is not None and len(followers) == 1, "cannot tell the two nodes"):
        return out
    assert leader is not None
    out.check(leader.has_logged("rank 0: "), "rank 0's lines are not in its worker's log")
    out.check(followers[0].has_logged("rank 1: "), "rank 1's lines are not in its worker's log")
    followers[0].kill()
    killed = time.monotonic()
    ended = cluster.job_row(job)["status"]
    if not out.check(ended == "running", f"the job was {ended} when its node was killed"):
        return out
    time.sleep(1.0)
    orphans = _ranks_of(cluster, exclude={w.pid for w in cluster.workers if w.alive()})
    out.check(not orphans, f"ranks of the killed worker still alive: {orphans}")
    # One worker: the job waits for a second node, and gives the worker back meanwhile.
    other = cluster.submit_ok(TINY)
    other_row = cluster.wait_final(other, timeout=120)
    other_done = time.monotonic() - killed
    out.check(other_row["status"] == "succeeded", f"the other job {other_row['status']}")
    released = any("nodes joined within" in m for _, m in cluster.events(job))
    out.check(released, "the job's gang was never released while one worker was up")
    out.check(cluster.job_row(job)["status"] != "succeeded", "trained on one node?")
    cluster.ensure_workers(2)
    final = cluster.wait_final(job)
    back = time.monotonic() - killed
    summary = final["summary"] or {}
    out.check(final["status"] == "succeeded", f"job {final['status']}: {final['error']}")
    out.check(
        summary.get("resumed_from_step", 0) > 0,
        f"resumed_from_step {summary.get('resumed_from_step')}",
    )
    same_losses = cluster.loss_series(job) == cluster.loss_series(one)
    same_weights = cluster.final_sha256(job) == cluster.final_sha256(one)
    out.check(same_losses, "loss series differs from the one-node run")
    out.check(same_weights, "final weights differ from the one-node run")
    out.measured = (
        f"killed at step >= {at}; orphan ranks {len(orphans)}; other job done "
        f"{other_done:.1f} s after the kill, gang released: {'yes' if released else 'no'}; "
        f"job {final['status']} {back:.1f} s after the kill, resumed from step "
        f"{summary.get('resumed_from_step')}, identical losses / sha256: "
        f"{'yes' if same_losses else 'no'} / {'yes' if same_weights else 'no'}"
    )
    return out


def _ranks_of(cluster: Cluster, *, exclude: set[int]) -> list[int]:
    """Spawned rank processes of this cluster's workers whose parent is not a live worker."""
    marker = f"TRAINYARD_HOME={cluster.home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"spawn_main" not in cmdline or marker not in (entry / "environ").read_bytes():
                continue
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[0] != "Z" and int(stat[1]) not in exclude:
            found.append(int(entry.name))
    return found
