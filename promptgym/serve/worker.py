"""The one thread that owns the model, and who pays for a job when it fails or is abandoned.

Execution: one worker thread owns the model (torch on 2 cores gains nothing from parallel forwards;
the LM is not thread-safe, so do not use a served instance from other threads); the event loop only
parses, checks and answers. Quota: a job reserves its calls in the key store when the worker takes it,
after every check passed (bad input is never charged), and gives them back if scoring fails or the
client's timeout expired first (a timed-out request is never charged: the client will retry it). A
timed-out job's work is stopped, not finished: the worker asks before every forward pass whether the
job was abandoned (``LocalLM.interrupt``), so an uncharged request costs the worker at most
``request_timeout_s`` plus one forward pass. A key revoked while its request waited in the queue
answers 401, not a quota 429.

Failure modes of the charge. The calls are committed before the model runs, so no crash ever yields
free calls; the other side of that choice is that a process killed outright (SIGKILL, power loss, OOM
killer) while jobs were reserved keeps them charged though never answered: at most the jobs of one
worker cycle (one job, or with ``batching`` the identical jobs scored together).

Batching: merging different requests into one ``lm.score`` call changes their bf16 scores by rounding
(LocalLM cuts rows into chunks by length, and a row's padding width depends on its chunk mates:
log-probs moved by up to 1e-6 on the plain path and 6e-5 with the fast paths, bf16, tiny model) and
saves little on a CPU (a prompt alone in a call vs inside a 20-prompt call: 1.11 s vs 1.03 s,
LocalLM's docstring). So with ``batching`` on, the worker drains every queued ``/v1/score`` job
(waiting up to ``batch_window_ms`` for more) and scores **identical** jobs once (same prompts, rows,
label words and mode: each still charged); distinct jobs are never merged, and every result is
byte-for-byte what it would be with batching off (tested).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("promptgym.server")


class JobAbandoned(Exception):
    """Raised on the worker thread, inside the model's forward loop, to stop a job nobody waits for."""


class Job:
    """One unit of model work; ``fn(job, cycle)`` runs on the worker thread (``cycle``: a dict shared by
    the jobs of one batching cycle). The state machine decides who refunds: a job the handler
    abandoned (timeout) before it finished is refunded by the worker."""

    def __init__(self, fn: Callable[[Job, dict], Any], loop: asyncio.AbstractEventLoop, batchable: bool) -> None:
        self.fn, self.loop, self.batchable = fn, loop, batchable
        self.future: asyncio.Future = loop.create_future()
        self.lock = threading.Lock()
        self.state = "queued"  # -> running -> done | abandoned
        self.refund: Callable[[], None] | None = None  # set by fn once calls are reserved
        # set by fn once it has answers: records the answered calls (usage receipts); run only if the job is
        # delivered, under the lock that decides it, so a chain never holds a call that was refunded
        self.commit: Callable[[], None] | None = None

    def raise_if_abandoned(self) -> None:
        """Stop the job's model work (the LM calls this before each forward pass) if its handler gave up."""
        if self.state == "abandoned":
            raise JobAbandoned

    def _deliver(self, value: Any, error: BaseException | None) -> None:
        def put() -> None:
            if not self.future.done():
                if error is not None:
                    self.future.set_exception(error)
                else:
                    self.future.set_result(value)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(put)


class ModelWorker:
    """The single thread that owns the LM and runs jobs in arrival order."""

    def __init__(self, batching: bool, window_s: float, own_thread: bool = True) -> None:
        self.batching, self.window_s = batching, window_s
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        if own_thread:
            self._thread = threading.Thread(target=self.run, name="promptgym-model-worker", daemon=True)
            self._thread.start()

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=60)

    def run(self) -> None:
        """Run jobs on the calling thread until :meth:`stop` (the worker's own thread runs this too)."""
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            if self.batching and job.batchable:
                deadline = time.monotonic() + self.window_s
                while True:
                    try:
                        nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic())) if self.window_s > 0 \
                            else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    jobs.append(nxt)
                    if nxt is None:
                        break
            cycle: dict = {}
            for j in jobs:
                if j is None:
                    return
                self._run(j, cycle if self.batching else {})

    @staticmethod
    def _run(job: Job, cycle: dict) -> None:
        with job.lock:
            if job.state == "abandoned":
                return
            job.state = "running"
        value, error = None, None
        try:
            value = job.fn(job, cycle)
        except BaseException as e:  # delivered to the handler, which answers JSON
            error = e
            ModelWorker._give_back(job)
        with job.lock:
            if job.state == "abandoned":
                ModelWorker._give_back(job)
                return
            if error is None:
                error = ModelWorker._commit(job)
            job.state = "done"
        job._deliver(value, error)

    @staticmethod
    def _commit(job: Job) -> BaseException | None:
        """Record the job's answered calls; if that fails (a busy key store), refund them and answer the error."""
        commit, job.commit = job.commit, None
        if commit is None:
            return None
        try:
            commit()
        except BaseException as exc:
            ModelWorker._give_back(job)
            return exc
        return None

    @staticmethod
    def _give_back(job: Job) -> None:
        """Refund the job's reserved calls; a failing refund is logged, never allowed to stop the worker."""
        refund, job.refund = job.refund, None
        if refund is None:
            return
        try:
            refund()
        except Exception as exc:
            log.error("could not give back the calls of a failed or abandoned request: %s", exc)

