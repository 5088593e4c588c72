"""The prediction serving line: what the API and the inference workers say over Redis.

A synchronous prediction does not go through a job row: the API pushes the checked
request to its queue's request list, a warm inference worker pops it (with whatever
else arrived within a few milliseconds, for one forward pass per checkpoint) and pushes
the answer to a reply list the API blocks on. The record of the prediction (an `infer`
job row, as `POST /jobs` makes) is written by the worker afterwards, in batches.

Workers that serve a queue keep a short-lived `alive` key up; the API sends down the line
only while one exists, and otherwise takes the job path (a queued `infer` job). All of
it is JSON: no pickle crosses Redis.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

# A worker refreshes its alive key every ALIVE_REFRESH_SECONDS; it lapses after
# ALIVE_SECONDS, so a dead worker stops drawing requests within a few seconds.
ALIVE_SECONDS = 3.0
ALIVE_REFRESH_SECONDS = 1.0
# An unread answer (its caller gave up waiting) does not stay in Redis for long.
REPLY_EXPIRE_SECONDS = 60


def requests_key(queue: str) -> str:
    """The list a queue's serving workers pop requests from."""
    return f"trainyard:serve:{queue}:requests"


def alive_key(queue: str) -> str:
    """Set (with an expiry of ALIVE_SECONDS) by every worker serving the queue: it
    exists while at least one of them is alive, on Redis' clock alone."""
    return f"trainyard:serve:{queue}:alive"


# A serving worker's own key lives this long past its last refresh: a worker stalled for
# less (a long model load, a slow database) keeps its journal.
WORKER_KEY_SECONDS = 60.0


def worker_key(worker: str) -> str:
    """Set (expiring WORKER_KEY_SECONDS after its last refresh) while `worker` serves: no
    other worker adopts its journal meanwhile."""
    return f"trainyard:serve:worker:{worker}"


def journal_key(worker: str) -> str:
    """A hash of call id -> the record (JSON) of a request `worker` answered and has not
    yet written to the database (worker/serving_journal.py)."""
    return f"trainyard:serve:journal:{worker}"


# The workers that have kept a journal (a set): where orphaned journals are looked for.
JOURNALS_KEY = "trainyard:serve:journals"


def reply_key(call_id: uuid.UUID) -> str:
    """The list one request's answer is pushed to."""
    return f"trainyard:serve:reply:{call_id}"


class PredictCall(BaseModel):
    """One checked request, as the API sends it: the checkpoint is already pinned and the
    caller's ownership of the model checked."""

    # Ignore what a newer API adds during a rolling deploy rather than drop its request.
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: uuid.UUID
    owner: str
    queue: str
    model_job_id: uuid.UUID
    checkpoint: str
    checkpoint_id: uuid.UUID
    inputs: Any
    sent_at: datetime

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes) -> PredictCall:
        return cls.model_validate_json(raw)

    def spec(self) -> dict[str, Any]:
        """The request as an `infer` job's spec (InferSpec's fields)."""
        return {
            "model_job_id": str(self.model_job_id),
            "checkpoint": self.checkpoint,
            "checkpoint_id": str(self.checkpoint_id),
            "inputs": self.inputs,
        }


def encode_reply(*, answer: dict[str, Any] | None, error: str | None) -> bytes:
    """A worker's reply: the predictions (the job summary's fields) or an error line."""
    return json.dumps({"answer": answer, "error": error}, allow_nan=False).encode()


def decode_reply(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(answer, error) from encode_reply; a reply of another shape is an error line."""
    try:
        body = json.loads(raw)
        answer, error = body["answer"], body["error"]
    except (ValueError, KeyError, TypeError):
        return None, "the inference worker sent an answer this API cannot read"
    if not (answer is None or isinstance(answer, dict)) or not (
        error is None or isinstance(error, str)
    ):
        return None, "the inference worker sent an answer this API cannot read"
    return answer, error
