"""Coalesced reads: concurrent lookups of one entity type and feature list share backend calls.

One module on purpose (about 640 lines): the queue, the batch leaving it and the
matching of answers back by entity id share one lock and one state; split, their
invariants would span files.

The DataLoader pattern. Lookups are keyed by ``(entity_type, feature names)``. While a
read of a key is in flight, new lookups of that key wait in its queue; when the read
ends, the waiting lookups leave together as the next read (up to ``max_batch_size`` ids).
A lone lookup finds nothing in flight and leaves at once: it waits for nothing extra.
Answers are matched back to lookups by ``entity_id``, never by position.

Each caller is a :class:`~.lookups.Waiter` with one deadline for all its lookups (the user and the
organisation lookups of one request, the groups of one batch). At its deadline a caller
stops waiting (:meth:`Coalescer.give_up`); the reason it is given depends on where its
lookups were:

* in a read the backend was running: the backend was too slow (a timeout);
* still in this process, while the backend was misbehaving (the read ahead of it had
  overrun its own budget, or a worker was held by a call past its deadline): also the
  backend's fault, but not counted against it a second time;
* still in this process otherwise: the process was overloaded
  (:class:`~asahi_features.errors.GuardOverloadedError`), never the backend's fault.

When the last caller of a running read stops waiting, the read is *abandoned*: it counts
once as a backend timeout, its key is free for the next read, and its late answer (if it
ever comes) is discarded. Two launchers share every step above: :class:`ThreadCoalescer`
runs reads on the bounded daemon :class:`~asahi_features.guard.workers.WorkerPool`
(blocking backends, and sync callers), :class:`LoopCoalescer` runs them as tasks on one
event loop (backends with native ``aget_*`` coroutines).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional

from ..errors import (
    FeatureStoreDataError,
    FeatureStoreTimeoutError,
    FeatureStoreUnavailableError,
    GuardOverloadedError,
)
from ..models import FeatureVector
from ..stores.base import read_deadline
from .breaker import CircuitBreaker, Permit
from .lookups import DONE, QUEUED, RUNNING, Key, Lookup, Waiter, match, wait_async, wake
from .workers import WorkerPool

__all__ = ["Coalescer", "LoopCoalescer", "Read", "ReadHooks", "ThreadCoalescer"]

_now = time.monotonic


def _slack(budget: float) -> float:
    """How much short of its budget an abandoned read may be and still count as having
    used it up: the hand-off to a worker or a task (microseconds, milliseconds on a loaded
    machine) starts the read a little after its callers' clocks started."""
    return min(0.005 + 0.1 * budget, 0.5 * budget)


class ReadHooks:
    """What the coalescer needs from the guard: budgets, classification and counters."""

    def budget(self, ids: int) -> float:
        """Seconds a healthy read of ``ids`` entities may take."""
        raise NotImplementedError

    def failed(self, exc: BaseException) -> BaseException:
        """The error a backend exception becomes for the callers."""
        raise NotImplementedError

    def succeeded(self, key: Key, by_id: Dict[str, FeatureVector]) -> None:
        """A read answered: its usable vectors by entity id (to fill the cache)."""

    def count(self, name: str, n: int = 1) -> None:
        """Add to one of the guard's counters."""

    def count_read(self, coalesced: int) -> None:
        """One backend read started, carrying ``coalesced`` lookups besides the first."""


class _KeyState:
    __slots__ = ("pending", "read")

    def __init__(self) -> None:
        self.read: Optional[Read] = None  # queued or running; None when the key is free
        self.pending: Deque[Lookup] = deque()


class Read:
    """One backend call for some lookups of one key (also a worker :class:`Job`)."""

    __slots__ = (
        "abandoned",
        "budget",
        "coalescer",
        "deadline",
        "ids",
        "key",
        "lookups",
        "permit",
        "size",
        "started_at",
        "state",
        "task",
    )

    def __init__(self, coalescer: Coalescer, key: Key) -> None:
        self.coalescer = coalescer
        self.key = key
        self.lookups: List[Lookup] = []
        self.size = 0
        self.deadline = 0.0
        self.state = QUEUED
        self.abandoned = False
        self.started_at = 0.0
        self.budget = 0.0
        self.ids: List[str] = []
        self.permit: Optional[Permit] = None
        self.task: Optional[asyncio.Task[None]] = None

    def join(self, lookup: Lookup) -> None:
        lookup.read = self
        self.lookups.append(lookup)
        self.size += len(lookup.ids)
        if lookup.waiter.deadline > self.deadline:
            self.deadline = lookup.waiter.deadline

    # -- as a worker job (ThreadCoalescer) ------------------------------------------

    def run(self) -> Optional[Read]:
        coalescer = self.coalescer
        assert isinstance(coalescer, ThreadCoalescer)
        ids = coalescer.begin(self)
        if ids is None:
            return coalescer.take_next(self)
        token = read_deadline.set(self.started_at + self.budget)
        try:
            result = coalescer.fetch(ids, self.key[0], list(self.key[1]))
        except BaseException as exc:  # reported to the callers
            return coalescer.complete(self, None, exc)
        finally:
            read_deadline.reset(token)
        return coalescer.complete(self, result, None)

    def dropped(self) -> None:
        self.coalescer.fail_read(self, FeatureStoreUnavailableError("the guarded client is closed"))


class Coalescer:
    """Merges concurrent lookups per key into reads; subclasses launch the reads.

    Args:
        hooks: the guard's budgets, error classification and counters.
        breaker: consulted once per read; told the read's outcome once.
        max_batch_size: the most entity ids one read carries (a single lookup larger than
            this still leaves whole, alone).
    """

    def __init__(self, hooks: ReadHooks, breaker: CircuitBreaker, max_batch_size: int) -> None:
        self._hooks = hooks
        self._breaker = breaker
        self.max_batch_size = max_batch_size
        self._lock = threading.Lock()
        self._keys: Dict[Key, _KeyState] = {}
        self._unjudged: List[Read] = []  # abandoned within budget, still running
        self._closed = False

    # -- submitting and waiting -------------------------------------------------------

    def submit(self, waiter: Waiter) -> None:
        """Queue every lookup of ``waiter``; start the reads of keys that are free."""
        to_launch: List[Read] = []
        with self._lock:
            if self._closed:
                closed: Optional[BaseException] = FeatureStoreUnavailableError(
                    "the guarded client is closed"
                )
            else:
                closed = None
                for lookup in waiter.lookups:
                    state = self._keys.get(lookup.key)
                    if state is None:
                        state = self._keys[lookup.key] = _KeyState()
                    read = state.read
                    if read is None:
                        read = state.read = Read(self, lookup.key)
                        read.join(lookup)
                        to_launch.append(read)
                    elif (
                        read.state == QUEUED and read.size + len(lookup.ids) <= self.max_batch_size
                    ):
                        read.join(lookup)  # the read has not left yet: ride along
                    else:
                        state.pending.append(lookup)
        if closed is not None:
            self._finish_all(waiter, closed)
            return
        for read in to_launch:
            self._launch(read)

    def give_up(self, waiter: Waiter, cancelled: bool = False) -> None:
        """The caller stops waiting: end its unfinished lookups with the right error.

        ``cancelled``: the caller was cancelled (its read, if abandoned, says nothing
        about the backend).
        """
        to_launch: List[Read] = []
        now = _now()
        with self._lock:
            self._judge_overdue(now)
            for lookup in waiter.lookups:
                if lookup.state == DONE:
                    continue
                state = self._keys[lookup.key]
                read = lookup.read
                if cancelled:  # nobody reads it: neither a timeout nor an overload
                    lookup.error = FeatureStoreUnavailableError("the caller was cancelled")
                elif lookup.state == RUNNING:
                    lookup.error = self._timed_out(waiter)
                else:
                    lookup.error = self._not_sent(state, now)
                lookup.state = DONE
                waiter.left -= 1
                if read is not None and all(m.state == DONE for m in read.lookups):
                    nxt = self._abandon(read, state, cancelled)
                    if nxt is not None:
                        to_launch.append(nxt)
        for read in to_launch:
            self._launch(read)

    def _timed_out(self, waiter: Waiter) -> BaseException:
        self._hooks.count("timeouts")
        return FeatureStoreTimeoutError(f"no answer within {waiter.timeout * 1000:g} ms")

    def _not_sent(self, state: _KeyState, now: float) -> BaseException:
        """Why a lookup that never reached the backend missed its deadline (lock held)."""
        ahead = state.read
        if ahead is not None and ahead.state == RUNNING and now - ahead.started_at > ahead.budget:
            self._hooks.count("timeouts")
            return FeatureStoreTimeoutError(
                f"queued behind a read that has run {(now - ahead.started_at) * 1000:.0f} ms, "
                f"over its {ahead.budget * 1000:.0f} ms budget (the store is slow)"
            )
        if self._backend_stuck(now):
            self._hooks.count("timeouts")
            return FeatureStoreTimeoutError(
                "no guard worker was free: calls past their deadline hold them (the store hangs)"
            )
        self._hooks.count("overloaded")
        return GuardOverloadedError(
            "this process was too busy to send the read before the deadline (the store "
            "was not judged); more max_workers, a longer timeout_ms or fewer concurrent "
            "requests per process help"
        )

    def _backend_stuck(self, now: float) -> bool:
        return False

    def _abandon(self, read: Read, state: _KeyState, cancelled: bool) -> Optional[Read]:
        """Nobody waits for ``read`` any more (lock held): judge it, free its key.

        A read abandoned within its own budget is not judged yet: its callers' time may
        have gone in local queueing. It is judged when it returns (by how long the
        backend took) or, if it has not returned by then, when its budget runs out.
        """
        if read.state == RUNNING and not read.abandoned:
            read.abandoned = True
            permit = read.permit
            if permit is not None:
                if cancelled:  # the callers left: says nothing about the backend
                    read.permit = None
                    permit.release()
                    self._cancel(read)
                elif _now() - read.started_at >= read.budget - _slack(read.budget):
                    read.permit = None
                    permit.failure(slow=True)
                    self._cancel(read)
                else:
                    self._judge_later(read)
        elif read.state == QUEUED:
            read.state = DONE
            self._unqueue(read)
        if state.read is read:
            state.read = None
            return self._next_read(state)
        return None

    def _judge_later(self, read: Read) -> None:
        """Judge an abandoned read at the end of its budget if it has not returned (lock
        held)."""
        self._unjudged.append(read)

    def _judge_overdue(self, now: float) -> None:
        """Abandoned reads still running past their budget fail (lock held)."""
        unjudged = self._unjudged
        if not unjudged:
            return
        keep: List[Read] = []
        for read in unjudged:
            permit = read.permit
            if permit is None:
                continue
            if now - read.started_at >= read.budget - _slack(read.budget):
                read.permit = None
                permit.failure(slow=True)
                self._cancel(read)
            else:
                keep.append(read)
        unjudged[:] = keep

    def _cancel(self, read: Read) -> None:
        """Stop a read nobody waits for, where that is possible (native tasks)."""
        if read.task is not None:
            read.task.cancel()

    def _unqueue(self, read: Read) -> None:
        """A queued read lost all its callers (lock held)."""

    def _next_read(self, state: _KeyState) -> Optional[Read]:
        """Form the key's next read from its queue (lock held), or ``None``."""
        pending = state.pending
        read: Optional[Read] = None
        while pending:
            lookup = pending[0]
            if lookup.state == DONE:  # its caller gave up while it was queued
                pending.popleft()
                continue
            if read is None:
                read = Read(self, lookup.key)
            elif read.size + len(lookup.ids) > self.max_batch_size:
                break
            read.join(pending.popleft())
        state.read = read
        return read

    # -- running a read ---------------------------------------------------------------

    def begin(self, read: Read) -> Optional[List[str]]:
        """Start ``read``: the unique ids to fetch, or ``None`` when it must not run
        (nobody waits for it any more, or the breaker refuses it)."""
        refused = False
        with self._lock:
            if self._unjudged:
                self._judge_overdue(_now())
            if read.state != QUEUED:
                return None
            lookups = read.lookups
            if len(lookups) == 1:  # the lone request: its ids are unique already
                live = lookups if lookups[0].state == QUEUED else []
                ids = lookups[0].ids
            else:
                live = [m for m in lookups if m.state == QUEUED]
                ids = list(dict.fromkeys(eid for m in live for eid in m.ids))
            if not live:
                read.state = DONE
                return None
            budget = self._hooks.budget(len(ids))
            permit = self._breaker.acquire(budget)
            if permit is None:
                refused = True
            else:
                read.permit = permit
                read.state = RUNNING
                read.started_at = _now()
                read.budget = budget
                read.ids = ids
                for member in live:
                    member.state = RUNNING
        if refused:
            self._hooks.count("rejected_open")
            self.fail_read(read, FeatureStoreUnavailableError("circuit breaker open"))
            return None
        self._hooks.count_read(len(live) - 1)
        return ids

    def complete(
        self,
        read: Read,
        result: Any,
        error: Optional[BaseException],
        on_loop: Optional[asyncio.AbstractEventLoop] = None,
    ) -> Optional[Read]:
        """Hand a read's answer (or error) to its callers; the key's next read, if any."""
        hooks = self._hooks
        duration = _now() - read.started_at
        key = read.key
        by_id: Dict[str, FeatureVector] = {}
        if error is None:
            try:
                by_id, bad = match(read.ids, key[0], result)
            except FeatureStoreDataError as exc:
                error = exc
            else:
                if bad:
                    hooks.count("bad_vectors", bad)
        if error is not None:
            error = hooks.failed(error)
        finished: List[Waiter] = []
        with self._lock:
            permit = read.permit  # judged once: here, or by the overdue sweep
            read.permit = None
            abandoned = read.abandoned
            read.state = DONE
            for member in read.lookups:
                if member.state != RUNNING:
                    continue
                if error is None:
                    wanted = member.ids
                    member.vectors = (
                        [by_id.get(wanted[0])]
                        if len(wanted) == 1
                        else [by_id.get(eid) for eid in wanted]
                    )
                else:
                    member.error = error
                member.state = DONE
                waiter = member.waiter
                waiter.left -= 1
                if waiter.left == 0:
                    finished.append(waiter)
            nxt = self._after(read)
        if permit is not None:
            slow = duration > read.budget
            if error is None:
                permit.success(slow=slow)
            elif isinstance(error, FeatureStoreUnavailableError):
                permit.failure(slow=slow)
            else:  # the caller's mistake (unknown feature): says nothing of the backend
                permit.release()
        if error is None and by_id and not abandoned:  # a late answer is discarded
            hooks.succeeded(key, by_id)
        wake(finished, on_loop)
        return nxt

    def _after(self, read: Read) -> Optional[Read]:
        """The key's next read once ``read`` is over (lock held)."""
        state = self._keys.get(read.key)
        if state is None or state.read is not read:
            return None  # abandoned earlier: the key moved on
        return self._next_read(state)

    def take_next(self, read: Read) -> Optional[Read]:
        """After a read that did not run: the key's next read, if any."""
        with self._lock:
            return self._after(read)

    def fail_read(self, read: Read, error: BaseException) -> None:
        """End every unfinished lookup of a read that never ran with ``error``."""
        finished: List[Waiter] = []
        with self._lock:
            read.state = DONE
            for member in read.lookups:
                if member.state == DONE:
                    continue
                member.error = error
                member.state = DONE
                member.waiter.left -= 1
                if member.waiter.left == 0:
                    finished.append(member.waiter)
            nxt = self._after(read)
        wake(finished, None)
        if nxt is not None:
            self._launch(nxt)

    def _finish_all(self, waiter: Waiter, error: BaseException) -> None:
        for lookup in waiter.lookups:
            if lookup.state != DONE:
                lookup.error = error
                lookup.state = DONE
        waiter.left = 0
        wake([waiter], None)

    def _launch(self, read: Read) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Refuse new lookups (as unavailable); reads in flight still answer."""
        with self._lock:
            self._closed = True

    @property
    def waiting(self) -> int:
        """Lookups queued behind a read in flight, right now."""
        with self._lock:
            return sum(
                sum(1 for m in state.pending if m.state != DONE) for state in self._keys.values()
            )


class ThreadCoalescer(Coalescer):
    """Reads run on the bounded daemon worker pool (blocking backend methods).

    Args:
        fetch: ``fetch(ids, entity_type, names)``, the blocking backend read.
        pool: the worker pool.
        (and the :class:`Coalescer` arguments)
    """

    def __init__(
        self,
        hooks: ReadHooks,
        breaker: CircuitBreaker,
        max_batch_size: int,
        fetch: Callable[[List[str], str, List[str]], Any],
        pool: WorkerPool,
    ) -> None:
        super().__init__(hooks, breaker, max_batch_size)
        self.fetch = fetch
        self.pool = pool

    def _launch(self, read: Read) -> None:
        pool = self.pool
        if pool.all_stuck():
            # Every worker is held by a call its caller gave up on: the backend hangs.
            # Fail fast instead of queueing behind calls that may never return.
            permit = self._breaker.acquire()
            if permit is not None:
                permit.failure(slow=True)
            self._hooks.count("rejected_stuck")
            self.fail_read(
                read,
                FeatureStoreUnavailableError(
                    f"all {pool.max_workers} guard workers are stuck in calls past their "
                    "deadline (the store hangs)"
                ),
            )
            return
        pool.submit(read)

    def _unqueue(self, read: Read) -> None:
        self.pool.cancel(read)

    def _backend_stuck(self, now: float) -> bool:
        return self.pool.any_stuck(now)

    def wait(self, waiter: Waiter) -> None:
        """Block until every lookup of ``waiter`` ended or its deadline passed."""
        lock = waiter.lock
        assert lock is not None
        if waiter.left:
            remaining = waiter.deadline - _now()
            try:
                woken = lock.acquire(timeout=remaining) if remaining > 0 else lock.acquire(False)
            except BaseException:  # KeyboardInterrupt while waiting
                self.give_up(waiter, cancelled=True)
                raise
            if not woken:
                self.give_up(waiter)


class LoopCoalescer(Coalescer):
    """Reads run as tasks of one event loop (native ``aget_*`` backend coroutines); the
    guard keeps one per loop, and its callers and reads all run on that loop.

    Args:
        fetch: ``await fetch(ids, entity_type, names)``, the backend's async read.
        (and the :class:`Coalescer` arguments)
    """

    def __init__(
        self,
        hooks: ReadHooks,
        breaker: CircuitBreaker,
        max_batch_size: int,
        fetch: Callable[[List[str], str, List[str]], Any],
    ) -> None:
        super().__init__(hooks, breaker, max_batch_size)
        self.fetch = fetch  # no reference to the loop: the guard's per-loop map is weak

    def _launch(self, read: Read) -> None:
        ids = self.begin(read)
        if ids is None:
            nxt = self.take_next(read)
            if nxt is not None:
                self._launch(nxt)
            return
        read.task = asyncio.get_running_loop().create_task(self._run(read, ids))

    def _judge_later(self, read: Read) -> None:
        remaining = read.started_at + read.budget - _now()
        asyncio.get_running_loop().call_later(max(remaining, 0.0), self._expire, read)

    def _expire(self, read: Read) -> None:
        """An abandoned read's budget ran out before it returned: it failed."""
        with self._lock:
            permit = read.permit
            read.permit = None
        if permit is not None:
            permit.failure(slow=True)
            self._cancel(read)

    async def _run(self, read: Read, ids: List[str]) -> None:
        read_deadline.set(read.started_at + read.budget)  # this task's own context
        try:
            result = await self.fetch(ids, read.key[0], list(read.key[1]))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            cancelling = getattr(task, "cancelling", None)
            if read.abandoned:
                return  # we cancelled it: every caller has left, the read is judged
            if cancelling is not None and cancelling():
                # cancelled from outside (the loop is shutting down): not the backend's fault
                if read.permit is not None:
                    read.permit.release()
                read.permit = None
                self.fail_read_running(read, FeatureStoreUnavailableError("read cancelled"))
                raise
            error: BaseException = FeatureStoreUnavailableError("the backend raised CancelledError")
            nxt = self.complete(read, None, error, asyncio.get_running_loop())
        except Exception as exc:
            nxt = self.complete(read, None, exc, asyncio.get_running_loop())
        else:
            nxt = self.complete(read, result, None, asyncio.get_running_loop())
        if nxt is not None:
            self._launch(nxt)

    def fail_read_running(self, read: Read, error: BaseException) -> None:
        """End a running read's callers with ``error`` (no breaker outcome)."""
        read.abandoned = True
        finished: List[Waiter] = []
        with self._lock:
            read.state = DONE
            for member in read.lookups:
                if member.state == RUNNING:
                    member.error = error
                    member.state = DONE
                    member.waiter.left -= 1
                    if member.waiter.left == 0:
                        finished.append(member.waiter)
            nxt = self._after(read)  # lookups queued behind it are not left waiting
        wake(finished, asyncio.get_running_loop())
        if nxt is not None:
            self._launch(nxt)

    async def wait(self, waiter: Waiter) -> None:
        """Await every lookup of ``waiter``, until its deadline at most."""
        await wait_async(waiter, self.give_up)
