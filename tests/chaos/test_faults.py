"""Fault tests on real processes: kill a piece of a running cluster, check what held.

Each test runs one scenario of tests/chaos/scenarios.py (bench/chaos.py runs the same ones
with more jobs and prints the figures); the cluster is reset between them.
"""

from __future__ import annotations

import random

import pytest

from tests.chaos import scenarios
from tests.chaos.cluster import CannotMount, Cluster
from tests.chaos.scenarios import Outcome

pytestmark = pytest.mark.chaos


def assert_held(outcome: Outcome, cluster: Cluster | None) -> None:
    """Fail with what did not hold, the figures, and the logs' tails."""
    print(f"{outcome.fault}: {outcome.measured}")
    if not outcome.ok:
        problems = "\n  ".join(outcome.problems)
        pytest.fail(
            f"{outcome.fault}\n  must hold: {outcome.must_hold}\n  measured: {outcome.measured}"
            f"\n  problems:\n  {problems}\n"
            f"{cluster.failure_report() if cluster is not None else outcome.report}",
            pytrace=False,
        )


def test_a_sigkilled_worker_s_jobs_resume_exactly(cluster: Cluster, rng: random.Random) -> None:
    assert_held(scenarios.kill_worker(cluster, jobs=3, rng=rng), cluster)


def test_a_sigtermed_worker_requeues_its_job_without_an_attempt(
    cluster: Cluster, rng: random.Random
) -> None:
    assert_held(scenarios.term_worker(cluster, rng=rng), cluster)


def test_redis_killed_and_restarted_loses_no_job(cluster: Cluster) -> None:
    assert_held(scenarios.kill_redis(cluster, jobs=3, workers=1), cluster)


def test_a_backlog_is_never_multiplied_by_the_sweeper(cluster: Cluster) -> None:
    assert_held(scenarios.backlog(cluster, jobs=300, periods=4), cluster)


def test_a_message_delivered_twice_trains_once(cluster: Cluster) -> None:
    assert_held(scenarios.duplicate_message(cluster), cluster)


@pytest.mark.slow  # CI keeps the other fault scenarios
def test_the_api_killed_mid_burst_makes_one_job_per_idempotency_key(cluster: Cluster) -> None:
    assert_held(scenarios.api_kill(cluster, jobs=200, threads=10, kill_after=60), cluster)


@pytest.mark.slow  # CI keeps the other fault scenarios
def test_a_postgres_outage_mid_training_is_ridden_through(cluster: Cluster) -> None:
    assert_held(scenarios.postgres_outage(cluster, outage_s=20), cluster)


def test_another_owner_s_first_job_waits_for_at_most_one_of_a_backlog(cluster: Cluster) -> None:
    assert_held(scenarios.fair_share(cluster), cluster)


@pytest.mark.slow  # CI keeps the other fault scenarios
def test_a_full_disk_fails_the_job_at_once_and_the_api_says_so() -> None:
    try:
        outcome = scenarios.disk_full(home_mb=48)
    except CannotMount as exc:
        pytest.skip(f"no tmpfs to fill up here: {exc}")
    assert_held(outcome, None)


@pytest.mark.slow  # CI keeps the other fault scenarios
def test_a_killed_node_of_a_two_node_job_waits_then_resumes_exactly(
    cluster: Cluster, rng: random.Random
) -> None:
    assert_held(scenarios.kill_gang_node(cluster, rng=rng), cluster)
