"""Bounded, deadline-aware daemon worker threads for blocking backend calls.

A blocking call cannot be interrupted, so the guard runs it on a worker and stops
*waiting* at the caller's deadline. Workers are daemon threads (a backend hung forever
never keeps the interpreter from exiting), at most ``max_workers`` of them, created on
demand and reused. A job that finds no free worker waits in a FIFO queue and is run by
the next worker to finish. Every job carries a deadline, so the pool can tell a *stuck*
worker (still running a job whose deadline has passed: the backend hangs) from a busy one.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Protocol

from ..errors import FeatureStoreUnavailableError

__all__ = ["CallJob", "Job", "WorkerPool"]

_now = time.monotonic


class Job(Protocol):
    """Work for a worker thread."""

    deadline: float
    """Monotonic time after which nobody waits for this job any more."""

    def run(self) -> Optional[Job]:
        """Do the work; return a follow-up job to run on the same worker, or ``None``."""

    def dropped(self) -> None:
        """The pool was closed before the job could run."""


class CallJob:
    """A plain call on a worker (the health check), waited for through ``done``."""

    __slots__ = ("deadline", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], Any], deadline: float) -> None:
        self.fn = fn
        self.deadline = deadline
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.done = threading.Lock()
        self.done.acquire()

    def run(self) -> Optional[Job]:
        try:
            self.result = self.fn()
        except BaseException as exc:  # reported to the caller
            self.error = exc
        self.done.release()
        return None

    def dropped(self) -> None:
        self.error = FeatureStoreUnavailableError("the guarded client is closed")
        self.done.release()


class _Worker:
    """A daemon thread running jobs handed to it through a lock."""

    __slots__ = ("_go", "_job", "_pool", "deadline", "thread")

    def __init__(self, pool: WorkerPool, name: str) -> None:
        self._pool = pool
        self._job: Optional[Job] = None
        self._go = threading.Lock()
        self._go.acquire()
        self.deadline: Optional[float] = None  # of the job in hand; None while idle
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def hand(self, job: Optional[Job]) -> None:
        """Run ``job`` next (``None`` stops the worker)."""
        self._job = job
        self._go.release()

    def _loop(self) -> None:
        go = self._go
        pool = self._pool
        while True:
            go.acquire()
            job = self._job
            self._job = None
            while job is not None:
                job = job.run()
                if job is None:
                    job = pool._next_or_idle(self)
                else:
                    self.deadline = job.deadline
            if pool.closed and self.deadline is None:
                return


class WorkerPool:
    """At most ``max_workers`` daemon threads and a FIFO queue of jobs waiting for one.

    Args:
        max_workers: the most threads (>= 1), and so the most calls that can hang at once.
        name: thread name prefix.

    Raises:
        ValueError: ``max_workers`` below 1.
    """

    def __init__(self, max_workers: int, name: str = "asahi-guard") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers
        self._name = name
        self._lock = threading.Lock()
        self._idle: List[_Worker] = []
        self._workers: List[_Worker] = []
        self._queue: Deque[Job] = deque()
        self.closed = False

    @property
    def size(self) -> int:
        """Worker threads alive (idle or busy)."""
        return len(self._workers)

    @property
    def busy(self) -> int:
        """Workers running a job right now (including jobs nobody waits for any more)."""
        return len(self._workers) - len(self._idle)

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker."""
        return len(self._queue)

    def submit(self, job: Job) -> bool:
        """Run ``job`` on a free or new worker, or queue it (False: queued or closed)."""
        with self._lock:
            if self.closed:
                fresh = None
                worker = None
            elif self._idle:
                worker = self._idle.pop()
                fresh = False
            elif len(self._workers) < self.max_workers:
                worker = _Worker(self, f"{self._name}-{len(self._workers) + 1}")
                self._workers.append(worker)
                fresh = True
            else:
                self._queue.append(job)
                return False
            if worker is not None:
                worker.deadline = job.deadline
        if worker is None:
            job.dropped()
            return False
        worker.hand(job)
        if fresh:
            worker.thread.start()
        return True

    def all_stuck(self, now: Optional[float] = None) -> bool:
        """Every worker exists and is running a job past its deadline (the backend hangs)."""
        now = _now() if now is None else now
        with self._lock:
            if self._idle or len(self._workers) < self.max_workers:
                return False
            for worker in self._workers:
                deadline = worker.deadline
                if deadline is None or deadline > now:
                    return False
            return True

    def any_stuck(self, now: Optional[float] = None) -> bool:
        """Some worker is running a job past its deadline (the backend is hanging)."""
        now = _now() if now is None else now
        with self._lock:
            for worker in self._workers:
                deadline = worker.deadline
                if deadline is not None and deadline <= now:
                    return True
            return False

    def cancel(self, job: Job) -> bool:
        """Take a queued job out of the queue (False: it already left it)."""
        with self._lock:
            try:
                self._queue.remove(job)
            except ValueError:
                return False
            return True

    def _next_or_idle(self, worker: _Worker) -> Optional[Job]:
        """The next queued job for a worker that finished one, or park it."""
        with self._lock:
            if self._queue and not self.closed:
                job = self._queue.popleft()
                worker.deadline = job.deadline
                return job
            worker.deadline = None
            if self.closed:
                self._workers.remove(worker)
            else:
                self._idle.append(worker)
            return None

    def close(self) -> None:
        """Stop idle workers now and busy ones when their job returns; drop queued jobs.

        Never blocks.
        """
        with self._lock:
            self.closed = True
            idle = list(self._idle)
            self._idle.clear()
            for worker in idle:
                self._workers.remove(worker)
            queued = list(self._queue)
            self._queue.clear()
        for worker in idle:
            worker.hand(None)
        for job in queued:
            job.dropped()
