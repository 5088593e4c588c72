"""The README stays true: its spec examples are the shipped files, its SQL answers correctly.

Every query of "Querying the results database" runs exactly as written against jobs that
really trained (in-process, through `execute_train`), on PostgreSQL and on the embedded
SQLite default, and each answer is checked against the same facts read another way: ORM
queries on the tables and the job summaries that `fit()`'s result became.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import shutil
import subprocess
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Row, select, text
from sqlalchemy.orm import Session, sessionmaker

from cli.migrate import upgrade
from shared import repository
from shared.config import Settings
from shared.db import make_engine, make_session_factory, session_scope
from shared.models import Checkpoint, Job, LayerTrace, Metric
from tests.support.servers import REDIS_URL
from worker.tasks import execute_train

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SQL_SECTION = README.split("## Querying the results database\n", 1)[1].split("\n## ", 1)[0]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def readme_queries() -> dict[str, str]:
    """The SQL section's queries as written, by title (the `-- ` line opening each one)."""
    queries: dict[str, str] = {}
    for block in re.findall(r"```sql\n(.*?)```", SQL_SECTION, flags=re.S):
        for statement in filter(None, (part.strip() for part in block.split(";"))):
            title = statement.splitlines()[0]
            assert title.startswith("-- "), f"a README query needs a '-- title' line:\n{statement}"
            assert title[3:] not in queries, f"two README queries are titled {title!r}"
            queries[title[3:]] = statement
    return queries


def test_readme_spec_examples_are_the_example_files() -> None:
    # The complete specs (the skeleton `{"model": {...}, ...}` block is not JSON).
    shown = [json.loads(b) for b in _blocks("json") if b.startswith('{\n  "model"')]
    files = [json.loads(p.read_text()) for p in sorted((ROOT / "cli/examples").glob("*.json"))]
    assert len(shown) == 4
    assert sorted(map(json.dumps, shown)) == sorted(map(json.dumps, files))


def test_readme_layer_examples_build() -> None:
    from shared.net.dryrun import dry_run
    from shared.spec import JobSpec

    stacks = [json.loads(b) for b in _blocks("json") if b.lstrip().startswith('{"layers"')]
    assert len(stacks) == 2  # the seed's seq_modules and the small ResNet
    seq, resnet = stacks
    dry_run(JobSpec.model_validate({"model": seq, "data": {"dataset": "digits", "image_size": 28}}))
    report = dry_run(JobSpec.model_validate({"model": resnet, "data": {"dataset": "digits"}}))
    assert report.output_shape == (2, 10)


# --- real jobs -------------------------------------------------------------------------

HOOKS_EVERY_STEP = {
    "every_n_steps": 1,
    "full_every": 1,  # every statistic on every step: the queries read them all
    "kinds": ["forward", "backward", "param_grad"],
}

# Classification with test metrics and a learning rate that halves after epoch 1.
DIGITS_MLP: dict[str, Any] = {
    "model": {
        "layers": [
            {"type": "Flatten"},
            {"type": "Linear", "name": "fc1", "in_features": 64, "out_features": 32},
            {"type": "ReLU"},
            {"type": "Linear", "name": "fc2", "in_features": 32, "out_features": 10},
        ]
    },
    "data": {"dataset": "digits", "image_size": 8, "val_fraction": 0.2, "test_fraction": 0.1},
    "train": {
        "epochs": 2,
        "batch_size": 64,
        "optimizer": {"name": "SGD", "lr": 0.1, "momentum": 0.9},
        "scheduler": {"name": "StepLR", "step_size": 1, "gamma": 0.5},
        "loss": "CrossEntropyLoss",
        "seed": 0,
    },
    "hooks": HOOKS_EVERY_STEP,
}
# A dead ReLU: fc1's pre-activations are below -9 for every input, so fc1's output
# gradient, fc1's parameter gradients and fc2.weight's gradient are exactly 0 at every
# step (the weights never move), while fc2.bias still learns: vanishing gradients.
DEAD_RELU: dict[str, Any] = {
    "model": {
        "preset": "my_model",
        "init": [
            {"params": "fc1.weight", "scheme": "constant", "value": 0.01},
            {"params": "fc1.bias", "scheme": "constant", "value": -10.0},
        ],
    },
    "data": {"dataset": "synthetic", "task": "regression", "input_shape": [10], "size": 128},
    "train": {"epochs": 2, "batch_size": 16, "loss": "MSELoss", "seed": 0},
    "hooks": {"every_n_steps": 1, "kinds": ["backward", "param_grad"]},
}
TINY_CLASSIFIER: dict[str, Any] = {
    "model": {"preset": "tiny_model"},
    "data": {
        "dataset": "synthetic",
        "task": "classification",
        "input_shape": [100],
        "num_classes": 10,
        "size": 256,
    },
    "train": {
        "epochs": 2,
        "batch_size": 64,
        "optimizer": {"name": "Adam", "lr": 0.001},
        "loss": "CrossEntropyLoss",
        "seed": 0,
    },
    "hooks": {"every_n_steps": 2, "kinds": ["param_grad"]},
}
DIVERGES: dict[str, Any] = {
    "model": {"preset": "my_model"},
    "data": {"dataset": "synthetic", "task": "regression", "input_shape": [10], "size": 256},
    "train": {
        "epochs": 5,
        "batch_size": 32,
        "optimizer": {"name": "SGD", "lr": 10.0},
        "loss": "MSELoss",
    },
    "hooks": {"every_n_steps": 1, "kinds": ["param_grad"]},
}
# name -> (owner, spec, the status execute_train must end it with)
TRAINED = {
    "digits": ("alice", DIGITS_MLP, "succeeded"),
    "dead": ("alice", DEAD_RELU, "succeeded"),
    "tiny": ("bob", TINY_CLASSIFIER, "succeeded"),
    "diverged": ("bob", DIVERGES, "failed"),
}
DEAD_LAYERS = {
    ("fc1", "backward"),
    ("fc1.weight", "param_grad"),
    ("fc1.bias", "param_grad"),
    ("fc2.weight", "param_grad"),
}


@dataclass
class Results:
    """A migrated database holding real jobs, and how to run README queries on it."""

    dialect: str
    url: str
    sessions: sessionmaker[Session]
    ids: dict[str, uuid.UUID]

    def job(self, name: str) -> uuid.UUID | str:
        """Job `name`'s id as a user binds it: SQLite stores 32 hex digits without dashes."""
        return self.ids[name] if self.dialect == "postgresql" else self.ids[name].hex

    def run(self, query: str, **params: Any) -> list[Row[Any]]:
        with self.sessions() as session:
            return list(session.execute(text(query), params).all())

    def scalars(self, query: Any) -> list[Any]:
        with self.sessions() as session:
            return list(session.scalars(query))


def _record_jobs(sessions: sessionmaker[Session], settings: Settings) -> dict[str, uuid.UUID]:
    """Train the TRAINED jobs for real, then add jobs that are queued, running, cancelled."""
    ids: dict[str, uuid.UUID] = {}

    def create(name: str, owner: str, spec: dict[str, Any], kind: str = "train") -> uuid.UUID:
        with session_scope(sessions) as session:
            job = repository.create_job(
                session=session, owner=owner, kind=kind, spec=spec, queue="train"
            )
            ids[name] = job.id
        return ids[name]

    for name, (owner, spec, outcome) in TRAINED.items():
        job_id = create(name, owner, spec)
        status = execute_train(job_id, worker="readme", sessions=sessions, settings=settings)
        assert status == outcome, f"job {name!r} ended {status}"
    create("queued", "carol", DIGITS_MLP)
    create("cancelled", "carol", DIGITS_MLP)
    create("running", "bob", DEAD_RELU)
    infer = {"model_job_id": str(ids["digits"]), "checkpoint": "final", "inputs": [[0.0] * 64]}
    create("infer", "carol", infer, kind="infer")
    with session_scope(sessions) as session:
        repository.request_cancel(session=session, job_id=ids["cancelled"])
        repository.claim_job(
            session=session,
            job_id=ids["running"],
            worker="elsewhere",
            lease_seconds=600,
            max_attempts=3,
        )
    return ids


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Results]:
    home = tmp_path_factory.mktemp(f"readme_sql_{request.param}")
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        pg_engine: Engine = request.getfixturevalue("engine")
        with pg_engine.begin() as conn:  # what the clean_db fixture does, once per module
            conn.execute(text("TRUNCATE jobs, api_tokens RESTART IDENTITY CASCADE"))
        engine = None
        sessions: sessionmaker[Session] = request.getfixturevalue("sessions")
    else:
        url = f"sqlite:///{home / 'trainyard.db'}"
        upgrade(url, "head")
        engine = make_engine(url)
        sessions = make_session_factory(engine)
    settings = Settings(database_url=url, broker_url=REDIS_URL, home=home)
    yield Results(request.param, url, sessions, _record_jobs(sessions, settings))
    if engine is not None:
        engine.dispose()


# --- independent answers ----------------------------------------------------------------


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _time(value: Any) -> datetime:
    """A timestamp as PostgreSQL (aware) or SQLite (UTC text without zone) returns it."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _metrics(r: Results, name: str, split: str, metric: str) -> list[Metric]:
    query = select(Metric).where(
        Metric.job_id == r.ids[name], Metric.split == split, Metric.name == metric
    )
    return r.scalars(query.order_by(Metric.step))


def _traces(r: Results, name: str, *kinds: str, layer: str | None = None) -> list[LayerTrace]:
    query = select(LayerTrace).where(LayerTrace.job_id == r.ids[name])
    if kinds:
        query = query.where(LayerTrace.kind.in_(kinds))
    if layer is not None:
        query = query.where(LayerTrace.layer == layer)
    return r.scalars(query.order_by(LayerTrace.step))


def _job(r: Results, name: str) -> Job:
    with r.sessions() as session:
        job = session.get(Job, r.ids[name])
        assert job is not None
        return job


def _summary(r: Results, name: str) -> dict[str, Any]:
    summary = _job(r, name).summary
    assert summary is not None
    return summary


# --- one check per README query -----------------------------------------------------------

Run = Callable[..., list[Row[Any]]]


def check_loss_curve(r: Results, run: Run) -> None:
    rows = run(job=r.job("digits"))
    expected = [(m.step, m.epoch, m.value) for m in _metrics(r, "digits", "train", "loss")]
    assert [tuple(row) for row in rows] == expected
    summary = _summary(r, "digits")
    assert len(rows) == summary["steps"] == 40  # 2 epochs x ceil(1258 / 64)
    assert rows[-1].loss == pytest.approx(summary["final_loss"], rel=1e-12)


def check_epoch_summary(r: Results, run: Run) -> None:
    rows = run(job=r.job("digits"))
    ends = {m.epoch: m for m in _metrics(r, "digits", "train", "epoch_loss")}
    val_loss = {m.epoch: m.value for m in _metrics(r, "digits", "val", "loss")}
    val_acc = {m.epoch: m.value for m in _metrics(r, "digits", "val", "accuracy")}
    lrs = _metrics(r, "digits", "train", "lr")
    expected = [
        (
            epoch,
            end.step,
            end.value,
            val_loss[epoch],
            val_acc[epoch],
            [m.value for m in lrs if m.step <= end.step][-1],
        )
        for epoch, end in sorted(ends.items())
    ]
    assert [tuple(row) for row in rows] == expected
    assert [row.lr for row in rows] == pytest.approx([0.1, 0.05])  # StepLR, gamma 0.5
    last, summary = rows[-1], _summary(r, "digits")
    assert (last.epoch, last.step) == (summary["epochs"], summary["steps"])
    for column in ("train_loss", "val_loss", "val_accuracy"):
        assert getattr(last, column) == pytest.approx(summary["metrics"][column], rel=1e-12)


def check_best_jobs(r: Results, run: Run) -> None:
    rows = run()
    ranked = []
    for job in r.scalars(select(Job).where(Job.status == "succeeded")):
        name = next(n for n, i in r.ids.items() if i == job.id)
        accuracy = [m.value for m in _metrics(r, name, "val", "accuracy")]
        if accuracy:
            ranked.append((-max(accuracy), _metrics(r, name, "val", "loss")[-1].value, name))
    assert [_uuid(row.job_id) for row in rows] == [r.ids[name] for *_, name in sorted(ranked)]
    assert {_uuid(row.job_id) for row in rows} == {r.ids["digits"], r.ids["tiny"]}
    for row in rows:
        name = "digits" if _uuid(row.job_id) == r.ids["digits"] else "tiny"
        job, summary = _job(r, name), _summary(r, name)
        assert (row.owner, row.preset) == {
            "digits": ("alice", "custom"),
            "tiny": ("bob", "tiny_model"),
        }[name]
        best = max(m.value for m in _metrics(r, name, "val", "accuracy"))
        assert row.best_val_accuracy == best
        assert row.last_val_accuracy == pytest.approx(summary["metrics"]["val_accuracy"])
        assert row.last_val_loss == pytest.approx(summary["metrics"]["val_loss"], rel=1e-12)
        assert row.steps == summary["steps"]
        assert job.started_at is not None and job.finished_at is not None
        wall = (job.finished_at - job.started_at).total_seconds()
        assert row.wall_s == pytest.approx(wall, abs=2e-3)  # SQLite: julianday milliseconds


def _vanishing(r: Results, name: str) -> list[tuple[Any, ...]]:
    series: dict[tuple[str, str], list[LayerTrace]] = defaultdict(list)
    for trace in _traces(r, name, "backward", "param_grad"):
        series[trace.layer, trace.kind].append(trace)
    found = []
    for (layer, kind), traces in series.items():
        below = [t.step for t in traces if t.norm < 1e-6]
        if below:
            smallest = min(t.norm for t in traces)
            found.append((layer, kind, len(below), len(traces), min(below), smallest))
    return sorted(found, key=lambda f: (-f[2], f[0], f[1]))


def check_vanishing_gradients(r: Results, run: Run) -> None:
    dead = run(job=r.job("dead"))
    assert [tuple(row) for row in dead] == _vanishing(r, "dead")
    steps = _summary(r, "dead")["steps"]
    assert {(row.layer, row.kind) for row in dead} == DEAD_LAYERS
    assert all(row.steps_below == row.steps_logged == steps for row in dead)
    assert all((row.first_step_below, row.smallest_norm) == (1, 0.0) for row in dead)
    healthy = run(job=r.job("digits"))
    assert [tuple(row) for row in healthy] == _vanishing(r, "digits")


def check_layer_trace(r: Results, run: Run) -> None:
    rows = run(job=r.job("digits"), layer="fc1.weight")
    traces = _traces(r, "digits", "param_grad", layer="fc1.weight")
    expected = [(t.step, t.norm, t.mean, t.std, t.max, t.update_ratio) for t in traces]
    assert [tuple(row) for row in rows] == expected
    assert [row.step for row in rows] == list(range(1, 41))  # hooks every step
    assert all(row.norm > 0 and row.update_ratio > 0 for row in rows)


def check_update_ratio_per_epoch(r: Results, run: Run) -> None:
    rows = run(job=r.job("digits"), layer="fc2.weight")
    epoch_of = {m.step: int(m.epoch or 0) for m in _metrics(r, "digits", "train", "loss")}
    ratios: dict[int, list[float]] = defaultdict(list)
    for t in _traces(r, "digits", "param_grad", layer="fc2.weight"):
        assert t.update_ratio is not None
        ratios[epoch_of[t.step]].append(t.update_ratio)
    assert [tuple(row) for row in rows] == [
        (epoch, len(v), pytest.approx(sum(v) / len(v), rel=1e-9), min(v), max(v))
        for epoch, v in sorted(ratios.items())
    ]
    assert [(row.epoch, row.steps) for row in rows] == [(1, 20), (2, 20)]


def check_gradient_flow(r: Results, run: Run) -> None:
    rows = run(job=r.job("digits"))
    last = max(t.step for t in _traces(r, "digits"))
    expected = sorted(
        ((t.layer, t.kind, t.norm) for t in _traces(r, "digits", "backward", "param_grad")
         if t.step == last),
        key=lambda e: (e[1], e[0]),
    )  # fmt: skip
    assert [tuple(row) for row in rows] == expected
    assert [(row.kind, row.layer) for row in rows] == [
        ("backward", "fc1"),
        ("backward", "fc2"),
        ("backward", "fc2:input"),  # fc1's input is the data: no gradient
        ("param_grad", "fc1.bias"),
        ("param_grad", "fc1.weight"),
        ("param_grad", "fc2.bias"),
        ("param_grad", "fc2.weight"),
    ]


def check_jobs_per_status(r: Results, run: Run) -> None:
    rows = run()
    jobs = r.scalars(select(Job))
    counts = Counter((job.owner, job.status) for job in jobs)
    assert [(row.owner, row.status, row.jobs) for row in rows] == sorted(
        (owner, status, n) for (owner, status), n in counts.items()
    )
    for row in rows:
        group = [j for j in jobs if (j.owner, j.status) == (row.owner, row.status)]
        assert _time(row.last_created) == max(j.created_at for j in group)
    assert {row.status for row in rows} == {"succeeded", "failed", "queued", "running", "cancelled"}


def check_latest_checkpoints(r: Results, run: Run) -> None:
    rows = run()
    with_checkpoints = set(r.scalars(select(Checkpoint.job_id).distinct()))
    assert (
        {_uuid(row.job_id) for row in rows}
        == with_checkpoints
        >= {r.ids[name] for name in ("digits", "dead", "tiny")}
    )
    assert len(rows) == len(with_checkpoints)
    with r.sessions() as session:
        for row in rows:
            latest = repository.get_checkpoint(
                session=session, job_id=_uuid(row.job_id), ref="latest"
            )
            assert _uuid(row.checkpoint_id) == latest.id
            assert (row.tag, row.step, row.epoch) == (latest.tag, latest.step, latest.epoch)
            assert row.size == len(latest.model_state)
            assert row.sha256 == hashlib.sha256(latest.model_state).hexdigest()
    assert [_time(row.created_at) for row in rows] == sorted(
        (_time(row.created_at) for row in rows), reverse=True
    )
    finished = [row for row in rows if _uuid(row.job_id) == r.ids["digits"]]
    assert [(row.tag, row.step) for row in finished] == [("final", 40)]


def check_failures(r: Results, run: Run) -> None:
    rows = run()
    assert [_uuid(row.job_id) for row in rows] == [r.ids["diverged"]]
    (row,) = rows
    job, losses = _job(r, "diverged"), _metrics(r, "diverged", "train", "loss")
    assert (row.owner, row.error) == ("bob", job.error)
    assert job.error is not None and "non-finite" in job.error  # it diverged at lr 10
    assert row.steps == (losses[-1].step if losses else None)
    assert job.finished_at is not None and _time(row.finished_at) == job.finished_at


# README query title -> its check; a query without a check (or the reverse) fails the suite.
CHECKS: dict[str, Callable[[Results, Run], None]] = {
    "A job's training loss curve, one point per step": check_loss_curve,
    "Per-epoch summary of a job: mean training loss, validation loss and accuracy, learning rate": (
        check_epoch_summary
    ),
    "Best finished jobs by validation accuracy (ties: lower validation loss first)": (
        check_best_jobs
    ),
    "Vanishing gradients: layers whose gradient norm fell below 1e-6, in how many logged steps": (
        check_vanishing_gradients
    ),
    "One parameter's gradient over time: norm, mean, spread, largest entry, update ratio": (
        check_layer_trace
    ),
    "One parameter's update ratio per epoch (||dw|| / ||w||, about 1e-3 is typical)": (
        check_update_ratio_per_epoch
    ),
    "Gradient flow: every layer's gradient norm at a job's last logged step": check_gradient_flow,
    "Jobs per owner and status, with the latest submission": check_jobs_per_status,
    "Each job's latest checkpoint (the one .../checkpoints/latest serves), size and sha256": (
        check_latest_checkpoints
    ),
    "Recent failures, with the step they reached and the one-line reason": check_failures,
}


def test_every_readme_query_has_a_check() -> None:
    statements = sum(
        len([s for s in block.split(";") if s.strip()])
        for block in re.findall(r"```sql\n(.*?)```", SQL_SECTION, flags=re.S)
    )
    queries = readme_queries()
    assert statements == len(queries) == len(CHECKS) >= 6
    assert sorted(queries) == sorted(CHECKS)


@pytest.mark.parametrize("title", list(CHECKS))
def test_readme_query_answers(results: Results, title: str) -> None:
    query = readme_queries()[title]
    CHECKS[title](results, lambda **params: results.run(query, **params))


def _last(r: Results, name: str, split: str, metric: str) -> float | None:
    points = _metrics(r, name, split, metric)
    return points[-1].value if points else None


PRESETS = {
    "digits": "custom",
    "dead": "my_model",
    "tiny": "tiny_model",
    "diverged": "my_model",
    "queued": "custom",
    "cancelled": "custom",
    "running": "my_model",
    "infer": None,  # an inference job's spec names a model job, not a model
}


def test_job_results_view_has_every_job(results: Results) -> None:
    rows = {_uuid(row.job_id): row for row in results.run("SELECT * FROM job_results")}
    assert set(rows) == set(results.ids.values()) and set(PRESETS) == set(results.ids)
    for name, job_id in results.ids.items():
        row, job = rows[job_id], _job(results, name)
        losses = _metrics(results, name, "train", "loss")
        accuracy = [m.value for m in _metrics(results, name, "val", "accuracy")]
        epochs = [int(m.epoch or 0) for m in _metrics(results, name, "train", "epoch_loss")]
        assert (row.owner, row.kind, row.status, row.error, row.preset) == (
            (job.owner, job.kind, job.status, job.error, PRESETS[name])
        )
        assert _time(row.created_at) == job.created_at
        if job.started_at is None or job.finished_at is None:
            assert row.wall_s is None
        else:
            wall = (job.finished_at - job.started_at).total_seconds()
            assert row.wall_s == pytest.approx(wall, abs=2e-3)
        assert row.epochs == (max(epochs) if epochs else None)
        assert row.steps == (losses[-1].step if losses else None)
        assert row.final_train_loss == (losses[-1].value if losses else None)
        assert row.best_val_accuracy == (max(accuracy) if accuracy else None)
        for column, split, metric in [
            ("last_val_accuracy", "val", "accuracy"),
            ("last_val_loss", "val", "loss"),
            ("test_loss", "test", "loss"),
            ("test_accuracy", "test", "accuracy"),
        ]:
            assert getattr(row, column) == _last(results, name, split, metric), (name, column)
        if job.status == "succeeded":
            summary = _summary(results, name)
            assert (row.epochs, row.steps) == (summary["epochs"], summary["steps"])
            assert row.final_train_loss == pytest.approx(summary["final_loss"], rel=1e-12)
    digits = _summary(results, "digits")["metrics"]
    assert rows[results.ids["digits"]].test_accuracy == pytest.approx(digits["test_accuracy"])
    assert rows[results.ids["running"]].steps is None  # claimed elsewhere, nothing logged yet


def test_epoch_metrics_view_has_every_epoch(results: Results) -> None:
    rows = results.run("SELECT * FROM epoch_metrics")
    ends = select(Metric).where(Metric.split == "train", Metric.name == "epoch_loss")
    assert sorted((_uuid(row.job_id), row.epoch) for row in rows) == sorted(
        (m.job_id, m.epoch) for m in results.scalars(ends)
    )
    for name, lr in (("dead", 0.01), ("tiny", 0.001)):  # their optimizers' learning rates
        mine = sorted((r for r in rows if _uuid(r.job_id) == results.ids[name]), key=_epoch)
        assert [(row.epoch, row.train_loss) for row in mine] == [
            (m.epoch, m.value) for m in _metrics(results, name, "train", "epoch_loss")
        ]
        assert [(row.epoch, row.val_loss) for row in mine] == [
            (m.epoch, m.value) for m in _metrics(results, name, "val", "loss")
        ]
        assert [row.lr for row in mine] == pytest.approx([lr, lr])
        if name == "dead":
            assert all(row.val_accuracy is None for row in mine)  # regression: no accuracy


def _epoch(row: Row[Any]) -> int:
    return int(row.epoch)


# --- the same queries through psql and sqlite3, with the variables the README shows ---------


def _cli(r: Results, query: str, params: dict[str, Any]) -> list[list[str]]:
    """Run `query` in psql (-v NAME="'value'") or sqlite3 (.parameter set); CSV data rows."""
    if r.dialect == "postgresql":
        dsn = r.url.replace("postgresql+psycopg://", "postgresql://")
        args = ["psql", "-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1", dsn]
        for name, value in params.items():
            args += ["-v", f"{name}='{value}'"]
    else:
        args = ["sqlite3", "-bail", "-csv", "-header", r.url.removeprefix("sqlite:///")]
        for name, value in params.items():
            args[1:1] = ["-cmd", f".parameter set :{name} \"'{value}'\""]
    done = subprocess.run(args, input=query + ";\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return list(csv.reader(io.StringIO(done.stdout)))[1:]


def _same(cell: str, value: Any) -> bool:
    if value is None:
        return cell == ""
    if isinstance(value, datetime):
        return _time(cell.replace("+00", "+00:00") if cell.endswith("+00") else cell) == value
    if isinstance(value, float):
        return math.isclose(float(cell), value, rel_tol=1e-12, abs_tol=1e-300)
    return cell == str(value)


@pytest.mark.parametrize("title", list(CHECKS))
def test_readme_query_in_the_cli(results: Results, title: str) -> None:
    tool = "psql" if results.dialect == "postgresql" else "sqlite3"
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    query = readme_queries()[title]

    def run(**params: Any) -> list[Row[Any]]:
        rows = results.run(query, **params)
        printed = _cli(results, query, params)
        assert len(printed) == len(rows)
        for cells, row in zip(printed, rows, strict=True):
            assert all(map(_same, cells, row)), (cells, tuple(row))
        return rows

    CHECKS[title](results, run)
