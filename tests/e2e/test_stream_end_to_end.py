"""GET /api/v1/jobs/<id>/stream on the live API and worker: Server-Sent Events that a
client may drop and resume with Last-Event-ID, seeing every step exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import requests

from cli.stream import parse
from shared.contract.responses import STREAM_EVENTS
from tests.live import LiveService

# 3 epochs of 23 steps: a few seconds, so the stream is cut several times mid-job.
SPEC = {
    "model": {"preset": "neural_network"},
    "data": {"dataset": "digits", "image_size": 28, "val_fraction": 0.2},
    "train": {"epochs": 3, "batch_size": 64, "optimizer": {"name": "SGD", "lr": 0.05}},
    "hooks": {"every_n_steps": 2},
}


def events(resp: requests.Response) -> Iterator[dict[str, Any]]:
    """The SSE events of a streamed answer: {"event", "id", "data"} (comments skipped)."""
    for event in parse(resp.iter_content(chunk_size=None)):
        yield {"event": event.kind, "id": event.id, "data": event.data}


def test_a_dropped_stream_resumes_with_no_gap_and_no_duplicate(live: LiveService) -> None:
    job = live.post_job(SPEC)
    url = f"{live.base_url}/api/v1/jobs/{job['id']}/stream"
    seen: list[dict[str, Any]] = []
    last_id: str | None = None
    connections = refused = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        headers = {**live.headers, **({"Last-Event-ID": last_id} if last_id else {})}
        connections += 1
        # The client hangs up after a few events, or the server closes the stream after a
        # second, whichever comes first: either way the next connection resumes.
        with requests.get(url, headers=headers, params={"max_seconds": 1}, stream=True,
                          timeout=30) as resp:  # fmt: skip
            if resp.status_code == 429:  # the streams a hung-up client left are still
                refused += 1  # open until the server's next write notices: retry
                time.sleep(0.2)
                continue
            assert resp.status_code == 200 and resp.headers["Content-Type"].startswith(
                "text/event-stream"
            )
            for n, event in enumerate(events(resp)):
                seen.append(event)
                last_id = event.get("id", last_id)
                if event["event"] == "end" or n >= 5:
                    break
        if seen and seen[-1]["event"] == "end":
            break
    assert seen and seen[-1]["event"] == "end" and seen[-1]["data"]["status"] == "succeeded"
    assert connections - refused >= 10  # cut mid-job many times (6 events a connection)

    for event in seen:  # every event's data is what the contract's model says
        STREAM_EVENTS[event["event"]].model_validate(event["data"])
    steps = [e["data"]["step"] for e in seen if e["event"] == "metrics"]
    assert steps == sorted(set(steps)), f"a metric step came twice or out of order: {seen}"
    stored = live.get(f"/api/v1/jobs/{job['id']}/metrics", name="loss", split="train").json()
    all_steps = [p["step"] for p in stored["series"][0]["points"]]
    assert set(all_steps) <= set(steps) and len(all_steps) == 69  # every step, exactly once
    epoch_ends = [e["data"] for e in seen if e["event"] == "metrics"
                  and "val/accuracy" in e["data"]["values"]]  # fmt: skip
    assert [p["epoch"] for p in epoch_ends] == [1, 2, 3]

    ids = [e["data"]["id"] for e in seen if e["event"] == "lifecycle"]
    kinds = [e["data"]["kind"] for e in seen if e["event"] == "lifecycle"]
    stored_events = live.get(f"/api/v1/jobs/{job['id']}/events").json()["events"]
    assert ids == sorted(set(ids)) and kinds == [e["kind"] for e in stored_events]

    traced = [e["data"] for e in seen if e["event"] == "traces"]
    trace_steps = [t["step"] for t in traced]
    assert trace_steps == [1, *range(2, 70, 2)]  # every logged step (every_n_steps 2), once
    assert any(k.startswith("param_grad:") for k in traced[-1]["norms"])
    assert any(e["event"] == "progress" for e in seen)
    # The worker's log lines for the job: one per epoch, each once, as GET /logs has them.
    lines = [e["data"] for e in seen if e["event"] == "logs"]
    stored_lines = live.get(f"/api/v1/jobs/{job['id']}/logs").json()["logs"]
    assert [x["id"] for x in lines] == [x["id"] for x in stored_lines]
    epoch_lines = [x["line"] for x in lines if x["line"].startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1", "2", "3"]
    assert "val_accuracy" in epoch_lines[-1]


def test_a_stream_of_an_unknown_job_is_404(live: LiveService) -> None:
    resp = requests.get(
        f"{live.base_url}/api/v1/jobs/00000000-0000-0000-0000-000000000000/stream",
        headers=live.headers, timeout=30,
    )  # fmt: skip
    assert resp.status_code == 404
