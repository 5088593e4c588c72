"""The README stays true: its spec examples are the shipped files, its SQL runs."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.db import session_scope
from shared.models import Job

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_spec_examples_are_the_example_files() -> None:
    # The complete specs (the skeleton `{"model": {...}, ...}` block is not JSON).
    shown = [json.loads(b) for b in _blocks("json") if b.startswith('{\n  "model"')]
    files = [json.loads(p.read_text()) for p in sorted((ROOT / "cli/examples").glob("*.json"))]
    assert len(shown) == 4
    assert sorted(map(json.dumps, shown)) == sorted(map(json.dumps, files))


def test_readme_sql_runs_on_postgres(sessions: sessionmaker[Session], clean_db: None) -> None:
    with session_scope(sessions) as session:
        job = repository.create_job(
            session=session,
            owner="sql",
            kind="train",
            spec={"model": {"preset": "lenet"}},
            queue="train",
        )
        session.get(Job, job.id).status = "succeeded"  # type: ignore[union-attr]
        repository.record_metrics(
            session=session,
            job_id=job.id,
            rows=[
                {"split": "train", "name": "loss", "step": s, "epoch": 1, "value": 2.0 / s}
                for s in (1, 2, 3)
            ]
            + [{"split": "val", "name": "accuracy", "step": 3, "epoch": 1, "value": 0.9}],
        )
        repository.record_traces(
            session=session,
            job_id=job.id,
            rows=[
                {
                    "step": s,
                    "layer": layer,
                    "kind": "param_grad",
                    "numel": 1,
                    "norm": s * 1.0,
                    "mean": 0.0,
                    "std": 0.0,
                    "min": 0.0,
                    "max": 0.0,
                    "zero_frac": 0.0,
                    "nonfinite": 0,
                }
                for s in (1, 5)
                for layer in ("fc1.weight", "conv1.weight")
            ],
        )
    queries = [q.strip() for q in _blocks("sql")[0].split(";") if q.strip()]
    assert len(queries) == 3
    params = {"job": uuid.UUID(str(job.id))}
    with sessions() as session:
        curve, best, last = (session.execute(text(q), params).all() for q in queries)
    assert [tuple(r) for r in curve] == [(1, 2.0), (2, 1.0), (3, 2.0 / 3)]
    assert [(r.id, r.preset, r.val_accuracy) for r in best] == [(job.id, "lenet", 0.9)]
    assert [(r.layer, r.norm) for r in last] == [("conv1.weight", 5.0), ("fc1.weight", 5.0)]


def test_readme_layer_examples_build() -> None:
    from shared.netspec import dry_run
    from shared.spec import JobSpec

    stacks = [json.loads(b) for b in _blocks("json") if b.lstrip().startswith('{"layers"')]
    assert len(stacks) == 2  # the seed's seq_modules and the small ResNet
    seq, resnet = stacks
    dry_run(JobSpec.model_validate({"model": seq, "data": {"dataset": "digits", "image_size": 28}}))
    report = dry_run(JobSpec.model_validate({"model": resnet, "data": {"dataset": "digits"}}))
    assert report.output_shape == (2, 10)
