"""Known workloads for the shared monitor state, and the replica process of the Redis test.

Each replica records ``count`` requests of task ``faq``: even ones enriched (5 tokens),
odd ones held out, every one scored ``0.5 + N(0, 0.1)`` from a generator seeded by the
replica's index, so that the totals and the quality of any set of replicas are known.
"""

from __future__ import annotations

import random
import time
from typing import Any, List, Tuple

from asahi_features.models import EnrichmentReason, EnrichmentResult

TASK = "faq"
TOKENS = 5
SCORE_MEAN = 0.5
SCORE_SD = 0.1


def workload(replica: int, count: int, *, start: int = 0) -> List[Tuple[EnrichmentResult, float]]:
    """Requests ``start .. start + count - 1`` of replica ``replica`` with their scores."""
    rnd = random.Random(f"replica-{replica}")
    for _ in range(start):  # the same scores whatever the split into phases
        rnd.gauss(0.0, 1.0)
    out = []
    for k in range(start, start + count):
        enriched = k % 2 == 0
        result = EnrichmentResult(
            original_prompt="What plan am I on?",
            enriched_prompt="[ctx]\nWhat plan am I on?" if enriched else "What plan am I on?",
            features_used=["tier"] if enriched else [],
            feature_tokens_added=TOKENS if enriched else 0,
            enrichment_latency_ms=1.0 + replica,
            features_available=enriched,
            task_type=TASK,
            reason=EnrichmentReason.ENRICHED if enriched else EnrichmentReason.HELD_OUT,
            held_out=not enriched,
            store_attempted=enriched,
        )
        out.append((result, SCORE_MEAN + SCORE_SD * rnd.gauss(0.0, 1.0)))
    return out


def expected_totals(replicas: int, count: int) -> dict[str, int]:
    """What ``get_stats`` must say after ``replicas`` replicas recorded ``count`` each."""
    enriched = (count + 1) // 2
    return {
        "total_enrichments": replicas * count,
        "successful_enrichments": replicas * enriched,
        "held_out_enrichments": replicas * (count - enriched),
        "feature_tokens_added_total": replicas * enriched * TOKENS,
        "feature_store_attempts": replicas * enriched,
    }


def redis_replica(
    index: int,
    url: str,
    prefix: str,
    phase1: int,
    phase2: int,
    replicas: int,
    commands: Any,
    results: Any,
) -> None:
    """One replica process of tests/integration/test_monitor_redis.py (spawned).

    Phase 1: record ``phase1`` requests, wait until the merged view holds every
    replica's, report it and the decision. Phase 2 (on command): record ``phase2`` more,
    slowly, while the test stops and restarts Redis; every call is counted as failed if
    it raises. Then wait until the merged view holds everything again and report.
    """
    from asahi_features.monitor import FeatureMonitor
    from asahi_features.settings import MonitorConfig
    from tests.support.servers import wait_until

    config = MonitorConfig(
        min_samples=50,
        min_quality_gain=0.1,
        exploration_fraction=0.0,
        shared_state={
            "url": url,
            "key_prefix": prefix,
            "replica_id": f"replica-{index}",
            "flush_interval_ms": 50,
            "socket_timeout_ms": 500,
        },
    )
    monitor = FeatureMonitor(config)

    def total() -> int:
        return int(monitor.get_stats()["total_enrichments"])

    for result, score in workload(index, phase1):
        monitor.record_enrichment(result, score)
    wait_until(lambda: total() == replicas * phase1, timeout=60, interval=0.05)
    results.put(("phase1", index, monitor.get_stats(), tuple(monitor.decision(TASK))))

    if commands.get(timeout=120) != "phase2":
        monitor.close()
        return
    failures = 0
    for k, (result, score) in enumerate(workload(index, phase2, start=phase1)):
        try:
            monitor.should_enrich(TASK)
            monitor.record_enrichment(result, score)
        except Exception:  # what the test counts: a request that failed
            failures += 1
        if k == phase2 // 4:
            results.put(("phase2-started", index))
        elif k == 3 * phase2 // 4:
            results.put(("phase2-late", index))
        time.sleep(0.004)
    expected = replicas * (phase1 + phase2)
    caught_up = wait_until(lambda: total() == expected, timeout=60, interval=0.05)
    results.put(
        ("phase2", index, failures, caught_up, monitor.get_stats(), tuple(monitor.decision(TASK)))
    )
    assert commands.get(timeout=120) == "close"
    monitor.close()
    results.put(("closed", index))
