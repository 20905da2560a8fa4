"""Controllable clocks: pass one where the library takes a ``clock`` (the guard, the
monitor, ``LocalFeatureStore``) and move time by hand instead of sleeping."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


class ManualClock:
    """A controllable monotonic clock (seconds as a float)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class WallClock:
    """A controllable wall clock (aware datetimes), e.g. for LocalFeatureStore(clock=...)."""

    def __init__(self, now: datetime = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


__all__ = ["ManualClock", "WallClock"]
