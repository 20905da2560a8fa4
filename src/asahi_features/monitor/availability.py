"""The availability pause: enrichment stops while the feature store keeps failing.

:class:`AvailabilityGate` keeps the recent fetch attempts (a ring buffer of
``availability_window`` outcomes). When at least ``failure_window_min_attempts`` of them
are known and fewer than ``min_availability_pct`` percent succeeded, enrichment is
*paused*; while paused, one request per ``availability_probe_interval_seconds`` is let
through as a probe. The first successful fetch attempt, or the watched circuit breaker
closing again, ends the pause and clears the window: no manual reset is ever needed.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

from ..settings import MonitorConfig
from .counters import Counters
from .decision import AVAILABILITY_PROBE, STORE_UNAVAILABLE, Decision
from .stats import AvailabilityWindow

logger = logging.getLogger("asahi_features.monitor")

__all__ = ["AvailabilityGate", "availability_low"]


def availability_low(window: AvailabilityWindow, config: MonitorConfig) -> Optional[float]:
    """The recent availability (percent) when it is low enough to pause: enough known
    attempts and below ``min_availability_pct``; ``None`` otherwise."""
    if window.count < config.failure_window_min_attempts:
        return None
    pct = window.availability_pct
    if pct is None or pct >= config.min_availability_pct:
        return None
    return pct


class AvailabilityGate:
    """The recent-availability window and the pause of one monitor (used under the
    monitor's lock; replaced with the monitor's counters by a restore)."""

    __slots__ = ("next_probe_at", "paused", "window")

    def __init__(self, size: int) -> None:
        self.window = AvailabilityWindow(size)
        self.paused = False
        self.next_probe_at = 0.0

    def attempt(self, failed: bool) -> None:
        """One fetch attempt's outcome; a success ends a pause."""
        self.window.add(failed)
        if not failed and self.paused:
            self.resume("a fetch attempt succeeded")

    def breaker_closed(self) -> None:
        """The watched breaker closed again: clear the window and end a pause."""
        self.window.clear()
        if self.paused:
            self.resume("the circuit breaker closed")

    def resume(self, why: str) -> None:
        """End the pause and forget the attempts that caused it."""
        self.paused = False
        self.window.clear()
        logger.info("feature store recovered (%s): enrichment resumed", why)

    def is_paused(
        self, counters: Counters, config: MonitorConfig, clock: Callable[[], float]
    ) -> bool:
        """Paused now? Starts the pause (counted in ``counters.pauses``, the first probe
        one interval from now) when the recent availability is too low."""
        if self.paused:
            return True
        pct = availability_low(self.window, config)
        if pct is None:
            return False
        self.paused = True
        counters.pauses += 1
        self.next_probe_at = clock() + config.availability_probe_interval_seconds
        logger.warning(
            "feature store availability %.1f%% over the last %d attempts is below %.1f%%: "
            "enrichment paused, probing every %.1fs",
            pct,
            self.window.count,
            config.min_availability_pct,
            config.availability_probe_interval_seconds,
        )
        return True

    def decision(
        self, counters: Counters, config: MonitorConfig, clock: Callable[[], float]
    ) -> Optional[Decision]:
        """While paused, a probe once per interval (counted in ``counters.probes``)
        and no otherwise; ``None`` (no say) when not paused."""
        if not self.is_paused(counters, config, clock):
            return None
        now = clock()
        if now >= self.next_probe_at:
            self.next_probe_at = now + config.availability_probe_interval_seconds
            counters.probes += 1
            return AVAILABILITY_PROBE
        return STORE_UNAVAILABLE
