"""Keyword-only data functions over the job tables; every job status change is a guarded UPDATE.

    jobs         create, read, list, cancel; the event log
    leases       claim, heartbeat, finish, requeue; what the sweeper re-sends or ends
    gangs        a job over several nodes: open, join, release and close its gang
    results      metric and trace rows: idempotent batch writes, bounded reads
    checkpoints  store (pruning old resume states), list, find by id or tag, resume
    served       the records of predictions answered on the serving line, in batches
    sweeps       sweep rows and their trials: create, read, lock for a controller pass

Call sites use the package (`repository.claim_job(session=..., ...)`); the modules keep
each level of the data model apart.
"""

from shared.repository.checkpoints import (
    checkpoint_id,
    delete_checkpoints_after,
    get_checkpoint,
    latest_resumable,
    list_checkpoints,
    save_checkpoint,
)
from shared.repository.gangs import (
    Seat,
    close_gang,
    gang_is_open,
    gang_members,
    join_gang,
    open_gang,
    release_gang,
)
from shared.repository.jobs import (
    add_event,
    create_job,
    database_now,
    get_job,
    list_events,
    list_jobs,
    mark_enqueued,
    relax_durability,
    request_cancel,
    request_preempt,
)
from shared.repository.leases import (
    Requests,
    assert_held,
    claim_for_message,
    claim_job,
    claim_next,
    end_abandoned_jobs,
    finish_job,
    heartbeat,
    jobs_to_resend,
    queued_counts,
    requeue_after_crash,
    requeue_job,
    requeue_lost_jobs,
)
from shared.repository.results import (
    delete_rows_after,
    glob_to_like,
    list_metrics,
    list_rank_traces,
    list_traces,
    metric_overview,
    record_metrics,
    record_rank_traces,
    record_traces,
)
from shared.repository.rollups import RollResult, roll_up
from shared.repository.served import ServedPrediction, record_served
from shared.repository.sweeps import (
    SweepNotFound,
    create_sweep,
    get_sweep,
    list_sweeps,
    lock_sweep,
    mark_sweep_asked,
    request_sweep_cancel,
    sweep_trials,
    sweeps_to_tick,
    trial_of_job,
    trials_of_sweeps,
)

__all__ = [
    "Requests",
    "RollResult",
    "Seat",
    "ServedPrediction",
    "SweepNotFound",
    "add_event",
    "assert_held",
    "checkpoint_id",
    "claim_for_message",
    "claim_job",
    "claim_next",
    "close_gang",
    "create_job",
    "create_sweep",
    "database_now",
    "delete_checkpoints_after",
    "delete_rows_after",
    "end_abandoned_jobs",
    "finish_job",
    "gang_is_open",
    "gang_members",
    "get_checkpoint",
    "get_job",
    "get_sweep",
    "glob_to_like",
    "heartbeat",
    "jobs_to_resend",
    "join_gang",
    "latest_resumable",
    "list_checkpoints",
    "list_events",
    "list_jobs",
    "list_metrics",
    "list_rank_traces",
    "list_sweeps",
    "list_traces",
    "lock_sweep",
    "mark_enqueued",
    "mark_sweep_asked",
    "metric_overview",
    "open_gang",
    "queued_counts",
    "record_metrics",
    "record_rank_traces",
    "record_served",
    "record_traces",
    "relax_durability",
    "release_gang",
    "request_cancel",
    "request_preempt",
    "request_sweep_cancel",
    "requeue_after_crash",
    "requeue_job",
    "requeue_lost_jobs",
    "roll_up",
    "save_checkpoint",
    "sweep_trials",
    "sweeps_to_tick",
    "trial_of_job",
    "trials_of_sweeps",
]
