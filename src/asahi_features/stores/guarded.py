"""GuardedClient: a deadline, fallback, circuit breaker and optional cache around any backend.

Whatever the backend does (hang forever, sleep, raise, return garbage), a guarded call
returns within ``timeout_ms``. The synchronous path cannot interrupt a blocking call, so
it hands the call to a bounded pool of *daemon* worker threads and stops waiting at the
deadline; a backend hung forever can hold at most ``max_workers`` threads and never
keeps the interpreter from exiting. The async path uses native cancellation
(:func:`asyncio.wait_for`) when the backend has its own ``aget_*`` coroutines, and the
same worker pool bridged to the event loop otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections import OrderedDict, deque
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Deque,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
)

from ..errors import (
    AsahiFeaturesError,
    ConfigError,
    FeatureConfigError,
    FeatureStoreDataError,
    FeatureStoreTimeoutError,
    FeatureStoreUnavailableError,
)
from ..models import FeatureStatus, FeatureVector
from .base import BaseFeatureStore, FeatureStoreClient, missing_protocol_methods
from .breaker import BreakerState, CircuitBreaker
from .cache import FeatureCache

if TYPE_CHECKING:
    from ..settings import FeatureStoreSettings

__all__ = ["BreakerState", "CircuitBreaker", "GuardedClient"]

logger = logging.getLogger(__name__)

_PASS_THROUGH = (FeatureConfigError, ConfigError)
"""The caller's mistakes: never swallowed, never counted against the backend."""

_MAX_ERROR_CHARS = 200

_now = time.monotonic
"""Real time for deadlines (the injectable clock is for the breaker, cache and logs)."""

DEFAULT_MIN_BATCH_TIMEOUT_MS = 2000.0
"""With ``batch_timeout_ms`` unset, batches get ``max(timeout_ms, this)``: a Feast batch of
1,000 entities took 150-450 ms on a loaded 2-core machine, far over the 200 ms spec
default meant for one request, so 2 s leaves about 4x headroom and still bounds a hang."""


# --------------------------------------------------------------------------- workers


class _Call:
    """One call handed to a worker: the function, and where its outcome goes."""

    __slots__ = ("args", "done", "error", "fn", "future", "loop", "result")

    def __init__(self, fn: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.done: Optional[Any] = None  # a held threading.Lock (sync callers)
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.future: Optional[asyncio.Future[None]] = None


def _hand_off(
    worker: _Worker, fn: Callable[..., Any], args: Tuple[Any, ...], deadline: float
) -> Optional[_Call]:
    """Run ``fn(*args)`` on ``worker`` and wait until ``deadline`` at most: the finished
    call (its ``result`` or ``error``), or ``None`` when the deadline came first."""
    call = _Call(fn, args)
    done = threading.Lock()
    done.acquire()
    call.done = done
    worker.submit(call)
    remaining = deadline - _now()
    return call if done.acquire(timeout=remaining if remaining > 0 else 0) else None


def _wake_future(future: Optional[asyncio.Future[None]]) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class _Worker:
    """A daemon thread that runs one call at a time, handed over through a lock.

    ``deadline`` is the (monotonic) deadline of the caller that holds the worker and
    ``started`` when it took the worker (the start of the call in flight): both set when
    the worker is taken or handed to a waiter, ``None`` while idle. A busy worker whose
    deadline has passed is *stuck*: nobody waits for its call any more.
    """

    __slots__ = ("_call", "_go", "_pool", "deadline", "started", "thread")

    def __init__(self, pool: _WorkerPool, name: str) -> None:
        self._pool = pool
        self._call: Optional[_Call] = None
        self._go = threading.Lock()
        self._go.acquire()
        self.deadline: Optional[float] = None
        self.started: Optional[float] = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def submit(self, call: Optional[_Call]) -> None:
        """Run ``call`` next (``None`` stops the worker)."""
        self._call = call
        self._go.release()

    def _run(self) -> None:
        go = self._go
        pool = self._pool
        while True:
            go.acquire()
            call = self._call
            self._call = None
            if call is None:
                return
            try:
                call.result = call.fn(*call.args)
            except BaseException as exc:  # reported to the caller
                call.error = exc
            loop = call.loop
            if loop is None:
                call.done.release()  # type: ignore[union-attr]
            else:
                with contextlib.suppress(RuntimeError):  # loop closed: nobody waits
                    loop.call_soon_threadsafe(_wake_future, call.future)
            del call, loop
            # Bookkeeping after the wake-up: it overlaps with the caller waking (measured
            # faster than going back on the idle stack first).
            if not pool.release(self):
                return


_TIMEOUT = "timeout"
"""Why a waiter gave up: its own deadline passed before a worker was free."""
_STUCK = "stuck"
"""Why a waiter gave up: every worker is stuck (past its caller's deadline)."""
_FUTILE = "futile"
"""Why a waiter gave up: every call in flight has run longer than the waiter's time left."""
_CLOSED = "closed"
"""Why a waiter gave up: the pool was closed."""

_Outcome = Tuple[Optional[_Worker], Optional[str], float]
"""(worker handed over, or why the waiter gave up, or when to look again)."""


class _Waiter:
    """A caller waiting for a free worker, until ``deadline`` at most.

    Woken (never polled) when a worker is handed to it or the pool closes: a sync
    waiter through a held lock, an async waiter through a future of its event loop.
    """

    __slots__ = ("deadline", "future", "lock", "loop", "worker")

    def __init__(self, deadline: float, loop: Optional[asyncio.AbstractEventLoop]) -> None:
        self.deadline = deadline
        self.worker: Optional[_Worker] = None
        self.loop = loop
        self.lock: Optional[threading.Lock] = None
        self.future: Optional[asyncio.Future[None]] = None
        if loop is None:
            self.lock = threading.Lock()
            self.lock.acquire()
        else:
            self.future = loop.create_future()

    def wake(self) -> bool:
        """Wake the waiter (False: its event loop is closed, nobody is waiting)."""
        if self.lock is not None:
            self.lock.release()
            return True
        try:
            self.loop.call_soon_threadsafe(_wake_future, self.future)  # type: ignore[union-attr]
        except RuntimeError:
            return False
        return True


class _WorkerPool:
    """At most ``max_workers`` daemon threads, created on demand and reused.

    :meth:`acquire` returns an idle worker or starts a new one while under the limit
    (the lock-free fast path). When every worker is busy, a caller waits in FIFO order
    (:meth:`enqueue`, :meth:`settle`) and a worker finishing its call is handed straight
    to the first waiter, but never past the waiter's own deadline. When every busy
    worker is *stuck* (its call has run past its caller's deadline: the backend hangs),
    nobody waits: the caller is told to fail fast. A waiter also gives up (``futile``)
    once every busy worker's call has been running longer than the time it has left
    (:meth:`_futile_at`). A worker goes back to the idle stack
    (or to a waiter) as soon as its call returns, even when its caller left long before.
    """

    def __init__(self, max_workers: int, name: str = "asahi-guard") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers
        self._name = name
        self._idle: Deque[_Worker] = deque()
        self._workers: List[_Worker] = []
        self._waiters: OrderedDict[_Waiter, None] = OrderedDict()
        self._lock = threading.Lock()
        self._started = 0
        self._closed = False

    @property
    def size(self) -> int:
        """Worker threads alive (idle or busy)."""
        return self._started

    @property
    def busy(self) -> int:
        """Workers running a call right now (including calls nobody waits for any more)."""
        return self._started - len(self._idle)

    @property
    def waiting(self) -> int:
        """Callers waiting for a worker right now."""
        return len(self._waiters)

    @property
    def closed(self) -> bool:
        return self._closed

    def acquire(self, deadline: float, now: Optional[float] = None) -> Optional[_Worker]:
        """An idle worker, a new one, or ``None`` when every worker is busy or closed.

        The worker is stamped with ``deadline`` and its start time ``now`` (default: the
        monotonic clock).
        """
        try:
            worker = self._idle.pop()
        except IndexError:
            pass
        else:
            worker.started = _now() if now is None else now
            worker.deadline = deadline
            return worker
        with self._lock:
            if self._closed:
                return None
            if self._idle:
                worker = self._idle.pop()
                fresh = False
            elif self._started >= self.max_workers:
                return None
            else:
                self._started += 1
                worker = _Worker(self, f"{self._name}-{self._started}")
                self._workers.append(worker)
                fresh = True
            worker.started = _now() if now is None else now
            worker.deadline = deadline
        if fresh:
            worker.thread.start()
        return worker

    def _stuck(self, now: float) -> bool:
        """Every worker busy with a call past its caller's deadline (lock held)."""
        if self._idle or self._started < self.max_workers:
            return False
        for worker in self._workers:
            deadline = worker.deadline
            if deadline is None or deadline > now:
                return False
        return True

    def _unstuck_at(self) -> float:
        """When the workers would all be stuck if none finished (lock held).

        A worker without a deadline (just taken, not yet stamped) is never stuck, so
        then there is no such moment: ``inf`` (the waiter's own deadline applies).
        """
        latest = 0.0
        for worker in self._workers:
            deadline = worker.deadline
            if deadline is None:
                return float("inf")
            latest = max(latest, deadline)
        return latest

    def _futile_at(self, deadline: float, now: float) -> float:
        """When waiting stops being worth it for a waiter due at ``deadline`` (lock held).

        That is when every busy worker's call has been running longer than the time the
        waiter has left: a call started then would most likely not finish in time, since
        none of those in flight has finished in that long. With ``s_latest`` the start of
        the most recently started call in flight, ``now - s_latest >= deadline - now``
        first holds at ``(deadline + s_latest) / 2``. A worker just taken but not yet
        stamped counts as started ``now``. Never, while a worker is free or can be made.
        """
        if self._idle or self._started < self.max_workers:
            return float("inf")
        latest = float("-inf")
        for worker in self._workers:
            started = worker.started
            latest = max(latest, now if started is None else started)
        return (deadline + latest) / 2

    def _decide(self, waiter: _Waiter, now: float) -> _Outcome:
        """No worker for a waiter yet: give up, or wait until when? (lock held).

        Gives up when its deadline has passed (``timeout``), every worker is stuck
        (``stuck``), or every call in flight has run longer than its time left
        (``futile``); otherwise it waits until the first of its deadline, the moment
        the futility rule would hold, and the moment every worker would be stuck.
        """
        deadline = waiter.deadline
        if now >= deadline:
            return None, _TIMEOUT, now
        if self._stuck(now):
            return None, _STUCK, now
        futile_at = self._futile_at(deadline, now)
        if now >= futile_at:
            return None, _FUTILE, now
        return None, None, min(deadline, futile_at, self._unstuck_at())

    def enqueue(self, waiter: _Waiter, now: float) -> _Outcome:
        """Queue ``waiter`` for the next free worker, or tell it to give up now.

        Returns ``(worker, None, _)`` when a worker became free meanwhile,
        ``(None, reason, _)`` when the caller must not wait (``stuck``, ``closed``,
        ``timeout``, ``futile``), or ``(None, None, wake_at)``: wait until ``wake_at``
        at most (or until woken), then call :meth:`settle`.
        """
        with self._lock:
            if self._closed:
                return None, _CLOSED, now
            if self._idle:
                worker = self._idle.pop()
                worker.started = now
                worker.deadline = waiter.deadline
                return worker, None, now
            outcome = self._decide(waiter, now)
            if outcome[1] is None:
                self._waiters[waiter] = None
            return outcome

    def settle(self, waiter: _Waiter, now: float) -> _Outcome:
        """After a waiter's wait ended (woken or timed out): what now? (as :meth:`enqueue`)."""
        with self._lock:
            worker = waiter.worker
            if worker is not None:
                waiter.worker = None
                if now < waiter.deadline:
                    return worker, None, now
                self._hand_over(worker, now)  # too late to use it: the next waiter may
                return None, _TIMEOUT, now
            if self._closed:
                self._waiters.pop(waiter, None)
                return None, _CLOSED, now
            outcome = self._decide(waiter, now)
            if outcome[1] is not None:
                self._waiters.pop(waiter, None)
            return outcome

    def abandon(self, waiter: _Waiter) -> None:
        """The waiter left (interrupted or cancelled): drop it, return a handed worker."""
        with self._lock:
            self._waiters.pop(waiter, None)
            worker = waiter.worker
            waiter.worker = None
            if worker is not None:
                self._hand_over(worker)

    def wait_sync(self, deadline: float) -> Tuple[Optional[_Worker], Optional[str], bool]:
        """Block (no polling) until a worker is handed over, the deadline passes, all
        workers are stuck, or waiting is futile. Returns ``(worker, reason, waited)``."""
        waiter = _Waiter(deadline, None)
        lock = waiter.lock
        assert lock is not None
        try:
            worker, reason, wake_at = self.enqueue(waiter, _now())
            waited = worker is None and reason is None
            while worker is None and reason is None:
                remaining = wake_at - _now()
                if remaining > 0:
                    lock.acquire(timeout=remaining)
                worker, reason, wake_at = self.settle(waiter, _now())
        except BaseException:  # KeyboardInterrupt while waiting
            self.abandon(waiter)
            raise
        return worker, reason, waited

    async def wait_async(self, deadline: float) -> Tuple[Optional[_Worker], Optional[str], bool]:
        """:meth:`wait_sync` for a coroutine: awaits a future, never blocks the loop."""
        waiter = _Waiter(deadline, asyncio.get_running_loop())
        future = waiter.future
        assert future is not None
        try:
            worker, reason, wake_at = self.enqueue(waiter, _now())
            waited = worker is None and reason is None
            while worker is None and reason is None:
                remaining = wake_at - _now()
                if remaining > 0 and not future.done():
                    await asyncio.wait((future,), timeout=remaining)
                worker, reason, wake_at = self.settle(waiter, _now())
        except BaseException:  # the caller was cancelled while waiting
            self.abandon(waiter)
            raise
        return worker, reason, waited

    def _hand_over(self, worker: _Worker, now: Optional[float] = None) -> None:
        """Give a free worker to the first live waiter, else make it idle (lock held).

        A handed-over worker is stamped with the waiter's deadline and, as the start of
        its next call, ``now`` (default: the monotonic clock).
        """
        waiters = self._waiters
        while waiters:
            waiter, _ = waiters.popitem(last=False)
            worker.started = _now() if now is None else now
            worker.deadline = waiter.deadline
            waiter.worker = worker
            if waiter.wake():
                return
            waiter.worker = None  # its event loop is gone
        worker.deadline = None
        worker.started = None
        self._idle.append(worker)

    def release(self, worker: _Worker) -> bool:
        """A worker's call returned (False: the pool is closed and the worker should exit)."""
        with self._lock:
            if self._closed:
                self._started -= 1
                self._workers.remove(worker)
                return False
            self._hand_over(worker)
            return True

    def close(self) -> None:
        """Stop idle workers now and busy ones when their call returns; wake all waiters.

        Never blocks.
        """
        with self._lock:
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            self._started -= len(idle)
            for worker in idle:
                self._workers.remove(worker)
            waiters = list(self._waiters)
            self._waiters.clear()
            for waiter in waiters:
                waiter.wake()
        for worker in idle:
            worker.submit(None)


# --------------------------------------------------------------------------- helpers


def _has_native(client: object, name: str) -> bool:
    """True when ``client.name`` is a coroutine function of its own.

    ``BaseFeatureStore``'s default ``aget_*`` methods run the sync method with
    :func:`asyncio.to_thread` (the loop's non-daemon, unbounded executor), so they do not
    count as native: the guard uses its own bounded daemon workers for those.
    """
    attr = getattr(type(client), name, None)
    if attr is None:
        attr = getattr(client, name, None)
        return attr is not None and inspect.iscoroutinefunction(attr)
    if attr is getattr(BaseFeatureStore, name, None):
        return False
    return inspect.iscoroutinefunction(attr)


def _describe(exc: BaseException) -> str:
    """A short, secret-free description of a backend failure.

    The library's own errors are written to be secret-free, so their message is kept
    (shortened); for anything else only the exception type is reported.
    """
    if isinstance(exc, AsahiFeaturesError):
        return _shorten(f"{type(exc).__name__}: {exc}")
    return f"backend raised {type(exc).__name__}"


def _shorten(text: str) -> str:
    if len(text) > _MAX_ERROR_CHARS:
        return text[: _MAX_ERROR_CHARS - 3] + "..."
    return text


def _check_vector(result: Any) -> FeatureVector:
    if not isinstance(result, FeatureVector):
        raise FeatureStoreDataError(
            f"backend returned {type(result).__name__}, expected a FeatureVector"
        )
    return result


def _check_batch(result: Any, expected: int) -> List[FeatureVector]:
    if not isinstance(result, list):
        if isinstance(result, tuple):
            result = list(result)
        else:
            raise FeatureStoreDataError(
                f"backend returned {type(result).__name__} for a batch, expected a list"
            )
    if len(result) != expected:
        raise FeatureStoreDataError(
            f"backend returned {len(result)} vectors for a batch of {expected} ids"
        )
    for item in result:
        if not isinstance(item, FeatureVector):
            raise FeatureStoreDataError(
                f"backend returned a {type(item).__name__} in a batch, expected FeatureVectors"
            )
    vectors: List[FeatureVector] = result
    return vectors


def _unique(ids: Sequence[str]) -> List[str]:
    return list(dict.fromkeys(ids))


# --------------------------------------------------------------------------- the guard


class GuardedClient(BaseFeatureStore):
    """Wraps any :class:`FeatureStoreClient` so that no call can block inference.

    * **Deadline**: every read returns within ``timeout_ms`` (sync and async, single and
      batch), whatever the backend does.
    * **Fallback**: with ``fallback_on_timeout`` a timeout, an unreachable store, an open
      breaker or garbage yields one ``UNAVAILABLE`` vector per requested id and a
      rate-limited WARNING; without it the caller gets :class:`FeatureStoreTimeoutError`
      or :class:`FeatureStoreUnavailableError`.
      :class:`FeatureConfigError` and :class:`ConfigError` always propagate and never
      count as backend failures.
    * **Circuit breaker**: ``breaker_failure_threshold`` consecutive failures open it;
      while open, calls fail fast without touching the backend or a thread; after
      ``breaker_reset_seconds`` one probe is let through.
    * **Bounded resources**: at most ``max_workers`` daemon threads. When all are busy,
      a call waits (FIFO, woken by hand-off, never polling) for a free worker, but never
      past its own deadline; when all are *stuck* (each busy worker's call has run past
      its caller's deadline: the backend hangs), new calls fail fast as unavailable.
    * **Futility rule**: a waiter with time ``R`` left gives up as soon as no worker is
      free and every busy worker's call has already been running longer than ``R``: a
      call started now would most likely not finish in time, since none in flight has
      finished in that long. With ``s_latest`` the start of the most recently started
      call in flight and ``D`` the waiter's deadline, that holds from
      ``(D + s_latest) / 2``; the waiter sleeps until the first of ``D``, that moment
      and the moment every worker would be stuck, and re-evaluates when woken or then
      (a freed worker is still handed to the first waiter; a newly started call moves
      ``s_latest``). Giving up counts as a queue timeout (``queue_timeouts`` and
      ``timeouts``; fallback or :class:`FeatureStoreTimeoutError`), never as a breaker
      failure. In a healthy burst the calls in flight are short next to ``R``, so it
      never fires; against a hung backend the waiters leave at about half their
      deadline instead of all waking with the timed-out callers at the deadline.
    * **Batch deadline**: batches are throughput work, so ``get_batch_features`` /
      ``aget_batch_features`` use ``batch_timeout_ms`` (default
      ``max(timeout_ms, 2000)``); single reads keep ``timeout_ms``.
    * **Cache** (opt-in, ``cache_ttl_seconds > 0``): recent vectors per (entity type,
      entity id, feature list), at most ``cache_max_entries``; hits return copies whose
      freshness keeps ageing; a batch fetches only its misses, in one backend call.

    Args:
        client: the backend (anything with the three protocol methods).
        timeout_ms: the deadline of one single-entity read, in milliseconds (> 0).
        batch_timeout_ms: the deadline of one batch read (> 0); ``None`` means
            ``max(timeout_ms, 2000)``.
        fallback_on_timeout: degrade to ``UNAVAILABLE`` vectors instead of raising.
        breaker_failure_threshold: consecutive failures that open the breaker.
        breaker_reset_seconds: cool-down of an open breaker.
        max_workers: worker threads the guard may use (and at most this many can hang).
        cache_ttl_seconds: cache lifetime of a vector (0 = no cache).
        cache_max_entries: cache size bound.
        warning_interval_seconds: at most one fallback WARNING per interval.
        clock: monotonic seconds for the breaker, cache and log rate limit (the
            deadline itself always uses real time).

    Raises:
        ValueError: a non-positive timeout or another out-of-range argument.
        TypeError: ``client`` lacks one of the protocol methods.

    Example:
        >>> from asahi_features.stores.local import LocalFeatureStore
        >>> guarded = GuardedClient(LocalFeatureStore("features.json"), timeout_ms=200)
        >>> vector = guarded.get_features("u_1001", "user", ["tier"])  # doctest: +SKIP
        >>> vector.status  # FOUND, MISSING, or UNAVAILABLE after a fallback  # doctest: +SKIP
    """

    def __init__(
        self,
        client: FeatureStoreClient,
        *,
        timeout_ms: float = 200,
        batch_timeout_ms: Optional[float] = None,
        fallback_on_timeout: bool = True,
        breaker_failure_threshold: int = 5,
        breaker_reset_seconds: float = 30.0,
        max_workers: int = 8,
        cache_ttl_seconds: float = 0.0,
        cache_max_entries: int = 10_000,
        warning_interval_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        missing = missing_protocol_methods(client)
        if missing:
            raise TypeError(
                f"{type(client).__name__} is not a FeatureStoreClient: missing "
                f"{', '.join(missing)} (needs get_features, get_batch_features, health_check)"
            )
        if not timeout_ms > 0:
            raise ValueError(f"timeout_ms must be > 0, got {timeout_ms}")
        if batch_timeout_ms is None:
            batch_timeout_ms = max(float(timeout_ms), DEFAULT_MIN_BATCH_TIMEOUT_MS)
        elif not batch_timeout_ms > 0:
            raise ValueError(f"batch_timeout_ms must be > 0, got {batch_timeout_ms}")
        if cache_ttl_seconds < 0:
            raise ValueError(f"cache_ttl_seconds must be >= 0, got {cache_ttl_seconds}")
        if warning_interval_seconds < 0:
            raise ValueError(
                f"warning_interval_seconds must be >= 0, got {warning_interval_seconds}"
            )
        self.inner = client
        self.source = str(getattr(client, "source", None) or "custom")
        self.timeout_ms = float(timeout_ms)
        self._timeout = self.timeout_ms / 1000.0
        self.batch_timeout_ms = float(batch_timeout_ms)
        self._batch_timeout = self.batch_timeout_ms / 1000.0
        self.fallback_on_timeout = fallback_on_timeout
        self.warning_interval_seconds = float(warning_interval_seconds)
        self._clock = clock
        self.breaker = CircuitBreaker(breaker_failure_threshold, breaker_reset_seconds, clock=clock)
        self._pool = _WorkerPool(max_workers)
        self.cache: Optional[FeatureCache] = (
            FeatureCache(cache_ttl_seconds, cache_max_entries, clock=clock)
            if cache_ttl_seconds > 0
            else None
        )
        self._native_single = _has_native(client, "aget_features")
        self._native_batch = _has_native(client, "aget_batch_features")
        self._stats_lock = threading.Lock()
        self._counts: Dict[str, int] = dict.fromkeys(
            (
                "calls",
                "successes",
                "timeouts",
                "unavailable",
                "fallbacks",
                "config_errors",
                "rejected_open",
                "rejected_saturated",
                "queue_waits",
                "queue_timeouts",
                "cache_hits",
                "cache_misses",
            ),
            0,
        )
        self._warn_lock = threading.Lock()
        self._last_warning: Optional[float] = None
        self._suppressed_warnings = 0

    @classmethod
    def from_settings(
        cls, client: FeatureStoreClient, settings: FeatureStoreSettings
    ) -> GuardedClient:
        """Wrap ``client`` with the guard keys of the ``feature_store:`` section."""
        return cls(
            client,
            timeout_ms=settings.timeout_ms,
            batch_timeout_ms=settings.batch_timeout_ms,
            fallback_on_timeout=settings.fallback_on_timeout,
            breaker_failure_threshold=settings.breaker_failure_threshold,
            breaker_reset_seconds=settings.breaker_reset_seconds,
            max_workers=settings.max_workers,
            cache_ttl_seconds=settings.cache_ttl_seconds,
            cache_max_entries=settings.cache_max_entries,
            warning_interval_seconds=settings.warning_interval_seconds,
        )

    def __repr__(self) -> str:
        return (
            f"GuardedClient({self.inner!r}, timeout_ms={self.timeout_ms:g}, "
            f"batch_timeout_ms={self.batch_timeout_ms:g}, "
            f"breaker={self.breaker.state.value})"
        )

    # -- bookkeeping -------------------------------------------------------------------

    def _count(self, *names: str) -> None:
        with self._stats_lock:
            counts = self._counts
            for name in names:
                counts[name] += 1

    def stats(self) -> Dict[str, Any]:
        """Counters since construction, pool usage and the breaker snapshot (JSON-ready).

        ``calls`` counts reads (a batch is one call); ``fallbacks`` counts calls answered
        with ``UNAVAILABLE`` vectors; ``unavailable`` counts failed calls of any cause
        (timeouts, backend errors, garbage, open breaker, stuck pool). ``queue_waits``
        counts calls that had to wait for a free worker; ``queue_timeouts`` those whose
        deadline passed while waiting (also counted in ``timeouts`` but never against the
        breaker: they never reached the backend); ``rejected_saturated`` those refused
        because every worker was stuck (or the client closed); ``waiting`` is the number
        of callers waiting right now.
        """
        with self._stats_lock:
            out: Dict[str, Any] = dict(self._counts)
        out["busy_workers"] = self._pool.busy
        out["waiting"] = self._pool.waiting
        out["workers"] = self._pool.size
        out["max_workers"] = self._pool.max_workers
        out["cache_entries"] = len(self.cache) if self.cache is not None else 0
        out["suppressed_warnings"] = self._suppressed_warnings
        out["breaker"] = self.breaker.snapshot()
        return out

    def _warn(self, reason: str) -> None:
        now = self._clock()
        with self._warn_lock:
            last = self._last_warning
            if last is not None and now - last < self.warning_interval_seconds:
                self._suppressed_warnings += 1
                return
            suppressed = self._suppressed_warnings
            self._last_warning = now
            self._suppressed_warnings = 0
        extra = f" ({suppressed} similar warnings suppressed)" if suppressed else ""
        logger.warning(
            "feature store %r unavailable, proceeding without features: %s%s",
            self.source,
            reason,
            extra,
        )

    def _fallback(
        self, exc: FeatureStoreUnavailableError, entity_ids: Sequence[str], entity_type: str
    ) -> List[FeatureVector]:
        if not self.fallback_on_timeout:
            raise exc
        reason = _shorten(str(exc))
        self._count("fallbacks")
        self._warn(reason)
        empty = FeatureVector.empty
        unavailable = FeatureStatus.UNAVAILABLE
        source = self.source
        return [empty(eid, entity_type, source, unavailable, error=reason) for eid in entity_ids]

    # -- admission and outcome -------------------------------------------------------

    def _admit(self) -> None:
        if not self.breaker.allow():
            self._count("calls", "rejected_open", "unavailable")
            retry = self.breaker.snapshot()["retry_in_seconds"]
            raise FeatureStoreUnavailableError(
                f"circuit breaker open after {self.breaker.consecutive_failures} consecutive "
                f"failures; retrying in {retry:.1f} s"
            )

    def _no_worker(self, reason: Optional[str], timeout: float) -> FeatureStoreUnavailableError:
        """No worker for this call: it never reached the backend, so breaker-neutral."""
        self.breaker.record_neutral()
        if reason in (_TIMEOUT, _FUTILE):
            self._count("calls", "timeouts", "queue_timeouts", "unavailable")
            detail = (
                "; gave up early: every call in flight had run longer than the time left"
                if reason == _FUTILE
                else ""
            )
            return FeatureStoreTimeoutError(
                f"no guard worker free within {timeout * 1000:g} ms "
                f"(all {self._pool.max_workers} busy{detail})"
            )
        self._count("calls", "rejected_saturated", "unavailable")
        if reason == _CLOSED or self._pool.closed:
            return FeatureStoreUnavailableError("the guarded client is closed")
        return FeatureStoreUnavailableError(
            f"all {self._pool.max_workers} guard workers are busy, stuck past their "
            "deadline (backend hung)"
        )

    def _timed_out(self, timeout: float) -> FeatureStoreTimeoutError:
        self.breaker.record_failure()
        self._count("calls", "timeouts", "unavailable")
        return FeatureStoreTimeoutError(f"no answer within {timeout * 1000:g} ms")

    def _worker_sync(self, deadline: float, timeout: float) -> _Worker:
        """A worker for a sync call: free now, or after waiting until ``deadline`` at most.

        Raises:
            FeatureStoreUnavailableError: deadline passed while waiting (a timeout),
                every worker is stuck, or the client is closed.
        """
        pool = self._pool
        worker = pool.acquire(deadline)
        if worker is not None:
            return worker
        try:
            worker, reason, waited = pool.wait_sync(deadline)
        except BaseException:  # KeyboardInterrupt while waiting: give a probe slot back
            self.breaker.record_neutral()
            raise
        if waited:
            self._count("queue_waits")
        if worker is None:
            raise self._no_worker(reason, timeout)
        return worker

    async def _wait_worker_async(self, deadline: float, timeout: float) -> _Worker:
        """Wait for a worker in a coroutine (awaits a hand-off, never blocks the loop).

        Raises:
            FeatureStoreUnavailableError: as :meth:`_worker_sync`.
        """
        pool = self._pool
        try:
            worker, reason, waited = await pool.wait_async(deadline)
        except BaseException:  # the caller was cancelled, not the backend
            self.breaker.record_neutral()
            raise
        if waited:
            self._count("queue_waits")
        if worker is None:
            raise self._no_worker(reason, timeout)
        return worker

    def _failed(self, exc: BaseException) -> BaseException:
        """Classify a backend exception; returns what to raise (to the fallback or caller)."""
        if isinstance(exc, _PASS_THROUGH):
            self.breaker.record_neutral()
            self._count("calls", "config_errors")
            return exc
        self.breaker.record_failure()
        self._count("calls", "unavailable")
        if isinstance(exc, FeatureStoreUnavailableError):
            if isinstance(exc, FeatureStoreTimeoutError):
                return FeatureStoreTimeoutError(_describe(exc))
            return exc
        err = FeatureStoreUnavailableError(_describe(exc))
        err.__cause__ = exc
        return err

    def _succeeded(self) -> None:
        self.breaker.record_success()
        self._count("calls", "successes")

    # -- the guarded call, sync --------------------------------------------------------

    def _run_sync(
        self, fn: Callable[..., Any], args: Tuple[Any, ...], start: float, timeout: float
    ) -> Any:
        """Run ``fn(*args)`` on a worker, waiting until ``start + timeout`` at most.

        ``start`` is the ``time.monotonic()`` reading taken when the public method was
        entered, so time lost before the wait (a busy interpreter, a wait for a free
        worker) counts too.
        """
        self._admit()
        deadline = start + timeout
        worker = self._worker_sync(deadline, timeout)
        try:
            call = _hand_off(worker, fn, args, deadline)
        except BaseException:  # KeyboardInterrupt while waiting: give a probe slot back
            self.breaker.record_neutral()
            raise
        if call is None:
            raise self._timed_out(timeout)
        if call.error is not None:
            raise self._failed(call.error)
        return call.result

    def _guard_single(
        self, entity_id: str, entity_type: str, names: List[str], raw: Callable[[], Any]
    ) -> FeatureVector:
        try:
            result = raw()  # raises failures already classified and counted
            try:
                vector = _check_vector(result)
            except FeatureStoreDataError as exc:
                raise self._failed(exc) from None
        except FeatureStoreUnavailableError as exc:
            return self._fallback(exc, (entity_id,), entity_type)[0]
        self._succeeded()
        if self.cache is not None:
            self.cache.put(entity_type, entity_id, names, vector)
        return vector

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        """Features of one entity within the deadline.

        Raises:
            FeatureConfigError: unknown features or entity type (never swallowed).
            FeatureStoreTimeoutError: no answer in time (only without fallback).
            FeatureStoreUnavailableError: the store failed or the breaker is open (only
                without fallback).
        """
        start = _now()
        names = list(feature_names)
        cache = self.cache
        if cache is not None:
            hit = cache.get(entity_type, entity_id, names)
            if hit is not None:
                self._count("cache_hits")
                return hit
            self._count("cache_misses")
        inner = self.inner
        return self._guard_single(
            entity_id,
            entity_type,
            names,
            lambda: self._run_sync(
                inner.get_features, (entity_id, entity_type, names), start, self._timeout
            ),
        )

    def _split_batch(
        self, ids: List[str], entity_type: str, names: List[str]
    ) -> Tuple[List[Optional[FeatureVector]], List[str]]:
        cache = self.cache
        if cache is None:
            return [None] * len(ids), ids
        cached = cache.get_many(entity_type, ids, names)
        misses = _unique([eid for eid, hit in zip(ids, cached, strict=True) if hit is None])
        hits = len(ids) - sum(1 for hit in cached if hit is None)
        with self._stats_lock:
            self._counts["cache_hits"] += hits
            self._counts["cache_misses"] += len(ids) - hits
        return cached, misses

    def _merge_batch(
        self,
        ids: List[str],
        entity_type: str,
        names: List[str],
        cached: List[Optional[FeatureVector]],
        misses: List[str],
        raw: Callable[[], Any],
    ) -> List[FeatureVector]:
        try:
            result = raw()  # raises failures already classified and counted
            try:
                fetched = _check_batch(result, len(misses))
            except FeatureStoreDataError as exc:
                raise self._failed(exc) from None
        except FeatureStoreUnavailableError as exc:
            fetched = self._fallback(exc, misses, entity_type)
        else:
            self._succeeded()
            if self.cache is not None:
                self.cache.put_many(entity_type, misses, names, fetched)
        if self.cache is None:
            return fetched
        by_id = dict(zip(misses, fetched, strict=True))
        return [
            hit if hit is not None else by_id[eid] for eid, hit in zip(ids, cached, strict=True)
        ]

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        """One vector per id, in input order, within ``batch_timeout_ms`` (one backend call).

        With the cache on, only the ids not in the cache are fetched (each once).

        Raises:
            FeatureConfigError: unknown features or entity type (never swallowed).
            FeatureStoreTimeoutError: no answer in time (only without fallback).
            FeatureStoreUnavailableError: the store failed, returned the wrong number of
                vectors, or the breaker is open (only without fallback).
        """
        start = _now()
        ids = list(entity_ids)
        names = list(feature_names)
        if not ids:
            return []
        cached, misses = self._split_batch(ids, entity_type, names)
        if not misses:
            return [hit for hit in cached if hit is not None]
        inner = self.inner
        return self._merge_batch(
            ids,
            entity_type,
            names,
            cached,
            misses,
            lambda: self._run_sync(
                inner.get_batch_features, (misses, entity_type, names), start, self._batch_timeout
            ),
        )

    def health_check(self) -> bool:
        """True when the backend says healthy within the deadline (False otherwise).

        Uses a worker (so it is bounded too; it may wait for one within the deadline) but
        neither consults nor feeds the breaker.
        """
        deadline = _now() + self._timeout
        worker = self._pool.acquire(deadline)
        if worker is None:
            worker, _, _ = self._pool.wait_sync(deadline)
            if worker is None:
                return False
        call = _hand_off(worker, self.inner.health_check, (), deadline)
        return call is not None and call.error is None and call.result is True

    # -- the guarded call, async -------------------------------------------------------

    async def _run_async(
        self,
        native: bool,
        name: str,
        fn: Callable[..., Any],
        args: Tuple[Any, ...],
        start: float,
        timeout: float,
    ) -> Any:
        self._admit()
        deadline = start + timeout
        if native:
            coro = getattr(self.inner, name)(*args)
            try:
                return await asyncio.wait_for(coro, max(0.0, deadline - _now()))
            except asyncio.TimeoutError:
                raise self._timed_out(timeout) from None
            except asyncio.CancelledError:  # the caller was cancelled, not the backend
                self.breaker.record_neutral()
                raise
            except Exception as exc:
                raise self._failed(exc) from None
        worker = self._pool.acquire(deadline)  # the fast path: no extra coroutine
        if worker is None:
            worker = await self._wait_worker_async(deadline, timeout)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        call = _Call(fn, args)
        call.loop = loop
        call.future = future
        worker.submit(call)
        try:
            await asyncio.wait_for(future, max(0.0, deadline - _now()))
        except asyncio.TimeoutError:
            raise self._timed_out(timeout) from None
        except asyncio.CancelledError:  # the caller was cancelled, not the backend
            self.breaker.record_neutral()
            raise
        if call.error is not None:
            raise self._failed(call.error)
        return call.result

    async def aget_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        """Async :meth:`get_features` (native cancellation when the backend is async)."""
        start = _now()
        names = list(feature_names)
        cache = self.cache
        if cache is not None:
            hit = cache.get(entity_type, entity_id, names)
            if hit is not None:
                self._count("cache_hits")
                return hit
            self._count("cache_misses")
        try:
            result = await self._run_async(
                self._native_single,
                "aget_features",
                self.inner.get_features,
                (entity_id, entity_type, names),
                start,
                self._timeout,
            )
        except FeatureStoreUnavailableError as exc:
            return self._fallback(exc, (entity_id,), entity_type)[0]
        return self._guard_single(entity_id, entity_type, names, lambda: result)

    async def aget_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        """Async :meth:`get_batch_features` (native cancellation when available)."""
        start = _now()
        ids = list(entity_ids)
        names = list(feature_names)
        if not ids:
            return []
        cached, misses = self._split_batch(ids, entity_type, names)
        if not misses:
            return [hit for hit in cached if hit is not None]
        try:
            result = await self._run_async(
                self._native_batch,
                "aget_batch_features",
                self.inner.get_batch_features,
                (misses, entity_type, names),
                start,
                self._batch_timeout,
            )
        except FeatureStoreUnavailableError as exc:
            failed = exc

            def raise_failed() -> Any:
                raise failed

            return self._merge_batch(ids, entity_type, names, cached, misses, raise_failed)
        return self._merge_batch(ids, entity_type, names, cached, misses, lambda: result)

    # -- the rest ----------------------------------------------------------------------

    def list_features(self, entity_type: Optional[str] = None) -> Dict[str, List[str]]:
        """Delegates to the backend's ``list_features`` (not guarded by the deadline).

        Raises:
            NotImplementedError: the backend cannot list its features.
        """
        lister = getattr(self.inner, "list_features", None)
        if lister is None:
            raise NotImplementedError(f"{type(self.inner).__name__} cannot list its features")
        result: Dict[str, List[str]] = lister(entity_type)
        return result

    def close(self) -> None:
        """Stop idle workers and close the backend, waiting at most about one deadline.

        Workers stuck in a hung call exit when it returns (they are daemon threads, so
        they never hold up interpreter exit). Later reads fail as unavailable.
        """
        self._pool.close()
        closer = getattr(self.inner, "close", None)
        if not callable(closer):
            return
        thread = threading.Thread(target=self._close_inner, args=(closer,), daemon=True)
        thread.start()
        thread.join(max(self._timeout, 1.0))
        if thread.is_alive():
            logger.warning("closing feature store %r did not finish in time", self.source)

    @staticmethod
    def _close_inner(closer: Callable[[], Any]) -> None:
        try:
            closer()
        except Exception as exc:  # closing is best effort
            logger.warning("closing the feature store failed: %s", _describe(exc))
