"""The circuit breaker, alone and inside GuardedClient."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from asahi_features.errors import FeatureStoreUnavailableError
from asahi_features.guard import BreakerState, CircuitBreaker, GuardedClient
from asahi_features.models import FeatureStatus
from tests.faults import FaultyBackend, ManualClock

NAMES = ["tier"]


# -- the breaker alone ----------------------------------------------------------------


def test_opens_after_threshold_consecutive_failures() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(3, 10, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the streak
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and breaker.times_opened == 1
    assert not breaker.allow()
    assert breaker.retry_at == pytest.approx(clock.now + 10)


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(1, 10, clock=clock)
    breaker.record_failure()
    clock.advance(9.9)
    assert not breaker.allow()
    clock.advance(0.2)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # the probe is in flight
    assert breaker.snapshot()["probe_in_flight"] is True
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    assert breaker.retry_at is None


def test_failed_probe_reopens_for_a_new_cool_down() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(2, 5, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(5)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and breaker.times_opened == 2
    assert not breaker.allow()
    clock.advance(5)
    assert breaker.allow()


def test_neutral_outcome_gives_the_probe_back() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(1, 5, clock=clock)
    breaker.record_neutral()  # closed: nothing to do
    breaker.record_failure()
    clock.advance(5)
    assert breaker.allow()
    breaker.record_neutral()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the next call probes instead


def test_snapshot_is_json_and_reset_closes() -> None:
    clock = ManualClock(100.0)
    breaker = CircuitBreaker(1, 30, clock=clock)
    snap = breaker.snapshot()
    assert snap["state"] == "closed" and snap["retry_at"] is None
    breaker.record_failure()
    clock.advance(10)
    snap = json.loads(json.dumps(breaker.snapshot()))
    assert snap == {
        "state": "open",
        "consecutive_failures": 1,
        "times_opened": 1,
        "failure_threshold": 1,
        "reset_seconds": 30.0,
        "opened_at": 100.0,
        "retry_at": 130.0,
        "retry_in_seconds": 20.0,
        "probe_in_flight": False,
    }
    assert "state=open" in repr(breaker)
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED and breaker.consecutive_failures == 0
    assert breaker.times_opened == 1


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(0, 1)
    with pytest.raises(ValueError, match="reset_seconds"):
        CircuitBreaker(1, 0)


def test_concurrent_half_open_admits_one() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(1, 1, clock=clock)
    breaker.record_failure()
    clock.advance(1)
    admitted: list[bool] = []
    barrier = threading.Barrier(16)

    def attempt() -> None:
        barrier.wait()
        admitted.append(breaker.allow())

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted.count(True) == 1


# -- the breaker in the guard -------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def backend() -> Iterator[FaultyBackend]:
    made = FaultyBackend("raise")
    yield made
    made.release()


def guard_for(backend: FaultyBackend, clock: ManualClock, **kw: Any) -> GuardedClient:
    kw.setdefault("timeout_ms", 50)
    kw.setdefault("batch_timeout_ms", kw["timeout_ms"])
    kw.setdefault("breaker_failure_threshold", 3)
    kw.setdefault("breaker_reset_seconds", 10)
    return GuardedClient(backend, clock=clock, **kw)


def test_guard_opens_and_fails_fast_without_backend_or_thread(
    backend: FaultyBackend, clock: ManualClock
) -> None:
    guard = guard_for(backend, clock)
    for _ in range(3):
        assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.UNAVAILABLE
    assert guard.breaker.state is BreakerState.OPEN
    workers_before = guard.stats()["workers"]
    backend.reset_counts()
    for _ in range(20):
        vector = guard.get_features("u1", "user", NAMES)
        assert vector.status is FeatureStatus.UNAVAILABLE
        assert "circuit breaker open" in (vector.error or "")
        assert guard.get_batch_features(["a", "b"], "user", NAMES)[1].entity_id == "b"
    backend.reset_counts()
    guard.get_features("u1", "user", NAMES)
    assert backend.calls == 0
    stats = guard.stats()
    assert stats["rejected_open"] == 41 and stats["workers"] == workers_before
    assert stats["breaker"]["times_opened"] == 1


async def test_guard_open_breaker_fails_fast_on_async_paths(
    backend: FaultyBackend, clock: ManualClock
) -> None:
    guard = guard_for(backend, clock, breaker_failure_threshold=1)
    await guard.aget_features("u1", "user", NAMES)
    backend.reset_counts()
    assert (await guard.aget_features("u1", "user", NAMES)).status is FeatureStatus.UNAVAILABLE
    vectors = await guard.aget_batch_features(["a", "b"], "user", NAMES)
    assert [v.status for v in vectors] == [FeatureStatus.UNAVAILABLE] * 2
    assert backend.calls == 0


def test_open_breaker_raises_without_fallback(backend: FaultyBackend, clock: ManualClock) -> None:
    guard = guard_for(backend, clock, breaker_failure_threshold=1, fallback_on_timeout=False)
    with pytest.raises(FeatureStoreUnavailableError, match="injected failure"):
        guard.get_features("u1", "user", NAMES)
    clock.advance(4)
    with pytest.raises(FeatureStoreUnavailableError, match=r"circuit breaker open .* 6\.0 s"):
        guard.get_features("u1", "user", NAMES)


def test_half_open_probe_success_closes(backend: FaultyBackend, clock: ManualClock) -> None:
    guard = guard_for(backend, clock)
    for _ in range(3):
        guard.get_features("u1", "user", NAMES)
    backend.set_mode("ok")
    clock.advance(9)
    assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.UNAVAILABLE
    assert backend.calls == 3
    clock.advance(1)
    assert guard.breaker.state is BreakerState.HALF_OPEN
    assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.FOUND
    assert guard.breaker.state is BreakerState.CLOSED
    assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.FOUND


def test_half_open_probe_failure_reopens(backend: FaultyBackend, clock: ManualClock) -> None:
    guard = guard_for(backend, clock)
    for _ in range(3):
        guard.get_features("u1", "user", NAMES)
    clock.advance(10)
    guard.get_features("u1", "user", NAMES)  # the probe fails
    assert backend.calls == 4
    assert guard.breaker.state is BreakerState.OPEN and guard.breaker.times_opened == 2
    guard.get_features("u1", "user", NAMES)
    assert backend.calls == 4


def test_timeouts_and_recovery_drive_the_breaker(clock: ManualClock) -> None:
    backend = FaultyBackend("hang")
    try:
        guard = guard_for(backend, clock, breaker_failure_threshold=2)
        guard.get_features("u1", "user", NAMES)
        guard.get_batch_features(["a"], "user", NAMES)
        assert guard.breaker.state is BreakerState.OPEN
        assert guard.stats()["timeouts"] == 2
    finally:
        backend.release()
    backend.set_mode("recover")
    backend.fail_count = 1
    clock.advance(10)
    guard.get_features("u1", "user", NAMES)  # probe: first recover call fails
    assert guard.breaker.state is BreakerState.OPEN
    clock.advance(10)
    assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.FOUND
    assert guard.breaker.state is BreakerState.CLOSED


def test_flapping_backend_never_reaches_a_streak(clock: ManualClock) -> None:
    backend = FaultyBackend("flap", pattern=[True, False, False])
    guard = guard_for(backend, clock, breaker_failure_threshold=3)
    statuses = [guard.get_features("u1", "user", NAMES).status for _ in range(12)]
    assert statuses.count(FeatureStatus.FOUND) == 4
    assert guard.breaker.state is BreakerState.CLOSED and backend.calls == 12


def test_saturation_is_not_a_breaker_failure(clock: ManualClock) -> None:
    backend = FaultyBackend("hang")
    try:
        guard = guard_for(backend, clock, max_workers=1, breaker_failure_threshold=2)
        guard.get_features("u1", "user", NAMES)  # timeout: 1 failure, the worker is stuck
        for _ in range(5):
            vector = guard.get_features("u1", "user", NAMES)
            assert "guard workers are busy" in (vector.error or "")
        assert guard.breaker.consecutive_failures == 1
        assert guard.stats()["rejected_saturated"] == 5
    finally:
        backend.release()


@pytest.mark.parametrize("native", [False, True])
async def test_cancelled_caller_gives_the_probe_back(clock: ManualClock, native: bool) -> None:
    from tests.faults import AsyncFaultyBackend

    backend = (AsyncFaultyBackend if native else FaultyBackend)("raise")
    try:
        guard = guard_for(backend, clock, breaker_failure_threshold=1, timeout_ms=5000)
        await guard.aget_features("u1", "user", NAMES)
        assert guard.breaker.state is BreakerState.OPEN
        clock.advance(10)
        backend.set_mode("hang")
        probe = asyncio.ensure_future(guard.aget_features("u1", "user", NAMES))
        await asyncio.sleep(0.05)
        assert guard.breaker.snapshot()["probe_in_flight"] is True
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert guard.breaker.snapshot()["probe_in_flight"] is False
        backend.release()
        backend.set_mode("ok")
        assert (await guard.aget_features("u1", "user", NAMES)).status is FeatureStatus.FOUND
        assert guard.breaker.state is BreakerState.CLOSED
    finally:
        backend.release()
