"""FeatureMonitor: store health, freshness, latency, and whether enrichment helps (spec 4).

The monitor is fed one :class:`~asahi_features.models.EnrichmentResult` per request
(:meth:`FeatureMonitor.record_enrichment`) and, possibly much later, quality scores by
``enrichment_id`` (:meth:`FeatureMonitor.record_quality`). It answers one question per
request, :meth:`FeatureMonitor.should_enrich`, and exposes everything it knows as a dict
(:meth:`~FeatureMonitor.get_stats`), a persistable snapshot and Prometheus metrics.

Quality groups:

* **with features**: the prompt received at least one feature (``features_available``);
* **held out**: the request was deliberately not enriched (``held_out``), the fair
  control group chosen by :meth:`FeatureMonitor.is_held_out`;
* **fallback**: every other request without features (store down, entity missing,
  stale features, declined by the monitor, ...).

*Without features* (the specification's ``quality_without_features``) is held out and
fallback together. The quality comparison uses the held-out group once it has
``min_samples`` scores, and every request without features until then; the decision
itself is an always-valid sequential test (:mod:`asahi_features.monitor.sequential`).

Modules: :mod:`~asahi_features.monitor.core` (the :class:`FeatureMonitor` class, its
public API), :mod:`~asahi_features.monitor.recording` (what an enrichment or a score
changes), :mod:`~asahi_features.monitor.holdout` (the control group),
:mod:`~asahi_features.monitor.decision` (the should-enrich rule),
:mod:`~asahi_features.monitor.availability` (the pause while the store fails),
:mod:`~asahi_features.monitor.counters` (what is counted and persisted),
:mod:`~asahi_features.monitor.quality` (the per-task quality decision),
:mod:`~asahi_features.monitor.report` (``get_stats``),
:mod:`~asahi_features.monitor.persistence` (save, load and their checks),
:mod:`~asahi_features.monitor.export` (Prometheus), :mod:`~asahi_features.monitor.stats`
(bounded accumulators), :mod:`~asahi_features.monitor.sequential` (the always-valid
test), :mod:`~asahi_features.monitor.per_model` (quality, usage and cost per task and
model), :mod:`~asahi_features.monitor.compare` (cheap model with features against
expensive model without), :mod:`~asahi_features.monitor.model_names` (the model's
name from LangChain / LlamaIndex callbacks) and :mod:`~asahi_features.monitor.shared`
(one view for many replicas, on Redis: :mod:`~asahi_features.monitor.shared_redis`).
"""

from __future__ import annotations

from .compare import ModelComparison
from .core import Decision, DecisionReason, FeatureMonitor, ScoreEvent
from .counters import GROUPS, QUALITY_BASES
from .model_names import model_name_of

__all__ = [
    "GROUPS",
    "QUALITY_BASES",
    "Decision",
    "DecisionReason",
    "FeatureMonitor",
    "ModelComparison",
    "ScoreEvent",
    "model_name_of",
]
