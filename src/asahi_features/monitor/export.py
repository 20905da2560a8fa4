"""Prometheus export of a :class:`~asahi_features.monitor.FeatureMonitor`.

prometheus-client is imported only here, and only when a monitor is registered or
scraped (the ``prometheus`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List

if TYPE_CHECKING:
    from .core import FeatureMonitor


def register(monitor: FeatureMonitor, registry: Any = None) -> Any:
    """Register a collector of ``monitor`` in ``registry`` (default: the global one).

    See :meth:`FeatureMonitor.register_prometheus`.
    """
    prom = _require_prometheus()
    collector = _MonitorCollector(monitor)
    (registry if registry is not None else prom.REGISTRY).register(collector)
    return collector


def _label(text: str) -> str:
    """A label value the exposition format can encode: a lone surrogate in a task type
    (e.g. from a cut emoji in a request) is written as ``\\udXXX`` instead of making
    every scrape fail."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _require_prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(
            "Prometheus export needs prometheus-client: pip install 'asahi-features[prometheus]'"
        ) from exc
    return prometheus_client


class _MonitorCollector:
    """A prometheus-client custom collector reading one consistent snapshot per scrape."""

    def __init__(self, monitor: FeatureMonitor) -> None:
        self._monitor = monitor

    def describe(self) -> List[Any]:
        """The current families, so that the registry can refuse duplicate names."""
        return list(self.collect())

    def collect(self) -> Any:
        """Yield the metric families (called by the registry on every scrape)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            SummaryMetricFamily,
        )

        stats = self._monitor.get_stats()
        prefix = "asahi_features_"

        enrichments = CounterMetricFamily(
            prefix + "enrichments",
            "Enrichments recorded, by task type and outcome reason.",
            labels=["task_type", "reason"],
        )
        tokens = CounterMetricFamily(
            prefix + "feature_tokens_added",
            "Tokens of feature context added to prompts.",
            labels=["task_type"],
        )
        quality_mean = GaugeMetricFamily(
            prefix + "quality_mean",
            "Mean quality score by task type and group (with_features, held_out, fallback).",
            labels=["task_type", "group"],
        )
        quality_n = CounterMetricFamily(
            prefix + "quality_samples",
            "Quality scores recorded by task type and group.",
            labels=["task_type", "group"],
        )
        enabled = GaugeMetricFamily(
            prefix + "enrichment_enabled",
            "1 unless enrichment is disabled for this task type because it does not help.",
            labels=["task_type"],
        )
        for task, data in stats["task_types"].items():
            task = _label(task)
            for reason, count in data["reasons"].items():
                enrichments.add_metric([task, _label(reason)], count)
            tokens.add_metric([task], data["feature_tokens_added"])
            for group, summary in data["quality"].items():
                quality_n.add_metric([task, group], summary["n"])
                if summary["mean"] is not None:
                    quality_mean.add_metric([task, group], summary["mean"])
            enabled.add_metric([task], 0.0 if data["disabled_for_quality"] else 1.0)
        yield enrichments
        yield tokens
        yield quality_mean
        yield quality_n
        yield enabled

        latency = SummaryMetricFamily(
            prefix + "enrichment_latency_seconds",
            "Enrichment latency (quantiles from a bounded reservoir sample).",
        )
        for q, key in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99")):
            value = stats["latency_ms"][key]
            if value is not None:
                latency.add_sample(
                    prefix + "enrichment_latency_seconds", {"quantile": q}, value / 1000.0
                )
        latency.add_sample(
            prefix + "enrichment_latency_seconds_count", {}, float(stats["total_enrichments"])
        )
        latency.add_sample(
            prefix + "enrichment_latency_seconds_sum",
            {},
            stats["avg_latency_ms"] * stats["total_enrichments"] / 1000.0,
        )
        yield latency

        availability = GaugeMetricFamily(
            prefix + "feature_store_availability_ratio",
            "Share of feature store fetch attempts that did not fail.",
            labels=["window"],
        )
        for window, key in (
            ("overall", "feature_store_availability_pct"),
            ("recent", "feature_store_availability_pct_recent"),
        ):
            if stats[key] is not None:
                availability.add_metric([window], stats[key] / 100.0)
        yield availability
        for name, doc, key in (
            ("feature_store_attempts", "Feature store fetch attempts.", "feature_store_attempts"),
            ("feature_store_failures", "Failed fetch attempts.", "feature_store_failures"),
            ("stale_features_dropped", "Features dropped as stale.", "stale_features_dropped"),
            ("pending_evicted", "Unscored enrichments evicted.", "pending_evicted"),
            (
                "unmatched_quality_scores",
                "Quality scores for unknown enrichment ids.",
                "unmatched_quality_scores",
            ),
        ):
            yield CounterMetricFamily(prefix + name, doc, value=stats[key])
        yield GaugeMetricFamily(
            prefix + "pending_quality",
            "Enrichments remembered for late quality scores.",
            value=stats["pending_quality"],
        )
        yield GaugeMetricFamily(
            prefix + "availability_paused",
            "1 while enrichment is paused for low recent availability.",
            value=1.0 if stats["availability_paused"] else 0.0,
        )
        if stats["breaker_state"] is not None:
            yield GaugeMetricFamily(
                prefix + "breaker_open",
                "1 while the watched circuit breaker is open.",
                value=1.0 if stats["breaker_state"] == "open" else 0.0,
            )
