"""Busy is not stuck: callers wait for a free worker within their deadline; fail fast
only when every worker is stuck past its caller's deadline. And the batch deadline."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, List, Optional

import pytest

from asahi_features.errors import FeatureStoreTimeoutError, FeatureStoreUnavailableError
from asahi_features.models import FeatureStatus
from asahi_features.settings import FeatureStoreSettings
from asahi_features.stores.guarded import (
    DEFAULT_MIN_BATCH_TIMEOUT_MS,
    GuardedClient,
    _Waiter,
    _WorkerPool,
)
from tests.faults import FaultyBackend, hold_worker, tracked
from tests.servers import wait_until

NAMES = ["tier"]


# --------------------------------------------------------------------------- bursts


def test_thread_burst_on_a_healthy_slow_backend_never_falls_back(
    backends: List[FaultyBackend],
) -> None:
    backend = tracked(backends, "slow", delay=0.002)
    guard = GuardedClient(backend, timeout_ms=1000, max_workers=4)
    callers, per_caller = 100, 3
    baseline = threading.active_count()
    start = threading.Barrier(callers)
    statuses: List[FeatureStatus] = []
    lock = threading.Lock()

    def caller(n: int) -> None:
        start.wait()
        for i in range(per_caller):
            if i == 1:
                got = guard.get_batch_features([f"u{n}", f"v{n}"], "user", NAMES)
            else:
                got = [guard.get_features(f"u{n}", "user", NAMES)]
            with lock:
                statuses.extend(v.status for v in got)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    stats = guard.stats()
    assert statuses == [FeatureStatus.FOUND] * (callers * (per_caller + 1))
    assert stats["fallbacks"] == 0 and stats["unavailable"] == 0
    assert stats["successes"] == callers * per_caller
    assert stats["queue_waits"] > 0 and stats["waiting"] == 0
    assert backend.max_in_flight <= 4 and stats["workers"] <= 4
    guard.close()
    assert wait_until(lambda: threading.active_count() <= baseline)


async def test_async_burst_on_a_healthy_slow_backend_never_falls_back(
    backends: List[FaultyBackend],
) -> None:
    backend = tracked(backends, "slow", delay=0.002)
    guard = GuardedClient(backend, timeout_ms=1000, max_workers=4)
    baseline = threading.active_count()
    singles, batches = await asyncio.gather(
        asyncio.gather(*(guard.aget_features(f"u{i}", "user", NAMES) for i in range(200))),
        asyncio.gather(
            *(guard.aget_batch_features([f"b{i}", "x"], "user", NAMES) for i in range(20))
        ),
    )
    flat = list(singles) + [v for batch in batches for v in batch]
    assert len(flat) == 240 and {v.status for v in flat} == {FeatureStatus.FOUND}
    stats = guard.stats()
    assert stats["fallbacks"] == 0 and stats["successes"] == 220
    assert stats["queue_waits"] > 0 and stats["waiting"] == 0
    assert backend.max_in_flight <= 4
    assert threading.active_count() <= baseline + 4
    guard.close()


# --------------------------------------------------------------------------- stuck


def hang_all_workers(guard: GuardedClient, workers: int) -> None:
    """Occupy every worker with a hung call and let those calls time out."""
    threads = [
        threading.Thread(target=guard.get_features, args=(f"h{i}", "user", NAMES))
        for i in range(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert guard.stats()["busy_workers"] == workers


def test_stuck_workers_make_new_sync_callers_fail_fast(backends: List[FaultyBackend]) -> None:
    backend = tracked(backends, "hang")
    guard = GuardedClient(backend, timeout_ms=1000, max_workers=4, breaker_failure_threshold=10**9)
    baseline = threading.active_count()
    hang_all_workers(guard, 4)
    elapsed: List[float] = []
    lock = threading.Lock()

    def caller(n: int) -> None:
        began = time.monotonic()
        vector = guard.get_features(f"u{n}", "user", NAMES)
        assert vector.status is FeatureStatus.UNAVAILABLE
        assert "stuck past their deadline" in (vector.error or "")
        with lock:
            elapsed.append(time.monotonic() - began)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(elapsed) == 50
    assert max(elapsed) < 0.5  # well before the 1 s deadline: nobody waited for it
    assert backend.calls == 4
    stats = guard.stats()
    assert stats["rejected_saturated"] == 50 and stats["queue_waits"] == 0
    assert stats["workers"] == 4 and threading.active_count() <= baseline + 4
    backend.release()
    assert wait_until(lambda: guard.stats()["busy_workers"] == 0)
    backend.set_mode("ok")
    assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.FOUND
    guard.close()


async def test_stuck_workers_make_new_async_callers_fail_fast(
    backends: List[FaultyBackend],
) -> None:
    backend = tracked(backends, "hang")
    guard = GuardedClient(backend, timeout_ms=1000, max_workers=3, breaker_failure_threshold=10**9)
    await asyncio.to_thread(hang_all_workers, guard, 3)
    baseline = threading.active_count()
    began = time.monotonic()
    vectors = await asyncio.gather(
        *(guard.aget_features(f"u{i}", "user", NAMES) for i in range(200))
    )
    assert time.monotonic() - began < 0.5
    assert {v.status for v in vectors} == {FeatureStatus.UNAVAILABLE}
    assert guard.stats()["rejected_saturated"] == 200 and backend.calls == 3
    assert threading.active_count() <= baseline
    guard.close()


def test_a_burst_against_a_hung_backend_ends_by_the_deadline(
    backends: List[FaultyBackend],
) -> None:
    backend = tracked(backends, "hang")
    guard = GuardedClient(backend, timeout_ms=200, max_workers=2, breaker_failure_threshold=10**9)
    baseline = threading.active_count()
    elapsed: List[float] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def caller(n: int) -> None:
        start.wait()
        began = time.monotonic()
        assert guard.get_features(f"u{n}", "user", NAMES).status is FeatureStatus.UNAVAILABLE
        with lock:
            elapsed.append(time.monotonic() - began)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(elapsed) == 20 and max(elapsed) < 0.2 + 1.0
    stats = guard.stats()
    assert backend.calls == 2 and stats["workers"] == 2
    assert stats["timeouts"] - stats["queue_timeouts"] == 2  # only those reached the backend
    assert stats["rejected_saturated"] + stats["queue_timeouts"] == 18
    assert stats["waiting"] == 0
    assert threading.active_count() <= baseline + 20 + 2
    guard.close()


def test_a_waiter_fails_fast_once_the_worker_it_waits_for_is_stuck(
    backends: List[FaultyBackend],
) -> None:
    backend = tracked(backends, "hang")
    guard = GuardedClient(
        backend, timeout_ms=200, batch_timeout_ms=5000, max_workers=1, fallback_on_timeout=False
    )
    holder, holder_errors = hold_worker(guard, backend)
    began = time.monotonic()
    with pytest.raises(FeatureStoreUnavailableError, match="stuck past their deadline") as info:
        guard.get_batch_features(["a", "b"], "user", NAMES)  # its own deadline: 5 s
    assert not isinstance(info.value, FeatureStoreTimeoutError)
    assert time.monotonic() - began < 2.0  # woke when the holder's 200 ms ran out
    holder.join(timeout=5)
    assert len(holder_errors) == 1
    stats = guard.stats()
    assert stats["queue_waits"] == 1 and stats["rejected_saturated"] == 1
    assert guard.breaker.consecutive_failures == 1  # the holder's timeout only
    guard.close()


# --------------------------------------------------------------------------- queue timeout


@pytest.mark.parametrize("fallback", [True, False])
def test_a_waiter_whose_deadline_passes_times_out_without_blaming_the_backend(
    backends: List[FaultyBackend], fallback: bool
) -> None:
    backend = tracked(backends, "slow", delay=1.0)
    guard = GuardedClient(
        backend,
        timeout_ms=200,
        batch_timeout_ms=5000,
        max_workers=1,
        breaker_failure_threshold=1,
        fallback_on_timeout=fallback,
    )
    got: List[Any] = []
    batch = threading.Thread(
        target=lambda: got.append(guard.get_batch_features(["a"], "user", NAMES))
    )
    batch.start()
    assert wait_until(lambda: backend.calls == 1)
    began = time.monotonic()
    if fallback:
        vector = guard.get_features("u1", "user", NAMES)
        assert vector.status is FeatureStatus.UNAVAILABLE
        assert "no guard worker free within 200 ms" in (vector.error or "")
    else:
        with pytest.raises(FeatureStoreTimeoutError, match="no guard worker free within 200 ms"):
            guard.get_features("u1", "user", NAMES)
    assert time.monotonic() - began < 0.2 + 1.0
    stats = guard.stats()
    assert stats["queue_timeouts"] == 1 and stats["timeouts"] == 1 and stats["queue_waits"] == 1
    assert guard.breaker.state.value == "closed"  # threshold 1, yet not opened
    batch.join(timeout=5)
    assert got and got[0][0].status is FeatureStatus.FOUND
    assert guard.stats()["waiting"] == 0 and backend.calls == 1
    guard.close()


async def test_an_async_waiter_whose_deadline_passes_falls_back(
    backends: List[FaultyBackend],
) -> None:
    backend = tracked(backends, "slow", delay=1.0)
    guard = GuardedClient(
        backend, timeout_ms=200, batch_timeout_ms=5000, max_workers=1, breaker_failure_threshold=1
    )
    batch = asyncio.ensure_future(guard.aget_batch_features(["a"], "user", NAMES))
    await asyncio.sleep(0)
    assert await asyncio.to_thread(wait_until, lambda: backend.calls == 1)
    ticks = 0

    async def ticker() -> None:  # the event loop keeps running while the caller waits
        nonlocal ticks
        while not batch.done():
            ticks += 1
            await asyncio.sleep(0.01)

    tick = asyncio.ensure_future(ticker())
    began = time.monotonic()
    vector = await guard.aget_features("u1", "user", NAMES)
    assert time.monotonic() - began < 0.2 + 1.0
    assert vector.status is FeatureStatus.UNAVAILABLE
    assert "no guard worker free" in (vector.error or "")
    assert ticks >= 3
    assert (await batch)[0].status is FeatureStatus.FOUND
    await tick
    stats = guard.stats()
    assert stats["queue_timeouts"] == 1 and guard.breaker.state.value == "closed"
    guard.close()


async def test_a_cancelled_async_waiter_leaves_the_queue(backends: List[FaultyBackend]) -> None:
    backend = tracked(backends, "slow", delay=0.5)
    guard = GuardedClient(backend, timeout_ms=5000, max_workers=1)
    first = asyncio.ensure_future(guard.aget_features("a", "user", NAMES))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(guard.aget_features("b", "user", NAMES))
    await asyncio.sleep(0.05)
    assert guard.stats()["waiting"] == 1
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert guard.stats()["waiting"] == 0
    assert (await first).status is FeatureStatus.FOUND
    # the worker went back to the idle stack, not to the departed waiter
    assert await asyncio.to_thread(wait_until, lambda: guard.stats()["busy_workers"] == 0)
    assert (await guard.aget_features("c", "user", NAMES)).status is FeatureStatus.FOUND
    guard.close()


def test_close_wakes_waiters(backends: List[FaultyBackend]) -> None:
    backend = tracked(backends, "hang")
    guard = GuardedClient(backend, timeout_ms=5000, max_workers=1)
    threading.Thread(target=guard.get_features, args=("h", "user", NAMES), daemon=True).start()
    assert wait_until(lambda: backend.calls == 1)
    got: List[Any] = []
    waiter = threading.Thread(target=lambda: got.append(guard.get_features("w", "user", NAMES)))
    waiter.start()
    assert wait_until(lambda: guard.stats()["waiting"] == 1)
    began = time.monotonic()
    guard.close()
    waiter.join(timeout=5)
    assert time.monotonic() - began < 2.0
    assert got[0].error == "the guarded client is closed"


def test_health_check_waits_for_a_worker_and_is_false_when_stuck(
    backends: List[FaultyBackend],
) -> None:
    backend = tracked(backends, "slow", delay=0.1)
    guard = GuardedClient(backend, timeout_ms=2000, max_workers=1)
    threading.Thread(target=guard.get_features, args=("h", "user", NAMES)).start()
    assert wait_until(lambda: backend.calls == 1)
    assert guard.health_check() is True  # waited for the busy (not stuck) worker
    backend.set_mode("hang")
    stuck = GuardedClient(backend, timeout_ms=50, max_workers=1)
    stuck.get_features("h", "user", NAMES)
    assert stuck.health_check() is False
    backend.release()
    guard.close()
    stuck.close()


# --------------------------------------------------------------------------- the pool itself


def test_pool_hand_off_is_fifo_and_never_past_a_deadline() -> None:
    pool = _WorkerPool(1, name="test-pool")
    worker = pool.acquire(deadline=10.0)
    assert worker is not None and pool.acquire(deadline=10.0) is None
    first, second, third = _Waiter(5.0, None), _Waiter(6.0, None), _Waiter(7.0, None)
    assert pool.enqueue(first, now=1.0) == (None, None, 5.0)  # min(own, worker's 10)
    assert pool.enqueue(second, now=1.0)[:2] == (None, None)
    assert pool.enqueue(third, now=1.0)[:2] == (None, None)
    assert pool.waiting == 3
    pool._hand_over(worker)  # the worker's call returned: first in line gets it
    assert first.worker is worker and worker.deadline == 5.0 and pool.waiting == 2
    # first noticed too late: the worker goes on to the next waiter
    assert pool.settle(first, now=5.5) == (None, "timeout", 5.5)
    assert second.worker is worker and worker.deadline == 6.0
    assert pool.settle(second, now=5.6) == (worker, None, 5.6)
    # third: still waiting; when every worker is past its deadline it is told to go
    assert pool.settle(third, now=5.7) == (None, None, 6.0)
    assert pool.settle(third, now=6.5) == (None, "stuck", 6.5)
    assert pool.waiting == 0
    late = _Waiter(3.0, None)
    assert pool.enqueue(late, now=4.0) == (None, "timeout", 4.0)
    abandoned = _Waiter(9.0, None)
    pool.enqueue(abandoned, now=6.0)
    pool._hand_over(worker)
    pool.abandon(abandoned)  # handed a worker, then left: the worker becomes idle
    assert pool.waiting == 0 and pool.busy == 0 and worker.deadline is None
    idle = _Waiter(9.0, None)
    assert pool.enqueue(idle, now=6.0) == (worker, None, 6.0)
    pool.close()
    assert pool.enqueue(_Waiter(9.0, None), now=6.0) == (None, "closed", 6.0)
    worker.submit(None)


def test_pool_skips_a_waiter_whose_event_loop_is_closed() -> None:
    pool = _WorkerPool(1, name="test-pool")
    worker = pool.acquire(deadline=10.0)
    assert worker is not None
    loop = asyncio.new_event_loop()
    gone = _Waiter(5.0, loop)
    loop.close()
    alive = _Waiter(6.0, None)
    pool.enqueue(gone, now=1.0)
    pool.enqueue(alive, now=1.0)
    pool._hand_over(worker)
    assert gone.worker is None and alive.worker is worker
    closed: Optional[_Waiter] = _Waiter(7.0, None)
    assert closed is not None
    pool.enqueue(closed, now=1.0)
    pool.close()
    assert pool.settle(closed, now=1.5) == (None, "closed", 1.5)
    worker.submit(None)


# --------------------------------------------------------------------------- batch deadline


def test_batch_timeout_defaults_and_validation() -> None:
    backend = FaultyBackend()
    assert GuardedClient(backend).batch_timeout_ms == DEFAULT_MIN_BATCH_TIMEOUT_MS == 2000
    assert GuardedClient(backend, timeout_ms=5000).batch_timeout_ms == 5000
    assert GuardedClient(backend, batch_timeout_ms=300).batch_timeout_ms == 300
    assert "batch_timeout_ms=2000" in repr(GuardedClient(backend))
    with pytest.raises(ValueError, match="batch_timeout_ms must be > 0"):
        GuardedClient(backend, batch_timeout_ms=0)
    with pytest.raises(ValueError, match="batch_timeout_ms"):
        FeatureStoreSettings.model_validate(
            {"provider": "local", "local": {"data_path": "f.json"}, "batch_timeout_ms": 0}
        )


def test_from_settings_wires_batch_timeout() -> None:
    base = {"provider": "local", "local": {"data_path": "f.json"}, "timeout_ms": 150}
    guard = GuardedClient.from_settings(FaultyBackend(), FeatureStoreSettings.model_validate(base))
    assert guard.timeout_ms == 150 and guard.batch_timeout_ms == 2000
    settings = FeatureStoreSettings.model_validate({**base, "batch_timeout_ms": 750})
    assert GuardedClient.from_settings(FaultyBackend(), settings).batch_timeout_ms == 750


def test_batches_get_the_batch_deadline_singles_keep_timeout_ms(
    backends: List[FaultyBackend],
) -> None:
    backend = tracked(backends, "slow", delay=0.4)
    guard = GuardedClient(backend, timeout_ms=100, max_workers=4)  # batch default: 2 s
    vectors = guard.get_batch_features([f"u{i}" for i in range(1000)], "user", NAMES)
    assert len(vectors) == 1000 and {v.status for v in vectors} == {FeatureStatus.FOUND}
    began = time.monotonic()
    single = guard.get_features("u1", "user", NAMES)
    assert single.status is FeatureStatus.UNAVAILABLE and single.error == "no answer within 100 ms"
    assert time.monotonic() - began < 0.1 + 1.0
    short = GuardedClient(backend, timeout_ms=100, batch_timeout_ms=100, max_workers=4)
    vectors = short.get_batch_features(["a", "b"], "user", NAMES)
    assert [v.error for v in vectors] == ["no answer within 100 ms"] * 2
    guard.close()
    short.close()


async def test_async_batches_get_the_batch_deadline(backends: List[FaultyBackend]) -> None:
    backend = tracked(backends, "slow", delay=0.4)
    guard = GuardedClient(backend, timeout_ms=100, max_workers=4)
    vectors = await guard.aget_batch_features(["a", "b"], "user", NAMES)
    assert {v.status for v in vectors} == {FeatureStatus.FOUND}
    single = await guard.aget_features("u1", "user", NAMES)
    assert single.status is FeatureStatus.UNAVAILABLE
    guard.close()
