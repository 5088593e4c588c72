"""What every scenario shares: the specs, the Outcome it reports, and the exact-resume
check against an uninterrupted reference run (as tests/worker/test_resume_after_kill.py
does it: the train/loss series and the final state_dict sha256)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.cluster import FINAL, TIMINGS, Cluster

# The spec of test_resume_after_kill: Adam + StepLR, a resumable checkpoint every 5
# steps, 69 steps in all; about 5 s a job on one thread, long enough to kill part-way.
SPEC: dict[str, Any] = {
    "model": {"preset": "neural_network"},
    "data": {"dataset": "digits", "image_size": 28, "val_fraction": 0.2},
    "train": {
        "epochs": 3,
        "batch_size": 64,
        "checkpoint_every_steps": 5,
        "seed": 11,
        "optimizer": {"name": "Adam", "lr": 0.001},
        "scheduler": {"name": "StepLR", "step_size": 1, "gamma": 0.5},
    },
    "hooks": {"every_n_steps": 4},
}
STEPS = 3 * 23  # 1438 training digits at batch 64: 23 steps an epoch
# Two steps of a 10-5-1 MLP: a job that costs the worker a few tens of milliseconds.
TINY: dict[str, Any] = {
    "model": {"preset": "my_model"},
    "data": {
        "dataset": "synthetic",
        "task": "regression",
        "input_shape": [10],
        "output_dim": 1,
        "size": 64,
    },
    "train": {"epochs": 1, "batch_size": 32, "loss": "MSELoss", "seed": 0},
}
LEASE = float(TIMINGS["TRAINYARD_LEASE_SECONDS"])
SHUTDOWN_GRACE = float(TIMINGS["TRAINYARD_SHUTDOWN_GRACE_SECONDS"])


@dataclass
class Outcome:
    """One row of the bench's table, and what a test asserts on."""

    fault: str
    must_hold: str
    measured: str = ""
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    report: str = ""  # the logs' tails, from a scenario whose cluster is gone by then
    slow: list[str] = field(default_factory=list)  # time bounds missed (see check_time)

    # Time bounds fail a row of bench/chaos.py, which reports them on a quiet machine;
    # in the test suite a loaded machine would make them flaky, so tests only print them.
    strict_times = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self, condition: bool, problem: str) -> bool:
        """Record `problem` unless `condition` holds; returns the condition."""
        if not condition:
            self.problems.append(problem)
        return condition

    def check_time(self, condition: bool, problem: str) -> bool:
        """A time bound: a problem in the bench (strict_times), a printed note in tests."""
        if condition:
            return True
        if self.strict_times:
            return self.check(condition, problem)
        self.slow.append(problem)
        print(f"time bound missed (not asserted in tests): {problem}")
        return False


@dataclass(frozen=True)
class Reference:
    """An uninterrupted run of SPEC: what every interrupted one must end up equal to."""

    job_id: str
    losses: list[tuple[int, float]]
    sha256: list[str]


_references: dict[int, Reference] = {}


def reference(cluster: Cluster) -> Reference:
    """SPEC trained once without interruption on this cluster (needs a running worker)."""
    if id(cluster) not in _references:
        if not any(w.alive() for w in cluster.workers):
            cluster.start_worker()
        job_id = cluster.submit_ok(SPEC)
        row = cluster.wait_final(job_id)
        assert row["status"] == "succeeded", f"the reference run failed: {row['error']}"
        losses = cluster.loss_series(job_id)
        assert [s for s, _ in losses] == list(range(1, STEPS + 1)), "reference: rows per step"
        _references[id(cluster)] = Reference(job_id, losses, cluster.final_sha256(job_id))
    return _references[id(cluster)]


def check_rows_and_result(out: Outcome, cluster: Cluster, job_id: str, ref: Reference) -> None:
    """One train/loss row per step 1..STEPS, equal to the reference's, same final weights."""
    out.figures["checked"] = out.figures.get("checked", 0) + 1
    losses = cluster.loss_series(job_id)
    steps = [s for s, _ in losses]
    duplicates = len(steps) - len(set(steps))
    missing = sorted(set(range(1, STEPS + 1)) - set(steps))
    out.figures["duplicate_rows"] = out.figures.get("duplicate_rows", 0) + duplicates
    out.figures["missing_rows"] = out.figures.get("missing_rows", 0) + len(missing)
    out.check(duplicates == 0, f"job {job_id}: {duplicates} duplicate train/loss rows")
    out.check(not missing, f"job {job_id}: train/loss missing at steps {missing[:10]}")
    if out.check(losses == ref.losses, f"job {job_id}: loss series differs from the reference"):
        out.figures["identical_losses"] = out.figures.get("identical_losses", 0) + 1
    sha = cluster.final_sha256(job_id)
    if out.check(
        sha == ref.sha256 and len(sha) == 1,
        f"job {job_id}: final sha256 {sha} != reference {ref.sha256}",
    ):
        out.figures["identical_sha256"] = out.figures.get("identical_sha256", 0) + 1


def running_at_least(step: int) -> Callable[[dict[str, Any]], bool]:
    return lambda r: (r["status"] == "running" and r["step"] >= step) or r["status"] in FINAL


def identical(out: Outcome) -> str:
    """'yes' when every checked job matched the reference in losses and weights."""
    f = out.figures
    checked = f.get("checked", 0)
    same = checked > 0 and f.get("identical_sha256") == f.get("identical_losses") == checked
    return "yes" if same else f"no ({f.get('identical_losses', 0)}/{checked})"


def span(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"median {statistics.median(values):.1f} s, min {min(values):.1f}, max {max(values):.1f}"
