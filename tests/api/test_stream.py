"""GET /jobs/<id>/stream in process: ownership, the open-streams bound, the cursor."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from api.routes.stream import Taken, _send, thin
from shared.job_feed import MAX_PART, Cursor, Item
from tests.support.fixture_types import NewJob


def test_a_stream_is_its_owners_and_ends_with_the_job(
    app: Flask, client: FlaskClient, alice: dict[str, str], bob: dict[str, str], new_job: NewJob
) -> None:
    job = new_job(owner="alice")
    assert client.get(f"/api/v1/jobs/{job.id}/stream", headers=bob).status_code == 404
    client.post(f"/api/v1/jobs/{job.id}/cancel", headers=alice)  # queued: cancelled at once
    resp = client.get(f"/api/v1/jobs/{job.id}/stream", headers=alice)
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    body = resp.get_data(as_text=True)
    assert "event: lifecycle" in body and body.rstrip().endswith('"status":"cancelled"}')
    assert "event: end" in body


def test_past_the_open_streams_a_stream_is_refused_with_retry_after(
    app: Flask, client: FlaskClient, alice: dict[str, str], new_job: NewJob
) -> None:
    job = new_job(owner="alice")
    slots = app.extensions["trainyard"].streams
    held = 0
    while slots.acquire(blocking=False):
        held += 1
    try:
        resp = client.get(f"/api/v1/jobs/{job.id}/stream", headers=alice)
        assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
        assert "TRAINYARD_STREAM_MAX_OPEN" in resp.get_json()["error"]["message"]
    finally:
        for _ in range(held):
            slots.release()


def test_a_cursor_round_trips_and_a_bad_one_starts_over() -> None:
    assert Cursor.parse(str(Cursor(7, 120, 118, 9))) == Cursor(7, 120, 118, 9)
    assert Cursor.parse("7.120.118") == Cursor(7, 120, 118, 0)  # a cursor from before logs
    for bad in (None, "", "x", "1.2", "1.2.3.4.5", "a.b.c"):
        assert Cursor.parse(bad) == Cursor()
    assert Cursor.parse("-5.3.-1") == Cursor(0, 3, 0)


def test_an_item_from_the_shared_reader_never_moves_a_client_cursor_back() -> None:
    """The shared reader's trace item says metric 19; a client that caught up on its own
    to metric 21 must keep 21 in its id, or a reconnect would send steps 20-21 again."""
    shared = [
        Item("metrics", {"step": 21}, Cursor(2, 21, 16, 0)),
        Item("traces", {"step": 18}, Cursor(2, 19, 18, 0)),
    ]
    taken = Taken(items=shared, position=2, progress=None, status="running", final=False,
                  gone=False, failed=False)  # fmt: skip
    client = Cursor(2, 21, 16, 0)
    frames = list(_send(taken, client, None, 1))
    assert len(frames) == 1 and "event: traces\nid: 2.21.18.0\n" in frames[0]


def test_a_huge_cursor_part_is_clamped() -> None:
    assert Cursor.parse("1.99999999999999999999999.2.3") == Cursor(1, MAX_PART, 2, 3)


def test_thinning_keeps_every_nth_trace_the_last_and_everything_else() -> None:
    items = [Item("traces", {"step": s}, Cursor(0, s, s, 0)) for s in range(1, 7)]
    items.insert(3, Item("metrics", {"step": 3}, Cursor(0, 3, 3, 0)))
    kept = thin(items, 4)
    assert [(i.kind, i.data["step"]) for i in kept] == [
        ("traces", 1), ("metrics", 3), ("traces", 5), ("traces", 6),
    ]  # fmt: skip
    assert thin(items, 1) == items
