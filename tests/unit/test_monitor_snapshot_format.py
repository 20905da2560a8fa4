"""The saved monitor snapshot format is stable, byte for byte.

``fixtures/monitor_snapshot_v1.json`` was written by :meth:`FeatureMonitor.save` before
the monitor became a package (counters held as attributes). A monitor fed the same
records must save exactly those bytes, and the file must load into the same state.

Regenerate (only for a deliberate format change, with a new schema version)::

    .venv/bin/python -m tests.unit.test_monitor_snapshot_format
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from asahi_features.models import EnrichmentReason
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import MonitorConfig
from tests.support.clocks import ManualClock

from .test_monitor import make_result

FIXTURE = Path(__file__).parent / "fixtures" / "monitor_snapshot_v1.json"
# what describes the running process, not the saved state (absent after a load)
PROCESS_KEYS = (
    "pending_quality",
    "availability_paused",
    "feature_store_window_attempts",
    "feature_store_availability_pct_recent",
    "breaker_state",
)


def _config() -> MonitorConfig:
    return MonitorConfig(
        min_samples=3,
        max_task_types=3,
        max_pending_quality=6,
        latency_reservoir_size=16,
        availability_window=10,
        failure_window_min_attempts=5,
        holdout_fraction={"faq": 0.5},
        seed=7,
    )


def replay() -> FeatureMonitor:
    """A monitor fed a fixed mix: every group, several tasks, the ``__other__`` pool,
    stale drops, failures, a pause and its probes, evictions, late, duplicate, invalid
    and unmatched scores, and a task disabled for quality."""
    clock = ManualClock()
    monitor = FeatureMonitor(_config(), clock=clock, rng=random.Random(3))
    rng = random.Random(11)
    for i in range(40):
        with_q = make_result(
            task="faq",
            latency_ms=0.25 * (i % 7) + 0.5,
            freshness=float(i % 5),
            stale=["age"] if i % 6 == 0 else None,
        )
        monitor.record_enrichment(with_q, inference_quality=0.1 + 0.01 * (i % 3))
        held = make_result(task="faq", enriched=False, held_out=True, latency_ms=0.1)
        monitor.record_enrichment(held, inference_quality=0.9 - 0.01 * (i % 4))
    for i in range(25):
        task = ("billing", "support", "search", "misc")[i % 4]
        result = make_result(
            task=task,
            enriched=i % 3 != 0,
            failed=i % 3 == 0,
            latency_ms=rng.uniform(0.5, 9.5),
            tokens=5 + i,
        )
        monitor.record_enrichment(result)
        if i % 2 == 0:
            monitor.record_quality(result.enrichment_id, rng.random())
        if i % 5 == 0:
            monitor.record_quality(result.enrichment_id, float("nan"))
            monitor.record_quality(result.enrichment_id, 0.5)
            monitor.record_enrichment(result)
    monitor.record_quality("never-recorded", 0.3)
    for _ in range(8):
        failed = make_result(
            task="billing", enriched=False, failed=True, reason=EnrichmentReason.STORE_UNAVAILABLE
        )
        monitor.record_enrichment(failed)
    for _ in range(3):
        monitor.decision("billing")
        clock.advance(6.0)
    monitor.decision("faq")
    return monitor


def test_a_monitor_saves_the_same_bytes_as_before(tmp_path: Path) -> None:
    saved = replay().save(tmp_path / "monitor.json")
    assert saved.read_bytes() == FIXTURE.read_bytes()


def test_the_saved_file_loads_into_the_same_state(tmp_path: Path) -> None:
    before = json.loads(FIXTURE.read_bytes())
    assert before["state"]["counters"]["pauses"] == 1  # the replay covers what it claims
    assert any(t["quality_disabled"] for t in before["state"]["tasks"].values())
    assert "__other__" in before["state"]["tasks"]
    loaded = FeatureMonitor.load(FIXTURE, _config())
    again = json.loads(loaded.save(tmp_path / "again.json").read_bytes())
    assert again["schema"] == before["schema"]
    assert again["state"] == before["state"]
    for key in PROCESS_KEYS:
        before["stats"].pop(key)
        again["stats"].pop(key)
    assert again["stats"] == before["stats"]


if __name__ == "__main__":
    replay().save(FIXTURE)
    print(f"wrote {FIXTURE}")
