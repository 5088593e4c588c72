"""The inference worker's side of the serving line: pop requests, batch them, answer.

A thread of the inference worker blocks on its queue's request list. When a request
comes it keeps popping for up to TRAINYARD_PREDICT_BATCH_WAIT_MS more (while fewer than
TRAINYARD_PREDICT_MAX_BATCH samples are in hand), groups what it has by checkpoint, and
runs one forward pass per group, as TorchServe's and Ray Serve's dynamic batching do.
In `eval()` mode a sample's output does not depend on the others in its batch (no
batch statistics; rounding aside). Every answer goes back in one Redis pipeline; the
records are handed to the PredictionRecorder's buffer and written to the database after.

A request that cannot be answered (inputs that do not fit the model, a checkpoint that
no longer loads) gets its error line, and only that request: the rest of the batch is
answered. A checkpoint not in the cache loads on a thread of its own while the line
serves warm models; its requests (and those that come while it loads) are answered when
the load ends. A request older than TRAINYARD_PREDICT_EXPIRE_SECONDS when it is taken (its
caller was answered 202 long before: a backlog after an outage) is recorded failed
without running. The models come from the worker's ModelCache, shared with the `infer` task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import redis
import torch
from pydantic import ValidationError

from shared.infer_inputs import InputLimits, inputs_tensor
from shared.repository import ServedPrediction
from shared.serving import (
    ALIVE_REFRESH_SECONDS,
    ALIVE_SECONDS,
    REPLY_EXPIRE_SECONDS,
    WORKER_KEY_SECONDS,
    PredictCall,
    alive_key,
    encode_reply,
    reply_key,
    requests_key,
    worker_key,
)
from shared.spec import InferSpec
from worker.inference import LoadedModel, ModelCache, predict
from worker.messages import user_message
from worker.prediction_log import PredictionRecorder
from worker.serving_journal import ADOPT_SECONDS, Journal

log = logging.getLogger(__name__)

Loader = Callable[[InferSpec], LoadedModel]

# How often the batch wait looks for more requests (one LPOP, about 0.2 ms here).
_POLL_SECONDS = 0.0005
# How long the line waits on a running load before it looks for requests again.
_LOAD_POLL_SECONDS = 0.002


@dataclass(slots=True)
class _Pending:
    call: PredictCall
    started_at: datetime
    inputs: torch.Tensor | None = None
    answer: dict[str, Any] | None = None
    error: str | None = None
    batch_samples: int = 0
    parked: bool = False  # waiting for its checkpoint's load (answered when it is done)


@dataclass
class ServingStats:
    """What the line has done (tests and logs)."""

    requests: int = 0
    forward_passes: int = 0
    largest_batch: int = 0
    errors: int = 0
    expired: int = 0


class PredictionServer:
    """One serving thread over `queue`'s request list."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        queue: str,
        worker: str,
        cache: ModelCache,
        load: Loader,
        recorder: PredictionRecorder,
        limits: InputLimits,
        max_batch: int,
        batch_wait_seconds: float,
        expire_seconds: float = 300.0,
        journal: Journal | None = None,
    ) -> None:
        self._redis = client
        self.queue = queue
        self.worker = worker
        self._cache = cache
        self._load = load
        self.recorder = recorder
        self._limits = limits
        self._max_batch = max_batch
        self._batch_wait = batch_wait_seconds
        self._expire = expire_seconds
        self._journal = journal
        # Cold checkpoints load on a thread of their own: the line serves warm models
        # meanwhile, and requests for a checkpoint being loaded wait for that one load.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"load-{queue}")
        self._loads: dict[Any, tuple[Future[LoadedModel], list[_Pending]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"serve-{queue}", daemon=True)
        self.stats = ServingStats()

    def start(self) -> PredictionServer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop taking requests (the batch in hand is answered) and close the line when
        this worker was the last to keep it open; False if the thread did not end within
        `timeout` (a long model load)."""
        self._stop.set()
        self._thread.join(timeout)
        try:
            # Only if the key is still ours: another worker may keep the line open.
            if self._redis.get(alive_key(self.queue)) == self.worker.encode():
                self._redis.delete(alive_key(self.queue))
            self._redis.delete(worker_key(self.worker))
        except redis.RedisError:
            log.warning("could not close the serving line; it lapses by itself", exc_info=True)
        return not self._thread.is_alive()

    # --- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        key = requests_key(self.queue)
        next_alive = 0.0
        next_adopt = time.monotonic() + ADOPT_SECONDS
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_alive:
                    alive_ms = int(ALIVE_SECONDS * 1000)
                    self._redis.set(alive_key(self.queue), self.worker, px=alive_ms)
                    self._redis.set(worker_key(self.worker), 1, px=int(WORKER_KEY_SECONDS * 1000))
                    next_alive = time.monotonic() + ALIVE_REFRESH_SECONDS
                if self._journal is not None and time.monotonic() >= next_adopt:
                    for record in self._journal.adopt():  # a dead worker's records
                        self.recorder.add(record)
                    next_adopt = time.monotonic() + ADOPT_SECONDS
                self._finish_loads()
                first = self._next(key)
                if first is None:
                    continue
                raw = [first, *self._gather(key)]  # never raises: `first` is served
            except redis.RedisError:
                log.warning("the serving line cannot reach Redis; retrying", exc_info=True)
                self._stop.wait(1.0)
                continue
            try:
                self.serve(raw)
            except Exception:  # a bug must not end the line: log it and serve on
                log.exception("serving %d requests failed", len(raw))
        self._finish_loads(wait=True)  # requests taken are answered before the line stops
        self._loader.shutdown(wait=False)

    def _answer_loaded(
        self, checkpoint_id: Any, future: Future[LoadedModel], group: list[_Pending]
    ) -> None:
        try:
            loaded = future.result()
        except Exception as exc:
            log.error("could not load checkpoint %s", checkpoint_id, exc_info=exc)
            for p in group:
                p.error = p.error or user_message(exc)
            return
        self._cache.put(checkpoint_id, loaded)
        self._run_group(group, loaded, warm=False)

    def _finish_loads(self, *, wait: bool = False) -> None:
        """Answer the requests of every checkpoint whose load has ended (all, if `wait`)."""
        for checkpoint_id, (future, group) in list(self._loads.items()):
            if not (wait or future.done()):
                continue
            del self._loads[checkpoint_id]
            for p in group:
                p.parked = False
            try:
                self._settle(group, partial(self._answer_loaded, checkpoint_id, future, group))
            except Exception:
                log.exception("serving %d requests failed", len(group))

    def _next(self, key: str) -> bytes | None:
        """The next request, or None after a while. While a checkpoint loads: LPOP and a
        short wait on the loads, so their requests are answered as soon as they end (a
        blocking pop's timeout fires only on Redis' 100 ms cron tick)."""
        if not self._loads:
            return self._pop(key, ALIVE_REFRESH_SECONDS)
        got = cast("bytes | None", self._redis.lpop(key))
        if got is None:
            futures = [future for future, _ in self._loads.values()]
            wait(futures, timeout=_LOAD_POLL_SECONDS, return_when=FIRST_COMPLETED)
        return got

    def _pop(self, key: str, timeout: float) -> bytes | None:
        """BLPOP one request (redis-py's sync client answers a list, typed loosely)."""
        got = cast("list[bytes] | None", self._redis.blpop([key], timeout=timeout))
        return None if got is None else got[1]

    def _gather(self, key: str) -> list[bytes]:
        """Whatever else is waiting, and what arrives within the batch wait, while fewer
        than max_batch requests are in hand (a request's samples are counted later).

        Polled with LPOP, not a blocking pop: Redis wakes blocked clients' timeouts on
        its cron tick (100 ms at the default hz), far coarser than a batch wait."""
        more: list[bytes] = []
        deadline = time.monotonic() + self._batch_wait
        while len(more) + 1 < self._max_batch:
            want = self._max_batch - 1 - len(more)
            try:
                got = cast("list[bytes] | None", self._redis.lpop(key, want))
            except redis.RedisError:  # what is in hand is served; the rest waits in Redis
                log.warning("the serving line lost Redis while batching", exc_info=True)
                break
            if got:
                more.extend(got)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, _POLL_SECONDS))
        return more

    # --- one batch -----------------------------------------------------------------------

    def serve(self, raw: Sequence[bytes]) -> None:
        """Answer every request in `raw`, then hand their records to the recorder; a
        failure in one group is that group's error, never a request left unanswered."""
        now = datetime.now(UTC)
        pending: list[_Pending] = []
        for item in raw:
            try:
                pending.append(_Pending(PredictCall.decode(item), now))
            except (ValidationError, ValueError):
                # Without an id there is nobody to answer: only a foreign writer sends this.
                log.error("dropped a request the serving line cannot read: %.200r", item)
        groups = self._by_checkpoint(pending, now)

        def work() -> None:
            for checkpoint_id, group in groups.items():
                loaded = None if checkpoint_id in self._loads else self._cache.get(checkpoint_id)
                if loaded is None:
                    self._park(checkpoint_id, group)
                    continue
                try:
                    self._run_group(group, loaded, warm=True)
                except Exception as exc:
                    log.exception("serving %d requests failed", len(group))
                    for p in group:
                        if p.answer is None and p.error is None:
                            p.error = user_message(exc)

        self._settle(pending, work)

    def _settle(self, pending: list[_Pending], work: Callable[[], None]) -> None:
        """Run `work`, then answer and record every request of `pending` it did not park;
        one it left without an answer gets an error line, never silence."""
        try:
            work()
        finally:
            done = [p for p in pending if not p.parked]
            for p in done:
                if p.answer is None and p.error is None:
                    p.error = "the serving line failed before answering"
            self.stats.requests += len(done)
            self.stats.errors += sum(p.error is not None for p in done)
            # Journaled first (Redis keeps each record until the database has it), then
            # buffered for the write, then answered: whoever has an answer has a record
            # in the journal and in the buffer (and can flush it).
            records = self._records(done)
            if self._journal is not None:
                self._journal.add(records)
            for record in records:
                self.recorder.add(record)
            self._reply(done)

    def _park(self, checkpoint_id: Any, group: list[_Pending]) -> None:
        """Wait for `checkpoint_id`'s load (started now unless it runs already)."""
        if checkpoint_id in self._loads:
            self._loads[checkpoint_id][1].extend(group)
        else:  # (a submit that raises leaves the group unparked: it gets its error line)
            future = self._loader.submit(self._load, _as_spec(group[0].call))
            self._loads[checkpoint_id] = (future, list(group))
        for p in group:
            p.parked = True

    def _by_checkpoint(self, pending: list[_Pending], now: datetime) -> dict[Any, list[_Pending]]:
        """The requests to run, grouped by checkpoint; expired ones get their error."""
        groups: dict[Any, list[_Pending]] = {}
        for p in pending:
            age = (now - p.call.sent_at).total_seconds()
            if age <= self._expire:
                groups.setdefault(p.call.checkpoint_id, []).append(p)
                continue
            p.error = (
                f"the request waited {age:.0f} s for a serving worker, longer than "
                f"TRAINYARD_PREDICT_EXPIRE_SECONDS ({self._expire:g}); it was not run"
            )
            self.stats.expired += 1
        return groups

    def _records(self, pending: list[_Pending]) -> list[ServedPrediction]:
        finished = datetime.now(UTC)
        return [
            ServedPrediction(
                call=p.call, answer=p.answer, error=p.error, worker=self.worker,
                started_at=p.started_at, finished_at=finished, batch_samples=p.batch_samples,
            )
            for p in pending
        ]  # fmt: skip

    def _run_group(self, group: list[_Pending], loaded: LoadedModel, *, warm: bool) -> None:
        """Forward passes of one checkpoint's requests (inputs that do not fit: an error)."""
        for p in group:
            try:
                p.inputs = inputs_tensor(p.call.inputs, loaded.spec.data, self._limits)
            except Exception as exc:
                p.error = user_message(exc)
        ready = [p for p in group if p.inputs is not None]
        for batch in _batches(ready, self._max_batch):
            self._forward(loaded, batch, warm)

    def _forward(self, loaded: LoadedModel, batch: list[_Pending], warm: bool) -> None:
        tensors = [p.inputs for p in batch if p.inputs is not None]
        try:
            result = predict(loaded, torch.cat(tensors) if len(tensors) > 1 else tensors[0])
        except Exception as exc:
            if len(batch) > 1:  # the pass together (out of memory?): each on its own
                log.warning("a forward pass of %d requests failed; one by one", len(batch))
                for p in batch:
                    self._forward(loaded, [p], warm)
                return
            log.exception("a forward pass failed")
            batch[0].error = user_message(exc)
            return
        samples = int(result["samples"])
        self.stats.forward_passes += 1
        self.stats.largest_batch = max(self.stats.largest_batch, samples)
        outputs = result["outputs"]
        start = 0
        for p, x in zip(batch, tensors, strict=True):
            n = x.shape[0]
            p.answer = {
                "model_job_id": str(p.call.model_job_id),
                "checkpoint_id": str(p.call.checkpoint_id),
                "cached_model": warm,
                "task": result["task"],
                "samples": n,
                "outputs": outputs[start : start + n],
                "batch_samples": samples,
            }
            p.batch_samples = samples
            start += n

    def _reply(self, pending: list[_Pending]) -> None:
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for p in pending:
                    key = reply_key(p.call.id)
                    pipe.rpush(key, encode_reply(answer=p.answer, error=p.error))
                    pipe.expire(key, REPLY_EXPIRE_SECONDS)
                pipe.execute()
        except redis.RedisError:
            # The callers answer 202 with the job to poll; the records still follow.
            log.warning("could not send %d answers", len(pending), exc_info=True)


def _batches(ready: list[_Pending], max_samples: int) -> list[list[_Pending]]:
    """Consecutive requests in forward passes of at most `max_samples` samples (a larger
    request runs alone)."""
    out: list[list[_Pending]] = []
    current: list[_Pending] = []
    count = 0
    for p in ready:
        assert p.inputs is not None
        n = p.inputs.shape[0]
        if current and count + n > max_samples:
            out.append(current)
            current, count = [], 0
        current.append(p)
        count += n
    if current:
        out.append(current)
    return out


def _as_spec(call: PredictCall) -> InferSpec:
    return InferSpec(
        model_job_id=call.model_job_id,
        checkpoint=call.checkpoint,
        checkpoint_id=call.checkpoint_id,
        inputs=None,
    )
