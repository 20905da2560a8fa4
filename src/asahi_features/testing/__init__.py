"""Helpers for testing an application that uses asahi-features (no test framework needed).

- :class:`FaultyBackend` / :class:`AsyncFaultyBackend`: a feature store whose behaviour you
  choose (``ok``, ``hang``, ``slow``, ``raise``, ``flap``, ``recover``, ``garbage``) and that
  counts its calls, to check that your application degrades instead of failing.
- :class:`ManualClock` / :class:`WallClock`: clocks you advance by hand.

Example::

    from asahi_features import FeatureEnricher, GuardedClient
    from asahi_features.testing import FaultyBackend

    store = FaultyBackend("hang")
    enricher = FeatureEnricher(GuardedClient(store, timeout_ms=50))
    result = enricher.enrich("Recommend a shoe", user_id="u1", task_type="general")
    assert result.reason.value == "store_unavailable"
    assert result.enriched_prompt == "Recommend a shoe"  # un-enriched, never failed
    store.release()
"""

from asahi_features.testing.clocks import ManualClock, WallClock
from asahi_features.testing.faults import (
    DEFAULT_FEATURES,
    MODES,
    AsyncFaultyBackend,
    FaultyBackend,
    Mode,
)

__all__ = [
    "DEFAULT_FEATURES",
    "MODES",
    "AsyncFaultyBackend",
    "FaultyBackend",
    "ManualClock",
    "Mode",
    "WallClock",
]
