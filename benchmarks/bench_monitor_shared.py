"""Benchmark of the shared monitor state on a real redis-server (issue 20 item 4).

Targets: with the Redis backend, recording adds no Redis round trip to the request path
(the background thread batches), and the decision read is cached (``should_enrich``
p50 <= 5 us). Measured in the same run, side by side:

* ``record_enrichment`` of a process-local monitor and of a shared one (its background
  thread writing to Redis every ``--interval-ms`` during the measurement);
* ``should_enrich`` of both, the shared one with its verdict read from Redis;
* the yardstick: one Redis round trip (``HINCRBY``, what recording synchronously into
  Redis would cost at the very least);
* the Redis commands the server processed per recorded request (INFO commandstats),
  and how long one background sync takes.

The redis-server is started on a free 127.0.0.1 port and stopped by its pid.

Run:
    .venv/bin/python benchmarks/bench_monitor_shared.py [--calls 100000] [--interval-ms 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.redis_server import RedisServer  # noqa: E402

from asahi_features.models import EnrichmentResult  # noqa: E402
from asahi_features.monitor import FeatureMonitor  # noqa: E402
from asahi_features.settings import MonitorConfig, SharedStateConfig  # noqa: E402


def _results(n: int, prefix: str) -> List[EnrichmentResult]:
    base = EnrichmentResult(
        original_prompt="What plan am I on?",
        enriched_prompt="[ctx]\nWhat plan am I on?",
        features_used=["tier", "product_owned"],
        feature_tokens_added=24,
        enrichment_latency_ms=1.7,
        features_available=True,
        task_type="faq",
        store_attempted=True,
    )
    return [base.model_copy(update={"enrichment_id": f"{prefix}{i:028x}"}) for i in range(n)]


def _p50_us(fn: Callable[[int], object], calls: int) -> float:
    clock = time.perf_counter_ns
    samples = []
    for i in range(calls):
        t0 = clock()
        fn(i)
        samples.append(clock() - t0)
    return statistics.median(samples) / 1000.0


def _recorder(monitor: FeatureMonitor, results: List[EnrichmentResult]) -> Callable[[int], None]:
    record = monitor.record_enrichment
    return lambda i: record(results[i], 0.8)


def _commands(client: Any) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--interval-ms", type=int, default=50)
    args = parser.parse_args()
    calls = args.calls
    import redis

    with RedisServer() as server:
        url = f"redis://{server.connection_string}/0"
        client = redis.Redis.from_url(url)
        local = FeatureMonitor(MonitorConfig())
        shared_config = MonitorConfig(
            shared_state=SharedStateConfig(
                url=url, replica_id="bench", flush_interval_ms=args.interval_ms
            )
        )
        shared = FeatureMonitor(shared_config)
        assert shared.shared is not None
        # warm up both (first task entry, first flush, verdict read)
        for r in _results(1000, "w"):
            local.record_enrichment(r, 0.8)
            shared.record_enrichment(r, 0.8)
        shared.shared.sync()

        rounds = 5  # alternate the two sides so that load drift hits both alike
        per = calls // rounds
        local_rec: List[float] = []
        shared_rec: List[float] = []
        commands_before = _commands(client)
        flushes_before = shared.shared.flushes
        for k in range(rounds):
            a, b = _results(per, f"l{k}-"), _results(per, f"s{k}-")
            local_rec.append(_p50_us(_recorder(local, a), per))
            shared_rec.append(_p50_us(_recorder(shared, b), per))
        commands = _commands(client) - commands_before
        flushes = shared.shared.flushes - flushes_before

        local_dec = _p50_us(lambda i: local.should_enrich("faq"), calls)
        shared_dec = _p50_us(lambda i: shared.should_enrich("faq"), calls)
        rtt = _p50_us(lambda i: client.hincrby("bench:counter", "faq", 1), min(calls, 20_000))
        t0 = time.perf_counter()
        syncs = 20
        for _ in range(syncs):
            shared.shared.sync()
        sync_ms = (time.perf_counter() - t0) / syncs * 1000
        total = shared.get_stats()["total_enrichments"]
        shared.close()

    rec_local, rec_shared = statistics.median(local_rec), statistics.median(shared_rec)
    print(
        f"calls per measurement: {calls:,} ({rounds} alternating rounds), flush every "
        f"{args.interval_ms} ms"
    )
    print(f"{'operation':52s} {'p50 us':>8s}")
    for name, value in (
        ("record_enrichment, process-local monitor", rec_local),
        ("record_enrichment, shared state on Redis", rec_shared),
        ("should_enrich, process-local monitor", local_dec),
        ("should_enrich, shared state on Redis (cached)", shared_dec),
        ("yardstick: one Redis round trip (HINCRBY)", rtt),
    ):
        print(f"{name:52s} {value:8.2f}")
    print(f"record shared / local (p50):                {rec_shared / rec_local:6.2f}x")
    print(f"record shared / one Redis round trip (p50): {rec_shared / rtt:6.3f}x")
    print(f"should_enrich shared / local (p50):         {shared_dec / local_dec:6.2f}x")
    print(
        f"Redis commands during {calls:,} records: {commands:,} "
        f"({commands / calls:.5f} per record; {flushes} background writes)"
    )
    print(f"one background sync (write + read all + verdicts): {sync_ms:.2f} ms")
    print(f"merged total read back: {total:,}")
    ok_rec = commands / calls < 0.01
    ok_dec = shared_dec <= 5.0
    print(f"target: no Redis round trip per record:     {'OK' if ok_rec else 'OVER TARGET'}")
    print(f"target: cached decision p50 <= 5 us:        {'OK' if ok_dec else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
