"""The failure-rate circuit breaker, alone and inside GuardedClient."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

import pytest

from asahi_features.errors import FeatureStoreUnavailableError, GuardOverloadedError
from asahi_features.guard import BreakerState, CircuitBreaker, GuardedClient, Permit
from asahi_features.models import FeatureStatus
from tests.support.faults import AsyncFaultyBackend, FaultyBackend, ManualClock
from tests.support.servers import wait_until

NAMES = ["tier"]


def report(breaker: CircuitBreaker, outcomes: str) -> None:
    """One permitted call per character: ``F`` failed, ``S`` succeeded, ``s`` succeeded
    slowly, ``f`` failed slowly."""
    for outcome in outcomes:
        permit = breaker.acquire()
        assert permit is not None, f"refused before {outcome!r} of {outcomes!r}"
        if outcome in "Ff":
            permit.failure(slow=outcome == "f")
        else:
            permit.success(slow=outcome == "s")


def opened(clock: ManualClock, **kw: Any) -> CircuitBreaker:
    """A breaker that has just opened on one failure (window 1), cool-down 10 s."""
    kw.setdefault("reset_seconds", 10)
    breaker = CircuitBreaker(window=1, minimum_calls=1, clock=clock, **kw)
    report(breaker, "F")
    assert breaker.state is BreakerState.OPEN
    return breaker


# -- the breaker alone: closed ----------------------------------------------------------


def test_opens_at_the_failure_rate_only_after_minimum_calls() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(0.5, window=10, minimum_calls=4, reset_seconds=10, clock=clock)
    report(breaker, "FFF")  # 100 % failed, but only 3 calls: not judged yet
    assert breaker.state is BreakerState.CLOSED and breaker.times_opened == 0
    assert breaker.snapshot()["window_failures"] == 3
    report(breaker, "S")  # 3 of 4 failed: 75 % >= 50 %
    assert breaker.state is BreakerState.OPEN and breaker.times_opened == 1
    assert breaker.acquire() is None
    assert breaker.retry_at == pytest.approx(clock.now + 10)


def test_stays_closed_below_the_failure_rate() -> None:
    breaker = CircuitBreaker(0.6, window=10, minimum_calls=4)
    report(breaker, "SF" * 8)  # never over 50 % < 60 %, whatever the count
    assert breaker.state is BreakerState.CLOSED and breaker.times_opened == 0
    snap = breaker.snapshot()
    assert snap["window_calls"] == 10 and snap["window_failures"] == 5
    assert snap["failure_rate"] == pytest.approx(0.5)


def test_exactly_the_threshold_opens() -> None:
    # 7 of 25 is exactly 28 % (a count comparison, 7 >= 0.28 * 25, would round it away)
    breaker = CircuitBreaker(0.28, window=25, minimum_calls=25)
    report(breaker, "F" * 7 + "S" * 17)
    assert breaker.state is BreakerState.CLOSED
    report(breaker, "S")
    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot()["failure_rate"] == pytest.approx(0.28)


def test_the_window_slides_old_outcomes_out() -> None:
    breaker = CircuitBreaker(0.5, window=4, minimum_calls=4)
    report(breaker, "FSSS")  # 1 of 4
    report(breaker, "F")  # the first F slid out: S S S F, still 1 of 4
    snap = breaker.snapshot()
    assert breaker.state is BreakerState.CLOSED
    assert (snap["window_calls"], snap["window_failures"]) == (4, 1)
    report(breaker, "F")  # S S F F: 2 of 4 = 50 %
    assert breaker.state is BreakerState.OPEN


def test_slow_call_rate_opens_on_slow_successes() -> None:
    breaker = CircuitBreaker(1.0, slow_call_rate=0.5, window=4, minimum_calls=4)
    report(breaker, "ssS")  # 3 calls: not judged yet
    snap = breaker.snapshot()
    assert breaker.state is BreakerState.CLOSED
    assert (snap["window_failures"], snap["window_slow_calls"]) == (0, 2)
    report(breaker, "S")  # 2 of 4 slow = 50 %; no failure at all
    assert breaker.state is BreakerState.OPEN


def test_a_slow_failure_counts_as_failed_and_slow() -> None:
    breaker = CircuitBreaker(1.0, slow_call_rate=1.0, window=2, minimum_calls=2)
    report(breaker, "f")
    snap = breaker.snapshot()
    assert (snap["window_failures"], snap["window_slow_calls"]) == (1, 1)
    report(breaker, "S")  # 50 % failed, 50 % slow: both under 100 %
    assert breaker.state is BreakerState.CLOSED
    report(breaker, "f")  # window S f ... 1 of 2: still closed
    assert breaker.state is BreakerState.CLOSED
    report(breaker, "f")  # f f: 100 %
    assert breaker.state is BreakerState.OPEN


def test_default_slow_call_rate_opens_only_when_every_call_is_slow() -> None:
    breaker = CircuitBreaker(window=5, minimum_calls=5)  # slow_call_rate 1.0
    report(breaker, "ssssS")  # 4 of 5 slow
    for _ in range(4):
        report(breaker, "s")  # the fast call slides toward the window's end: 4 of 5
        assert breaker.state is BreakerState.CLOSED
    report(breaker, "s")  # it slid out: 5 of 5 slow
    assert breaker.state is BreakerState.OPEN


def test_release_in_closed_state_records_nothing() -> None:
    breaker = CircuitBreaker(window=2, minimum_calls=1)
    permit = breaker.acquire()
    assert permit is not None
    permit.release()
    assert breaker.snapshot()["window_calls"] == 0
    assert breaker.state is BreakerState.CLOSED


# -- the breaker alone: open and half-open --------------------------------------------


def test_open_refuses_until_the_cool_down_ends() -> None:
    clock = ManualClock()
    breaker = opened(clock)
    clock.advance(9.9)
    assert breaker.acquire() is None and breaker.state is BreakerState.OPEN
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN  # reads half-open before any call
    assert breaker.acquire() is not None


def test_half_open_admits_exactly_half_open_calls_probes() -> None:
    clock = ManualClock()
    breaker = opened(clock, half_open_calls=3)
    clock.advance(10)
    probes = [breaker.acquire() for _ in range(5)]
    admitted = [p for p in probes if p is not None]
    assert len(admitted) == 3 and probes[3:] == [None, None]
    assert all(p.probe for p in admitted)
    assert breaker.snapshot()["probes_in_flight"] == 3
    # One probe reports: its slot is spent (not given back) until all have reported.
    admitted[0].success()
    assert breaker.state is BreakerState.HALF_OPEN and breaker.acquire() is None
    assert breaker.snapshot()["probes_in_flight"] == 2


def test_probes_that_succeed_close_with_a_fresh_window() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(0.5, window=4, minimum_calls=2, half_open_calls=2, clock=clock)
    report(breaker, "FF")
    assert breaker.snapshot()["window_calls"] == 2  # kept while open, for inspection
    clock.advance(30)
    first, second = breaker.acquire(), breaker.acquire()
    assert first is not None and second is not None
    first.success()
    assert breaker.state is BreakerState.HALF_OPEN  # waits for every probe
    second.success()
    assert breaker.state is BreakerState.CLOSED and breaker.retry_at is None
    snap = breaker.snapshot()
    assert (snap["window_calls"], snap["window_failures"]) == (0, 0)
    assert snap["opened_at"] is None and snap["probes_in_flight"] == 0
    # The fresh window judges again only after minimum_calls.
    report(breaker, "F")
    assert breaker.state is BreakerState.CLOSED
    report(breaker, "F")
    assert breaker.state is BreakerState.OPEN and breaker.times_opened == 2


@pytest.mark.parametrize("outcomes", ["SF", "FS", "FF", "ss"])
def test_probes_over_a_threshold_reopen_for_a_new_cool_down(outcomes: str) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        0.5, slow_call_rate=0.5, window=1, minimum_calls=1, half_open_calls=2, clock=clock
    )
    report(breaker, "F")
    clock.advance(30)
    probes = [breaker.acquire(), breaker.acquire()]
    for permit, outcome in zip(probes, outcomes, strict=True):
        assert permit is not None
        if outcome == "F":
            permit.failure()
        else:
            permit.success(slow=outcome == "s")
    assert breaker.state is BreakerState.OPEN and breaker.times_opened == 2
    assert breaker.retry_at == pytest.approx(clock.now + 30)
    assert breaker.acquire() is None
    clock.advance(30)
    assert breaker.acquire() is not None  # probing again after the new cool-down


def test_release_gives_a_probe_slot_back() -> None:
    clock = ManualClock()
    breaker = opened(clock, half_open_calls=1)
    clock.advance(10)
    probe = breaker.acquire()
    assert probe is not None and breaker.acquire() is None
    probe.release()  # the call said nothing about the backend
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.snapshot()["probes_in_flight"] == 0
    again = breaker.acquire()
    assert again is not None
    again.success()
    assert breaker.state is BreakerState.CLOSED


def test_an_expired_probe_gives_its_slot_back() -> None:
    clock = ManualClock()
    breaker = opened(clock, half_open_calls=1, probe_seconds=30)
    clock.advance(10)
    lost = breaker.acquire(time_limit=2.0)  # e.g. its thread is stuck, it never reports
    assert lost is not None and lost.expires_at == pytest.approx(clock.now + 2)
    clock.advance(1.9)
    assert breaker.acquire() is None
    assert breaker.snapshot()["probes_in_flight"] == 1
    clock.advance(0.1)
    assert breaker.snapshot()["probes_in_flight"] == 0
    replacement = breaker.acquire()
    assert replacement is not None
    lost.success()  # the late report of the expired probe decides nothing
    assert breaker.state is BreakerState.HALF_OPEN
    replacement.failure()
    assert breaker.state is BreakerState.OPEN and breaker.times_opened == 2


def test_probe_time_limit_is_at_most_probe_seconds() -> None:
    clock = ManualClock()
    breaker = opened(clock, half_open_calls=2, probe_seconds=5)
    clock.advance(10)
    default, capped = breaker.acquire(), breaker.acquire(time_limit=60)
    assert default is not None and capped is not None
    assert default.expires_at == pytest.approx(clock.now + 5)
    assert capped.expires_at == pytest.approx(clock.now + 5)
    clock.advance(5)
    assert breaker.acquire() is not None  # both expired: their slots are free


def test_stale_reports_after_a_state_change_are_ignored() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        0.5, window=2, minimum_calls=2, half_open_calls=1, reset_seconds=10, clock=clock
    )
    early = breaker.acquire()  # a closed-state call that will report late
    assert early is not None
    report(breaker, "FF")
    assert breaker.state is BreakerState.OPEN
    early.success()  # while open: ignored
    assert breaker.state is BreakerState.OPEN and breaker.snapshot()["window_calls"] == 2
    clock.advance(10)
    probe = breaker.acquire()
    assert probe is not None
    early.failure()  # while half-open: not a probe outcome
    assert breaker.state is BreakerState.HALF_OPEN
    probe.success()
    assert breaker.state is BreakerState.CLOSED
    early.failure()  # closed again, but a new closed period: still stale
    early.failure()
    assert breaker.snapshot()["window_calls"] == 0 and breaker.state is BreakerState.CLOSED
    probe.failure()  # a probe reports once; its second report is ignored too
    assert breaker.snapshot()["window_calls"] == 0 and breaker.state is BreakerState.CLOSED

    # A probe of an earlier half-open period cannot decide a later one.
    report(breaker, "FF")
    clock.advance(10)
    old_probe = breaker.acquire()
    assert old_probe is not None
    breaker.reset()  # closed by the operator while the probe runs
    old_probe.failure()
    assert breaker.state is BreakerState.CLOSED and breaker.snapshot()["window_calls"] == 0


def test_reset_forgets_in_flight_closed_calls() -> None:
    breaker = CircuitBreaker(0.5, window=2, minimum_calls=2)
    before = breaker.acquire()
    assert before is not None
    breaker.reset()
    before.failure()
    before.failure()
    assert breaker.snapshot()["window_calls"] == 0 and breaker.state is BreakerState.CLOSED
    report(breaker, "FF")  # calls permitted after the reset count
    assert breaker.state is BreakerState.OPEN


def test_snapshot_is_json_and_reset_closes() -> None:
    clock = ManualClock(100.0)
    breaker = CircuitBreaker(
        0.5, slow_call_rate=0.8, window=4, minimum_calls=3, reset_seconds=30, clock=clock
    )
    snap = breaker.snapshot()
    assert snap["state"] == "closed" and snap["retry_at"] is None
    assert snap["failure_rate"] == 0.0 and snap["window_calls"] == 0
    report(breaker, "SFs")  # 1 failure, 1 slow of 3: closed
    assert breaker.snapshot()["state"] == "closed"
    report(breaker, "F")  # 2 of 4 failed: opens
    clock.advance(10)
    snap = json.loads(json.dumps(breaker.snapshot()))
    assert snap == {
        "state": "open",
        "window_calls": 4,
        "window_failures": 2,
        "window_slow_calls": 1,
        "failure_rate": 0.5,
        "slow_call_rate": 0.25,
        "failure_rate_threshold": 0.5,
        "slow_call_rate_threshold": 0.8,
        "window": 4,
        "minimum_calls": 3,
        "times_opened": 1,
        "reset_seconds": 30.0,
        "opened_at": 100.0,
        "retry_at": 130.0,
        "retry_in_seconds": 20.0,
        "probes_in_flight": 0,
    }
    assert "state=open" in repr(breaker) and "2/4 failed" in repr(breaker)
    clock.advance(20)
    assert breaker.snapshot()["state"] == "half_open"
    assert breaker.snapshot()["retry_in_seconds"] == 0.0
    probe = breaker.acquire()
    assert probe is not None and breaker.snapshot()["probes_in_flight"] == 1
    breaker.reset()
    snap = breaker.snapshot()
    assert breaker.state is BreakerState.CLOSED and breaker.retry_at is None
    assert (snap["window_calls"], snap["probes_in_flight"], snap["opened_at"]) == (0, 0, None)
    assert breaker.times_opened == 1  # history is kept


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_rate": 0}, r"failure_rate must be in \(0, 1\], got 0"),
        ({"failure_rate": 1.5}, r"failure_rate must be in \(0, 1\], got 1.5"),
        ({"slow_call_rate": 0}, r"slow_call_rate must be in \(0, 1\], got 0"),
        ({"slow_call_rate": -0.1}, r"slow_call_rate must be in \(0, 1\], got -0.1"),
        ({"window": 0}, r"window must be >= 1, got 0"),
        ({"minimum_calls": 0}, r"minimum_calls must be between 1 and window \(20\), got 0"),
        (
            {"window": 5, "minimum_calls": 6},
            r"minimum_calls must be between 1 and window \(5\), got 6",
        ),
        ({"reset_seconds": 0}, r"reset_seconds must be > 0, got 0"),
        ({"half_open_calls": 0}, r"half_open_calls must be >= 1, got 0"),
        ({"probe_seconds": -1}, r"probe_seconds must be > 0, got -1"),
    ],
)
def test_invalid_arguments_name_the_argument_and_range(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CircuitBreaker(**kwargs)


def test_edge_arguments_are_valid() -> None:
    breaker = CircuitBreaker(1.0, slow_call_rate=1.0, window=1, minimum_calls=1)
    report(breaker, "S")
    assert breaker.state is BreakerState.CLOSED
    report(breaker, "F")
    assert breaker.state is BreakerState.OPEN


# -- the breaker alone: concurrency ----------------------------------------------------


def _race(threads: int, attempt: Any) -> None:
    barrier = threading.Barrier(threads)

    def run() -> None:
        barrier.wait()
        attempt()

    started = [threading.Thread(target=run) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in started)


@pytest.mark.parametrize("half_open_calls", [1, 3])
def test_concurrent_half_open_admits_exactly_half_open_calls(half_open_calls: int) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        window=1, minimum_calls=1, reset_seconds=1, half_open_calls=half_open_calls, clock=clock
    )
    admitted: list[Optional[Permit]] = []
    lock = threading.Lock()

    def attempt() -> None:
        permit = breaker.acquire()
        with lock:
            admitted.append(permit)

    report(breaker, "F")
    for _ in range(20):  # many rounds: open, race for the probes, fail them (reopens)
        assert breaker.state is BreakerState.OPEN
        clock.advance(1)
        admitted.clear()
        _race(32, attempt)
        probes = [p for p in admitted if p is not None]
        assert len(admitted) == 32 and len(probes) == half_open_calls
        for probe in probes:
            probe.failure()
    assert breaker.times_opened == 21


def test_concurrent_probe_reports_decide_once() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        window=1, minimum_calls=1, reset_seconds=1, half_open_calls=16, clock=clock
    )
    report(breaker, "F")
    clock.advance(1)
    probes = [breaker.acquire() for _ in range(16)]
    assert all(p is not None for p in probes)
    pending = list(probes)
    lock = threading.Lock()

    def attempt() -> None:
        with lock:
            permit = pending.pop()
        assert permit is not None
        permit.success()

    _race(16, attempt)
    assert breaker.state is BreakerState.CLOSED and breaker.times_opened == 1


def test_concurrent_closed_reports_are_all_counted() -> None:
    breaker = CircuitBreaker(1.0, window=10_000, minimum_calls=10_000)

    def attempt() -> None:
        for i in range(500):
            permit = breaker.acquire()
            assert permit is not None
            if i % 5:
                permit.success()
            else:
                permit.failure()

    _race(8, attempt)
    snap = breaker.snapshot()
    assert (snap["window_calls"], snap["window_failures"]) == (4000, 800)


# -- the breaker in the guard ---------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def backend() -> Iterator[FaultyBackend]:
    made = FaultyBackend("raise")
    yield made
    made.release()


def guard_for(backend: FaultyBackend, clock: ManualClock, **kw: Any) -> GuardedClient:
    """Opens on 3 failed reads of 3 (50 % of a window of 3); one probe after 10 s. The
    deadline is a roomy 2 s (reads that must be answered, errors included); tests of a
    hung store ask for a short one."""
    kw.setdefault("timeout_ms", 2000)
    kw.setdefault("batch_timeout_ms", kw["timeout_ms"])
    kw.setdefault("breaker_failure_rate", 0.5)
    kw.setdefault("breaker_window", 3)
    kw.setdefault("breaker_minimum_calls", kw["breaker_window"])
    kw.setdefault("breaker_reset_seconds", 10)
    kw.setdefault("breaker_half_open_calls", 1)
    return GuardedClient(backend, clock=clock, **kw)


def test_guard_builds_its_breaker_from_its_arguments(backend: FaultyBackend) -> None:
    guard = GuardedClient(
        backend,
        breaker_failure_rate=0.25,
        breaker_slow_call_rate=0.75,
        breaker_window=40,
        breaker_minimum_calls=8,
        breaker_reset_seconds=12,
        breaker_half_open_calls=3,
    )
    breaker = guard.breaker
    assert (breaker.failure_rate, breaker.slow_call_rate) == (0.25, 0.75)
    assert (breaker.window, breaker.minimum_calls) == (40, 8)
    assert (breaker.reset_seconds, breaker.half_open_calls) == (12, 3)
    with pytest.raises(ValueError, match="minimum_calls"):
        GuardedClient(backend, breaker_window=4, breaker_minimum_calls=5)
    with pytest.raises(ValueError, match="failure_rate"):
        GuardedClient(backend, breaker_failure_rate=0)


def test_guard_opens_and_fails_fast_without_backend_or_thread(
    backend: FaultyBackend, clock: ManualClock
) -> None:
    guard = guard_for(backend, clock)
    for _ in range(2):
        assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.UNAVAILABLE
    assert guard.breaker.state is BreakerState.CLOSED  # under minimum_calls
    assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.UNAVAILABLE
    assert guard.breaker.state is BreakerState.OPEN
    workers_before = guard.stats()["workers"]
    backend.reset_counts()
    for _ in range(20):
        vector = guard.get_features("u1", "user", NAMES)
        assert vector.status is FeatureStatus.UNAVAILABLE
        assert "circuit breaker open" in (vector.error or "")
        assert guard.get_batch_features(["a", "b"], "user", NAMES)[1].entity_id == "b"
    guard.get_features("u1", "user", NAMES)
    assert backend.calls == 0
    stats = guard.stats()
    assert stats["rejected_open"] == 41 and stats["workers"] == workers_before
    assert stats["reads"] == 3 and stats["unavailable"] == 3
    assert stats["fallbacks"] == 3 + 20 * 3 + 1  # one per fallback vector
    assert stats["breaker"]["times_opened"] == 1


async def test_guard_open_breaker_fails_fast_on_async_paths(
    backend: FaultyBackend, clock: ManualClock
) -> None:
    guard = guard_for(backend, clock, breaker_window=1)
    await guard.aget_features("u1", "user", NAMES)
    assert guard.breaker.state is BreakerState.OPEN
    backend.reset_counts()
    assert (await guard.aget_features("u1", "user", NAMES)).status is FeatureStatus.UNAVAILABLE
    vectors = await guard.aget_batch_features(["a", "b"], "user", NAMES)
    assert [v.status for v in vectors] == [FeatureStatus.UNAVAILABLE] * 2
    assert all("circuit breaker open" in (v.error or "") for v in vectors)
    assert backend.calls == 0 and guard.stats()["rejected_open"] == 2


def test_open_breaker_raises_without_fallback(backend: FaultyBackend, clock: ManualClock) -> None:
    guard = guard_for(backend, clock, breaker_window=1, fallback_on_timeout=False)
    with pytest.raises(FeatureStoreUnavailableError, match="injected failure"):
        guard.get_features("u1", "user", NAMES)
    clock.advance(4)
    with pytest.raises(FeatureStoreUnavailableError, match=r"circuit breaker open .* 6\.0 s"):
        guard.get_features("u1", "user", NAMES)


def test_half_open_probes_succeed_and_close(backend: FaultyBackend, clock: ManualClock) -> None:
    guard = guard_for(backend, clock, breaker_half_open_calls=2)
    for _ in range(3):
        guard.get_features("u1", "user", NAMES)
    backend.set_mode("ok")
    clock.advance(9)
    assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.UNAVAILABLE
    assert backend.calls == 3
    clock.advance(1)
    assert guard.breaker.state is BreakerState.HALF_OPEN
    assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.FOUND
    assert guard.breaker.state is BreakerState.HALF_OPEN  # one of two probes reported
    assert guard.get_batch_features(["a", "b"], "user", NAMES)[1].status is FeatureStatus.FOUND
    assert guard.breaker.state is BreakerState.CLOSED
    assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.FOUND
    assert backend.calls == 6


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
        # one id: 50 ms; the healthy read at the end is a batch: a roomy 2 s
        guard = guard_for(backend, clock, breaker_window=2, timeout_ms=50, batch_timeout_ms=2000)
        guard.get_features("u1", "user", NAMES)
        guard.get_batch_features(["a"], "user", NAMES)
        assert guard.breaker.state is BreakerState.OPEN
        stats = guard.stats()
        assert stats["timeouts"] == 2
        # a read nobody waited for any more: failed and slow
        assert stats["breaker"]["window_failures"] == 2
        assert stats["breaker"]["window_slow_calls"] == 2
    finally:
        backend.release()
    backend.set_mode("recover")
    backend.fail_count = 1
    clock.advance(10)
    guard.get_features("u1", "user", NAMES)  # probe: first recover call fails
    assert guard.breaker.state is BreakerState.OPEN
    clock.advance(10)
    recovered = guard.get_batch_features(["u1", "u2"], "user", NAMES)  # the probe
    assert [v.status for v in recovered] == [FeatureStatus.FOUND] * 2
    assert guard.breaker.state is BreakerState.CLOSED


def test_slow_answers_count_as_slow_calls(clock: ManualClock) -> None:
    backend = FaultyBackend("slow", delay=0.08)
    # One request of a user and an organisation: 2 ids, so its deadline is 20 + 3000 ms,
    # while each one-id read may take 20 ms. Both answers come after 80 ms: in time for
    # the caller, but slow for the store.
    guard = guard_for(
        backend,
        clock,
        timeout_ms=20,
        batch_timeout_ms=None,
        batch_entity_timeout_ms=3000,
        breaker_failure_rate=1.0,
        breaker_slow_call_rate=0.5,
        breaker_window=2,
    )
    user, org = guard.get_groups([("user", NAMES, ["u1"]), ("org", NAMES, ["o1"])])
    assert user[0].status is FeatureStatus.FOUND and org[0].status is FeatureStatus.FOUND
    snap = guard.breaker.snapshot()
    assert (snap["window_failures"], snap["window_slow_calls"]) == (0, 2)
    assert guard.breaker.state is BreakerState.OPEN  # 2 of 2 slow >= 50 %
    assert guard.stats()["timeouts"] == 0


def test_an_abandoned_read_is_failed_and_slow(clock: ManualClock) -> None:
    # one id: 20 ms, answered only after 0.5 s; the healthy batch below: a roomy 2 s
    backend = FaultyBackend("slow", delay=0.5)
    guard = guard_for(
        backend,
        clock,
        timeout_ms=20,
        batch_timeout_ms=2000,
        breaker_failure_rate=1.0,
        breaker_window=2,
    )
    assert guard.get_features("u1", "user", NAMES).error == "no answer within 20 ms"
    snap = guard.breaker.snapshot()
    assert (snap["window_calls"], snap["window_failures"], snap["window_slow_calls"]) == (1, 1, 1)
    # its late answer: ignored
    assert wait_until(lambda: guard.stats()["busy_workers"] == 0, timeout=10)
    assert guard.breaker.snapshot()["window_calls"] == 1
    backend.set_mode("ok")
    healthy = guard.get_batch_features(["u1", "u2"], "user", NAMES)
    assert [v.status for v in healthy] == [FeatureStatus.FOUND] * 2
    snap = guard.breaker.snapshot()
    assert (snap["window_calls"], snap["window_failures"], snap["window_slow_calls"]) == (2, 1, 1)
    assert guard.breaker.state is BreakerState.CLOSED  # 50 % < 100 %


def test_flapping_backend_below_the_rate_stays_closed(clock: ManualClock) -> None:
    backend = FaultyBackend("flap", pattern=[True, True, False])
    guard = guard_for(backend, clock, breaker_window=6)
    statuses = [guard.get_features("u1", "user", NAMES).status for _ in range(12)]
    assert statuses.count(FeatureStatus.FOUND) == 8  # one failure in three: 33 % < 50 %
    assert guard.breaker.state is BreakerState.CLOSED and backend.calls == 12
    backend.pattern = [True, False, False]
    backend.set_mode("flap")  # two in three now
    guard.get_features("u1", "user", NAMES)  # window T F T T F T: 2 of 6
    assert guard.breaker.state is BreakerState.CLOSED
    guard.get_features("u1", "user", NAMES)  # window F T T F T F: 3 of 6
    assert guard.breaker.state is BreakerState.OPEN and backend.calls == 14


def test_overload_is_not_a_breaker_failure(clock: ManualClock) -> None:
    """A read that never left this process (its only worker busy with a healthy, slower
    read of another key) is reported as overloaded, not held against the store."""
    backend = FaultyBackend("slow", delay=0.5)
    guard = guard_for(
        backend, clock, max_workers=1, timeout_ms=50, batch_timeout_ms=3000, breaker_window=1
    )
    strict = guard_for(
        backend,
        clock,
        max_workers=1,
        timeout_ms=50,
        batch_timeout_ms=3000,
        breaker_window=1,
        fallback_on_timeout=False,
    )
    for client in (guard, strict):
        backend.reset_counts()
        holder = threading.Thread(
            target=client.get_batch_features, args=(["a", "b"], "user", ["tier"])
        )
        holder.start()
        assert wait_until(lambda: backend.in_flight == 1)
        if client is guard:
            vector = client.get_features("u1", "user", ["preferences"])
            assert vector.status is FeatureStatus.OVERLOADED and vector.features == {}
            assert "too busy" in (vector.error or "")
        else:
            with pytest.raises(GuardOverloadedError, match="too busy"):
                client.get_features("u1", "user", ["preferences"])
        holder.join(timeout=5)
        assert backend.calls == 1  # the overloaded read was never sent
        stats = client.stats()
        assert stats["overloaded"] == 1 and stats["timeouts"] == 0 and stats["unavailable"] == 0
        assert stats["fallbacks"] == (1 if client is guard else 0)
        assert stats["breaker"]["window_failures"] == 0
        assert stats["breaker"]["window_calls"] == 1  # only the holder's read was judged
        assert client.breaker.state is BreakerState.CLOSED


def test_every_worker_stuck_counts_against_the_store(clock: ManualClock) -> None:
    backend = FaultyBackend("hang")
    try:
        guard = guard_for(backend, clock, max_workers=1, timeout_ms=50)
        first = guard.get_features("u1", "user", NAMES)  # times out; the worker is stuck
        assert first.error == "no answer within 50 ms"
        for _ in range(2):
            vector = guard.get_features("u1", "user", NAMES)
            assert vector.error == (
                "all 1 guard workers are stuck in calls past their deadline (the store hangs)"
            )
        stats = guard.stats()
        assert stats["timeouts"] == 1 and stats["rejected_stuck"] == 2
        assert guard.breaker.state is BreakerState.OPEN and backend.calls == 1
    finally:
        backend.release()


@pytest.mark.parametrize("native", [False, True])
async def test_cancelled_caller_gives_the_probe_back(clock: ManualClock, native: bool) -> None:
    backend = (AsyncFaultyBackend if native else FaultyBackend)("raise")
    try:
        guard = guard_for(backend, clock, breaker_window=1, timeout_ms=5000)
        await guard.aget_features("u1", "user", NAMES)
        assert guard.breaker.state is BreakerState.OPEN
        clock.advance(10)
        backend.set_mode("hang")
        probe = asyncio.ensure_future(guard.aget_features("u1", "user", NAMES))
        deadline = time.monotonic() + 5
        while backend.in_flight == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert guard.breaker.snapshot()["probes_in_flight"] == 1
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        snap = guard.breaker.snapshot()
        assert snap["probes_in_flight"] == 0 and snap["state"] == "half_open"
        stats = guard.stats()
        assert stats["timeouts"] == 0 and stats["overloaded"] == 0  # cancelled, not late
        if native:  # the backend task is cancelled in the background
            while backend.cancelled == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            assert backend.cancelled == 1
        backend.release()
        backend.set_mode("ok")
        assert (await guard.aget_features("u1", "user", NAMES)).status is FeatureStatus.FOUND
        assert guard.breaker.state is BreakerState.CLOSED
    finally:
        backend.release()
