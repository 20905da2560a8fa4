"""GuardedClient deadlines: one per request, overload apart from outages, native async
reads bounded, a breaker that judges only the backend, HTTP timeouts that follow.

Modes: ``sync`` (threads, blocking backend), ``async-threads`` (asyncio callers, blocking
backend on the guard's workers) and ``async-native`` (a backend with ``aget_*``
coroutines, read as tasks of the caller's loop). Healthy paths have roomy deadlines;
deadline tests use a hung backend (or one that answers just after the deadline) and
assert outcomes, never elapsed time; waits are bounded by a generous SETTLE only.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from typing import Any, Callable, Coroutine, List, Optional, Tuple

import pytest

from asahi_features.enricher import FeatureEnricher
from asahi_features.errors import (
    FeatureStoreTimeoutError,
    FeatureStoreUnavailableError,
    GuardOverloadedError,
)
from asahi_features.guard import GuardedClient
from asahi_features.models import EnrichmentReason, FeatureStatus, FeatureVector, utc_now
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import EnricherConfig, MonitorConfig
from asahi_features.stores.base import io_timeout
from tests.support.clocks import ManualClock
from tests.support.faults import AsyncFaultyBackend, FaultyBackend, answers_at
from tests.support.servers import wait_until

NAMES = ["tier"]
MODES = ["sync", "async-threads", "async-native"]
THREAD_MODES = ["sync", "async-threads"]
SETTLE = 10.0
"""Bound of every wait for a condition (seconds); reached only when a rule is broken."""

FOUND = FeatureStatus.FOUND
UNAVAILABLE = FeatureStatus.UNAVAILABLE
OVERLOADED = FeatureStatus.OVERLOADED


def make_backend(
    mode: str, backends: List[FaultyBackend], fault: Any = "ok", delay: float = 0.2
) -> FaultyBackend:
    """A FaultyBackend (native async for ``async-native``), released at teardown."""
    cls = AsyncFaultyBackend if mode == "async-native" else FaultyBackend
    backend = cls(fault, delay=delay)
    backends.append(backend)
    return backend


def call(mode: str, target: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """``target.<method>(...)``, or ``await target.a<method>(...)`` in a fresh loop."""
    if mode == "sync":
        return getattr(target, method)(*args, **kwargs)
    coro: Coroutine[Any, Any, Any] = getattr(target, "a" + method)(*args, **kwargs)
    return asyncio.run(coro)


def settle(check: Callable[[], bool], what: str) -> None:
    assert wait_until(check, timeout=SETTLE), f"timed out waiting for {what}"


async def asettle(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SETTLE
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def returned(coro: Coroutine[Any, Any, Any], what: str, unblock: Callable[[], None]) -> Any:
    """``await coro``, failing with ``what`` when it has not returned within SETTLE (after
    ``unblock()`` has let it end). Unlike ``asyncio.wait_for`` this bound holds even when
    the awaited code waits for something that refuses to be cancelled."""
    task = asyncio.ensure_future(coro)
    await asyncio.wait({task}, timeout=SETTLE)
    if not task.done():
        unblock()
        await asyncio.wait({task}, timeout=SETTLE)
        raise AssertionError(what)
    return task.result()


def window(guard: GuardedClient) -> Tuple[int, int, int]:
    """(calls, failures, slow calls) in the breaker's window."""
    b = guard.stats()["breaker"]
    return b["window_calls"], b["window_failures"], b["window_slow_calls"]


def vector(entity_id: str, entity_type: str, names: List[str]) -> FeatureVector:
    return FeatureVector.from_ages(
        entity_id,
        entity_type,
        "stub",
        {n: f"{n}-{entity_id}" for n in names},
        dict.fromkeys(names, 1.0),
        retrieved_at=utc_now(),
    )


class SyncStub:
    """Answers every sync read at once (the protocol's three methods)."""

    source = "stub"

    def get_features(self, entity_id: str, entity_type: str, names: List[str]) -> FeatureVector:
        return vector(entity_id, entity_type, names)

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, names: List[str]
    ) -> List[FeatureVector]:
        return [vector(eid, entity_type, names) for eid in entity_ids]

    def health_check(self) -> bool:
        return True


def user_and_org_enricher(guard: GuardedClient, **config: Any) -> FeatureEnricher:
    return FeatureEnricher(
        guard,
        EnricherConfig(
            task_features={"t": {"user": ["tier"], "organization": ["tier"]}},
            enabled_task_types=["t"],
            **config,
        ),
    )


# -- rule 3: one deadline per request ---------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_enricher_reads_user_and_org_under_one_deadline(
    mode: str, backends: List[FaultyBackend]
) -> None:
    """The user and organisation reads of one prompt run together under ONE deadline.
    The store hangs until one and a half deadlines have passed, then answers: a guard that
    gave each part a deadline of its own (one read after the other, or the deadlines
    added up) would still be waiting then and would enrich at least one part; one shared
    deadline leaves the prompt un-enriched. Outcomes only, no elapsed-time bound."""
    timeout_ms = 400
    backend = make_backend(mode, backends, "hang")
    guard = GuardedClient(backend, timeout_ms=timeout_ms)
    enricher = user_and_org_enricher(guard)
    with answers_at(backend, 1.5 * timeout_ms / 1000):
        result = call(
            mode, enricher, "enrich", "p", user_id="u1", organization_id="o1", task_type="t"
        )
    assert result.reason is EnrichmentReason.STORE_UNAVAILABLE, "the parts had own deadlines"
    assert result.entity_status == {"user": UNAVAILABLE, "organization": UNAVAILABLE}
    assert result.enriched_prompt == "p"
    assert backend.calls == 2
    assert guard.stats()["requests"] == 1, "the user and org reads were not one request"
    assert guard.stats()["timeouts"] == 2


@pytest.mark.parametrize("mode", MODES)
def test_enrich_batch_of_four_task_types_takes_one_deadline(
    mode: str, backends: List[FaultyBackend]
) -> None:
    """Four task types of one ``enrich_batch`` make 8 groups (two entity types, four
    feature lists) read under ONE deadline. The store hangs until two deadlines have
    passed, then answers: a guard that gave the groups deadlines of their own, one after
    another or added up, would still be waiting and would enrich; the batch falls back."""
    timeout_ms = 300
    backend = make_backend(mode, backends, "hang")
    guard = GuardedClient(backend, timeout_ms=timeout_ms)
    lists = [["tier"], ["preferences"], ["tier", "preferences"], ["preferences", "tier"]]
    enricher = FeatureEnricher(
        guard,
        EnricherConfig(
            task_features={f"t{k}": {"user": n, "organization": n} for k, n in enumerate(lists)},
            enabled_task_types=[f"t{k}" for k in range(4)],
        ),
    )
    requests = [
        {"prompt": f"p{k}", "user_id": f"u{k}", "organization_id": f"o{k}", "task_type": f"t{k}"}
        for k in range(4)
    ]
    with answers_at(backend, 2 * timeout_ms / 1000):
        results = call(mode, enricher, "enrich_batch", requests)
    assert [r.reason for r in results] == [EnrichmentReason.STORE_UNAVAILABLE] * 4
    assert [r.enriched_prompt for r in results] == [f"p{k}" for k in range(4)]
    assert backend.calls == 8
    assert guard.stats()["requests"] == 1, "the batch's 8 groups were not one request"


@pytest.mark.parametrize("mode", MODES)
def test_batch_of_two_on_hung_store_returns_well_under_a_second(
    mode: str, backends: List[FaultyBackend]
) -> None:
    """A batch of two ids gets about one ``timeout_ms`` (200 ms + 1 ms), not seconds: the
    store hangs until 400 ms have passed, then answers, and the batch has fallen back by
    then (a guard that waited twice its deadline or more would have found both)."""
    backend = make_backend(mode, backends, "hang")
    guard = GuardedClient(backend, timeout_ms=200)
    with answers_at(backend, 0.4):
        vectors = call(mode, guard, "get_batch_features", ["u1", "u2"], "user", NAMES)
    assert [(v.entity_id, v.status) for v in vectors] == [("u1", UNAVAILABLE), ("u2", UNAVAILABLE)]
    assert [v.error for v in vectors] == ["no answer within 201 ms"] * 2


def test_deadline_seconds_scales_with_ids_and_batch_timeout_overrides() -> None:
    scaled = GuardedClient(SyncStub(), timeout_ms=200, batch_entity_timeout_ms=1.5)
    assert scaled.deadline_seconds(1) == pytest.approx(0.2)
    assert scaled.deadline_seconds(2) == pytest.approx(0.2015)
    assert scaled.deadline_seconds(1000) == pytest.approx(0.2 + 999 * 0.0015)
    fixed = GuardedClient(SyncStub(), timeout_ms=200, batch_timeout_ms=700)
    assert fixed.deadline_seconds(1) == pytest.approx(0.2)
    assert fixed.deadline_seconds(2) == pytest.approx(0.7)
    assert fixed.deadline_seconds(1000) == pytest.approx(0.7)
    short = GuardedClient(SyncStub(), timeout_ms=2000, batch_timeout_ms=100)
    assert short.deadline_seconds(1) == pytest.approx(2.0)
    assert short.deadline_seconds(3) == pytest.approx(0.1)


@pytest.mark.parametrize("mode", MODES)
def test_batch_timeout_ms_is_the_deadline_of_requests_of_several_ids(
    mode: str, backends: List[FaultyBackend]
) -> None:
    backend = make_backend(mode, backends, "slow", delay=0.3)
    long_batches = GuardedClient(backend, timeout_ms=150, batch_timeout_ms=3000)
    found = call(mode, long_batches, "get_batch_features", ["u1", "u2"], "user", NAMES)
    assert [v.status for v in found] == [FOUND, FOUND]
    single = call(mode, long_batches, "get_features", "u3", "user", NAMES)
    assert single.status is UNAVAILABLE
    short_batches = GuardedClient(backend, timeout_ms=3000, batch_timeout_ms=150)
    cut = call(mode, short_batches, "get_batch_features", ["u1", "u2"], "user", NAMES)
    assert [v.status for v in cut] == [UNAVAILABLE, UNAVAILABLE]  # the 0.3 s answer was cut
    assert call(mode, short_batches, "get_features", "u3", "user", NAMES).status is FOUND


@pytest.mark.parametrize("mode", MODES)
def test_healthy_batch_of_1000_slower_than_timeout_ms_succeeds(
    mode: str, backends: List[FaultyBackend]
) -> None:
    backend = make_backend(mode, backends, "slow", delay=0.4)
    # 1,000 ids get 200 ms + 999 x 2 ms: roomy for the 0.4 s answer, unlike timeout_ms
    guard = GuardedClient(backend, timeout_ms=200, batch_entity_timeout_ms=2)
    assert guard.deadline_seconds(1000) > 2.0 > 0.4 > guard.timeout_ms / 1000
    ids = [f"u{i}" for i in range(1000)]
    vectors = call(mode, guard, "get_batch_features", ids, "user", NAMES)
    assert [v.entity_id for v in vectors] == ids
    assert all(v.status is FOUND for v in vectors)
    assert backend.batch_sizes == [1000]
    assert window(guard) == (1, 0, 0)


JUST_OVER = 2.0
"""A backend "just over" the deadline answers at this multiple of ``timeout_ms``: after
the deadline, and well before a guard that waited three times too long would give up
(each side has a margin of a whole deadline, so a loaded machine cannot flip it)."""


@pytest.mark.parametrize("batch", [False, True], ids=["enrich", "enrich_batch"])
@pytest.mark.parametrize("mode", MODES)
def test_backend_just_over_the_deadline_falls_back_without_waiting_for_it(
    mode: str, batch: bool, backends: List[FaultyBackend]
) -> None:
    """The guard stops waiting at ``timeout_ms``, not at a multiple of it: a backend that
    answers at twice the deadline leaves the prompt un-enriched (store unavailable), its
    late answer is abandoned, and the same backend under a roomy deadline does enrich
    (so the fallback is the deadline's doing). Outcomes only, no elapsed-time bound."""
    timeout_ms = 200
    backend = make_backend(mode, backends, "slow", delay=JUST_OVER * timeout_ms / 1000)
    config = EnricherConfig(task_features={"t": {"user": ["tier"]}}, enabled_task_types=["t"])

    def enrich(guard: GuardedClient) -> Any:
        enricher = FeatureEnricher(guard, config)
        if batch:
            requests = [{"prompt": "p", "user_id": "u1", "task_type": "t"}]
            (result,) = call(mode, enricher, "enrich_batch", requests)
            return result
        return call(mode, enricher, "enrich", "p", user_id="u1", task_type="t")

    guard = GuardedClient(backend, timeout_ms=timeout_ms)
    result = enrich(guard)
    assert result.reason is EnrichmentReason.STORE_UNAVAILABLE, "waited past the deadline"
    assert result.enriched_prompt == "p" and not result.features_used
    assert result.entity_status == {"user": UNAVAILABLE}
    assert result.store_failed
    assert guard.stats()["timeouts"] == 1
    assert guard.stats()["fallbacks"] == 1
    # the backend's call was abandoned, not awaited: it ends (or is cancelled) later
    settle(lambda: backend.completed + backend.cancelled == backend.calls == 1, "the late call")
    assert guard.stats()["timeouts"] == 1  # its late answer changed nothing

    roomy = GuardedClient(backend, timeout_ms=timeout_ms * 15)
    assert enrich(roomy).reason is EnrichmentReason.ENRICHED


# -- rule 4: overload is not an outage --------------------------------------------------


def hold_the_only_worker(
    guard: GuardedClient, backend: FaultyBackend
) -> Tuple[threading.Thread, List[Any]]:
    """A healthy-but-slow read of another key holds the guard's only worker, well within
    its own (batch) deadline, until ``backend.release()``."""
    backend.set_mode("hang")
    calls = backend.calls
    out: List[Any] = []
    holder = threading.Thread(
        target=lambda: out.append(guard.get_batch_features(["h1", "h2"], "user", NAMES))
    )
    holder.start()
    settle(lambda: backend.calls > calls, "the holder's read in the backend")
    return holder, out


def overload_guard(backend: FaultyBackend, **kwargs: Any) -> GuardedClient:
    return GuardedClient(backend, timeout_ms=150, batch_timeout_ms=10_000, max_workers=1, **kwargs)


@pytest.mark.parametrize("mode", THREAD_MODES)
def test_overloaded_read_is_not_a_store_failure(mode: str, backends: List[FaultyBackend]) -> None:
    backend = make_backend(mode, backends)
    guard = overload_guard(backend)
    holder, held = hold_the_only_worker(guard, backend)
    for i in range(5):
        # left at its own deadline without the worker (held until the release below)
        result = call(mode, guard, "get_features", f"o{i}", "organization", NAMES)
        assert result.status is OVERLOADED, result.error
        assert (result.entity_id, result.features) == (f"o{i}", {})
    stats = guard.stats()
    assert stats["overloaded"] == 5
    assert stats["timeouts"] == 0 and stats["unavailable"] == 0
    assert backend.calls == 1, "an overloaded read never reaches the backend"
    assert window(guard) == (0, 0, 0)
    backend.release()
    holder.join(SETTLE)
    assert [v.status for v in held[0]] == [FOUND, FOUND]
    assert window(guard) == (1, 0, 0)
    assert guard.stats()["breaker"]["state"] == "closed"


@pytest.mark.parametrize("mode", THREAD_MODES)
def test_overloaded_without_fallback_raises_guard_overloaded(
    mode: str, backends: List[FaultyBackend]
) -> None:
    backend = make_backend(mode, backends)
    guard = overload_guard(backend, fallback_on_timeout=False)
    holder, _ = hold_the_only_worker(guard, backend)
    with pytest.raises(GuardOverloadedError):
        call(mode, guard, "get_features", "o1", "organization", NAMES)
    assert guard.stats()["overloaded"] == 1
    assert window(guard) == (0, 0, 0)
    backend.release()
    holder.join(SETTLE)
    assert window(guard) == (1, 0, 0)


def in_daemon_thread(fn: Callable[[], Any]) -> Tuple[threading.Thread, List[Any]]:
    """``fn()`` on a daemon thread; its result, or the exception it raised, lands in the
    list (a call that never returns cannot hold up the interpreter's exit)."""
    out: List[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as exc:  # the test inspects it
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


STUCK = "all 2 guard workers are stuck in calls past their deadline (the store hangs)"


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "strict"])
@pytest.mark.parametrize("mode", THREAD_MODES)
def test_read_finding_every_worker_stuck_fails_at_once_not_at_its_deadline(
    mode: str, fallback: bool, backends: List[FaultyBackend]
) -> None:
    """Every worker is held by a call past its deadline (the store hangs): a new read is
    refused at once as the store's failure (``rejected_stuck``, one failure for the
    breaker), not queued for a worker until its own deadline and then reported as a
    timeout. The refused request has a deadline of two minutes, so a caller left waiting
    for it would still be waiting when the test gives up on it."""
    backend = make_backend(mode, backends, "hang")
    guard = GuardedClient(
        backend,
        timeout_ms=250,
        batch_timeout_ms=120_000,
        max_workers=2,
        fallback_on_timeout=fallback,
    )
    # two one-id reads time out; each leaves a worker stuck in the hung store
    for i in range(2):
        if fallback:
            vector = call(mode, guard, "get_features", f"u{i}", "user", NAMES)
            assert vector.error == "no answer within 250 ms"
        else:
            with pytest.raises(FeatureStoreTimeoutError):
                call(mode, guard, "get_features", f"u{i}", "user", NAMES)
    assert guard.stats()["busy_workers"] == 2 and backend.calls == 2
    before = window(guard)

    thread, out = in_daemon_thread(
        lambda: call(mode, guard, "get_batch_features", ["a", "b"], "user", NAMES)
    )
    thread.join(SETTLE)
    assert out, "the refused read waited for its own deadline instead of failing at once"
    if fallback:
        assert [(v.entity_id, v.status, v.error) for v in out[0]] == [
            ("a", UNAVAILABLE, STUCK),
            ("b", UNAVAILABLE, STUCK),
        ]
    else:
        error = out[0]
        assert type(error) is FeatureStoreUnavailableError and str(error) == STUCK
    stats = guard.stats()
    assert stats["rejected_stuck"] == 1 and stats["timeouts"] == 2
    assert stats["overloaded"] == 0 and stats["unavailable"] == 0
    assert stats["fallbacks"] == (4 if fallback else 0)
    assert stats["reads"] == 2 and backend.calls == 2, "the refused read reached the store"
    assert stats["queued_reads"] == 0 and stats["waiting"] == 0
    after = window(guard)
    assert tuple(b - a for a, b in zip(before, after, strict=True)) == (1, 1, 1)


@pytest.mark.parametrize("mode", THREAD_MODES)
def test_lookup_queued_behind_a_hung_read_fails_at_once_when_its_read_finds_workers_stuck(
    mode: str, backends: List[FaultyBackend]
) -> None:
    """B queues behind A's read of the same key while the store hangs and A's call holds
    the only worker. At A's deadline A gives up, B's lookups leave as the next read, and
    that read finds every worker stuck: B is refused then and there and told at once (by
    A's thread), not left waiting for its own deadline of two minutes."""
    backend = make_backend(mode, backends, "hang")
    guard = GuardedClient(backend, timeout_ms=500, batch_timeout_ms=120_000, max_workers=1)
    holder, held = in_daemon_thread(lambda: call(mode, guard, "get_features", "u0", "user", NAMES))
    settle(lambda: backend.calls == 1, "A's read in the store")
    thread, out = in_daemon_thread(
        lambda: call(mode, guard, "get_batch_features", ["a", "b"], "user", NAMES)
    )
    # B queues behind A's read (it has half a second to get there; were it later, its
    # read would be refused in its own thread, with the same outcome)
    wait_until(lambda: guard.stats()["waiting"] == 1 or bool(held), timeout=SETTLE)
    holder.join(SETTLE)
    assert held and held[0].error == "no answer within 500 ms"
    thread.join(SETTLE)
    assert out, "B waited for its own deadline after its read was refused"
    assert [(v.entity_id, v.status, v.error) for v in out[0]] == [
        ("a", UNAVAILABLE, STUCK.replace("all 2", "all 1")),
        ("b", UNAVAILABLE, STUCK.replace("all 2", "all 1")),
    ]
    stats = guard.stats()
    assert stats["rejected_stuck"] == 1 and stats["timeouts"] == 1
    assert stats["overloaded"] == 0 and stats["unavailable"] == 0
    assert stats["reads"] == 1 and backend.calls == 1, "B's read reached the store"
    assert stats["queued_reads"] == 0 and stats["waiting"] == 0


@pytest.mark.parametrize("mode", THREAD_MODES)
def test_read_queued_for_a_worker_within_its_deadline_is_a_plain_success(
    mode: str, backends: List[FaultyBackend]
) -> None:
    backend = make_backend(mode, backends)
    guard = GuardedClient(backend, timeout_ms=3000, batch_timeout_ms=10_000, max_workers=1)
    holder, held = hold_the_only_worker(guard, backend)
    out: List[Any] = []
    waiter = threading.Thread(
        target=lambda: out.append(call(mode, guard, "get_features", "o1", "organization", NAMES))
    )
    waiter.start()
    settle(lambda: guard.stats()["queued_reads"] == 1, "the second read queued for a worker")
    backend.release()
    holder.join(SETTLE)
    waiter.join(SETTLE)
    assert out[0].status is FOUND and [v.status for v in held[0]] == [FOUND, FOUND]
    assert window(guard) == (2, 0, 0)
    assert guard.stats()["overloaded"] == 0


@pytest.mark.parametrize("mode", THREAD_MODES)
def test_overloaded_enrichments_leave_the_monitor_untouched(
    mode: str, backends: List[FaultyBackend]
) -> None:
    backend = make_backend(mode, backends)
    guard = overload_guard(backend)
    monitor = FeatureMonitor(MonitorConfig(failure_window_min_attempts=3), breaker=guard)
    config = EnricherConfig(task_features={"t": {"user": ["tier"]}}, enabled_task_types=["t"])
    enricher = FeatureEnricher(guard, config, monitor=monitor)
    # the healthy enrichment the monitor starts from, under a roomy deadline
    roomy = FeatureEnricher(GuardedClient(backend, timeout_ms=3000), config, monitor=monitor)
    healthy = call(mode, roomy, "enrich", "p", user_id="u0", task_type="t")
    assert healthy.reason is EnrichmentReason.ENRICHED
    keys = (
        "feature_store_availability_pct",
        "feature_store_availability_pct_recent",
        "feature_store_attempts",
        "feature_store_failures",
        "feature_store_window_attempts",
        "availability_paused",
    )
    before = {k: monitor.get_stats()[k] for k in keys}
    assert before["feature_store_availability_pct"] == 100.0
    holder, _ = hold_the_only_worker(guard, backend)
    for i in range(8):
        result = call(mode, enricher, "enrich", "p", user_id=f"u{i + 1}", task_type="t")
        assert result.reason is EnrichmentReason.OVERLOADED
        assert result.store_attempted is False and result.store_failed is False
        assert result.entity_status == {"user": OVERLOADED}
        assert result.enriched_prompt == "p"
        assert monitor.should_enrich("t") is True
    after = monitor.get_stats()
    assert {k: after[k] for k in keys} == before
    assert after["overloaded_enrichments"] == 8
    assert guard.stats()["overloaded"] == 8
    backend.release()
    holder.join(SETTLE)
    assert guard.stats()["breaker"]["window_failures"] == 0


# -- rule 5: native async reads ---------------------------------------------------------


class NativeStub(SyncStub):
    """A native async backend whose reads wait for ``gate``; how they meet cancellation
    is up to the subclass."""

    def __init__(self) -> None:
        self.gate: Optional[asyncio.Event] = None
        self.calls = 0
        self.answered = 0
        self.cancelled = 0
        self.cleaned = 0

    async def read(self) -> None:
        gate = self.gate
        assert gate is not None
        await gate.wait()

    async def aget_features(
        self, entity_id: str, entity_type: str, names: List[str]
    ) -> FeatureVector:
        self.calls += 1
        await self.read()
        self.answered += 1
        return vector(entity_id, entity_type, names)

    async def aget_batch_features(
        self, entity_ids: List[str], entity_type: str, names: List[str]
    ) -> List[FeatureVector]:
        self.calls += 1
        await self.read()
        self.answered += 1
        return [vector(eid, entity_type, names) for eid in entity_ids]


class StubbornLate(NativeStub):
    """Ignores cancellation: answers once the gate opens, however late."""

    async def read(self) -> None:
        gate = self.gate
        assert gate is not None
        while True:
            try:
                await gate.wait()
                return
            except asyncio.CancelledError:
                self.cancelled += 1


class SlowCleanup(NativeStub):
    """Never answers; cancelled, it cleans up until ``gate`` is set, then re-raises."""

    async def read(self) -> None:
        gate = self.gate
        assert gate is not None
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            await gate.wait()
            self.cleaned += 1
            raise


class RaisesCancelled(NativeStub):
    """Raises CancelledError by itself (nobody cancelled it)."""

    async def read(self) -> None:
        raise asyncio.CancelledError()


async def test_native_late_answer_is_discarded() -> None:
    """A native read that ignores its cancellation answers only when the test opens its
    gate, after the caller has left (bounded by SETTLE: a guard that waited for the
    stubborn read would not return before the gate opens). The late answer fills no cache; the next
    read (a batch: roomy batch deadline) goes to the store."""
    backend = StubbornLate()
    backend.gate = asyncio.Event()
    guard = GuardedClient(backend, timeout_ms=150, batch_timeout_ms=3000, cache_ttl_seconds=60)
    result = await returned(
        guard.aget_features("u1", "user", NAMES),
        "the caller waited for the late answer",
        backend.gate.set,
    )
    assert result.status is UNAVAILABLE and result.features == {}
    assert guard.stats()["timeouts"] == 1
    backend.gate.set()  # the answer comes, after every caller has left
    await asettle(lambda: backend.answered == 1, "the late answer")
    assert guard.stats()["cache_entries"] == 0, "a late answer filled the cache"
    fresh = await guard.aget_batch_features(["u1", "u2"], "user", NAMES)
    assert [(v.status, v.features) for v in fresh] == [
        (FOUND, {"tier": "tier-u1"}),
        (FOUND, {"tier": "tier-u2"}),
    ]
    assert backend.calls == 2
    assert guard.stats()["cache_hits"] == 0


@pytest.mark.parametrize("mode", THREAD_MODES)
def test_thread_late_answer_is_discarded(mode: str, backends: List[FaultyBackend]) -> None:
    backend = make_backend(mode, backends, "hang")
    guard = GuardedClient(backend, timeout_ms=150, batch_timeout_ms=3000, cache_ttl_seconds=600)
    result = call(mode, guard, "get_features", "u1", "user", NAMES)
    assert result.status is UNAVAILABLE
    backend.release()  # the blocked call answers, after its caller has left
    settle(lambda: guard.stats()["busy_workers"] == 0, "the late call to return")
    assert backend.completed == 1
    assert guard.stats()["cache_entries"] == 0, "a late answer filled the cache"
    backend.set_mode("ok")
    # a batch (roomy batch deadline): u1 is read from the store again, not from the cache
    fresh = call(mode, guard, "get_batch_features", ["u1", "u2"], "user", NAMES)
    assert [v.status for v in fresh] == [FOUND, FOUND]
    assert backend.calls == 2 and guard.stats()["cache_hits"] == 0


async def test_native_slow_cancellation_cleanup_cannot_stretch_the_deadline() -> None:
    """A native read cancelled at its deadline cleans up until the test lets it finish:
    the caller is answered while that cleanup is still going on (bounded by SETTLE: a
    guard that waited for the cleanup would not return before the test ends it)."""
    backend = SlowCleanup()
    backend.gate = asyncio.Event()  # the cleanup ends when the test sets it
    guard = GuardedClient(backend, timeout_ms=150)
    held = "the backend's cleanup held the caller"
    result = await returned(guard.aget_features("u1", "user", NAMES), held, backend.gate.set)
    assert result.status is UNAVAILABLE
    batch = await returned(
        guard.aget_batch_features(["u2", "u3"], "user", NAMES), held, backend.gate.set
    )
    assert [v.status for v in batch] == [UNAVAILABLE, UNAVAILABLE]
    await asettle(lambda: backend.cancelled == 2, "both reads cancelled")
    assert backend.cleaned == 0, held
    backend.gate.set()
    await asettle(lambda: backend.cleaned == 2, "the backend's cleanups")


@pytest.mark.parametrize("batch", [False, True])
async def test_native_backend_raising_cancelled_error_is_a_failure(batch: bool) -> None:
    backend = RaisesCancelled()
    guard = GuardedClient(backend, timeout_ms=2000)

    async def caller() -> List[FeatureVector]:
        if batch:
            return await guard.aget_batch_features(["u1", "u2"], "user", NAMES)
        return [await guard.aget_features("u1", "user", NAMES)]

    task = asyncio.ensure_future(caller())
    vectors = await asyncio.wait_for(task, 5.0)
    assert not task.cancelled()
    assert [v.status for v in vectors] == [UNAVAILABLE] * len(vectors)
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    await asyncio.sleep(0)  # this caller goes on
    stats = guard.stats()
    assert stats["unavailable"] == 1
    assert window(guard) == (1, 1, 0)


class TaskRecording(AsyncFaultyBackend):
    """Remembers the task each native read runs in, as an application that cancels the
    loop's tasks (on shutdown, say) sees them."""

    def __init__(self, mode: Any) -> None:
        super().__init__(mode)
        self.tasks: List[Tuple[str, asyncio.Task[Any]]] = []
        """(entity id, task) of each read, in call order."""

    async def aget_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append((entity_id, task))
        return await super().aget_features(entity_id, entity_type, feature_names)


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Task.cancelling() tells who cancelled from 3.11 on"
)
@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "strict"])
async def test_native_read_cancelled_from_outside_ends_its_callers_at_once(
    fallback: bool, backends: List[FaultyBackend]
) -> None:
    """Something outside the guard cancels a native read's task while its caller still
    waits: that is nobody's timeout and not the store's failure. The caller is told at once
    that the read was cancelled (not at its deadline of 30 s), nothing is held against
    the store (the half-open probe slot comes back), and the key is free for the next
    read, which goes to the store."""
    clock = ManualClock()
    backend = TaskRecording("raise")
    backends.append(backend)
    guard = GuardedClient(
        backend,
        timeout_ms=30_000,
        fallback_on_timeout=fallback,
        breaker_minimum_calls=1,
        breaker_window=1,
        breaker_reset_seconds=30,
        breaker_half_open_calls=1,
        clock=clock,
    )

    async def read(entity_id: str) -> Any:
        """The vector, or the error the guard raised (within SETTLE, or TimeoutError)."""
        try:
            return await asyncio.wait_for(guard.aget_features(entity_id, "user", NAMES), SETTLE)
        except FeatureStoreUnavailableError as exc:
            return exc

    await read("u0")  # the store fails: the breaker opens
    clock.advance(31)
    assert guard.stats()["breaker"]["state"] == "half_open"
    backend.set_mode("hang")
    caller = asyncio.ensure_future(read("u1"))
    await asettle(lambda: len(backend.tasks) == 2, "the probe's read in the store")
    assert guard.stats()["breaker"]["probes_in_flight"] == 1
    backend.tasks[1][1].cancel()  # from outside the guard

    got = await caller
    assert not caller.cancelled()
    if fallback:
        assert (got.entity_id, got.status, got.error, got.features) == (
            "u1",
            UNAVAILABLE,
            "read cancelled",
            {},
        )
    else:
        assert type(got) is FeatureStoreUnavailableError and str(got) == "read cancelled"
    await asettle(lambda: backend.cancelled == 1, "the store's call to end")
    stats = guard.stats()
    assert stats["timeouts"] == 0 and stats["overloaded"] == 0
    assert stats["unavailable"] == 1  # the first read's failure, only
    assert stats["fallbacks"] == (2 if fallback else 0)
    assert stats["breaker"]["probes_in_flight"] == 0
    assert stats["breaker"]["state"] == "half_open"
    assert stats["waiting"] == 0

    backend.set_mode("ok")
    fresh = await read("u1")
    assert fresh.status is FOUND and fresh.features == {"tier": "gold"}
    assert len(backend.tasks) == 3 and guard.stats()["breaker"]["state"] == "closed"


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Task.cancelling() tells who cancelled from 3.11 on"
)
async def test_native_read_cancelled_from_outside_leaves_the_other_parts_of_its_request(
    backends: List[FaultyBackend],
) -> None:
    """One request reads a user and an organisation; something outside the guard cancels
    the user's read. The user part is over ("read cancelled") and stays so; the
    organisation's read, still hanging, times out at the request's deadline: one timeout,
    no overload, and the cancelled part is not judged again at the deadline."""
    backend = TaskRecording("hang")
    backends.append(backend)
    guard = GuardedClient(backend, timeout_ms=2000, batch_entity_timeout_ms=0)
    request = asyncio.ensure_future(
        guard.aget_groups([("user", NAMES, ["u1"]), ("organization", NAMES, ["o1"])])
    )
    await asettle(lambda: len(backend.tasks) == 2, "both reads in the store")
    dict(backend.tasks)["u1"].cancel()  # from outside the guard
    (user,), (org,) = await asyncio.wait_for(request, SETTLE)
    assert (user.entity_id, user.status, user.error) == ("u1", UNAVAILABLE, "read cancelled")
    assert (org.entity_id, org.status, org.error) == ("o1", UNAVAILABLE, "no answer within 2000 ms")
    stats = guard.stats()
    assert stats["timeouts"] == 1 and stats["overloaded"] == 0 and stats["unavailable"] == 0
    assert stats["fallbacks"] == 2 and stats["requests"] == 1 and stats["reads"] == 2


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Task.cancelling() tells who cancelled from 3.11 on"
)
async def test_lookups_queued_behind_a_read_cancelled_from_outside_get_their_own_read(
    backends: List[FaultyBackend],
) -> None:
    """A caller queued behind a native read that something outside the guard cancels is
    not left waiting for its deadline (and then called overloaded): the key's next read
    starts at once, reaches the store and answers it."""
    backend = TaskRecording("hang")
    backends.append(backend)
    guard = GuardedClient(backend, timeout_ms=30_000)
    first = asyncio.ensure_future(guard.aget_features("u1", "user", NAMES))
    await asettle(lambda: len(backend.tasks) == 1, "the first read in the store")
    queued = asyncio.ensure_future(guard.aget_features("u2", "user", NAMES))
    await asettle(lambda: guard.stats()["waiting"] == 1, "the second lookup queued")
    backend.set_mode("ok")
    backend.tasks[0][1].cancel()  # from outside the guard
    cancelled, answered = await asyncio.wait_for(asyncio.gather(first, queued), SETTLE)
    assert (cancelled.status, cancelled.error) == (UNAVAILABLE, "read cancelled")
    assert (answered.entity_id, answered.status) == ("u2", FOUND)
    assert [eid for eid, _ in backend.tasks] == ["u1", "u2"]
    stats = guard.stats()
    assert stats["overloaded"] == 0 and stats["timeouts"] == 0 and stats["waiting"] == 0


# -- rule 6: the breaker judges the backend only ----------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_hung_backend_opens_the_breaker_after_minimum_calls(
    mode: str, backends: List[FaultyBackend]
) -> None:
    backend = make_backend(mode, backends, "hang")
    guard = GuardedClient(backend, timeout_ms=100, breaker_minimum_calls=3, breaker_window=3)
    for i in range(3):
        assert guard.stats()["breaker"]["state"] == "closed"
        vector = call(mode, guard, "get_features", f"u{i}", "user", NAMES)
        assert vector.status is UNAVAILABLE
    assert guard.stats()["breaker"]["state"] == "open"
    refused = call(mode, guard, "get_features", "u9", "user", NAMES)
    assert refused.status is UNAVAILABLE
    assert backend.calls == 3
    assert guard.stats()["rejected_open"] == 1


class Gates(SyncStub):
    """Reads of an id that has a gate wait for it (bounded); ``entered`` lists the ids
    that reached the backend."""

    def __init__(self, *held: str) -> None:
        self.gates = {eid: threading.Event() for eid in held}
        self.entered: List[str] = []

    def open_all(self) -> None:
        for gate in self.gates.values():
            gate.set()

    def _pass(self, ids: List[str]) -> None:
        self.entered.extend(ids)
        for eid in ids:
            gate = self.gates.get(eid)
            if gate is not None:
                gate.wait(SETTLE)

    def get_features(self, entity_id: str, entity_type: str, names: List[str]) -> FeatureVector:
        self._pass([entity_id])
        return super().get_features(entity_id, entity_type, names)

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, names: List[str]
    ) -> List[FeatureVector]:
        self._pass(entity_ids)
        return super().get_batch_features(entity_ids, entity_type, names)


class AsyncGates(Gates):
    async def _apass(self, ids: List[str]) -> None:
        self.entered.extend(ids)
        for eid in ids:
            gate = self.gates.get(eid)
            if gate is not None:
                await asettle(gate.is_set, f"the gate of {eid}")

    async def aget_features(
        self, entity_id: str, entity_type: str, names: List[str]
    ) -> FeatureVector:
        await self._apass([entity_id])
        return vector(entity_id, entity_type, names)

    async def aget_batch_features(
        self, entity_ids: List[str], entity_type: str, names: List[str]
    ) -> List[FeatureVector]:
        await self._apass(entity_ids)
        return [vector(eid, entity_type, names) for eid in entity_ids]


def in_thread(fn: Callable[[], Any]) -> Tuple[threading.Thread, List[Any]]:
    out: List[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    return thread, out


@pytest.mark.parametrize(
    "queue,mode",
    [
        ("pool", "sync"),
        ("pool", "async-threads"),
        ("coalescer", "sync"),
        ("coalescer", "async-threads"),
    ],
)
def test_deadline_eaten_by_local_queueing_is_not_a_backend_failure(queue: str, mode: str) -> None:
    """B waits locally (for the only worker, or behind a read of its key) while a healthy
    read within its own 10 s budget runs; B's read then reaches the backend with less
    time left than its 400 ms budget, and its caller leaves at its deadline. The backend
    ran B's read for less than the read's budget: the breaker must not charge it."""
    backend = Gates("h1", "b")
    pool = queue == "pool"
    guard = GuardedClient(
        backend, timeout_ms=400, batch_timeout_ms=10_000, max_workers=1 if pool else 8
    )
    try:
        holder, held = in_thread(
            lambda: call(mode, guard, "get_batch_features", ["h1", "h2"], "user", NAMES)
        )
        settle(lambda: "h1" in backend.entered, "the holder's read in the backend")
        b_type = "organization" if pool else "user"
        second, got = in_thread(lambda: call(mode, guard, "get_features", "b", b_type, NAMES))
        if pool:
            settle(lambda: guard.stats()["queued_reads"] == 1, "B's read queued for a worker")
        else:
            settle(lambda: guard.stats()["waiting"] == 1, "B's lookup queued behind the holder")
        time.sleep(0.25)  # B has queued for most of its deadline
        backend.gates["h1"].set()
        second.join(SETTLE)
        assert got[0].status in (UNAVAILABLE, OVERLOADED)
        backend.gates["b"].set()
        holder.join(SETTLE)
        assert [v.status for v in held[0]] == [FOUND, FOUND]
        _, failures, _ = window(guard)
        assert failures == 0, (
            f"{failures} failure(s) in the breaker's window for a read the backend ran for "
            f"less than its budget (entered: {backend.entered})"
        )
    finally:
        backend.open_all()


async def test_native_deadline_eaten_by_queueing_is_not_a_backend_failure() -> None:
    backend = AsyncGates("h1", "b")
    guard = GuardedClient(backend, timeout_ms=400, batch_timeout_ms=10_000)
    try:
        holder = asyncio.ensure_future(guard.aget_batch_features(["h1", "h2"], "user", NAMES))
        await asettle(lambda: "h1" in backend.entered, "the holder's read in the backend")
        second = asyncio.ensure_future(guard.aget_features("b", "user", NAMES))
        await asettle(lambda: guard.stats()["waiting"] == 1, "B's lookup queued")
        await asyncio.sleep(0.25)  # B has queued for most of its deadline
        backend.gates["h1"].set()
        assert (await second).status in (UNAVAILABLE, OVERLOADED)
        backend.gates["b"].set()
        assert [v.status for v in await holder] == [FOUND, FOUND]
        _, failures, _ = window(guard)
        assert failures == 0, f"entered: {backend.entered}"
    finally:
        backend.open_all()


def _probe_in_a_loop_torn_down(guard: GuardedClient, reached: Callable[[], bool]) -> None:
    """Start a read in a new event loop, run the loop until the read is in the backend,
    then close the loop without cancelling anything and drop it."""
    pending: List[bool] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        probe = loop.create_task(guard.aget_features("p", "user", NAMES))

        async def until() -> None:
            await asettle(reached, "the probe's read in the backend")

        loop.run_until_complete(until())
        loop.close()
        pending.append(not probe.done())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(SETTLE)
    assert pending == [True], "the probe's caller was not torn down mid-read"
    gc.collect()


@pytest.mark.parametrize("native", [True, False], ids=["native", "threads"])
def test_probe_of_a_torn_down_task_gives_its_slot_back(
    native: bool, backends: List[FaultyBackend]
) -> None:
    clock = ManualClock()
    backend = make_backend("async-native" if native else "sync", backends, "hang")
    guard = GuardedClient(
        backend,
        timeout_ms=200,
        batch_timeout_ms=3000,  # the healthy read at the end is a batch: roomy
        breaker_minimum_calls=1,
        breaker_window=1,
        breaker_reset_seconds=30,
        breaker_half_open_calls=1,
        clock=clock,
    )
    assert asyncio.run(guard.aget_features("u0", "user", NAMES)).status is UNAVAILABLE
    assert guard.stats()["breaker"]["state"] == "open"
    clock.advance(31)
    assert guard.stats()["breaker"]["state"] == "half_open"
    calls = backend.calls
    _probe_in_a_loop_torn_down(guard, lambda: backend.calls > calls)
    assert guard.stats()["breaker"]["probes_in_flight"] == 1
    # its slot is taken until its time limit (the read's budget) passes
    taken = guard.get_features("q", "user", ["preferences"])
    assert taken.status is UNAVAILABLE and backend.calls == calls + 1
    clock.advance(1.0)
    # the store is healthy again for new reads; the torn-down probe's call never returns
    backend.set_mode("ok")
    recovered = asyncio.run(guard.aget_batch_features(["r", "s"], "user", ["preferences"]))
    assert [v.status for v in recovered] == [FOUND, FOUND]
    assert guard.stats()["breaker"]["state"] == "closed"


# -- rule 7: HTTP backends follow the deadline ------------------------------------------


class DeadlineProbe(SyncStub):
    """Records ``io_timeout(99.0)`` at the start of each read (and after ``pause``)."""

    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause
        self.seen: List[Tuple[float, Optional[float]]] = []

    def _sync_seen(self) -> None:
        first = io_timeout(99.0)
        later = None
        if self.pause:
            time.sleep(self.pause)
            later = io_timeout(99.0)
        self.seen.append((first, later))

    def get_features(self, entity_id: str, entity_type: str, names: List[str]) -> FeatureVector:
        self._sync_seen()
        return super().get_features(entity_id, entity_type, names)

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, names: List[str]
    ) -> List[FeatureVector]:
        self._sync_seen()
        return super().get_batch_features(entity_ids, entity_type, names)


class AsyncDeadlineProbe(DeadlineProbe):
    async def _async_seen(self) -> None:
        first = io_timeout(99.0)
        later = None
        if self.pause:
            await asyncio.sleep(self.pause)
            later = io_timeout(99.0)
        self.seen.append((first, later))

    async def aget_features(
        self, entity_id: str, entity_type: str, names: List[str]
    ) -> FeatureVector:
        await self._async_seen()
        return vector(entity_id, entity_type, names)

    async def aget_batch_features(
        self, entity_ids: List[str], entity_type: str, names: List[str]
    ) -> List[FeatureVector]:
        await self._async_seen()
        return [vector(eid, entity_type, names) for eid in entity_ids]


@pytest.mark.parametrize("mode", MODES)
def test_io_timeout_is_the_time_left_inside_a_guarded_read(mode: str) -> None:
    backend = AsyncDeadlineProbe(pause=0.2) if mode == "async-native" else DeadlineProbe(0.2)
    guard = GuardedClient(backend, timeout_ms=2000)
    assert io_timeout(99.0) == 99.0
    assert call(mode, guard, "get_features", "u1", "user", NAMES).status is FOUND
    ids = [f"u{i}" for i in range(1000)]
    batch = call(mode, guard, "get_batch_features", ids, "user", NAMES)
    assert all(v.status is FOUND for v in batch)
    assert io_timeout(99.0) == 99.0, "the read's deadline leaked out of the read"
    (single, single_later), (big, big_later) = backend.seen
    assert 0 < single <= 2.0
    assert single_later is not None and single_later <= single - 0.2
    assert 2.0 < big <= guard.deadline_seconds(1000)
    assert big_later is not None and big_later <= big - 0.2
