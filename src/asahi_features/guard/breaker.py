"""A failure-rate circuit breaker over a sliding window of backend calls.

The semantics are resilience4j's: the breaker judges the *backend's own* outcomes (the
guard never reports time spent queued in this process), over the last ``window`` calls,
and only once at least ``minimum_calls`` are known. It opens when the share of failed
calls reaches ``failure_rate`` or the share of slow calls reaches ``slow_call_rate``.
Open, it refuses calls for ``reset_seconds``; then it lets ``half_open_calls`` probe
calls through. When all of them have reported, it closes (the window starts afresh) if
their failure and slow shares are under the thresholds, and opens again otherwise.

Every permitted call holds a :class:`Permit` and reports exactly one outcome through
it. A half-open probe's permit has a time limit: a probe that never reports (its task was
torn down, its thread is stuck) gives its slot back when the limit passes, so the breaker
can never stay half-open forever.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from enum import Enum
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

__all__ = ["BreakerState", "CircuitBreaker", "Permit"]


class BreakerState(str, Enum):
    """Where the breaker stands."""

    CLOSED = "closed"
    """Calls go through; their outcomes fill the window."""
    OPEN = "open"
    """Calls are refused until the cool-down ends."""
    HALF_OPEN = "half_open"
    """A few probe calls go through; their outcomes decide."""


class Permit:
    """The right to make one backend call; report its outcome once.

    ``success(slow=...)``, ``failure(slow=...)`` or ``release()`` (the call said nothing
    about the backend: a caller's mistake, or it never reached the backend). Later reports
    of the same permit are ignored.
    """

    __slots__ = ("_breaker", "expires_at", "generation", "probe", "reported")

    def __init__(
        self, breaker: CircuitBreaker, probe: bool, generation: int, expires_at: float
    ) -> None:
        self._breaker = breaker
        self.probe = probe
        self.generation = generation
        self.expires_at = expires_at
        self.reported = False

    def success(self, slow: bool = False) -> None:
        """The backend answered (``slow``: later than the call's time budget)."""
        self._breaker._report(self, False, slow)

    def failure(self, slow: bool = False) -> None:
        """The backend failed: an error, garbage, or no answer in time."""
        self._breaker._report(self, True, slow)

    def release(self) -> None:
        """The call tells nothing about the backend: give the slot back."""
        self._breaker._report(self, None, False)


class CircuitBreaker:
    """Opens on the failure (or slow-call) rate of the backend's recent calls.

    Thread-safe; asking for a permit while closed takes no lock.

    Args:
        failure_rate: share of failed calls in the window that opens it (0 < x <= 1).
        slow_call_rate: share of slow calls in the window that opens it (0 < x <= 1).
        window: how many of the most recent calls are judged (>= 1).
        minimum_calls: calls needed in the window before it judges at all (1..window).
        reset_seconds: how long it stays open before probing (> 0).
        half_open_calls: probe calls let through when half-open (>= 1).
        probe_seconds: a probe that has not reported after this long gives its slot back
            (> 0; :meth:`acquire` may set a shorter limit per call).
        clock: monotonic seconds; tests pass a controllable clock.

    Raises:
        ValueError: an argument out of its range (the message names it and the range).

    Example:
        >>> breaker = CircuitBreaker(window=4, minimum_calls=2)
        >>> for _ in range(2):
        ...     breaker.acquire().failure()
        >>> breaker.state.value, breaker.acquire() is None
        ('open', True)
    """

    def __init__(
        self,
        failure_rate: float = 0.5,
        *,
        slow_call_rate: float = 1.0,
        window: int = 20,
        minimum_calls: int = 5,
        reset_seconds: float = 30.0,
        half_open_calls: int = 2,
        probe_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (("failure_rate", failure_rate), ("slow_call_rate", slow_call_rate)):
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 1 <= minimum_calls <= window:
            raise ValueError(
                f"minimum_calls must be between 1 and window ({window}), got {minimum_calls}"
            )
        if not reset_seconds > 0:
            raise ValueError(f"reset_seconds must be > 0, got {reset_seconds}")
        if half_open_calls < 1:
            raise ValueError(f"half_open_calls must be >= 1, got {half_open_calls}")
        if not probe_seconds > 0:
            raise ValueError(f"probe_seconds must be > 0, got {probe_seconds}")
        self.failure_rate = float(failure_rate)
        self.slow_call_rate = float(slow_call_rate)
        self.window = window
        self.minimum_calls = minimum_calls
        self.reset_seconds = float(reset_seconds)
        self.half_open_calls = half_open_calls
        self.probe_seconds = float(probe_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._generation = 0  # bumped on every state change: stale reports are ignored
        self._outcomes: Deque[Tuple[bool, bool]] = deque()  # (failed, slow), newest last
        self._failures = 0
        self._slow = 0
        self._opened_at: Optional[float] = None
        self._probes: List[Permit] = []  # half-open permits not yet reported
        self._probe_outcomes: List[Tuple[bool, bool]] = []
        self.times_opened = 0
        self._closed_permit = Permit(self, False, 0, float("inf"))

    # -- state -----------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose cool-down is over reads half-open)."""
        state = self._state
        if state is BreakerState.OPEN and self._cooled_down(self._clock()):
            return BreakerState.HALF_OPEN
        return state

    @property
    def retry_at(self) -> Optional[float]:
        """Clock time at which an open breaker lets probes through (``None`` unless open)."""
        opened = self._opened_at
        if self._state is not BreakerState.OPEN or opened is None:
            return None
        return opened + self.reset_seconds

    def _cooled_down(self, now: float) -> bool:
        opened = self._opened_at
        return opened is not None and now - opened >= self.reset_seconds

    # -- permits ---------------------------------------------------------------------

    def acquire(self, time_limit: Optional[float] = None) -> Optional[Permit]:
        """A permit for one backend call, or ``None`` when the breaker refuses it.

        Args:
            time_limit: seconds after which a half-open probe that has not reported gives
                its slot back (default ``probe_seconds``; the smaller of the two is used).
        """
        if self._state is BreakerState.CLOSED:
            return self._closed_permit
        with self._lock:
            state: BreakerState = self._state  # may have changed before the lock
            if state is BreakerState.CLOSED:
                return self._closed_permit
            now = self._clock()
            if state is BreakerState.OPEN:
                if not self._cooled_down(now):
                    return None
                self._set_state(BreakerState.HALF_OPEN)
            probes = self._probes
            if probes:
                probes[:] = [p for p in probes if p.expires_at > now]
            if len(probes) + len(self._probe_outcomes) >= self.half_open_calls:
                return None
            limit = (
                self.probe_seconds if time_limit is None else min(time_limit, self.probe_seconds)
            )
            permit = Permit(self, True, self._generation, now + limit)
            probes.append(permit)
            return permit

    def _report(self, permit: Permit, failed: Optional[bool], slow: bool) -> None:
        if permit.probe:
            if permit.reported:
                return
            permit.reported = True
        with self._lock:
            if permit.probe:
                self._report_probe(permit, failed, slow)
            elif (
                failed is not None
                and self._state is BreakerState.CLOSED
                and permit.generation == self._generation
            ):
                self._record(failed, slow)

    def _record(self, failed: bool, slow: bool) -> None:
        """One closed-state outcome into the window; open when a threshold is reached."""
        outcomes = self._outcomes
        outcomes.append((failed, slow))
        self._failures += failed
        self._slow += slow
        if len(outcomes) > self.window:
            old_failed, old_slow = outcomes.popleft()
            self._failures -= old_failed
            self._slow -= old_slow
        calls = len(outcomes)
        if calls >= self.minimum_calls and self._over_threshold(self._failures, self._slow, calls):
            self._open()

    def _over_threshold(self, failures: int, slow: int, calls: int) -> bool:
        # Compare shares, not counts: ``rate * calls`` can round above an exact count
        # (0.28 * 25 > 7), and the shares are what snapshot() shows.
        return failures / calls >= self.failure_rate or slow / calls >= self.slow_call_rate

    def _report_probe(self, permit: Permit, failed: Optional[bool], slow: bool) -> None:
        if permit.generation != self._generation or self._state is not BreakerState.HALF_OPEN:
            return
        try:
            self._probes.remove(permit)
        except ValueError:  # expired: its slot was given back already
            return
        if failed is None:
            return
        outcomes = self._probe_outcomes
        outcomes.append((failed, slow))
        if len(outcomes) < self.half_open_calls:
            return
        failures = sum(f for f, _ in outcomes)
        slows = sum(s for _, s in outcomes)
        if self._over_threshold(failures, slows, len(outcomes)):
            self._open()
        else:
            self._close()

    def _set_state(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        self._probes = []
        self._probe_outcomes = []

    def _open(self) -> None:
        self._set_state(BreakerState.OPEN)
        self._opened_at = self._clock()
        self.times_opened += 1

    def _close(self) -> None:
        # A new shared closed-state permit per closed period, ready before the state
        # reads closed: reports of calls permitted before (a late call from an earlier
        # closed period, or from before a reset) are stale and ignored.
        self._closed_permit = Permit(self, False, self._generation + 1, float("inf"))
        self._set_state(BreakerState.CLOSED)
        self._opened_at = None
        self._outcomes.clear()
        self._failures = self._slow = 0

    def reset(self) -> None:
        """Close the breaker and forget every outcome (an operator's manual reset)."""
        with self._lock:
            self._close()

    # -- reporting -------------------------------------------------------------------

    def snapshot(self) -> Dict[str, Any]:
        """A JSON-serialisable view: state, window counts, and when an open breaker probes.

        ``opened_at`` / ``retry_at`` are clock readings (monotonic seconds);
        ``retry_in_seconds`` is the remaining cool-down (0 when probes are allowed).
        """
        with self._lock:
            opened = self._opened_at
            retry_at = opened + self.reset_seconds if opened is not None else None
            now = self._clock()
            calls = len(self._outcomes)
            return {
                "state": self.state.value,
                "window_calls": calls,
                "window_failures": self._failures,
                "window_slow_calls": self._slow,
                "failure_rate": self._failures / calls if calls else 0.0,
                "slow_call_rate": self._slow / calls if calls else 0.0,
                "failure_rate_threshold": self.failure_rate,
                "slow_call_rate_threshold": self.slow_call_rate,
                "window": self.window,
                "minimum_calls": self.minimum_calls,
                "times_opened": self.times_opened,
                "reset_seconds": self.reset_seconds,
                "opened_at": opened,
                "retry_at": retry_at,
                "retry_in_seconds": max(0.0, retry_at - now) if retry_at is not None else 0.0,
                "probes_in_flight": sum(1 for p in self._probes if p.expires_at > now),
            }

    def __repr__(self) -> str:
        with self._lock:
            calls, failures = len(self._outcomes), self._failures
        return (
            f"CircuitBreaker(state={self.state.value}, window={failures}/{calls} failed, "
            f"times_opened={self.times_opened})"
        )
