"""The stats dict of a :class:`~asahi_features.monitor.FeatureMonitor` (``get_stats``).

:func:`stats_locked` runs under the monitor's lock and copies what it needs;
:func:`finish_stats` does the expensive part (latency percentiles) outside of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

from ..settings import MonitorConfig
from .counters import (
    BASIS_HELD_OUT,
    FALLBACK,
    GROUPS,
    HELD_OUT,
    WITH,
    TaskStats,
    reason_name,
)
from .per_model import model_entry
from .quality import basis_of, delta, gain_bounds, quality_disabled
from .stats import LatencyReservoir, Welford

if TYPE_CHECKING:
    from .core import FeatureMonitor


def stats_locked(monitor: FeatureMonitor) -> Dict[str, Any]:
    """Everything but the latency percentiles (call with the monitor's lock held)."""
    tally = monitor._tally
    c = tally.counters
    cfg = monitor.config
    breaker_state = monitor._breaker.state()
    tasks = {name: task_stats(monitor, ts) for name, ts in sorted(tally.tasks.items())}
    reasons: Dict[str, int] = {}
    for ts in tally.tasks.values():
        for reason, count in ts.reasons.items():
            key = reason_name(reason)
            reasons[key] = reasons.get(key, 0) + count
    quality = tally.quality
    q = [acc.summary() for acc in quality]
    without = Welford.merged(quality[HELD_OUT], quality[FALLBACK])
    basis, basis_acc = basis_of(quality, cfg.min_samples)
    latencies = list(tally.latency.values)
    window = tally.gate.window
    total, successful = c.total, c.successful
    stats: Dict[str, Any] = {
        "total_enrichments": total,
        "successful_enrichments": successful,
        "held_out_enrichments": c.held_out,
        "fallback_enrichments": total - successful - c.held_out,
        # the process was too busy to read the store in time: not a store failure,
        # never part of the availability figures
        "overloaded_enrichments": reasons.get("overloaded", 0),
        "avg_features_used": c.features_used / total if total else 0.0,
        "avg_features_used_when_enriched": (c.features_used / successful if successful else 0.0),
        "avg_latency_ms": c.latency_sum / total if total else 0.0,
        "quality_with_features": q[WITH]["mean"],
        "quality_without_features": without.mean if without.n else None,
        "quality_held_out": q[HELD_OUT]["mean"],
        "quality_fallback": q[FALLBACK]["mean"],
        "quality_basis": basis,
        "quality_delta": delta(quality[WITH], basis_acc),
        "quality": dict(zip(GROUPS, q, strict=True)),
        "feature_store_availability_pct": (
            100.0 * (c.attempts - c.failures) / c.attempts if c.attempts else None
        ),
        "feature_store_availability_pct_recent": window.availability_pct,
        "feature_store_attempts": c.attempts,
        "feature_store_failures": c.failures,
        "feature_store_window_attempts": window.count,
        "availability_paused": tally.gate.paused,
        "availability_pauses": c.pauses,
        "availability_probes": c.probes,
        "breaker_state": breaker_state,
        "feature_tokens_added_total": c.tokens,
        "avg_feature_tokens_added": c.tokens / total if total else 0.0,
        "avg_feature_tokens_added_when_enriched": (c.tokens / successful if successful else 0.0),
        "stale_features_dropped": c.stale_dropped,
        "enrichments_with_stale_drops": c.stale_records,
        "avg_freshness_seconds": (c.freshness_sum / successful if successful else None),
        "max_freshness_seconds": c.freshness_max if successful else None,
        "reasons": dict(sorted(reasons.items())),
        "fallbacks_by_reason": {k: v for k, v in sorted(reasons.items()) if k != "enriched"},
        "pending_quality": len(tally.pending),
        "pending_evicted": c.evicted,
        "unmatched_quality_scores": c.unmatched,
        "duplicate_quality_scores": c.duplicate_scores,
        "invalid_quality_scores": c.invalid_scores,
        "duplicate_records": c.duplicate_records,
        "task_types": tasks,
    }
    stats["_latencies"] = latencies
    return stats


def finish_stats(stats: Dict[str, Any], config: MonitorConfig) -> Dict[str, Any]:
    """Add the latency percentiles and the per-model entries to :func:`stats_locked`'s
    dict (outside the lock)."""
    latencies = stats.pop("_latencies")
    p50, p95, p99 = LatencyReservoir.percentiles_of(latencies, (50, 95, 99))
    stats["latency_ms"] = {"p50": p50, "p95": p95, "p99": p99, "sample_size": len(latencies)}
    for entry in stats["task_types"].values():
        copied = entry.pop("_models", None)
        if copied is not None:  # only tasks with scores recorded with model=
            tokens, copied = copied
            entry["models"] = {
                name: model_entry(name, ms, tokens, config) for name, ms in sorted(copied.items())
            }
    return stats


def tokens_per_enriched(ts: TaskStats) -> Optional[float]:
    """Feature tokens per enriched request of a task (``None`` before the first)."""
    enriched = ts.groups[WITH]
    return ts.tokens / enriched if enriched else None


def task_stats(monitor: FeatureMonitor, ts: TaskStats) -> Dict[str, Any]:
    """The ``task_types`` entry of one task (moves its quality decision if a score came)."""
    disabled = quality_disabled(ts, monitor.config)
    lower, upper = gain_bounds(ts)
    q = [acc.summary() for acc in ts.quality]
    without = Welford.merged(ts.quality[HELD_OUT], ts.quality[FALLBACK])
    basis_acc = ts.quality[HELD_OUT] if ts.basis == BASIS_HELD_OUT else without
    entry = {
        "total": ts.total,
        "enriched": ts.groups[WITH],
        "held_out": ts.groups[HELD_OUT],
        "fallback": ts.groups[FALLBACK],
        "feature_tokens_added": ts.tokens,
        "reasons": dict(sorted((reason_name(k), v) for k, v in ts.reasons.items())),
        "quality": dict(zip(GROUPS, q, strict=True)),
        "quality_without_features": without.mean if without.n else None,
        "quality_held_out": q[HELD_OUT]["mean"],
        "quality_basis": ts.basis,
        "quality_delta": delta(ts.quality[WITH], basis_acc),
        "quality_delta_samples": {
            "with_features": q[WITH]["n"],
            "held_out": q[HELD_OUT]["n"],
            "unenriched": without.n,
        },
        "quality_gain_lower_bound": lower,
        "quality_gain_upper_bound": upper,
        "disabled_for_quality": disabled,
        "holdout_fraction": monitor.holdout_fraction(ts.name),
    }
    if ts.models:  # copied now, reported by finish_stats outside the lock
        copies = {name: ms.copy() for name, ms in ts.models.items()}
        entry["_models"] = (tokens_per_enriched(ts), copies)
    return entry
