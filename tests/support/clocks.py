"""Controllable clocks for tests (they ship as :mod:`asahi_features.testing`)."""

from asahi_features.testing.clocks import ManualClock, WallClock

__all__ = ["ManualClock", "WallClock"]
