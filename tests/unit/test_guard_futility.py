"""The futility rule: a waiter gives up once every call in flight has been running longer
than the time it has left (a call started then would most likely not finish in time)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import List, Tuple

import pytest

from asahi_features.errors import FeatureStoreTimeoutError
from asahi_features.models import FeatureStatus
from asahi_features.stores.guarded import GuardedClient, _Waiter, _WorkerPool
from tests.faults import FaultyBackend, hold_worker, tracked
from tests.servers import wait_until

NAMES = ["tier"]
EARLY = "gave up early"


# --------------------------------------------------------------------------- hung backend


def test_waiters_on_a_hung_backend_give_up_well_before_their_deadline(
    backends: List[FaultyBackend],
) -> None:
    backend = tracked(backends, "hang")
    workers, callers, timeout = 4, 24, 1.0
    guard = GuardedClient(
        backend, timeout_ms=timeout * 1000, max_workers=workers, breaker_failure_threshold=10**9
    )
    baseline = threading.active_count()
    results: List[Tuple[float, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(callers)

    def caller(n: int) -> None:
        start.wait()
        began = time.monotonic()
        vector = guard.get_features(f"u{n}", "user", NAMES)
        assert vector.status is FeatureStatus.UNAVAILABLE
        with lock:
            results.append((time.monotonic() - began, vector.error or ""))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == callers
    holders = [elapsed for elapsed, error in results if "no answer within" in error]
    waiters = [elapsed for elapsed, error in results if EARLY in error]
    assert len(holders) == workers and len(waiters) == callers - workers
    # the waiters gave up around half the deadline (generous bound: 0.85 x), the calls
    # that reached the backend at the deadline
    assert max(waiters) < 0.85 * timeout <= min(holders)
    stats = guard.stats()
    assert stats["queue_timeouts"] == callers - workers and stats["queue_waits"] == len(waiters)
    assert stats["timeouts"] == callers and stats["fallbacks"] == callers
    assert stats["rejected_saturated"] == 0 and stats["waiting"] == 0
    assert guard.breaker.consecutive_failures == workers  # queue timeouts are not blamed
    assert backend.calls == workers and stats["workers"] == workers
    assert threading.active_count() <= baseline + callers + workers
    backend.release()
    assert wait_until(lambda: guard.stats()["busy_workers"] == 0)
    guard.close()


async def test_async_waiters_on_a_hung_backend_give_up_early_without_blocking_the_loop(
    backends: List[FaultyBackend],
) -> None:
    backend = tracked(backends, "hang")
    guard = GuardedClient(backend, timeout_ms=1000, max_workers=2, breaker_failure_threshold=10**9)
    baseline = threading.active_count()
    ticks = 0
    running = True

    async def ticker() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0.01)

    async def timed(n: int) -> Tuple[float, str]:
        began = time.monotonic()
        vector = await guard.aget_features(f"u{n}", "user", NAMES)
        return time.monotonic() - began, vector.error or ""

    tick = asyncio.ensure_future(ticker())
    results = await asyncio.gather(*(timed(n) for n in range(30)))
    running = False
    await tick
    waiters = [elapsed for elapsed, error in results if EARLY in error]
    holders = [elapsed for elapsed, error in results if "no answer within" in error]
    assert len(waiters) == 28 and len(holders) == 2
    assert max(waiters) < 0.85 <= min(holders)
    assert ticks >= 20  # the loop kept running while the waiters waited
    assert guard.stats()["queue_timeouts"] == 28 and guard.stats()["waiting"] == 0
    assert threading.active_count() <= baseline + 2
    guard.close()


def test_an_early_give_up_raises_a_timeout_without_fallback(
    backends: List[FaultyBackend],
) -> None:
    backend = tracked(backends, "hang")
    guard = GuardedClient(backend, timeout_ms=400, max_workers=1, fallback_on_timeout=False)
    holder, holder_errors = hold_worker(guard, backend)
    with pytest.raises(
        FeatureStoreTimeoutError, match=r"no guard worker free within 400 ms \(all 1 busy; gave up"
    ):
        guard.get_features("u", "user", NAMES)
    holder.join(timeout=5)
    assert len(holder_errors) == 1
    stats = guard.stats()
    assert stats["queue_timeouts"] == 1 and stats["rejected_saturated"] == 0
    assert guard.breaker.consecutive_failures == 1  # the holder's timeout only
    guard.close()


# --------------------------------------------------------------------------- healthy but slow


def test_a_burst_on_a_slow_but_healthy_backend_still_succeeds(
    backends: List[FaultyBackend],
) -> None:
    # each call takes 30% of the deadline: the second wave gets its workers at ~0.3 s,
    # long before the rule would fire (~0.5 s), and finishes at ~0.6 s
    backend = tracked(backends, "slow", delay=0.3)
    guard = GuardedClient(backend, timeout_ms=1000, max_workers=4)
    statuses: List[FeatureStatus] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def caller(n: int) -> None:
        start.wait()
        vector = guard.get_features(f"u{n}", "user", NAMES)
        with lock:
            statuses.append(vector.status)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    stats = guard.stats()
    assert statuses == [FeatureStatus.FOUND] * 8
    assert stats["fallbacks"] == 0 and stats["queue_timeouts"] == 0
    assert stats["queue_waits"] == 4 and backend.max_in_flight <= 4
    guard.close()


async def test_an_async_burst_on_a_slow_but_healthy_backend_still_succeeds(
    backends: List[FaultyBackend],
) -> None:
    backend = tracked(backends, "slow", delay=0.3)
    guard = GuardedClient(backend, timeout_ms=1000, max_workers=3)
    vectors = await asyncio.gather(*(guard.aget_features(f"u{n}", "user", NAMES) for n in range(6)))
    assert {v.status for v in vectors} == {FeatureStatus.FOUND}
    stats = guard.stats()
    assert stats["fallbacks"] == 0 and stats["queue_waits"] == 3
    guard.close()


# --------------------------------------------------------------------------- the decision


def test_pool_decision_with_injected_times() -> None:
    pool = _WorkerPool(2, name="test-futility")
    first = pool.acquire(deadline=10.0, now=0.0)
    second = pool.acquire(deadline=12.0, now=2.0)
    assert first is not None and second is not None
    assert first.started == 0.0 and second.started == 2.0
    # deadline 8 at 3: calls have run 3 and 1 (< 5 left); the rule holds from
    # (8 + 2) / 2 = 5, before the deadline and before the workers would be stuck (12)
    waiter = _Waiter(8.0, None)
    assert pool.enqueue(waiter, now=3.0) == (None, None, 5.0)
    assert pool.settle(waiter, now=4.9) == (None, None, 5.0)
    assert pool.waiting == 1
    assert pool.settle(waiter, now=5.0) == (None, "futile", 5.0)
    assert pool.waiting == 0
    # too little time left already at arrival: not even queued
    assert pool.enqueue(_Waiter(3.5, None), now=3.0) == (None, "futile", 3.0)
    assert pool.waiting == 0
    # a newly started call moves the moment: second's call returns at 4 and is handed
    # to a waiter, so the latest call in flight started at 4
    late, later = _Waiter(20.0, None), _Waiter(30.0, None)
    assert pool.enqueue(late, now=3.0)[:2] == (None, None)
    assert pool.enqueue(later, now=3.0) == (None, None, 12.0)  # stuck at 12 first
    pool._hand_over(second, now=4.0)
    assert late.worker is second and second.started == 4.0 and second.deadline == 20.0
    assert pool.settle(late, now=4.0) == (second, None, 4.0)
    assert pool.settle(later, now=4.0) == (None, None, 17.0)  # (30 + 4) / 2
    # a worker just taken, not yet stamped, counts as started now: no give-up
    second.started = None
    assert pool.settle(later, now=16.0) == (None, None, 20.0)  # rule: 23, not 17
    second.started = 4.0
    assert pool.settle(later, now=17.0) == (None, "futile", 17.0)
    # when every worker is stuck, that reason wins (fail fast, rejected_saturated)
    stuck = _Waiter(100.0, None)
    assert pool.enqueue(stuck, now=25.0) == (None, "stuck", 25.0)
    # a worker handed to a waiter is used, even past the moment the rule would hold
    patient = _Waiter(40.0, None)
    assert pool.enqueue(patient, now=10.0) == (None, None, 20.0)  # all stuck at 20
    pool._hand_over(first, now=11.0)
    assert pool.settle(patient, now=30.0) == (first, None, 30.0)
    pool.close()
    first.submit(None)
    second.submit(None)
