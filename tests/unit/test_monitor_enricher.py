"""FeatureMonitor driving a real FeatureEnricher over a guarded LocalFeatureStore."""

from __future__ import annotations

import json
from pathlib import Path

from asahi_features.enricher import FeatureEnricher
from asahi_features.guard import GuardedClient
from asahi_features.models import EnrichmentReason, utc_now
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import EnricherConfig, MonitorConfig
from asahi_features.stores.local import LocalFeatureStore
from tests.support.clocks import ManualClock

USERS = [f"u_{i}" for i in range(120)]


def _write_store(path: Path) -> None:
    now = utc_now().isoformat()
    data = {
        "user": {
            user: {
                "updated_at": now,
                "features": {"tier": "gold", "product_owned": "router", "preferred_language": "en"},
            }
            for user in USERS
        }
    }
    path.write_text(json.dumps(data), encoding="utf-8")


def test_holdout_pause_and_recovery_through_the_enricher(tmp_path: Path) -> None:
    path = tmp_path / "features.json"
    _write_store(path)
    clock = ManualClock()
    monitor = FeatureMonitor(
        MonitorConfig(
            holdout_fraction={"faq": 0.25},
            availability_window=10,
            failure_window_min_attempts=10,
            availability_probe_interval_seconds=30.0,
        ),
        clock=clock,
    )
    guarded = GuardedClient(  # a breaker that never judges: the monitor pauses here
        LocalFeatureStore(path),
        timeout_ms=5000,
        breaker_window=1000,
        breaker_minimum_calls=1000,
    )
    monitor.watch(guarded)
    enricher = FeatureEnricher(guarded, EnricherConfig(), monitor=monitor)

    results = [enricher.enrich("Which plan am I on?", user_id=u, task_type="faq") for u in USERS]
    held = [r for r in results if r.held_out]
    assert [r.held_out for r in results] == [monitor.is_held_out("faq", u) for u in USERS]
    assert 10 <= len(held) <= 50
    assert all(r.reason == EnrichmentReason.HELD_OUT and not r.store_attempted for r in held)
    for i, result in enumerate(results):  # an evaluation run scores the answers later
        assert monitor.record_quality(
            result.enrichment_id, 0.9 if result.features_available else 0.6 + (i % 3) * 0.01
        )
    stats = monitor.get_stats()
    assert stats["total_enrichments"] == len(USERS)
    assert stats["held_out_enrichments"] == len(held)
    assert stats["successful_enrichments"] == len(USERS) - len(held)
    assert stats["feature_store_availability_pct"] == 100.0
    faq = stats["task_types"]["faq"]
    assert faq["quality_delta_samples"] == {
        "with_features": len(USERS) - len(held),
        "held_out": len(held),
        "unenriched": len(held),  # nothing fell back: every request without features was held out
    }
    assert faq["quality_delta"] > 0.25
    assert stats["breaker_state"] == "closed"

    # the store goes away: fallbacks are recorded as failed attempts, then the monitor pauses
    path.unlink()
    enrolled = [u for u in USERS if not monitor.is_held_out("faq", u)]
    outage = [enricher.enrich("Which plan?", user_id=u, task_type="faq") for u in enrolled[:15]]
    assert all(not r.features_available for r in outage)
    # 6 failures among the last 10 attempts bring availability below 50%: paused
    assert sum(r.store_failed for r in outage) == 6
    assert outage[-1].reason == EnrichmentReason.DISABLED_BY_MONITOR
    assert not outage[-1].store_attempted
    assert monitor.get_stats()["availability_paused"] is True
    assert monitor.get_stats()["breaker_state"] == "closed"  # the monitor paused, not the guard

    # the store comes back; after the probe interval one request probes and succeeds
    _write_store(path)
    clock.now += 30.0
    probe = enricher.enrich("Which plan?", user_id=enrolled[0], task_type="faq")
    assert probe.features_available
    after = enricher.enrich("Which plan?", user_id=enrolled[1], task_type="faq")
    assert after.features_available
    assert monitor.get_stats()["availability_paused"] is False
