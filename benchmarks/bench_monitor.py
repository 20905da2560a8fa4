"""Benchmark of FeatureMonitor: per-record cost and memory after 1,000,000 records.

Targets (issue 6): ``record_enrichment`` p50 <= 5 us; memory after 1,000,000 records
<= 50 MB. As a yardstick measured in the same run, the script also times the floor of
any thread-safe recorder (one lock + one integer add) and a labelled
``prometheus_client`` counter increment (what an app would do by hand).

Run:
    .venv/bin/python benchmarks/bench_monitor.py            # full run (about a minute)
    .venv/bin/python benchmarks/bench_monitor.py --records 200000 --calls 50000
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import threading
import time
import tracemalloc
from typing import Callable, List

from asahi_features.models import EnrichmentReason, EnrichmentResult
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import MonitorConfig


def _results(n: int) -> List[EnrichmentResult]:
    base = EnrichmentResult(
        original_prompt="What plan am I on?",
        enriched_prompt="[ctx]\nWhat plan am I on?",
        features_used=["tier", "product_owned", "preferred_language"],
        feature_tokens_added=24,
        enrichment_latency_ms=1.7,
        features_available=True,
        task_type="faq",
        store_attempted=True,
        max_freshness_seconds=42.0,
    )
    failed = base.model_copy(
        update={
            "features_available": False,
            "features_used": [],
            "feature_tokens_added": 0,
            "store_failed": True,
            "reason": EnrichmentReason.STORE_UNAVAILABLE,
        }
    )
    return [
        (failed if i % 10 == 0 else base).model_copy(
            update={"enrichment_id": f"{i:032x}", "enrichment_latency_ms": 0.5 + (i % 97) / 10}
        )
        for i in range(n)
    ]


def _p50_ns(fn: Callable[[int], object], calls: int) -> tuple[float, float]:
    """(p50 of single calls in ns incl. the timer, mean ns per call timed in bulk)."""
    clock = time.perf_counter_ns
    samples = []
    for i in range(calls):
        t0 = clock()
        fn(i)
        samples.append(clock() - t0)
    start = clock()
    for i in range(calls):
        fn(i)
    bulk = (clock() - start) / calls
    return statistics.median(samples), bulk


def bench_latency(calls: int) -> None:
    results = _results(2 * calls)
    monitor = FeatureMonitor()
    record = monitor.record_enrichment
    first, second = results[:calls], results[calls:]
    # the single-call pass and the bulk pass use different ids (no idempotent short cut)
    rec_p50, _ = _p50_ns(lambda i: record(first[i]), calls)
    start = time.perf_counter_ns()
    for r in second:
        record(r)
    rec_bulk = (time.perf_counter_ns() - start) / calls

    dup_p50, _ = _p50_ns(lambda i: record(first[i], 0.7), calls)  # late quality via record

    # per model (issue 20 item 3): a new id recorded with its score, model and usage
    per_model = FeatureMonitor()
    record_pm = per_model.record_enrichment
    model_results = _results(calls)

    def record_with_model(i: int) -> None:
        record_pm(model_results[i], 0.7, model="small", input_tokens=1200, output_tokens=200)

    model_p50, _ = _p50_ns(record_with_model, calls)  # p50 of the first pass: new ids

    lock = threading.Lock()
    box = [0]

    def floor(_: int) -> None:
        with lock:
            box[0] += 1

    floor_p50, floor_bulk = _p50_ns(floor, calls)

    from prometheus_client import CollectorRegistry, Counter

    counter = Counter("bench_total", "bench", ["task_type", "reason"], registry=CollectorRegistry())
    prom_p50, prom_bulk = _p50_ns(lambda i: counter.labels("faq", "enriched").inc(), calls)

    should = monitor.should_enrich
    should_p50, should_bulk = _p50_ns(lambda i: should("faq"), calls)

    # the quality decision is computed lazily: the first read after a new score pays for
    # the always-valid test once (here with both groups past min_samples)
    decided = FeatureMonitor()
    held = results[0].model_copy(
        update={
            "features_available": False,
            "held_out": True,
            "store_attempted": False,
            "store_failed": False,
            "reason": EnrichmentReason.HELD_OUT,
        }
    )
    templates = (results[1], held)
    fields = [r.__dict__ for r in templates]
    for i in range(200):
        fields[i % 2]["enrichment_id"] = f"warm-{i}"
        decided.record_enrichment(templates[i % 2], 0.5 + (i % 7) / 20)

    fresh_ids = itertools.count()  # both passes of _p50_ns need new ids: a new score each

    def score_then_decide(i: int) -> None:
        fields[i % 2]["enrichment_id"] = f"s-{next(fresh_ids)}"
        decided.record_enrichment(templates[i % 2], 0.5 + (i % 7) / 20)
        decided.should_enrich("faq")

    fresh_p50, fresh_bulk = _p50_ns(score_then_decide, calls)
    holdout = FeatureMonitor(MonitorConfig(holdout_fraction={"faq": 0.1}))
    is_held = holdout.is_held_out
    held_p50, held_bulk = _p50_ns(lambda i: is_held("faq", f"user-{i}"), calls)
    t0 = time.perf_counter()
    monitor.get_stats()
    stats_ms = (time.perf_counter() - t0) * 1000

    print(f"calls per measurement: {calls:,}")
    print(f"{'operation':46s} {'p50 us':>8s} {'bulk us':>8s}")
    for name, p50, bulk in (
        ("record_enrichment (new id)", rec_p50, rec_bulk),
        ("record_enrichment (same id + quality)", dup_p50, float("nan")),
        ("record_enrichment (new id + score + model=)", model_p50, float("nan")),
        ("floor: lock + int add", floor_p50, floor_bulk),
        ("prometheus_client Counter.labels().inc()", prom_p50, prom_bulk),
        ("should_enrich", should_p50, should_bulk),
        ("record with score + should_enrich (decides)", fresh_p50, fresh_bulk),
        ("is_held_out (hash)", held_p50, held_bulk),
    ):
        print(f"{name:46s} {p50 / 1000:8.2f} {bulk / 1000:8.2f}")
    print(f"record_enrichment / floor (p50):           {rec_p50 / floor_p50:6.1f}x")
    print(f"record_enrichment / prometheus inc (p50):  {rec_p50 / prom_p50:6.1f}x")
    print(f"get_stats with {calls * 2:,} records:          {stats_ms:8.2f} ms")
    verdict = "OK" if rec_p50 / 1000 <= 5.0 else "OVER TARGET"
    print(f"target record_enrichment p50 <= 5 us:       {verdict}")


def bench_memory(records: int) -> None:
    config = MonitorConfig()  # defaults: 100,000 pending ids, 4096 latency samples
    template = _results(10)
    gc.collect()
    tracemalloc.start()
    monitor = FeatureMonitor(config)
    record = monitor.record_enrichment
    fields = [r.__dict__ for r in template]
    start = time.perf_counter()
    for i in range(records):
        result = template[i % 10]
        fields[i % 10]["enrichment_id"] = f"{i:032x}"  # a fresh uuid4().hex-sized id
        record(result, 0.8 if i % 3 == 0 else None)
    elapsed = time.perf_counter() - start
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    stats = monitor.get_stats()
    print(f"records: {records:,} in {elapsed:.1f} s (traced; tracemalloc slows it down)")
    print(
        f"pending ids kept: {stats['pending_quality']:,}, evicted unscored: "
        f"{stats['pending_evicted']:,}"
    )
    print(f"traced memory now: {current / 2**20:.1f} MB, peak: {peak / 2**20:.1f} MB")
    verdict = "OK" if peak / 2**20 <= 50 else "OVER TARGET"
    print(f"target memory after 1,000,000 records <= 50 MB: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    bench_latency(args.calls)
    print()
    bench_memory(args.records)


if __name__ == "__main__":
    main()
