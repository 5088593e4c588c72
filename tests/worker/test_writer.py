"""The background RowWriter and the sink on top of it, on the real PostgreSQL (and SQLite)."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from cli.migrate import upgrade
from shared import repository
from shared.config import Settings
from shared.db import make_engine, make_session_factory, session_scope
from shared.errors import LeaseLost
from shared.models import Job, LayerTrace, Metric, RollupMark, TraceRollup
from shared.net.build import build_model
from shared.spec import JobSpec
from tests.support.fixture_types import ClaimedSink, CountRows, NewJob
from tests.support.specs import TINY
from worker.sinks import DatabaseSink
from worker.tasks import execute_train, user_message
from worker.training.callbacks import Callback
from worker.training.loop import fit
from worker.training.probes import TraceRow
from worker.writer import RowWriteError, RowWriter, WriterFull

LAYERS = ("encoder.0.weight", "encoder.0", "blocks.3.attn.proj", "head")
KINDS = ("backward", "param_grad")


def _trace_rows(steps: range, layers: tuple[str, ...] = LAYERS) -> list[dict[str, Any]]:
    """Rows as the sink hands them over: every stored column except job_id."""
    return [
        {
            "step": step,
            "layer": layer,
            "kind": kind,
            "numel": 1000 + i,
            "norm": step + i / 10,
            "mean": -0.5,
            "std": 0.25,
            "min": -1.0,
            "max": 1.0,
            "zero_frac": 0.125,
            "nonfinite": 0,
        }
        for step in steps
        for i, layer in enumerate(layers)
        for kind in KINDS
    ]


@contextmanager
def _table_locked(engine: Engine, *tables: str) -> Iterator[None]:
    """Hold an EXCLUSIVE lock: reads go on, the writer's INSERT waits until the block ends."""
    with engine.connect() as conn:
        conn.execute(text(f"LOCK TABLE {', '.join(tables or ('layer_traces',))} IN EXCLUSIVE MODE"))
        yield
        conn.rollback()


def _writer_threads(job_id: uuid.UUID) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"row-writer-{job_id}"]


def test_rows_are_written_exactly_once_across_many_batches(
    sessions: sessionmaker[Session], clean_db: None, new_job: NewJob, count_rows: CountRows
) -> None:
    job_id = new_job(TINY).id
    rows = _trace_rows(range(1, 501))  # 4000 rows
    metrics = [
        {"split": "train", "name": "loss", "step": s, "epoch": 1, "value": 1 / s}
        for s in range(1, 501)
    ]
    with RowWriter(sessions=sessions, job_id=job_id, max_rows=1000, batch_rows=300) as writer:
        for start in range(0, len(rows), 37):  # odd-sized puts, many batches
            writer.put("layer_traces", rows[start : start + 37])
        writer.put("metrics", metrics)
    assert not _writer_threads(job_id)  # close() joined the thread
    assert count_rows(LayerTrace, job_id) == len(rows) == 4000
    assert count_rows(Metric, job_id) == 500
    with sessions() as session:
        keys = session.execute(
            select(LayerTrace.step, LayerTrace.layer, LayerTrace.kind, LayerTrace.norm).where(
                LayerTrace.job_id == job_id
            )
        ).all()
        value = session.scalar(select(Metric.value).where(Metric.step == 4))
    assert sorted(keys) == sorted((r["step"], r["layer"], r["kind"], r["norm"]) for r in rows)
    assert value == 0.25


def test_values_survive_binary_copy(
    sessions: sessionmaker[Session], clean_db: None, new_job: NewJob
) -> None:
    job_id = new_job(TINY).id
    row = {
        **_trace_rows(range(7, 8), layers=("fc1",))[0],
        "norm": math.inf,
        "mean": math.nan,
        "numel": 2**40,
        "nonfinite": 3,
        "histogram": [0.0, 2.0, 5.0, 1.0],
    }
    with RowWriter(sessions=sessions, job_id=job_id) as writer:
        writer.put("layer_traces", [row])
        metric = {"split": "val", "name": "acc", "step": 7, "epoch": None, "value": math.nan}
        writer.put("metrics", [metric])
    with sessions() as session:
        trace = session.scalars(select(LayerTrace).where(LayerTrace.job_id == job_id)).one()
        stored = session.scalars(select(Metric).where(Metric.job_id == job_id)).one()
    assert (trace.step, trace.layer, trace.kind, trace.numel) == (7, "fc1", "backward", 2**40)
    assert trace.norm == math.inf and math.isnan(trace.mean or 0.0) and trace.nonfinite == 3
    assert trace.histogram == [0.0, 2.0, 5.0, 1.0]
    assert stored.epoch is None and math.isnan(stored.value)


def test_the_same_rows_twice_are_stored_once(
    engine: Engine,
    sessions: sessionmaker[Session],
    clean_db: None,
    new_job: NewJob,
    count_rows: CountRows,
) -> None:
    job_id = new_job(TINY).id
    rows = _trace_rows(range(1, 101))
    writer = RowWriter(sessions=sessions, job_id=job_id)
    writer.put("layer_traces", rows)
    writer.flush()  # committed: the second put conflicts with stored rows
    writer.put("layer_traces", rows)
    writer.flush()
    with _table_locked(engine):
        writer.put("layer_traces", rows[:10])  # the writer takes this batch and waits
        writer.put("layer_traces", rows)  # these two (at least) share one batch,
        writer.put("layer_traces", rows)  # duplicates of each other and of stored rows
    writer.close()
    assert count_rows(LayerTrace, job_id) == len(rows)


def test_put_does_not_wait_for_a_busy_writer_until_the_buffer_is_full(
    engine: Engine,
    sessions: sessionmaker[Session],
    clean_db: None,
    new_job: NewJob,
    count_rows: CountRows,
) -> None:
    job_id = new_job(TINY).id
    rows = _trace_rows(range(1, 3))  # 16 rows
    writer = RowWriter(sessions=sessions, job_id=job_id, max_rows=10)
    late: list[BaseException | None] = []
    with _table_locked(engine):  # the writer cannot commit anything in this block
        writer.put("layer_traces", rows[0:4], timeout=0)  # returns at once
        writer.put("layer_traces", rows[4:10], timeout=0)  # 10 rows pending: full, not over
        assert writer.pending == 10 and count_rows(LayerTrace, job_id) == 0
        with pytest.raises(WriterFull):
            writer.put("layer_traces", rows[10:11], timeout=0)

        def blocked_put() -> None:
            try:
                writer.put("layer_traces", rows[10:16])  # waits for room
                late.append(None)
            except BaseException as exc:
                late.append(exc)

        thread = threading.Thread(target=blocked_put)
        thread.start()
        thread.join(0.2)
        assert thread.is_alive() and not late  # still waiting: nothing was committed
    thread.join(30)
    assert late == [None]
    writer.close()
    assert count_rows(LayerTrace, job_id) == 16


def test_a_failed_write_surfaces_in_the_training_thread(
    sessions: sessionmaker[Session], clean_db: None
) -> None:
    job_id = uuid.uuid4()  # no such job: the foreign key rejects the rows
    writer = RowWriter(sessions=sessions, job_id=job_id)
    writer.put("layer_traces", _trace_rows(range(1, 3)))
    with pytest.raises(RowWriteError) as info:
        writer.flush(timeout=30)
    message = str(info.value)
    assert "16 layer_traces rows" in message and "ForeignKeyViolation" in message
    assert "fk_layer_traces_job_id_jobs" in message and "INSERT" not in message
    assert user_message(info.value) == message  # what the failed job will say
    with pytest.raises(RowWriteError):  # raised again, never lost
        writer.put("layer_traces", _trace_rows(range(3, 4)))
    with pytest.raises(RowWriteError):
        writer.close()
    assert not _writer_threads(job_id)


def test_sqlite_falls_back_to_multi_row_inserts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'trainyard.db'}"
    upgrade(url, "head")
    engine = make_engine(url)
    sessions = make_session_factory(engine)

    def count(model: Any) -> int:  # on this SQLite file, not the test PostgreSQL
        with sessions() as session:
            query = select(func.count()).select_from(model).where(model.job_id == job_id)
            return int(session.scalar(query) or 0)

    try:
        with session_scope(sessions) as session:
            job_id = repository.create_job(
                session=session, owner="o", kind="train", spec=TINY, queue="train"
            ).id
        rows = _trace_rows(range(1, 401))  # 3200 rows: more than one INSERT chunk
        with RowWriter(sessions=sessions, job_id=job_id, batch_rows=500) as writer:
            for start in range(0, len(rows), 100):
                writer.put("layer_traces", rows[start : start + 100])
            writer.put("layer_traces", rows[:300])  # duplicates are ignored here too
            writer.put("metrics", [{"split": "train", "name": "loss", "step": 1, "value": 0.5}])
        assert count(LayerTrace) == 3200
        assert count(Metric) == 1
    finally:
        engine.dispose()


def test_a_sink_step_hands_rows_over_without_waiting_for_the_database(
    engine: Engine,
    sessions: sessionmaker[Session],
    clean_db: None,
    settings: Settings,
    new_job: NewJob,
    count_rows: CountRows,
    claimed_sink: ClaimedSink,
) -> None:
    job_id = new_job(TINY).id
    sink, writer, now = claimed_sink(settings, job_id)
    rows = [TraceRow(**row) for row in _trace_rows(range(1, 4))]
    try:
        # both tables: a hand-off puts metrics and traces separately, and the writer may
        # take the metrics alone before the traces arrive
        with _table_locked(engine, "metrics", "layer_traces"):
            for step in (1, 2, 3):
                now[0] = step * settings.flush_seconds  # every step hands its rows over
                sink.on_step_end(
                    step=step, epoch=1, loss=1.0, traces=[r for r in rows if r.step == step]
                )
            assert writer.pending == 3 + len(rows) and count_rows(Metric, job_id) == 0
    finally:
        sink.close()  # drains the writer
    assert writer.pending == 0 and not _writer_threads(job_id)
    assert count_rows(LayerTrace, job_id) == len(rows)
    assert count_rows(Metric, job_id) == 3


def test_a_lost_lease_stops_the_writer(
    sessions: sessionmaker[Session], clean_db: None, settings: Settings, new_job: NewJob
) -> None:
    job_id = new_job(TINY).id
    with session_scope(sessions) as session:
        repository.claim_job(
            session=session, job_id=job_id, worker="w", lease_seconds=60, max_attempts=3
        )
    writer = RowWriter(sessions=sessions, job_id=job_id)
    sink = DatabaseSink(
        sessions=sessions, job_id=job_id, worker="w", settings=settings, writer=writer
    )
    sink.on_step_end(step=1, epoch=1, loss=1.0, traces=[])
    with session_scope(sessions) as session:  # as if w's lease expired and w2 claimed it
        session.execute(update(Job).where(Job.id == job_id).values(worker="w2", attempt=2))
    with pytest.raises(LeaseLost):
        sink.on_epoch_end(step=1, epoch=1, metrics={"train_loss": 1.0})
    assert not _writer_threads(job_id)
    with pytest.raises(RuntimeError, match="closed"):
        writer.put("metrics", [{"split": "train", "name": "loss", "step": 2, "value": 1.0}])


def test_a_job_with_probes_on_every_step_writes_every_row_once(
    sessions: sessionmaker[Session],
    clean_db: None,
    settings: Settings,
    new_job: NewJob,
    count_rows: CountRows,
) -> None:
    spec = {
        **TINY,
        "train": {**TINY["train"], "epochs": 3},
        "hooks": {"every_n_steps": 1, "kinds": ["backward", "param_grad"]},
    }
    model = build_model(JobSpec.model_validate(spec).model)
    owners = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    # Each owner's output gradient, plus its input gradient where the input needs one
    # (not fc1's: that is the data), plus every trainable parameter's gradient.
    inputs = len(owners) - 1
    per_step = len(owners) + inputs + sum(1 for p in model.parameters() if p.requires_grad)
    assert per_step == 2 + 1 + 4
    job_id = new_job(spec).id
    eager = settings.model_copy(update={"flush_seconds": 0.0})  # a hand-off every step
    assert execute_train(job_id, worker="w", sessions=sessions, settings=eager) == "succeeded"
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.summary is not None
        steps = job.summary["steps"]
        per_step_counts = session.execute(
            select(LayerTrace.step, func.count())
            .where(LayerTrace.job_id == job_id)
            .group_by(LayerTrace.step)
        ).all()
    assert steps == 21  # 3 x ceil(51 / 8)
    assert count_rows(LayerTrace, job_id) == steps * per_step
    assert sorted(per_step_counts) == [(step, per_step) for step in range(1, steps + 1)]
    assert not _writer_threads(job_id)


def test_a_job_whose_rows_cannot_be_saved_fails_with_a_clear_message(
    sessions: sessionmaker[Session],
    clean_db: None,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    new_job: NewJob,
) -> None:
    wrong_ids: list[uuid.UUID] = []

    class WrongJob(RowWriter):  # writes under a job id that does not exist: the FK refuses
        def __init__(
            self, *, sessions: sessionmaker[Session], job_id: uuid.UUID, **kw: Any
        ) -> None:
            wrong_ids.append(uuid.uuid4())
            super().__init__(sessions=sessions, job_id=wrong_ids[-1], **kw)

    monkeypatch.setattr("worker.sinks.RowWriter", WrongJob)
    job_id = new_job(TINY).id
    assert execute_train(job_id, worker="w", sessions=sessions, settings=settings) == "failed"
    with sessions() as session:
        job = session.get(Job, job_id)
    assert job is not None and job.error is not None
    assert job.error.startswith("could not save ") and "rows to the database" in job.error
    assert "(ForeignKeyViolation on fk_" in job.error and job.error.endswith("see the worker log")
    # This job's writer thread is gone (other tests' writers are theirs to check).
    assert wrong_ids and not [t for i in wrong_ids for t in _writer_threads(i)]


def test_an_interrupted_fit_leaves_no_writer_thread(
    sessions: sessionmaker[Session],
    clean_db: None,
    settings: Settings,
    new_job: NewJob,
    claimed_sink: ClaimedSink,
) -> None:
    class Interrupt(Callback):
        def on_step_end(self, *, step: int, epoch: int, loss: float, traces: list[Any]) -> None:
            if step == 3:
                raise KeyboardInterrupt

    job_id = new_job(TINY).id
    eager = settings.model_copy(update={"flush_seconds": 0.0})  # a hand-off every step
    sink, writer, _ = claimed_sink(eager, job_id)
    with pytest.raises(KeyboardInterrupt):
        fit(JobSpec.model_validate(TINY), callbacks=[sink, Interrupt()])
    assert not _writer_threads(job_id)  # the sink's on_fit_error aborted the writer
    with pytest.raises(RuntimeError, match="closed"):
        writer.put("metrics", [{"split": "train", "name": "loss", "step": 9, "value": 1.0}])


def test_the_writer_rolls_up_what_it_committed_at_close_but_not_after_an_abort(
    sessions: sessionmaker[Session], clean_db: None, new_job: NewJob
) -> None:
    closed, aborted = new_job(TINY).id, new_job(TINY).id
    for job_id in (closed, aborted):
        writer = RowWriter(sessions=sessions, job_id=job_id, batch_rows=500)
        writer.put("layer_traces", _trace_rows(range(1, 451)))
        writer.flush()
        writer.close() if job_id == closed else writer.abort()
    with sessions() as session:
        mark = session.get(RollupMark, closed)
        assert mark is not None and mark.rolled_below == 400  # step 450's bucket is open
        buckets = session.scalars(
            select(TraceRollup.bucket).where(
                TraceRollup.job_id == closed,
                TraceRollup.level == 0,
                TraceRollup.layer == "head",
                TraceRollup.kind == "backward",
                TraceRollup.stat == "norm",
            )
        ).all()
        assert sorted(buckets) == [0, 1, 2, 3]
        assert session.get(RollupMark, aborted) is None


def test_a_job_keeping_few_raw_steps_thins_its_old_rows_and_reads_the_same(
    sessions: sessionmaker[Session], clean_db: None, settings: Settings, new_job: NewJob
) -> None:
    hooks = {"kinds": ["param_grad"], "full_every": 1}
    spec = {**TINY, "train": {**TINY["train"], "epochs": 40}, "hooks": hooks}
    kept = {**spec, "hooks": {**hooks, "keep_raw_steps": 50}}
    everything, thinned = new_job(spec).id, new_job(kept).id
    for job_id in (everything, thinned):
        assert (
            execute_train(job_id, worker="w", sessions=sessions, settings=settings) == "succeeded"
        )
    with sessions() as session:
        reads = {}
        for job_id in (everything, thinned):
            mark = session.get(RollupMark, job_id)
            assert mark is not None and mark.rolled_below == 200  # 280 steps
            reads[job_id] = [
                (r.layer, r.step, r.norm, r.mean)
                for r in repository.list_traces(
                    session=session, job_id=job_id, kind="param_grad", limit=10_000, max_points=2
                )
            ]
            recent = (LayerTrace.step >= 200).label("recent")
            rows = session.execute(
                select(recent, func.count()).where(LayerTrace.job_id == job_id).group_by(recent)
            ).all()
            reads[f"{job_id} rows"] = dict(rows)
    params = 4  # fc1/fc2 weight and bias
    assert reads[f"{everything} rows"] == {False: 199 * params, True: 81 * params}
    old = reads[f"{thinned} rows"]
    assert old[True] == 81 * params and old[False] < 199 * params / 4
    # The same training (seeded): a thinned read finds the same rows in both.
    assert reads[thinned] == reads[everything] and len(reads[thinned]) > params


def test_a_roll_up_never_runs_ahead_of_a_table_still_behind(
    sessions: sessionmaker[Session], clean_db: None, new_job: NewJob
) -> None:
    job_id = new_job(TINY).id
    metrics = [
        {"split": "train", "name": "loss", "step": s, "epoch": 1, "value": 1 / s}
        for s in range(1, 451)
    ]
    writer = RowWriter(sessions=sessions, job_id=job_id, rollup_seconds=0.0)
    writer.put("metrics", metrics)  # committed (and rolled) through step 450 ...
    writer.put("layer_traces", _trace_rows(range(1, 251)))  # ... traces only through 250
    writer.close()
    with sessions() as session:
        mark = session.get(RollupMark, job_id)
        top = session.scalar(
            select(func.max(TraceRollup.bucket)).where(
                TraceRollup.job_id == job_id, TraceRollup.level == 0
            )
        )
    # Steps 200-249 of the traces may still have been on their way: not rolled up.
    assert mark is not None and mark.rolled_below == 200 and top == 1
