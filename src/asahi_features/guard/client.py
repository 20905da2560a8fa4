"""GuardedClient: one deadline per request, coalesced reads, a breaker and fallback.

One module on purpose (about 580 lines): the public surface of one class, sync and async
twins of four calls; each step lives elsewhere (``breaker``, ``cache``, ``coalescer``,
``workers``, ``lookups``) and the twins share every step that does no I/O.

Whatever the backend does (hang forever, sleep, raise, return garbage), a guarded
request returns by its deadline. Concurrent lookups of the same entity type and feature
list are merged into backend batch reads (:mod:`.coalescer`); blocking backends run on a
bounded pool of daemon threads (:mod:`.workers`), backends with native ``aget_*``
coroutines run as tasks of the caller's event loop. The circuit breaker (:mod:`.breaker`)
judges only the backend's own outcomes, and the cache (:mod:`.cache`) is optional.

The sync and async paths share every step that does no I/O: :meth:`_prepare` (cache,
breaker, the caller's lookups) and :meth:`_collect` (answers, fallback, errors).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

from ..errors import (
    FeatureStoreUnavailableError,
)
from ..models import FeatureVector
from ..stores.base import BaseFeatureStore, FeatureStoreClient, missing_protocol_methods
from .breaker import BreakerState, CircuitBreaker
from .cache import FeatureCache
from .coalescer import LoopCoalescer, ReadHooks, ThreadCoalescer
from .failures import Fallback, classify, describe
from .lookups import Key, Waiter, wait_async
from .workers import CallJob, WorkerPool

if TYPE_CHECKING:
    from ..settings import FeatureStoreSettings

__all__ = ["Group", "GuardedClient"]

logger = logging.getLogger(__name__)

_now = time.monotonic
"""Real time for deadlines (the injectable clock is for the breaker, cache and logs)."""

Group = Tuple[str, Sequence[str], Sequence[str]]
"""``(entity_type, feature_names, entity_ids)``: one part of a request."""

_COUNTERS = (
    "requests",
    "reads",
    "lookups_coalesced",
    "timeouts",
    "unavailable",
    "overloaded",
    "fallbacks",
    "config_errors",
    "rejected_open",
    "rejected_stuck",
    "bad_vectors",
    "cache_hits",
    "cache_misses",
)


class _Prepared(NamedTuple):
    """One request after the cache and the breaker: what is known, what must be read."""

    groups: List[Tuple[str, Tuple[str, ...], List[str]]]
    known: Optional[List[List[Optional[FeatureVector]]]]  # cache hits per group (or no cache)
    waiter: Optional[Waiter]  # None when nothing needs the backend
    positions: List[Optional[int]]  # per group, its lookup's index in waiter.lookups
    refused: Optional[FeatureStoreUnavailableError]  # the breaker is open


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


class GuardedClient(BaseFeatureStore, ReadHooks):
    """Wraps any :class:`FeatureStoreClient` so that no request can block inference.

    * **One deadline per request**: :meth:`get_groups` reads every part of a request (the
      user and the organisation of one prompt, the groups of a batch) concurrently under
      one deadline. A request of ``n`` entity ids in all gets ``timeout_ms + (n - 1) x
      batch_entity_timeout_ms`` (or ``batch_timeout_ms`` when set, for n > 1): a batch of 2
      does not wait seconds on a hung store, a batch of 1,000 does not time out on a
      healthy one. Backends with their own I/O timeouts (HTTP, Tecton) follow it.
    * **Coalesced reads**: concurrent lookups of the same entity type and feature list,
      from threads or coroutines, are merged into backend batch reads (at most
      ``max_batch_size`` ids each); a lone request leaves at once. Answers are matched to
      callers by ``entity_id``; a vector for an id that was not asked, a missing one or a
      duplicate is bad data for that entity only.
    * **Fallback**: with ``fallback_on_timeout`` a failed read yields empty vectors with
      status ``UNAVAILABLE`` (the store failed) or ``OVERLOADED`` (this process was too
      busy to send the read in time) and a rate-limited WARNING; without it the caller
      gets :class:`FeatureStoreTimeoutError`, :class:`FeatureStoreUnavailableError` or
      :class:`GuardOverloadedError`. :class:`FeatureConfigError` and :class:`ConfigError`
      always propagate and never count against the backend.
    * **Circuit breaker** (:class:`CircuitBreaker`): opens on the failure or slow-call
      rate of the backend's recent reads, never on time spent queued in this process.
    * **Bounded resources**: at most ``max_workers`` daemon threads; when every one is
      stuck in a call past its deadline (the backend hangs), new reads fail at once.
    * **Cache** (opt-in, ``cache_ttl_seconds > 0``): answers per (entity type, entity id,
      feature list); hits return copies whose freshness keeps ageing.

    Args:
        client: the backend (anything with the three protocol methods).
        timeout_ms: the deadline of one request (> 0).
        batch_timeout_ms: a fixed deadline for requests of more than one id (> 0); ``None``
            scales it with the size (above).
        batch_entity_timeout_ms: what each id past the first adds to a request's deadline.
        fallback_on_timeout: degrade to empty vectors instead of raising.
        breaker_failure_rate: share of failed reads in the window that opens the breaker.
        breaker_slow_call_rate: share of slow reads (longer than their deadline) that
            opens it.
        breaker_window: how many recent reads the breaker judges.
        breaker_minimum_calls: reads needed in the window before it judges.
        breaker_reset_seconds: how long it stays open before probing.
        breaker_half_open_calls: probe reads let through when half-open.
        max_workers: worker threads the guard may use (and at most this many can hang).
        max_batch_size: the most ids one coalesced read carries.
        cache_ttl_seconds: cache lifetime of a vector (0 = no cache).
        cache_max_entries: cache size bound.
        warning_interval_seconds: at most one fallback WARNING per interval.
        clock: monotonic seconds for the breaker, cache and log rate limit (deadlines
            always use real time).

    Raises:
        ValueError: an argument out of its range.
        TypeError: ``client`` lacks one of the protocol methods.

    Example:
        >>> from asahi_features.stores.local import LocalFeatureStore
        >>> guarded = GuardedClient(LocalFeatureStore("features.json"), timeout_ms=200)
        >>> vector = guarded.get_features("u_1001", "user", ["tier"])  # doctest: +SKIP
        >>> vector.status  # FOUND, MISSING, INVALID_ID, UNAVAILABLE or OVERLOADED  # doctest: +SKIP
    """

    def __init__(
        self,
        client: FeatureStoreClient,
        *,
        timeout_ms: float = 200,
        batch_timeout_ms: Optional[float] = None,
        batch_entity_timeout_ms: float = 1.0,
        fallback_on_timeout: bool = True,
        breaker_failure_rate: float = 0.5,
        breaker_slow_call_rate: float = 1.0,
        breaker_window: int = 20,
        breaker_minimum_calls: int = 5,
        breaker_reset_seconds: float = 30.0,
        breaker_half_open_calls: int = 2,
        max_workers: int = 8,
        max_batch_size: int = 1000,
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
        if batch_timeout_ms is not None and not batch_timeout_ms > 0:
            raise ValueError(f"batch_timeout_ms must be > 0 or None, got {batch_timeout_ms}")
        if not batch_entity_timeout_ms >= 0:
            raise ValueError(f"batch_entity_timeout_ms must be >= 0, got {batch_entity_timeout_ms}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if cache_ttl_seconds < 0:
            raise ValueError(f"cache_ttl_seconds must be >= 0, got {cache_ttl_seconds}")
        if warning_interval_seconds < 0:
            raise ValueError(
                f"warning_interval_seconds must be >= 0, got {warning_interval_seconds}"
            )
        self.inner = client
        self.source = str(getattr(client, "source", None) or "custom")
        self.timeout_ms = float(timeout_ms)
        self.batch_timeout_ms = None if batch_timeout_ms is None else float(batch_timeout_ms)
        self.batch_entity_timeout_ms = float(batch_entity_timeout_ms)
        self.fallback_on_timeout = fallback_on_timeout
        self.warning_interval_seconds = float(warning_interval_seconds)
        self._clock = clock
        self.breaker = CircuitBreaker(
            breaker_failure_rate,
            slow_call_rate=breaker_slow_call_rate,
            window=breaker_window,
            minimum_calls=breaker_minimum_calls,
            reset_seconds=breaker_reset_seconds,
            half_open_calls=breaker_half_open_calls,
            probe_seconds=max(self.timeout_ms / 1000.0, 1.0) * 10,
            clock=clock,
        )
        self.cache: Optional[FeatureCache] = (
            FeatureCache(cache_ttl_seconds, cache_max_entries, clock=clock)
            if cache_ttl_seconds > 0
            else None
        )
        self._pool = WorkerPool(max_workers)
        self._threads = ThreadCoalescer(self, self.breaker, max_batch_size, self._fetch, self._pool)
        self._native = _has_native(client, "aget_batch_features")
        self._native_single = _has_native(client, "aget_features")
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopCoalescer] = (
            weakref.WeakKeyDictionary()
        )
        self._loops_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._counts: Dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._fallback = Fallback(
            self.source, fallback_on_timeout, warning_interval_seconds, clock, self.count
        )
        self.max_batch_size = max_batch_size
        self._single_timeout = self.deadline_seconds(1)

    @classmethod
    def from_settings(
        cls, client: FeatureStoreClient, settings: FeatureStoreSettings
    ) -> GuardedClient:
        """Wrap ``client`` with the guard keys of the ``feature_store:`` section."""
        return cls(
            client,
            timeout_ms=settings.timeout_ms,
            batch_timeout_ms=settings.batch_timeout_ms,
            batch_entity_timeout_ms=settings.batch_entity_timeout_ms,
            fallback_on_timeout=settings.fallback_on_timeout,
            breaker_failure_rate=settings.breaker_failure_rate,
            breaker_slow_call_rate=settings.breaker_slow_call_rate,
            breaker_window=settings.breaker_window,
            breaker_minimum_calls=settings.breaker_minimum_calls,
            breaker_reset_seconds=settings.breaker_reset_seconds,
            breaker_half_open_calls=settings.breaker_half_open_calls,
            max_workers=settings.max_workers,
            max_batch_size=settings.max_batch_size,
            cache_ttl_seconds=settings.cache_ttl_seconds,
            cache_max_entries=settings.cache_max_entries,
            warning_interval_seconds=settings.warning_interval_seconds,
        )

    def __repr__(self) -> str:
        return (
            f"GuardedClient({self.inner!r}, timeout_ms={self.timeout_ms:g}, "
            f"breaker={self.breaker.state.value})"
        )

    # -- deadlines ---------------------------------------------------------------------

    def deadline_seconds(self, ids: int) -> float:
        """The deadline, in seconds, of a request of ``ids`` entity ids in all."""
        if ids > 1 and self.batch_timeout_ms is not None:
            return self.batch_timeout_ms / 1000.0
        return (self.timeout_ms + max(ids - 1, 0) * self.batch_entity_timeout_ms) / 1000.0

    # -- hooks for the coalescer (no I/O) ------------------------------------------------

    def budget(self, ids: int) -> float:
        return self.deadline_seconds(ids)

    def failed(self, exc: BaseException) -> BaseException:
        error, counter = classify(exc)
        self.count(counter)
        return error

    def succeeded(self, key: Key, by_id: Dict[str, FeatureVector]) -> None:
        if self.cache is not None:
            self.cache.put_many(key[0], list(by_id), key[1], list(by_id.values()))

    def count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            self._counts[name] += n

    def count_read(self, coalesced: int) -> None:
        with self._stats_lock:
            counts = self._counts
            counts["reads"] += 1
            counts["lookups_coalesced"] += coalesced

    def _fetch(self, ids: List[str], entity_type: str, names: List[str]) -> Any:
        if len(ids) == 1:
            return [self.inner.get_features(ids[0], entity_type, names)]
        return self.inner.get_batch_features(ids, entity_type, names)

    async def _afetch(self, ids: List[str], entity_type: str, names: List[str]) -> Any:
        inner: Any = self.inner
        if len(ids) == 1 and self._native_single:
            return [await inner.aget_features(ids[0], entity_type, names)]
        return await inner.aget_batch_features(ids, entity_type, names)

    def _loop_coalescer(self, loop: asyncio.AbstractEventLoop) -> LoopCoalescer:
        coalescer = self._loops.get(loop)
        if coalescer is None:
            with self._loops_lock:
                coalescer = self._loops.get(loop)
                if coalescer is None:
                    coalescer = LoopCoalescer(self, self.breaker, self.max_batch_size, self._afetch)
                    self._loops[loop] = coalescer
        return coalescer

    # -- the shared steps ----------------------------------------------------------------

    def _prepare(
        self, groups: Sequence[Group], loop: Optional[asyncio.AbstractEventLoop]
    ) -> _Prepared:
        """Cache hits, the breaker, and the caller's lookups for what is left (no I/O)."""
        start = _now()
        cache = self.cache
        norm: List[Tuple[str, Tuple[str, ...], List[str]]] = []
        known: Optional[List[List[Optional[FeatureVector]]]] = None if cache is None else []
        todo: List[Tuple[int, List[str]]] = []
        total = 0
        hits = 0
        for entity_type, names, ids in groups:
            names_t = tuple(names)
            id_list = list(ids)
            norm.append((entity_type, names_t, id_list))
            total += len(id_list)
            if known is None:
                wanted = id_list
            else:
                assert cache is not None
                cached = cache.get_many(entity_type, id_list, names_t)
                known.append(cached)
                wanted = [eid for eid, hit in zip(id_list, cached, strict=True) if hit is None]
                hits += len(id_list) - len(wanted)
            if wanted:
                if len(wanted) > 1:
                    wanted = list(dict.fromkeys(wanted))
                todo.append((len(norm) - 1, wanted))
        with self._stats_lock:
            counts = self._counts
            counts["requests"] += 1
            if cache is not None:
                counts["cache_hits"] += hits
                counts["cache_misses"] += total - hits
        positions: List[Optional[int]] = [None] * len(norm)
        if not todo:
            return _Prepared(norm, known, None, positions, None)
        if self.breaker.state is BreakerState.OPEN:
            self.count("rejected_open")
            retry = self.breaker.snapshot()["retry_in_seconds"]
            refused = FeatureStoreUnavailableError(
                f"circuit breaker open (the store failed too often); retrying in {retry:.1f} s"
            )
            return _Prepared(norm, known, None, positions, refused)
        timeout = self.deadline_seconds(total)
        waiter = Waiter(start + timeout, timeout, loop)
        for index, wanted in todo:
            entity_type, names_t, _ = norm[index]
            positions[index] = len(waiter.lookups)
            waiter.add((entity_type, names_t), wanted)
        return _Prepared(norm, known, waiter, positions, None)

    def _collect(self, prepared: _Prepared) -> List[List[FeatureVector]]:
        """Every group's vectors in input order; fallback or raise for what failed."""
        out: List[List[FeatureVector]] = []
        waiter = prepared.waiter
        fallback = self._fallback
        for index, (entity_type, _, ids) in enumerate(prepared.groups):
            position = prepared.positions[index]
            error: Optional[BaseException] = prepared.refused
            answered: Optional[List[Optional[FeatureVector]]] = None
            lookup_ids: List[str] = ids
            if position is not None and waiter is not None:
                lookup = waiter.lookups[position]
                error = lookup.error
                answered = lookup.vectors
                lookup_ids = lookup.ids
            cached = None if prepared.known is None else prepared.known[index]
            if (
                cached is None
                and answered is not None
                and lookup_ids is ids
                and None not in answered
            ):
                out.append(answered)  # type: ignore[arg-type]  # no None in it
                continue
            by_id: Dict[str, Optional[FeatureVector]] = (
                {} if answered is None else dict(zip(lookup_ids, answered, strict=True))
            )
            vectors: List[FeatureVector] = []
            for k, eid in enumerate(ids):
                vector = None if cached is None else cached[k]
                if vector is None:
                    if error is None:
                        vector = by_id.get(eid)
                        if vector is None:
                            vector = fallback.bad_vector(eid, entity_type)
                    else:
                        vector = fallback.vector(error, eid, entity_type)
                vectors.append(vector)
            out.append(vectors)
        return out

    # -- reads ---------------------------------------------------------------------------

    def get_groups(self, groups: Sequence[Group]) -> List[List[FeatureVector]]:
        """Read every group of one request concurrently, under one deadline.

        Args:
            groups: ``(entity_type, feature_names, entity_ids)`` triples.

        Returns:
            Per group, one vector per id in input order.

        Raises:
            FeatureConfigError: unknown features or entity type (never swallowed).
            FeatureStoreUnavailableError: the store failed, timed out (a
                :class:`FeatureStoreTimeoutError`) or the breaker is open, or this process
                was overloaded (a :class:`GuardOverloadedError`); only without fallback.
        """
        prepared = self._prepare(groups, None)
        waiter = prepared.waiter
        if waiter is not None:
            self._threads.submit(waiter)
            self._threads.wait(waiter)
        return self._collect(prepared)

    async def aget_groups(self, groups: Sequence[Group]) -> List[List[FeatureVector]]:
        """Async :meth:`get_groups`: never blocks the event loop."""
        loop = asyncio.get_running_loop()
        prepared = self._prepare(groups, loop)
        waiter = prepared.waiter
        if waiter is not None:
            coalescer = self._loop_coalescer(loop) if self._native else self._threads
            coalescer.submit(waiter)
            await wait_async(waiter, coalescer.give_up)
        return self._collect(prepared)

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        """Features of one entity within ``timeout_ms`` (see :meth:`get_groups`)."""
        if self.cache is not None or self.breaker.state is BreakerState.OPEN:
            return self.get_groups(((entity_type, feature_names, (entity_id,)),))[0][0]
        # The lone request, lean: the same steps as get_groups for one id, no cache.
        timeout = self._single_timeout
        waiter = Waiter(_now() + timeout, timeout, None)
        lookup = waiter.add((entity_type, tuple(feature_names)), [entity_id])
        with self._stats_lock:
            self._counts["requests"] += 1
        threads = self._threads
        threads.submit(waiter)
        threads.wait(waiter)
        vectors = lookup.vectors
        if vectors is not None and vectors[0] is not None:
            return vectors[0]
        if lookup.error is None:
            return self._fallback.bad_vector(entity_id, entity_type)
        return self._fallback.vector(lookup.error, entity_id, entity_type)

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        """One vector per id, in input order, within the request deadline of ``len(ids)``
        ids (see :meth:`get_groups`)."""
        if not entity_ids:
            return []
        return self.get_groups(((entity_type, feature_names, entity_ids),))[0]

    async def aget_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        """Async :meth:`get_features`."""
        return (await self.aget_groups(((entity_type, feature_names, (entity_id,)),)))[0][0]

    async def aget_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        """Async :meth:`get_batch_features`."""
        if not entity_ids:
            return []
        return (await self.aget_groups(((entity_type, feature_names, entity_ids),)))[0]

    def health_check(self) -> bool:
        """True when the backend says healthy within ``timeout_ms`` (False otherwise).

        Runs on a worker (so it is bounded too) but neither consults nor feeds the breaker.
        """
        deadline = _now() + self.timeout_ms / 1000.0
        call = CallJob(self.inner.health_check, deadline)
        if self._pool.all_stuck():
            return False
        self._pool.submit(call)
        remaining = deadline - _now()
        if not call.done.acquire(timeout=max(remaining, 0.0)):
            self._pool.cancel(call)
            return False
        return call.error is None and call.result is True

    # -- the rest ------------------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """Counters since construction, pool usage and the breaker snapshot (JSON-ready).

        ``requests`` counts guarded requests (a batch or a multi-group request is one);
        ``reads`` the backend calls made for them and ``lookups_coalesced`` the lookups
        that rode along in another's read. ``timeouts`` counts lookups that ran out of
        time because of the store, ``overloaded`` those that never left this process in
        time (not the store's fault), ``unavailable`` reads that failed, ``fallbacks``
        empty vectors returned instead of raising, ``rejected_open`` requests refused by
        the open breaker, ``rejected_stuck`` reads refused because every worker was stuck
        in a call past its deadline, ``bad_vectors`` unusable vectors in answers.
        """
        with self._stats_lock:
            out: Dict[str, Any] = dict(self._counts)
        pool = self._pool
        out["busy_workers"] = pool.busy
        out["workers"] = pool.size
        out["max_workers"] = pool.max_workers
        out["queued_reads"] = pool.queued
        out["waiting"] = self._threads.waiting + sum(c.waiting for c in list(self._loops.values()))
        out["cache_entries"] = len(self.cache) if self.cache is not None else 0
        out["suppressed_warnings"] = self._fallback.suppressed
        out["breaker"] = self.breaker.snapshot()
        return out

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
        self._threads.close()
        for coalescer in list(self._loops.values()):
            coalescer.close()
        self._pool.close()
        closer = getattr(self.inner, "close", None)
        if not callable(closer):
            return
        thread = threading.Thread(target=self._close_inner, args=(closer,), daemon=True)
        thread.start()
        thread.join(max(self.timeout_ms / 1000.0, 1.0))
        if thread.is_alive():
            logger.warning("closing feature store %r did not finish in time", self.source)

    @staticmethod
    def _close_inner(closer: Callable[[], Any]) -> None:
        try:
            closer()
        except Exception as exc:  # closing is best effort
            logger.warning("closing the feature store failed: %s", describe(exc))
