"""GET /metrics: behind its own token, in Prometheus' text format, with the API's request
latencies and the cluster read at scrape time (jobs, queues, workers, rows written)."""

from __future__ import annotations

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from shared.config import Settings
from shared.queues import QUEUE_DEFAULT, QUEUE_GPU
from tests.support.fixture_types import NewJob
from worker import activity
from worker.presence import Presence

TOKEN = "metrics-token-for-tests"


@pytest.fixture()
def metrics_app(settings: Settings, app: Flask) -> Flask:
    return create_app(settings.model_copy(update={"metrics_token": TOKEN}))


def scrape(client: FlaskClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.content_type.startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_metrics_are_off_without_their_token_and_refuse_other_tokens(
    client: FlaskClient, metrics_app: Flask, alice: dict[str, str]
) -> None:
    off = client.get("/metrics")
    assert off.status_code == 404
    assert "TRAINYARD_METRICS_TOKEN" in off.get_json()["error"]["message"]
    on = metrics_app.test_client()
    assert on.get("/metrics").status_code == 401
    assert on.get("/metrics", headers=alice).status_code == 401  # an API token is not it


def test_jobs_queues_workers_and_request_latency(
    metrics_app: Flask,
    new_job: NewJob,
    redis_client: redis.Redis,
    alice: dict[str, str],
) -> None:
    client = metrics_app.test_client()
    for _ in range(3):
        new_job(owner="o")
    redis_client.rpush(QUEUE_DEFAULT, b"{}", b"{}")
    redis_client.rpush(f"{QUEUE_DEFAULT}\x06\x163", b"{}")  # a priority-3 message
    keeper = type("K", (), {"job_id": "j-1", "step": 5})()
    gpu = Presence(client=redis_client, name="gpu-host:1", queues=[QUEUE_DEFAULT, QUEUE_GPU],
                   heartbeat_file=None, every_seconds=5.0)  # fmt: skip
    activity.take_committed()
    activity.rows_committed("layer_traces", 42)
    activity.job_started(keeper)
    try:
        gpu.beat()
    finally:
        activity.job_ended(keeper)
    client.get("/healthz")
    client.get("/api/v1/jobs/not-a-uuid", headers=alice)

    samples = scrape(client)
    jobs = {(s["status"], s["queue"]): v for s, v in samples["trainyard_jobs"]}
    assert jobs[("queued", "train")] == 3
    depth = {s["queue"]: v for s, v in samples["trainyard_queue_depth"]}
    assert depth[QUEUE_DEFAULT] == 3 and depth[QUEUE_GPU] == 0
    workers = {(s["device"], s["state"]): v for s, v in samples["trainyard_workers"]}
    assert workers[("cuda", "busy")] == 1 and workers[("cpu", "idle")] == 0
    rows = {s["table"]: v for s, v in samples["trainyard_rows_written_total"]}
    assert rows["layer_traces"] == 42
    backlog = dict((s["worker"], v) for s, v in samples["trainyard_writer_backlog_rows"])
    assert backlog == {"gpu-host:1": 0}
    counts = {
        (s["route"], s["status"]): v
        for s, v in samples["trainyard_http_request_duration_seconds_count"]
    }
    assert counts[("/healthz", "200")] >= 1
    assert counts[("/api/v1/jobs/<job_id>", "404")] >= 1  # by rule, not by URL
