"""Runs the engine on one background thread and hands each request's events to its HTTP handler.

Fairness: requests are served first-come first-served. Whoever is waiting when the model frees up
(plus whoever arrives within a few milliseconds) forms the next batch, up to `max_rows` rows.
While a batch runs, waiting requests join it between decode steps (continuous batching) as long
as rows are free and the prompt fits before the batch's position; when the head of the queue
cannot join, nobody overtakes it: the batch drains and the head starts the next one.
A request whose client went away is cancelled (Request.cancel), which drops its rows from the
running batch at the next step.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import queue
import threading
import time
from dataclasses import dataclass

from chatforge.infer.engine import Engine, Request

log = logging.getLogger("chatforge.serve")
DONE = object()


@dataclass
class Job:
    request: Request
    loop: asyncio.AbstractEventLoop
    sink: asyncio.Queue  # receives lists of engine Events, then an Exception or DONE
    rows_left: int = 0

    def __post_init__(self):
        self.rows_left = self.request.n

    def send(self, item) -> None:
        self.loop.call_soon_threadsafe(self.sink.put_nowait, item)


class Scheduler:
    def __init__(self, engine: Engine, max_rows: int = 32, gather_s: float = 0.01):
        self.engine, self.max_rows, self.gather_s = engine, max_rows, gather_s
        self.inbox: queue.Queue[Job] = queue.Queue()
        self.waiting: collections.deque[Job] = collections.deque()
        self.busy_rows = 0
        self.batches = 0
        self.joined = 0  # requests that joined a running batch
        self.cancelled_rows = 0  # rows stopped because their client went away
        self.thread = threading.Thread(target=self._run, name="chatforge-engine", daemon=True)
        self.thread.start()

    def submit(self, request: Request) -> asyncio.Queue:
        """Queue a request (call from the event loop); returns the queue its events arrive on."""
        if request.n > self.max_rows:
            raise ValueError(f"n={request.n} exceeds the batch size {self.max_rows}")
        loop = asyncio.get_running_loop()
        sink: asyncio.Queue = asyncio.Queue()
        self.inbox.put(Job(request, loop, sink))
        return sink

    def _take(self, block: bool, timeout: float | None = None) -> bool:
        try:
            self.waiting.append(self.inbox.get(block=block, timeout=timeout))
            return True
        except queue.Empty:
            return False

    def _next_batch(self) -> list[Job]:
        if not self.waiting:
            self._take(block=True)
        deadline = time.monotonic() + self.gather_s
        while (left := deadline - time.monotonic()) > 0 and self._take(block=True, timeout=left):
            pass
        while self._take(block=False):
            pass
        batch, rows = [], 0
        while self.waiting and rows + self.waiting[0].request.n <= self.max_rows:
            job = self.waiting.popleft()
            if job.request.cancelled:
                job.send(DONE)
                continue
            batch.append(job)
            rows += job.request.n
        return batch

    def _admit(self, by_id: dict, free: int, pos: int, room: int) -> list[Request]:
        """Called by the engine between steps: waiting requests that can join the running batch."""
        while self._take(block=False):
            pass
        out = []
        while self.waiting:
            job = self.waiting[0]
            r = job.request
            if r.cancelled:
                self.waiting.popleft()
                job.send(DONE)
                continue
            need = min(r.params.max_tokens, self.engine.max_context - len(r.prompt))
            if r.n > free or len(r.prompt) > pos or room < need:
                break  # strict FIFO: the head waits for the next batch and nobody overtakes it
            self.waiting.popleft()
            by_id[r.id] = job
            out.append(r)
            free -= r.n
            self.busy_rows += r.n
            self.joined += 1
        return out

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                continue
            by_id = {j.request.id: j for j in batch}
            self.batches += 1
            self.busy_rows = sum(j.request.n for j in batch)
            admit = functools.partial(self._admit, by_id)
            try:
                for events in self.engine.generate([j.request for j in batch], admit=admit, max_rows=self.max_rows):
                    grouped: dict[int, list] = {}
                    for ev in events:
                        grouped.setdefault(ev.request.id, []).append(ev)
                    for rid, evs in grouped.items():
                        job = by_id[rid]
                        job.send(evs)
                        job.rows_left -= sum(ev.finish_reason is not None for ev in evs)
                        self.cancelled_rows += sum(ev.finish_reason == "cancelled" for ev in evs)
                        if job.rows_left == 0:
                            job.send(DONE)  # answer now, not when the whole batch ends
                for j in by_id.values():
                    if j.rows_left > 0:
                        j.send(DONE)
            except Exception as e:  # a bug must fail these requests, not kill the server thread
                log.exception("generation failed")
                for j in by_id.values():
                    j.send(e)
            finally:
                self.busy_rows = 0
