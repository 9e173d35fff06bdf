"""Micro-batching: concurrent requests scored together in one call.

Scoring one history costs much more than its share of a batch (the model's per-call overhead, one item-table
product for all rows), so the server does not score each request on its own: requests wait in a queue and a
single collector task takes them in batches and scores each batch with ONE `score(histories, k, exclude_history)`
call, run in a single worker thread (so the event loop stays free to read and answer requests meanwhile).

A batch is closed when it holds `max_batch` histories, or `max_wait_ms` after its first request was queued, or as soon
as no further request is on its way: the app announces each /recommend request when it arrives (`announce`), and
until it is submitted or settled it counts as on its way. With one client at a time nothing is on its way, so a
lone request is scored at once and pays no wait; under load the batch grows while the previous one is scored.

Each request is checked before it is queued (by the caller), so one request's bad input never fails a batch. A
batch holds requests with different k or exclude_history: it is scored per exclude_history value with the largest
k, and each request gets its first k (the top-k order is total, score then item id, so a prefix of a longer list
is the shorter list). Should a batched call still fail, each of its requests is scored again on its own and only
the failing ones get the error.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

ScoreFn = Callable[[list, int, bool], list]
"""score(histories, k, exclude_history) -> one list of (item, score) per history, best first."""


@dataclass
class _Request:
    histories: list
    k: int
    exclude_history: bool
    queued_at: float                # event-loop time
    done: asyncio.Future = field(repr=False)


class Arrival:
    """A request announced to the batcher and not yet submitted (see MicroBatcher.announce)."""
    __slots__ = ("pending",)

    def __init__(self):
        self.pending = True


class MicroBatcher:
    """Collects concurrent requests into batches and scores each batch with one call in one worker thread.

    score:        the scoring function (e.g. Recommender.recommend_batch).
    max_batch:    the most histories in one call (a request larger than this is refused by the app).
    max_wait_ms:  the longest a request waits for others to join its batch.
    on_batch:     called after each scoring call with (histories, requests, seconds), e.g. to record metrics.
    """

    def __init__(self, score: ScoreFn, max_batch: int = 256, max_wait_ms: float = 2.0,
                 on_batch: Callable[[int, int, float], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch: expected a positive integer, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms: expected a number >= 0, got {max_wait_ms}")
        self.score = score
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self.arriving = 0
        """Requests announced and not yet submitted or settled: the collector waits for them."""
        self.calls = 0
        """Scoring calls made (the batched ones and any per-request retries)."""
        self._queue: asyncio.Queue[_Request] | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._busy = False

    # -- lifecycle (inside the event loop: the app's lifespan) ----------------------------------------------------
    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqrec-scoring")
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="seqrec-batcher")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Score what is queued (for up to timeout_s), then stop the collector and the worker thread; requests
        still queued then get an error."""
        if self._task is None:
            return
        end = time.monotonic() + timeout_s
        while (not self._queue.empty() or self._busy) and time.monotonic() < end:
            await asyncio.sleep(0.005)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        while not self._queue.empty():
            _set(self._queue.get_nowait().done, error=RuntimeError("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def run_in_worker(self, fn: Callable, *args):
        """fn(*args) in the scoring thread (e.g. a warm-up call), in turn with the batches."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- requests --------------------------------------------------------------------------------------------------
    def announce(self) -> Arrival:
        """A request has arrived and will be submitted soon: a batch being collected waits for it (at most
        max_wait_ms). Settle the returned Arrival when the request is done, whether it was submitted or not."""
        self.arriving += 1
        return Arrival()

    def settle(self, arrival: Arrival | None) -> None:
        """The announced request is no longer on its way (submitted, refused, or its client went away)."""
        if arrival is not None and arrival.pending:
            arrival.pending = False
            self.arriving -= 1
            if self._wake is not None:
                self._wake.set()

    async def submit(self, histories: list, k: int, exclude_history: bool, arrival: Arrival | None = None) -> list:
        """The top-k lists of these (already checked) histories, scored in a batch with other requests."""
        if self._task is None:
            raise RuntimeError("the batcher is not running")
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._queue.put_nowait(_Request(histories, k, exclude_history, loop.time(), done))
        self.settle(arrival)
        self._wake.set()
        return await done

    # -- the collector ---------------------------------------------------------------------------------------------
    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Request | None = None
        while True:
            first = carry if carry is not None else await self._queue.get()
            carry = None
            batch, size = [first], len(first.histories)
            deadline = first.queued_at + self.max_wait
            while size < self.max_batch:
                if self._queue.empty():
                    remaining = deadline - loop.time()
                    if self.arriving <= 0 or remaining <= 0:
                        break
                    self._wake.clear()
                    try:    # until a request is submitted or withdrawn, or the wait is over
                        await asyncio.wait_for(self._wake.wait(), remaining)
                    except asyncio.TimeoutError:
                        pass
                    continue
                nxt = self._queue.get_nowait()
                if size + len(nxt.histories) > self.max_batch:
                    carry = nxt             # starts the next batch
                    break
                batch.append(nxt)
                size += len(nxt.histories)
            batch = [r for r in batch if not r.done.cancelled()]    # clients that went away
            if batch:
                self._busy = True
                try:
                    await self._score(batch)
                finally:
                    self._busy = False

    async def _score(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        groups: dict[bool, list[_Request]] = {}
        for r in batch:
            groups.setdefault(r.exclude_history, []).append(r)
        for exclude, requests in groups.items():
            histories = [h for r in requests for h in r.histories]
            k = max(r.k for r in requests)
            t0 = time.perf_counter()
            try:
                self.calls += 1
                rows = await loop.run_in_executor(self._executor, self.score, histories, k, exclude)
            except Exception as e:
                if len(requests) == 1:
                    _set(requests[0].done, error=e)
                else:       # find the failing request(s): the others still get their answers
                    for r in requests:
                        await self._score([r])
                continue
            if self.on_batch is not None:
                self.on_batch(len(histories), len(requests), time.perf_counter() - t0)
            at = 0
            for r in requests:
                n = len(r.histories)
                _set(r.done, [row[:r.k] for row in rows[at:at + n]])
                at += n


def _set(done: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    if done.done():         # cancelled: the client went away
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)
