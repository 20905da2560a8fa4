"""Prometheus export of a :class:`~asahi_features.monitor.FeatureMonitor`.

prometheus-client is imported only here, and only when a monitor is registered or
scraped (the ``prometheus`` extra). :func:`register` serves one process;
:class:`MultiprocessExporter` serves prometheus-client's multi-process mode (several
worker processes, one scrape).
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

if TYPE_CHECKING:
    from .core import FeatureMonitor

logger = logging.getLogger("asahi_features.monitor")


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

        monitor = self._monitor
        # this replica's own numbers, also with shared state: Prometheus adds replicas up
        # (sum by ...), as for any other metric; only the decision is the shared one
        stats = monitor._local_stats()
        shared = monitor.shared
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
        for name, data in stats["task_types"].items():
            task = _label(name)
            for reason, count in data["reasons"].items():
                enrichments.add_metric([task, _label(reason)], count)
            tokens.add_metric([task], data["feature_tokens_added"])
            for group, summary in data["quality"].items():
                quality_n.add_metric([task, group], summary["n"])
                if summary["mean"] is not None:
                    quality_mean.add_metric([task, group], summary["mean"])
            disabled = None if shared is None else shared.disabled(name)
            if disabled is None:
                disabled = data["disabled_for_quality"]
            enabled.add_metric([task], 0.0 if disabled else 1.0)
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


# ---------------------------------------------------------------------- multi-process

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class MultiprocessExporter:
    """Mirror one process's monitor into prometheus-client's multi-process metrics.

    In multi-process mode (gunicorn or uvicorn workers, ``PROMETHEUS_MULTIPROC_DIR`` set
    before prometheus-client is imported) a scrape is answered by one worker, which
    reads every worker's metric files through ``MultiProcessCollector``; a custom
    collector such as :func:`register` would report only the worker that answered. This
    exporter writes the monitor's numbers into those files instead, every
    ``interval_seconds`` from a background thread (never on the request path), so that
    the scrape adds up all workers, dead ones included:

    * counters (summed over processes): ``asahi_features_enrichments_total{task_type,
      reason}``, ``..._feature_tokens_added_total{task_type}``,
      ``..._quality_samples_total{task_type,group}``,
      ``..._enrichment_latency_seconds_total`` (the sum of latencies; the count is the
      sum of ``enrichments_total``), ``..._feature_store_attempts_total``,
      ``..._feature_store_failures_total``, ``..._stale_features_dropped_total``,
      ``..._pending_evicted_total``, ``..._unmatched_quality_scores_total``;
    * ``asahi_features_quality_score_sum{task_type,group}`` (gauge, summed): the mean
      quality of a group over all workers is ``quality_score_sum /
      quality_samples_total``;
    * live gauges (only running processes; call ``multiprocess.mark_process_dead`` when
      a worker exits): ``..._enrichment_enabled{task_type}`` (the minimum: 0 when any
      worker has it disabled), ``..._availability_paused`` (maximum) and
      ``..._pending_quality`` (sum).

    One exporter per process (they share the process's metric files).

    Args:
        monitor: this process's monitor.
        interval_seconds: how often the background thread copies the numbers.
        start: start the thread now (``False``: call :meth:`sync` yourself).

    Raises:
        ImportError: prometheus-client is not installed.
        RuntimeError: prometheus-client is not in multi-process mode (the message says
            how to turn it on).
    """

    def __init__(
        self, monitor: FeatureMonitor, *, interval_seconds: float = 1.0, start: bool = True
    ) -> None:
        prom = _require_prometheus()
        from prometheus_client import values

        if values.ValueClass is values.MutexValue:
            raise RuntimeError(
                "prometheus-client is not in multi-process mode: set the environment "
                f"variable {MULTIPROC_ENV} to a writable, empty directory before the "
                "process imports prometheus_client (e.g. in the gunicorn/uvicorn "
                "environment), or use register_prometheus() in a single process"
            )
        if not interval_seconds > 0:
            raise ValueError(f"interval_seconds must be > 0, got {interval_seconds}")
        import threading

        self._monitor = monitor
        self._interval = interval_seconds
        self._lock = threading.Lock()
        self._last: Dict[Tuple[str, Tuple[str, ...]], float] = {}
        p = "asahi_features_"
        counter, gauge = prom.Counter, prom.Gauge
        self._counters = {
            "enrichments": counter(
                p + "enrichments",
                "Enrichments by task type and reason.",
                ["task_type", "reason"],
                registry=None,
            ),
            "tokens": counter(
                p + "feature_tokens_added",
                "Tokens of feature context added.",
                ["task_type"],
                registry=None,
            ),
            "samples": counter(
                p + "quality_samples",
                "Quality scores by task type and group.",
                ["task_type", "group"],
                registry=None,
            ),
            "latency": counter(
                p + "enrichment_latency_seconds",
                "Sum of enrichment latencies (seconds).",
                registry=None,
            ),
        }
        for name, doc in _PLAIN_COUNTERS:
            self._counters[name] = counter(p + name, doc, registry=None)
        self._score_sum = gauge(
            p + "quality_score_sum",
            "Sum of quality scores by task type and group.",
            ["task_type", "group"],
            registry=None,
            multiprocess_mode="sum",
        )
        self._enabled = gauge(
            p + "enrichment_enabled",
            "1 unless enrichment is disabled for quality.",
            ["task_type"],
            registry=None,
            multiprocess_mode="livemin",
        )
        self._paused = gauge(
            p + "availability_paused",
            "1 while enrichment is paused for low availability.",
            registry=None,
            multiprocess_mode="livemax",
        )
        self._pending = gauge(
            p + "pending_quality",
            "Enrichments remembered for late quality scores.",
            registry=None,
            multiprocess_mode="livesum",
        )
        self._stop = threading.Event()
        self._thread: Any = None
        monitor._on_close(self.close)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))
        if start:
            self.sync()  # first copy (and first-use imports) here, not in the thread
            self._start()

    def _start(self) -> None:
        import threading

        self._thread = threading.Thread(
            target=self._run, name="asahi-monitor-prometheus", daemon=True
        )
        self._thread.start()

    def _after_fork(self) -> None:
        """In a forked worker: fresh lock and stop flag, and a thread of its own if the
        parent's ran (the worker's metric files are its own: prometheus-client keys
        them by pid)."""
        import threading

        was_running = self._thread is not None and not self._stop.is_set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if was_running:
            self._start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sync()

    def close(self) -> None:
        """Stop the thread and copy the numbers one last time."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=max(5.0, 2 * self._interval))
            self._thread = None
        self.sync()

    def _inc(self, name: str, labels: Tuple[str, ...], value: float) -> None:
        """Counters take increments: add what the monitor counted since the last copy
        (a monitor that was restored to smaller numbers starts a new baseline)."""
        key = (name, labels)
        delta = value - self._last.get(key, 0.0)
        self._last[key] = value
        if delta > 0:
            metric = self._counters[name]
            (metric.labels(*labels) if labels else metric).inc(delta)

    def sync(self) -> bool:
        """Copy the monitor's numbers into the metric files now. Never raises (a failure
        is logged); returns True when the copy was made."""
        try:
            with self._lock:
                self._sync()
            return True
        except Exception:
            logger.warning("copying the monitor into Prometheus metrics failed", exc_info=True)
            return False

    def _sync(self) -> None:
        monitor = self._monitor
        stats = monitor._local_stats()
        shared = monitor.shared
        for task, data in stats["task_types"].items():
            label = _label(task)
            for reason, count in data["reasons"].items():
                self._inc("enrichments", (label, _label(reason)), count)
            self._inc("tokens", (label,), data["feature_tokens_added"])
            for group, summary in data["quality"].items():
                self._inc("samples", (label, group), summary["n"])
                total = summary["mean"] * summary["n"] if summary["n"] else 0.0
                self._score_sum.labels(label, group).set(total)
            disabled = None if shared is None else shared.disabled(task)
            if disabled is None:
                disabled = data["disabled_for_quality"]
            self._enabled.labels(label).set(0.0 if disabled else 1.0)
        self._inc("latency", (), stats["avg_latency_ms"] * stats["total_enrichments"] / 1000.0)
        for name, key in _PLAIN_KEYS:
            self._inc(name, (), stats[key])
        self._paused.set(1.0 if stats["availability_paused"] else 0.0)
        self._pending.set(stats["pending_quality"])


def _after_fork(ref: weakref.ref[MultiprocessExporter]) -> None:
    exporter = ref()
    if exporter is not None:
        exporter._after_fork()


_PLAIN_COUNTERS = (
    ("feature_store_attempts", "Feature store fetch attempts."),
    ("feature_store_failures", "Failed fetch attempts."),
    ("stale_features_dropped", "Features dropped as stale."),
    ("pending_evicted", "Unscored enrichments evicted."),
    ("unmatched_quality_scores", "Quality scores for unknown enrichment ids."),
)
_PLAIN_KEYS = (
    ("feature_store_attempts", "feature_store_attempts"),
    ("feature_store_failures", "feature_store_failures"),
    ("stale_features_dropped", "stale_features_dropped"),
    ("pending_evicted", "pending_evicted"),
    ("unmatched_quality_scores", "unmatched_quality_scores"),
)
