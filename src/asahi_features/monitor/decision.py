"""The should-enrich decision: its reasons, its outcome and the rules that give them.

:meth:`FeatureMonitor.decision <asahi_features.monitor.FeatureMonitor.decision>` asks,
in this order: the watched circuit breaker (:func:`breaker_decision`), the availability
pause (:mod:`~asahi_features.monitor.availability`) and the quality verdict
(:func:`quality_decision`). The first that has a say decides. :class:`BreakerWatch`
follows the breaker given to :meth:`~asahi_features.monitor.FeatureMonitor.watch`.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, NamedTuple, Optional, Tuple

logger = logging.getLogger("asahi_features.monitor")

__all__ = [
    "BreakerWatch",
    "Decision",
    "DecisionReason",
    "breaker_decision",
    "breaker_of",
    "quality_decision",
]


class DecisionReason:
    """The reasons :meth:`FeatureMonitor.decision` gives (plain strings)."""

    ENABLED = "enabled"
    """Nothing speaks against enriching."""
    BREAKER_OPEN = "breaker_open"
    """The watched circuit breaker is open: the store is failing persistently."""
    BREAKER_HALF_OPEN = "breaker_half_open"
    """The breaker lets a probe through; enrich so that the probe can happen."""
    STORE_UNAVAILABLE = "store_unavailable"
    """Recent availability is below ``min_availability_pct``: enrichment is paused."""
    AVAILABILITY_PROBE = "availability_probe"
    """Paused for availability, but this request is the periodic probe."""
    QUALITY_NO_GAIN = "quality_no_gain"
    """The data shows (always-valid upper bound of the gain below ``min_quality_gain``)
    that enrichment does not improve quality by the margin."""
    EXPLORATION = "exploration"
    """Quality says no, but this request is in the exploration share."""


class Decision(NamedTuple):
    """The outcome of :meth:`FeatureMonitor.decision`: whether to enrich, and why."""

    enrich: bool
    reason: str


ENABLED = Decision(True, DecisionReason.ENABLED)
EXPLORATION = Decision(True, DecisionReason.EXPLORATION)
QUALITY_NO_GAIN = Decision(False, DecisionReason.QUALITY_NO_GAIN)
AVAILABILITY_PROBE = Decision(True, DecisionReason.AVAILABILITY_PROBE)
STORE_UNAVAILABLE = Decision(False, DecisionReason.STORE_UNAVAILABLE)
_BY_BREAKER: Dict[Optional[str], Decision] = {
    "open": Decision(False, DecisionReason.BREAKER_OPEN),
    # half-open: the guard's probe decides, not the availability window
    "half_open": Decision(True, DecisionReason.BREAKER_HALF_OPEN),
}


def breaker_decision(state: Optional[str]) -> Optional[Decision]:
    """What the breaker's state decides: no while ``open``, yes while ``half_open`` (so
    that the guard's probe can run); ``None`` (no say) when closed or not watched."""
    return _BY_BREAKER.get(state)


def quality_decision(disabled: bool, rng: Any, exploration_fraction: float) -> Decision:
    """Enrich unless disabled for quality; when disabled, still enrich a share
    ``exploration_fraction`` of calls (one ``rng.random()`` draw, only then)."""
    if not disabled:
        return ENABLED
    if rng.random() < exploration_fraction:
        return EXPLORATION
    return QUALITY_NO_GAIN


def breaker_of(client_or_breaker: Any) -> Any:
    """The breaker to watch: ``.breaker`` of a client, or the object itself (``None``
    stays ``None``).

    Raises:
        TypeError: the object has neither ``.breaker`` nor ``.state``.
    """
    target = client_or_breaker
    if target is None:
        return None
    breaker = getattr(target, "breaker", None)
    if breaker is not None:
        target = breaker
    try:
        target.state  # noqa: B018 - probing the attribute
    except AttributeError:
        raise TypeError(
            "watch() needs a circuit breaker (with .state) or a client with "
            f".breaker, got {type(client_or_breaker).__name__}"
        ) from None
    except Exception:  # present but failing now: read again at each decision
        logger.debug("the watched breaker's state cannot be read now", exc_info=True)
    return target


class BreakerWatch:
    """The breaker a monitor follows and the last state a decision saw (used under the
    monitor's lock)."""

    __slots__ = ("last", "target")

    def __init__(self) -> None:
        self.target: Any = None
        self.last: Optional[str] = None

    def follow(self, target: Any) -> None:
        """Watch ``target`` (from :func:`breaker_of`) from now on; ``None`` stops."""
        self.target = target
        self.last = None

    def state(self) -> Optional[str]:
        """``"closed"``, ``"open"`` or ``"half_open"`` (lower case); ``None`` when
        nothing is watched or the state cannot be read (never raises)."""
        target = self.target
        if target is None:
            return None
        try:
            state = target.state
        except Exception:  # a broken breaker must not break the request path
            logger.debug("reading the watched breaker's state failed", exc_info=True)
            return None
        return str(getattr(state, "value", state)).lower()

    def observe(self) -> Tuple[Optional[str], bool]:
        """The state now, and whether the breaker closed again since the last look
        (after having been seen in another state)."""
        state = self.state()
        if state is None:
            return None, False
        last = self.last
        if state == last:
            return state, False
        self.last = state
        return state, state == "closed" and last is not None
