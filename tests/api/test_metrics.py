"""GET /metrics: behind its own token, in Prometheus' text format, with the API's request
latencies and the cluster read at scrape time (jobs, queues, workers, rows written)."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
ROOT = Path(__file__).resolve().parents[2]


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
    activity.rows_committed({"layer_traces": 42})
    activity.job_started(keeper)
    try:
        gpu.beat()
    finally:
        activity.job_ended(keeper)
    client.get("/healthz")
    client.get("/api/v1/jobs/not-a-uuid", headers=alice)
    client.open("/healthz", method="BREW")  # a method of the client's own invention

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
    methods = {s["method"] for s, _ in samples["trainyard_http_request_duration_seconds_count"]}
    assert "BREW" not in methods and "other" in methods
    up = {s["source"]: v for s, v in samples["trainyard_source_up"]}
    assert up == {"database": 1, "redis": 1}


def test_a_scrape_with_the_database_away_still_answers(
    settings: Settings, app: Flask, redis_client: redis.Redis
) -> None:
    away = settings.model_copy(
        update={"metrics_token": TOKEN, "database_url": "postgresql+psycopg://nobody@127.0.0.1:1/x"}
    )
    client = create_app(away).test_client()
    client.get("/healthz")
    samples = scrape(client)
    up = {s["source"]: v for s, v in samples["trainyard_source_up"]}
    assert up == {"database": 0, "redis": 1}
    assert "trainyard_jobs" not in samples
    assert (
        "trainyard_queue_depth" in samples
        and "trainyard_http_request_duration_seconds_count" in samples
    )


def test_the_grafana_dashboard_asks_only_for_metrics_that_exist(
    metrics_app: Flask, redis_client: redis.Redis, new_job: NewJob
) -> None:
    new_job(owner="o")
    gpu = Presence(client=redis_client, name="w:1", queues=[QUEUE_DEFAULT, QUEUE_GPU],
                   heartbeat_file=None, every_seconds=5.0)  # fmt: skip
    keeper = type("K", (), {"job_id": "j-2", "step": 1})()
    activity.rows_committed({"metrics": 1})
    activity.job_started(keeper)
    try:
        gpu.beat()
        keeper.step = 3  # type: ignore[attr-defined]
        gpu.beat()  # a second beat: steps/s
    finally:
        activity.job_ended(keeper)
    client = metrics_app.test_client()
    client.get("/healthz")
    exposed = set(scrape(client))
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/trainyard.json").read_text())
    wanted = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\btrainyard_\w+", target["expr"])
    }
    assert len(wanted) >= 7
    assert wanted <= exposed, wanted - exposed


def test_open_live_streams_are_counted_until_they_close(
    metrics_app: Flask, new_job: NewJob, alice: dict[str, str]
) -> None:
    client = metrics_app.test_client()
    job = new_job(owner="alice")

    def open_streams() -> float:
        return sum(v for _, v in scrape(client)["trainyard_api_open_streams"])

    before = open_streams()
    stream = client.get(f"/api/v1/jobs/{job.id}/stream", headers=alice, buffered=False)
    assert open_streams() == before + 1
    stream.close()
    assert open_streams() == before
