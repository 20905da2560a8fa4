"""A thread-safe circuit breaker (closed -> open -> half-open -> closed).

The guard consults it before every backend call. After ``failure_threshold``
consecutive failures it *opens*: calls are refused without touching the backend for
``reset_seconds``. Then it lets exactly one probe call through (*half-open*): a success
closes it, a failure opens it again for another cool-down.
"""

from __future__ import annotations

import threading
import time
from enum import Enum
from typing import Any, Callable, Dict, Optional

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(str, Enum):
    """Where the breaker stands."""

    CLOSED = "closed"
    """Calls go through; failures are counted."""
    OPEN = "open"
    """Calls are refused until the cool-down ends."""
    HALF_OPEN = "half_open"
    """One probe call is in flight or allowed; its outcome decides."""


class CircuitBreaker:
    """Counts consecutive failures and refuses calls while the backend looks down.

    Thread-safe. The hot path (closed, no failures) takes no lock.

    Args:
        failure_threshold: consecutive failures that open the breaker (>= 1).
        reset_seconds: how long it stays open before one probe is let through (> 0).
        clock: monotonic seconds; tests pass a controllable clock.

    Raises:
        ValueError: a threshold below 1 or a non-positive cool-down.

    Example:
        >>> breaker = CircuitBreaker(failure_threshold=2, reset_seconds=30)
        >>> breaker.record_failure(); breaker.record_failure()
        >>> breaker.state.value, breaker.allow()
        ('open', False)
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_seconds: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if not reset_seconds > 0:
            raise ValueError(f"reset_seconds must be > 0, got {reset_seconds}")
        self.failure_threshold = failure_threshold
        self.reset_seconds = float(reset_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.times_opened = 0
        self._opened_at: Optional[float] = None
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose cool-down is over reads half-open)."""
        state = self._state
        if state is BreakerState.OPEN and self._cooled_down():
            return BreakerState.HALF_OPEN
        return state

    @property
    def retry_at(self) -> Optional[float]:
        """Clock time at which an open breaker lets a probe through (``None`` unless open)."""
        opened = self._opened_at
        if self._state is not BreakerState.OPEN or opened is None:
            return None
        return opened + self.reset_seconds

    def _cooled_down(self) -> bool:
        opened = self._opened_at
        return opened is not None and self._clock() - opened >= self.reset_seconds

    def allow(self) -> bool:
        """May a call go to the backend now?

        Closed: yes. Open: no, until the cool-down is over; then the breaker turns
        half-open and this call becomes the one probe. Half-open with a probe in flight:
        no. A caller that got ``True`` must report the outcome with
        :meth:`record_success`, :meth:`record_failure` or :meth:`record_neutral`.
        """
        if self._state is BreakerState.CLOSED:
            return True
        with self._lock:
            state: BreakerState = self._state
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.OPEN:
                if not self._cooled_down():
                    return False
                self._state = BreakerState.HALF_OPEN
            if self._probe_in_flight:
                return False
            self._probe_in_flight = True
            return True

    def record_success(self) -> None:
        """The backend answered properly: reset the count; a probe success closes."""
        if self._state is BreakerState.CLOSED and self.consecutive_failures == 0:
            return
        with self._lock:
            self.consecutive_failures = 0
            if self._state is BreakerState.HALF_OPEN:
                self._state = BreakerState.CLOSED
                self._opened_at = None
                self._probe_in_flight = False

    def record_failure(self) -> None:
        """The backend failed (timeout, error, garbage): count it, maybe open."""
        with self._lock:
            self.consecutive_failures += 1
            state = self._state
            if state is BreakerState.HALF_OPEN or (
                state is BreakerState.CLOSED and self.consecutive_failures >= self.failure_threshold
            ):
                self._open()

    def record_neutral(self) -> None:
        """The call ended without telling anything about the backend's health.

        For example a :class:`~asahi_features.errors.FeatureConfigError` (the caller's
        mistake) or a call refused before reaching the backend. A probe slot taken by
        :meth:`allow` is given back, so the next call probes instead.
        """
        if self._state is BreakerState.CLOSED:
            return
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._probe_in_flight = False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._probe_in_flight = False
        self.times_opened += 1

    def reset(self) -> None:
        """Close the breaker and forget the failures (an operator's manual reset)."""
        with self._lock:
            self._state = BreakerState.CLOSED
            self.consecutive_failures = 0
            self._opened_at = None
            self._probe_in_flight = False

    def snapshot(self) -> Dict[str, Any]:
        """A JSON-serialisable view: state, counters, and when an open breaker retries.

        ``opened_at`` / ``retry_at`` are clock readings (monotonic seconds);
        ``retry_in_seconds`` is the remaining cool-down (0 when a probe is allowed).
        """
        with self._lock:
            opened = self._opened_at
            retry_at = opened + self.reset_seconds if opened is not None else None
            now = self._clock()
            return {
                "state": self.state.value,
                "consecutive_failures": self.consecutive_failures,
                "times_opened": self.times_opened,
                "failure_threshold": self.failure_threshold,
                "reset_seconds": self.reset_seconds,
                "opened_at": opened,
                "retry_at": retry_at,
                "retry_in_seconds": max(0.0, retry_at - now) if retry_at is not None else 0.0,
                "probe_in_flight": self._probe_in_flight,
            }

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self.state.value}, "
            f"consecutive_failures={self.consecutive_failures}, "
            f"times_opened={self.times_opened})"
        )
