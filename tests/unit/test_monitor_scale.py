"""FeatureMonitor under load: exact counts from 16 threads, bounded memory over 1M records."""

from __future__ import annotations

import gc
import threading
import tracemalloc

from asahi_features.models import EnrichmentResult
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import MonitorConfig

from .test_monitor import make_result

THREADS = 16
PER_THREAD = 2_000


def test_exact_counts_from_16_threads() -> None:
    monitor = FeatureMonitor(MonitorConfig(max_pending_quality=THREADS * PER_THREAD))
    batches = [
        [
            make_result(
                task=f"task{t % 4}",
                enriched=i % 3 != 0,
                held_out=i % 3 == 0 and i % 2 == 0,
                failed=i % 3 == 0 and i % 2 == 1,
                tokens=5,
            )
            for i in range(PER_THREAD)
        ]
        for t in range(THREADS)
    ]
    barrier = threading.Barrier(THREADS)

    def work(batch: list[EnrichmentResult]) -> None:
        barrier.wait()
        for i, result in enumerate(batch):
            if i % 2:
                monitor.record_enrichment(result, inference_quality=1.0)
            else:
                monitor.record_enrichment(result)
                monitor.record_quality(result.enrichment_id, 0.0)
            monitor.should_enrich(result.task_type)

    threads = [threading.Thread(target=work, args=(b,)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    stats = monitor.get_stats()
    total = THREADS * PER_THREAD
    enriched = sum(r.features_available for b in batches for r in b)
    held = sum(r.held_out for b in batches for r in b)
    attempts = sum(r.store_attempted for b in batches for r in b)
    failures = sum(r.store_failed for b in batches for r in b)
    assert stats["total_enrichments"] == total
    assert stats["successful_enrichments"] == enriched
    assert stats["held_out_enrichments"] == held
    assert stats["feature_tokens_added_total"] == 5 * enriched
    assert stats["feature_store_attempts"] == attempts
    assert stats["feature_store_failures"] == failures
    assert sum(g["n"] for g in stats["quality"].values()) == total
    assert stats["quality_with_features"] is not None
    assert sum(t["total"] for t in stats["task_types"].values()) == total
    assert all(t["total"] == total // 4 for t in stats["task_types"].values())
    assert stats["unmatched_quality_scores"] == 0
    assert stats["pending_evicted"] == 0


def test_memory_stays_bounded_over_a_million_records() -> None:
    """1,000,000 records. Allocations are traced only near the end (tracing all of them
    would take minutes): once the pending table has cycled, 50,000 more records must not
    grow the traced memory, because every structure is fixed-size."""
    config = MonitorConfig(max_pending_quality=5_000, latency_reservoir_size=4096)
    monitor = FeatureMonitor(config)
    result = make_result()
    fields = result.__dict__  # reuse one result, changing only its id (as fast as it gets)
    record = monitor.record_enrichment
    for i in range(925_000):
        fields["enrichment_id"] = str(i)
        fields["enrichment_latency_ms"] = float(i % 1000)
        record(result)
    tracemalloc.start()
    try:
        # cycle the pending table once under tracing, so that its ids are traced ...
        for i in range(925_000, 950_000):
            fields["enrichment_id"] = str(i)
            record(result)
        gc.collect()
        start = tracemalloc.get_traced_memory()[0]
        # ... then 50,000 more records replace them one for one
        for i in range(950_000, 1_000_000):
            fields["enrichment_id"] = str(i)
            record(result)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    stats = monitor.get_stats()
    assert stats["total_enrichments"] == 1_000_000
    assert stats["pending_quality"] == 5_000
    assert stats["pending_evicted"] == 995_000
    assert stats["latency_ms"]["sample_size"] == 4096
    assert grown < 64 * 1024, grown
