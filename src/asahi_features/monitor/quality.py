"""Quality scores and the per-task quality decision of a
:class:`~asahi_features.monitor.FeatureMonitor`.

The "with features" group of a task is compared with its *basis* (the held-out control
group once it has ``min_samples`` scores, else every scored request without features)
by the always-valid sequential test of :mod:`asahi_features.monitor.sequential`.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional, Tuple

from ..settings import MonitorConfig
from .counters import (
    BASIS_HELD_OUT,
    BASIS_UNENRICHED,
    FALLBACK,
    HELD_OUT,
    WITH,
    Quality,
    TaskStats,
)
from .sequential import compare_gain
from .stats import Welford

logger = logging.getLogger("asahi_features.monitor")

TUNING_FACTOR = 10
"""The always-valid bounds are tightest at this many times ``min_samples`` per group."""


def coerce_score(score: Any) -> Optional[float]:
    """A float from a number, a bool, or an object with ``.score`` (LlamaIndex and
    LangSmith ``EvaluationResult``); ``None`` when there is no usable finite score."""
    if score is not None and not isinstance(score, (int, float)):
        score = getattr(score, "score", None)
    if score is None or isinstance(score, str):
        return None
    try:
        value = float(score)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def delta(with_q: Welford, basis: Welford) -> Optional[float]:
    """Mean with features minus mean of the basis; ``None`` when either has no score."""
    return with_q.mean - basis.mean if with_q.n and basis.n else None


def basis_of(quality: Quality, min_samples: int) -> Tuple[str, Welford]:
    """The comparison group: held out once it has ``min_samples`` scores, else every
    scored request without features (held out and fallback merged)."""
    held = quality[HELD_OUT]
    if held.n >= min_samples:
        return BASIS_HELD_OUT, held
    return BASIS_UNENRICHED, Welford.merged(held, quality[FALLBACK])


def quality_disabled(ts: TaskStats, cfg: MonitorConfig) -> bool:
    """Is enrichment disabled for quality for this task? Re-evaluated (and the state
    moved) only when a new score arrived since the last look."""
    if ts.verdict_version == ts.version:
        return ts.disabled
    with_q = ts.quality[WITH]
    basis, other = basis_of(ts.quality, cfg.min_samples)
    evidence = None
    if with_q.n >= cfg.min_samples and other.n >= cfg.min_samples:
        evidence = compare_gain(
            with_q,
            other,
            margin=cfg.min_quality_gain,
            alpha=1.0 - cfg.confidence,
            tuning_samples=TUNING_FACTOR * cfg.min_samples,
        )
    ts.basis, ts.evidence, ts.bounds = basis, evidence, None
    ts.verdict_version = ts.version
    if evidence is not None and (evidence.no_gain if not ts.disabled else evidence.gain):
        ts.disabled = not ts.disabled
        lower, upper = gain_bounds(ts)
        logger.info(
            "task %r: enrichment %s for quality (gain %.4g, always-valid bounds "
            "[%.4g, %.4g] at confidence %s, margin %s, basis %s, n=%d/%d)",
            ts.name,
            "disabled" if ts.disabled else "re-enabled",
            evidence.estimate,
            lower,
            upper,
            cfg.confidence,
            cfg.min_quality_gain,
            basis,
            with_q.n,
            other.n,
        )
    return ts.disabled


def gain_bounds(ts: TaskStats) -> Tuple[Optional[float], Optional[float]]:
    """(lower, upper) always-valid bounds of the gain, cached with the evidence."""
    if ts.evidence is None:
        return None, None
    if ts.bounds is None:
        ts.bounds = ts.evidence.bounds()
    return ts.bounds
