"""The clients of bench/stream_fanout.py: N live streams of one job from one process, on
gevent greenlets (a thread each would measure the client's threads, not the API).

    python bench/stream_clients.py BASE_URL TOKEN JOB_ID N > result.json

Each stream reads `GET /jobs/<id>/stream` until its `end` event, reconnecting with
Last-Event-ID when the server closes it, and notes when each metric step arrived (wall
clock, to compare with the commit times the bench saw). Prints one JSON object: per
stream, the steps in arrival order with their times, the events and the reconnects.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cli.stream import parse  # noqa: E402


def follow(base: str, token: str, job_id: str, deadline: float) -> dict[str, Any]:
    """One client: every metric step with its arrival time, until `end`."""
    steps: list[tuple[int, float]] = []
    events = connections = 0
    last: str | None = None
    http = requests.Session()
    while time.monotonic() < deadline:
        headers = {"Authorization": f"Bearer {token}"}
        if last:
            headers["Last-Event-ID"] = last
        connections += 1
        with http.get(f"{base}/api/v1/jobs/{job_id}/stream", headers=headers, stream=True,
                      timeout=120) as resp:  # fmt: skip
            if resp.status_code == 429:
                gevent.sleep(float(resp.headers.get("Retry-After", "1")))
                continue
            resp.raise_for_status()
            for event in parse(resp.iter_content(chunk_size=None)):
                events += 1
                last = event.id or last
                if event.kind == "metrics":
                    steps.append((event.data["step"], time.time()))
                elif event.kind == "end":
                    return {"steps": steps, "events": events, "connections": connections}
    raise SystemExit(f"a stream saw no end before its deadline ({len(steps)} steps)")


def main() -> None:
    base, token, job_id, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    deadline = time.monotonic() + 900
    clients = [gevent.spawn(follow, base, token, job_id, deadline) for _ in range(count)]
    gevent.joinall(clients, raise_error=True)
    json.dump({"streams": [c.value for c in clients]}, sys.stdout)


if __name__ == "__main__":
    main()
