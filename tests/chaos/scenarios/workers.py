"""Faults of the training worker: SIGKILL mid-step, SIGTERM (a redeploy), and the same
message delivered twice."""

from __future__ import annotations

import contextlib
import random
import signal
import time

from tests.chaos.cluster import FINAL, SWEEP_EVERY, Cluster, NotReady, wait_for
from tests.chaos.scenarios.common import (
    LEASE,
    SHUTDOWN_GRACE,
    SPEC,
    STEPS,
    Outcome,
    check_rows_and_result,
    identical,
    reference,
    running_at_least,
    span,
)

# -- 1. SIGKILL the training worker ------------------------------------------------------


def kill_worker(
    cluster: Cluster, *, jobs: int = 3, parallel: int = 3, rng: random.Random | None = None
) -> Outcome:
    """SIGKILL a job's worker at a random step and start a new one at once; each job must
    resume from its last checkpoint and end exactly as the uninterrupted run did. Jobs
    run `parallel` at a time (one worker each), so their leases run out together."""
    rng = rng or random.Random()
    out = Outcome(
        "worker SIGKILLed at a random step (restarted at once)",
        "all succeed, resumed from a checkpoint, 0 duplicate / 0 missing step rows, "
        "loss series and final sha256 identical to an uninterrupted run",
    )
    cluster.reset()
    cluster.ensure_workers(parallel)
    ref = reference(cluster)
    back_after: list[float] = []
    worker_ready: list[float] = []
    succeeded = resumed = 0
    for first in range(0, jobs, parallel):
        cluster.ensure_workers(parallel)
        ids = [cluster.submit_ok(SPEC) for _ in range(min(parallel, jobs - first))]
        at_step, killed_at = _kill_at_random_steps(out, cluster, ids, rng)
        again, ready = _wait_running_again(out, cluster, killed_at)
        back_after += again
        worker_ready += ready
        for job_id in ids:
            final = cluster.wait_final(job_id)
            if not out.check(
                final["status"] == "succeeded", f"job {job_id} {final['status']}: {final['error']}"
            ):
                continue
            succeeded += 1
            events = [m for k, m in cluster.events(job_id) if k == "resumed"]
            from_step = (final["summary"] or {}).get("resumed_from_step")
            if out.check(
                len(events) == 1
                and events[0].startswith("resumed from step ")
                and final["attempt"] == 2
                and from_step is not None
                and from_step > 0,
                f"job {job_id}: resumed events {events}, attempt {final['attempt']}, "
                f"resumed_from_step {from_step} (killed past step {at_step[job_id]})",
            ):
                resumed += 1
            check_rows_and_result(out, cluster, job_id, ref)
    f = out.figures
    out.measured = (
        f"{succeeded}/{jobs} succeeded, {resumed}/{jobs} resumed from a checkpoint; "
        f"duplicate rows {f.get('duplicate_rows', 0)}, missing rows {f.get('missing_rows', 0)}; "
        f"identical losses {f.get('identical_losses', 0)}/{jobs}, "
        f"sha256 {f.get('identical_sha256', 0)}/{jobs}; kill -> running again "
        f"{span(back_after)} (lease {LEASE:.0f} s, sweep every {SWEEP_EVERY:.0f} s; "
        f"a restarted worker was ready {span(worker_ready)} after its start; "
        f"{parallel} jobs at a time)"
    )
    f["kill_to_running_s"] = back_after
    cluster.reset()
    return out


def _kill_at_random_steps(
    out: Outcome, cluster: Cluster, ids: list[str], rng: random.Random
) -> tuple[dict[str, int], dict[str, float]]:
    """SIGKILL each job's worker once the job passes a random step and start another
    worker in its place; ({job: step seen at the kill}, {job: monotonic kill time})."""
    # Past step 10, two resumable checkpoints (every 5 steps) are surely stored.
    targets = {i: rng.randint(11, STEPS - 15) for i in ids}
    at_step: dict[str, int] = {}
    killed_at: dict[str, float] = {}
    deadline = time.monotonic() + 180
    while len(at_step) < len(ids):
        for job_id in (i for i in ids if i not in at_step):
            row = cluster.job_row(job_id)
            if row["status"] in FINAL:
                out.problems.append(f"job {job_id} ended before step {targets[job_id]}")
                at_step[job_id] = row["step"]
            elif row["status"] == "running" and row["step"] >= targets[job_id]:
                worker = cluster.worker_named(row["worker"])
                assert worker is not None, f"no worker process named {row['worker']}"
                worker.kill()
                killed_at[job_id] = time.monotonic()
                at_step[job_id] = row["step"]
                cluster.start_worker(wait=False)
        if time.monotonic() > deadline:
            raise NotReady(f"jobs {ids} did not reach steps {targets} in 180 s")
        time.sleep(0.05)
    return at_step, killed_at


def _wait_running_again(
    out: Outcome, cluster: Cluster, killed_at: dict[str, float]
) -> tuple[list[float], list[float]]:
    """Seconds from each kill to its job being claimed again (attempt 2, running), and
    from each restarted worker's start to its "ready" line."""
    waiting = set(killed_at)
    restarted = [w for w in cluster.workers if w.alive() and not w.has_logged(" ready.")]
    took: list[float] = []
    ready: list[float] = []
    deadline = time.monotonic() + LEASE + 180
    while (waiting or restarted) and time.monotonic() < deadline:
        for job_id in list(waiting):
            row = cluster.job_row(job_id)
            if row["status"] in FINAL or (row["status"] == "running" and row["attempt"] >= 2):
                took.append(time.monotonic() - killed_at[job_id])
                out.check(row["status"] == "running", f"job {job_id} ended, never ran again")
                waiting.discard(job_id)
        for worker in list(restarted):
            if worker.has_logged(" ready."):
                ready.append(time.monotonic() - worker.started_at)
                restarted.remove(worker)
        time.sleep(0.1)
    out.check(not waiting, f"jobs {sorted(waiting)} never ran again after the kill")
    return took, ready


# -- 2. SIGTERM the worker (warm shutdown) ------------------------------------------------


def term_worker(cluster: Cluster, *, rng: random.Random | None = None) -> Outcome:
    """SIGTERM the worker mid-job: requeued with its attempt given back, the worker
    exits within the shutdown grace, and a new worker resumes the job exactly."""
    rng = rng or random.Random()
    out = Outcome(
        "worker SIGTERMed mid-job (redeploy: Celery warm shutdown)",
        f"job requeued without using an attempt, resumed by a new worker; "
        f"worker exits within {SHUTDOWN_GRACE:.0f} s",
    )
    cluster.reset()
    worker = cluster.ensure_workers(1)[0]
    ref = reference(cluster)
    job_id = cluster.submit_ok(SPEC)
    target = rng.randint(6, STEPS - 25)
    row = cluster.wait_job(job_id, running_at_least(target), f"to pass step {target}")
    out.check(row["status"] == "running", f"job {job_id} ended before SIGTERM")
    sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    try:
        code = worker.popen.wait(SHUTDOWN_GRACE + 60)
    except Exception:
        code = None
    exit_s = time.monotonic() - sent
    out.check(code is not None, f"worker did not exit {exit_s:.1f} s after SIGTERM")
    out.check_time(exit_s <= SHUTDOWN_GRACE, f"worker exited after {exit_s:.1f} s (code {code})")
    after = cluster.job_row(job_id)
    events = cluster.events(job_id)
    out.check(
        after["status"] == "queued" and after["attempt"] == 0,
        f"after SIGTERM the job is {after['status']}, attempt {after['attempt']}",
    )
    out.check(
        ("requeued", "the worker is shutting down") in events, f"no 'requeued' event: {events}"
    )
    messages = cluster.queued_messages()[job_id]
    out.check(messages == 1, f"{messages} messages for the requeued job (expected 1)")
    cluster.start_worker(wait=False)
    final = cluster.wait_final(job_id)
    from_step = (final["summary"] or {}).get("resumed_from_step")
    if out.check(final["status"] == "succeeded", f"job {final['status']}: {final['error']}"):
        out.check(final["attempt"] == 1, f"attempt {final['attempt']} at the end (expected 1)")
        out.check(bool(from_step), f"resumed_from_step {from_step}")
        check_rows_and_result(out, cluster, job_id, ref)
    out.measured = (
        f"worker exit {exit_s:.1f} s after SIGTERM (code {code}); job {final['status']}, "
        f"attempt {final['attempt']}, resumed from step {from_step} (SIGTERM past step "
        f"{row['step']}); requeue messages {messages}; identical losses and sha256: "
        f"{identical(out)}"
    )
    out.figures["exit_s"] = exit_s
    cluster.reset()
    return out


# -- 5. The same message twice ------------------------------------------------------------


def duplicate_message(cluster: Cluster) -> Outcome:
    """Send the task for one job twice, to two idle workers: trained once."""
    from shared.config import Settings
    from shared.queues import make_celery, send_job

    out = Outcome(
        "the same job's message delivered twice (two idle workers)",
        "trained once: one 'claimed' event, step rows not duplicated, job succeeded",
    )
    cluster.reset()
    workers = cluster.ensure_workers(2)
    ref = reference(cluster)
    logged = {w.pid: len(w.log.read_bytes()) for w in workers}
    job_id = cluster.submit_ok(SPEC)
    celery = make_celery(Settings(broker_url=cluster.broker_url))
    try:
        send_job(celery, job_id=job_id, kind="train", queue="train")
    finally:
        celery.close()
    final = cluster.wait_final(job_id)
    claimed = [m for k, m in cluster.events(job_id) if k == "claimed"]
    out.check(final["status"] == "succeeded", f"job {final['status']}: {final['error']}")
    out.check(
        len(claimed) == 1 and final["attempt"] == 1,
        f"claimed events {claimed}, attempt {final['attempt']}",
    )
    check_rows_and_result(out, cluster, job_id, ref)

    def skipped_count() -> int:
        return sum(w.log.read_bytes()[logged[w.pid] :].count(b"'skipped'") for w in workers)

    with contextlib.suppress(NotReady):  # none logged is a finding, reported below
        wait_for("a worker to log the second delivery as 'skipped'", skipped_count, 30, 0.2)
    skipped = skipped_count()
    out.check(skipped == 1, f"{skipped} deliveries were skipped by a worker (expected 1)")
    out.measured = (
        f"job {final['status']}, {len(claimed)} claim(s), attempt {final['attempt']}, "
        f"second delivery skipped {skipped}x; duplicate rows "
        f"{out.figures.get('duplicate_rows')}, identical to the reference: "
        f"{identical(out)}"
    )
    cluster.reset()
    return out
