"""Overhead of the OpenTelemetry integration on enrichment (issue 20, item 5).

The enricher reads an in-memory client (the backend costs almost nothing, so this is the
worst case for the relative overhead: a real store read is 0.3-5 ms). Variants, timed
call by call and interleaved in blocks (see ``common.interleave``):

* ``disabled``: no observer (what every user gets unless telemetry is enabled);
* ``api only``: enabled, but no SDK configured (the OpenTelemetry API's no-op tracer);
* ``sdk memory``: enabled with the SDK, a ``SimpleSpanProcessor`` and the in-memory
  exporter (cleared between blocks);
* ``sdk batch``: enabled with the SDK and a ``BatchSpanProcessor`` whose exporter drops
  everything (how production exports, minus the network).

Each also records a quality score for every enrichment in a second table
(``record_quality`` with and without the evaluation event).

Printed: p50 / p90 per call in microseconds and the ratio of each p50 to ``disabled``;
then, as the raw dependency measured in the same run, the p50 of one bare SDK span
carrying the same attributes (``start_span`` + ``end`` with the batch processor), next
to what the integration adds to an enrichment (``sdk batch`` minus ``disabled``).

Usage: PYTHONPATH=src .venv/bin/python benchmarks/bench_otel.py [--rounds 30] [--block 200]
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

from common import TASK_MAP, MemoryClient, interleave, percentile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from asahi_features import enable_opentelemetry  # noqa: E402
from asahi_features.enricher import FeatureEnricher  # noqa: E402
from asahi_features.models import FeatureVector  # noqa: E402
from asahi_features.monitor import FeatureMonitor  # noqa: E402
from asahi_features.settings import EnricherConfig, MonitorConfig  # noqa: E402

TASK = "product_recommendation"
PROMPT = "Recommend a product for this customer"


class _DropExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _vector() -> FeatureVector:
    features: Dict[str, Any] = {
        "purchase_history": ["shoes", "jacket", "belt", "sneakers", "t-shirt"],
        "browsing": "athletic wear",
        "preferences": "casual athletic",
        "budget_level": "medium",
        "demographics": "25-34, urban",
    }
    return FeatureVector.from_ages(
        "u_1", "user", "memory", features, dict.fromkeys(features, 60.0), datetime.now(timezone.utc)
    )


def _enricher() -> FeatureEnricher:
    config = EnricherConfig(
        enabled_task_types=[TASK], task_features=TASK_MAP, freshness_threshold_seconds=10**9
    )
    # a monitor that keeps every id for the quality table
    monitor = FeatureMonitor(MonitorConfig(max_pending_quality=10_000_000))
    return FeatureEnricher(MemoryClient(_vector()), config, monitor=monitor)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=200)
    args = parser.parse_args()

    memory = InMemorySpanExporter()
    sdk_memory = TracerProvider()
    sdk_memory.add_span_processor(SimpleSpanProcessor(memory))
    sdk_batch = TracerProvider()
    batch = BatchSpanProcessor(_DropExporter(), max_queue_size=100_000)
    sdk_batch.add_span_processor(batch)

    enrichers: Dict[str, FeatureEnricher] = {}
    for name, provider in (
        ("disabled", None),
        ("api only", "noop"),
        ("sdk memory", sdk_memory),
        ("sdk batch", sdk_batch),
    ):
        enricher = enrichers[name] = _enricher()
        if provider == "noop":
            from opentelemetry.trace import NoOpTracerProvider

            enable_opentelemetry(enricher, tracer_provider=NoOpTracerProvider())
        elif provider is not None:
            enable_opentelemetry(enricher, tracer_provider=provider)

    ids: Dict[str, List[str]] = {name: [] for name in enrichers}

    def enrich(name: str) -> Callable[[int], Any]:
        enricher = enrichers[name]
        keep = ids[name].append

        def call(i: int) -> Any:
            if i % args.block == 0:
                memory.clear()
            result = enricher.enrich(PROMPT, user_id=f"u_{i % 5000}", task_type=TASK)
            keep(result.enrichment_id)
            return result

        return call

    # the raw dependency: one SDK span with the same attributes, nothing else
    raw_tracer = sdk_batch.get_tracer("raw")
    enrichers["sdk memory"].enrich(PROMPT, user_id="u_1", task_type=TASK)
    (done,) = memory.get_finished_spans()
    same = dict(done.attributes or {})

    def raw_span(i: int) -> Any:
        raw_tracer.start_span("retrieval asahi_features", attributes=same).end()

    variants: Dict[str, Callable[[int], Any]] = {n: enrich(n) for n in enrichers}
    variants["raw span"] = raw_span
    times = interleave(variants, args.rounds, args.block)
    raw = times.pop("raw span")

    def score(name: str) -> Callable[[int], Any]:
        monitor = enrichers[name].monitor
        assert isinstance(monitor, FeatureMonitor)
        todo = ids[name]

        def call(i: int) -> Any:
            if i % args.block == 0:
                memory.clear()
            return monitor.record_quality(todo[i], 0.8)

        return call

    scores = interleave({n: score(n) for n in enrichers}, args.rounds - 1, args.block, warmup=0)
    batch.force_flush()

    for title, table in (("enrich", times), ("record_quality", scores)):
        base = percentile(table["disabled"], 0.5)
        print(f"\n{title}: {args.rounds} rounds x {args.block} calls per variant")
        print(f"{'variant':<12} {'p50 us':>8} {'p90 us':>8} {'p50 ratio':>10}")
        for name, samples in table.items():
            p50 = percentile(samples, 0.5)
            p90 = percentile(samples, 0.9)
            print(f"{name:<12} {p50 * 1e6:8.2f} {p90 * 1e6:8.2f} {p50 / base:10.2f}")
    added = percentile(times["sdk batch"], 0.5) - percentile(times["disabled"], 0.5)
    raw_p50 = percentile(raw, 0.5)
    print(
        f"\nraw SDK span with the same {len(same)} attributes: p50 {raw_p50 * 1e6:.2f} us; "
        f"the integration adds {added * 1e6:.2f} us per enrichment "
        f"({added / raw_p50:.2f}x the raw span)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
