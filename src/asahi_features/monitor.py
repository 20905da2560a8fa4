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
itself is an always-valid sequential test (:mod:`asahi_features.monitor_sequential`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, NamedTuple, Optional, Tuple, Union

from .errors import ConfigError
from .models import EnrichmentResult
from .monitor_sequential import GainEvidence, compare_gain
from .monitor_stats import (
    AvailabilityWindow,
    LatencyReservoir,
    StateFieldError,
    Welford,
    check_count,
    check_object,
    field_path,
    read_count,
    read_finite,
)
from .settings import MonitorConfig

__all__ = [
    "GROUPS",
    "QUALITY_BASES",
    "Decision",
    "DecisionReason",
    "FeatureMonitor",
]

logger = logging.getLogger(__name__)

GROUPS: Tuple[str, str, str] = ("with_features", "held_out", "fallback")
"""Names of the quality groups, in the order of the internal group index."""
_WITH, _HELD_OUT, _FALLBACK = 0, 1, 2
QUALITY_BASES: Tuple[str, str] = ("held_out", "unenriched")
"""What the "with features" group is compared with (``quality_basis``): the held-out
control group once it has ``min_samples`` scores, otherwise every scored request that
got no features (held out and fallback together)."""
_BASIS_HELD_OUT, _BASIS_UNENRICHED = QUALITY_BASES
_OTHER_TASK = "__other__"
_TUNING_FACTOR = 10
"""The always-valid bounds are tightest at this many times ``min_samples`` per group."""
_SCHEMA = 1

# The persisted counters: (key in the saved "counters" object, attribute, type), in the
# order they are written.
_COUNTERS: Tuple[Tuple[str, str, Callable[[Any], Any]], ...] = (
    ("total", "_total", int),
    ("successful", "_successful", int),
    ("held_out", "_held_out", int),
    ("features_used", "_features_used", int),
    ("latency_sum", "_latency_sum", float),
    ("tokens", "_tokens", int),
    ("stale_dropped", "_stale_dropped", int),
    ("stale_records", "_stale_records", int),
    ("freshness_sum", "_freshness_sum", float),
    ("freshness_max", "_freshness_max", float),
    ("attempts", "_attempts", int),
    ("failures", "_failures", int),
    ("evicted", "_evicted", int),
    ("unmatched", "_unmatched", int),
    ("duplicate_scores", "_duplicate_scores", int),
    ("invalid_scores", "_invalid_scores", int),
    ("duplicate_records", "_duplicate_records", int),
    ("pauses", "_pauses", int),
    ("probes", "_probes", int),
)


class DecisionReason:
    """The reasons :meth:`FeatureMonitor.decision` gives (plain strings)."""

    ENABLED = "enabled"
    """Nothing speaks against enriching."""
    BREAKER_OPEN = "breaker_open"
    """The watched circuit breaker is open: the store is failing persistently."""
    BREAKER_HALF_OPEN = "breaker_half_open"
    """The breaker lets a probe through; enrich so that the probe can happen."""
    STORE_UNAVAILABLE = "store_unavailable"
    """Recent availability is below ``min_availability_pct``: enrichment is paused."""
    AVAILABILITY_PROBE = "availability_probe"
    """Paused for availability, but this request is the periodic probe."""
    QUALITY_NO_GAIN = "quality_no_gain"
    """The data shows (always-valid upper bound of the gain below ``min_quality_gain``)
    that enrichment does not improve quality by the margin."""
    EXPLORATION = "exploration"
    """Quality says no, but this request is in the exploration share."""


class Decision(NamedTuple):
    """The outcome of :meth:`FeatureMonitor.decision`: whether to enrich, and why."""

    enrich: bool
    reason: str


class _TaskStats:
    """Counters of one task type (mutated only under the monitor's lock)."""

    __slots__ = (
        "basis",
        "bounds",
        "disabled",
        "entries",
        "evidence",
        "groups",
        "name",
        "quality",
        "reasons",
        "tokens",
        "total",
        "verdict_version",
        "version",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0
        self.tokens = 0
        self.groups = [0, 0, 0]
        self.reasons: Dict[Any, int] = {}
        self.quality = (Welford(), Welford(), Welford())
        # Shared pending-table values: (task, group, scored). No allocation per record.
        self.entries = tuple((self, g, scored) for scored in (False, True) for g in range(3))
        self.version = 0  # moves with every quality score of this task
        # The quality decision: a state (disabled or not) that only strong evidence
        # changes, and what the scores said when they were last looked at.
        self.disabled = False
        self.verdict_version = -1
        self.basis = _BASIS_UNENRICHED
        self.evidence: Optional[GainEvidence] = None
        self.bounds: Optional[Tuple[float, float]] = None


_Entry = Tuple[_TaskStats, int, bool]
_Quality = Tuple[Welford, Welford, Welford]


class _Restored(NamedTuple):
    """A checked snapshot state, ready to replace a monitor's counters."""

    counters: Dict[str, Any]
    """attribute name -> value, for every entry of ``_COUNTERS``."""
    quality: _Quality
    latency: LatencyReservoir
    tasks: Dict[str, _TaskStats]


def _read_quality(value: Any, path: str) -> _Quality:
    if not isinstance(value, list) or len(value) != len(GROUPS):
        raise StateFieldError(
            path, f"a list of {len(GROUPS)} accumulators ({', '.join(GROUPS)})", value
        )
    return (
        Welford.from_dict(value[0], f"{path}[0]"),
        Welford.from_dict(value[1], f"{path}[1]"),
        Welford.from_dict(value[2], f"{path}[2]"),
    )


def _read_task(name: str, value: Any, path: str, known: Dict[str, Any]) -> _TaskStats:
    data = check_object(value, path)
    ts = _TaskStats(name)
    ts.total = read_count(data, "total", path)
    ts.tokens = read_count(data, "tokens", path, 0)
    groups = data.get("groups")
    if not isinstance(groups, list) or len(groups) != len(GROUPS):
        raise StateFieldError(
            f"{path}.groups",
            f"a list of {len(GROUPS)} counts ({', '.join(GROUPS)})",
            groups,
            missing="groups" not in data,
        )
    ts.groups = [check_count(g, f"{path}.groups[{i}]") for i, g in enumerate(groups)]
    if sum(ts.groups) != ts.total:
        raise StateFieldError(f"{path}.groups", f"counts adding up to total ({ts.total})", groups)
    if "reasons" not in data:
        raise StateFieldError(f"{path}.reasons", "an object of counts", missing=True)
    reasons = check_object(data["reasons"], f"{path}.reasons")
    ts.reasons = {
        known.get(k, k): check_count(v, field_path(f"{path}.reasons", k))
        for k, v in reasons.items()
    }
    if sum(ts.reasons.values()) != ts.total:
        raise StateFieldError(f"{path}.reasons", f"counts adding up to total ({ts.total})", reasons)
    if "quality" not in data:
        raise StateFieldError(f"{path}.quality", "a list of 3 accumulators", missing=True)
    ts.quality = _read_quality(data["quality"], f"{path}.quality")
    for group, (acc, count) in enumerate(zip(ts.quality, ts.groups, strict=True)):
        if acc.n > count:  # at most one score per recorded enrichment
            raise StateFieldError(
                f"{path}.quality[{group}].n", f"at most groups[{group}] ({count})", acc.n
            )
    disabled = data.get("quality_disabled", False)  # absent in older files
    if type(disabled) is not bool:
        raise StateFieldError(f"{path}.quality_disabled", "true or false", disabled)
    ts.disabled = disabled
    return ts


def _read_state(state: Dict[str, Any], config: MonitorConfig) -> _Restored:
    """Check a saved ``state`` object whole and build what it describes.

    Raises:
        StateFieldError: the first field that is missing or out of range.
    """
    from .models import EnrichmentReason

    if "counters" not in state:
        raise StateFieldError("state.counters", "an object of counters", missing=True)
    counters = check_object(state["counters"], "state.counters")
    values: Dict[str, Any] = {}
    for key, attr, kind in _COUNTERS:
        if kind is int:
            values[attr] = read_count(counters, key, "state.counters", 0)
        else:
            values[attr] = read_finite(counters, key, "state.counters", 0.0)
    if values["_failures"] > values["_attempts"]:
        raise StateFieldError(
            "state.counters.failures",
            f"at most counters.attempts ({values['_attempts']})",
            values["_failures"],
        )
    if values["_successful"] + values["_held_out"] > values["_total"]:
        raise StateFieldError(
            "state.counters.successful",
            f"successful + held_out at most counters.total ({values['_total']})",
            values["_successful"],
        )
    if "quality" not in state:
        raise StateFieldError("state.quality", "a list of 3 accumulators", missing=True)
    quality = _read_quality(state["quality"], "state.quality")
    latency = LatencyReservoir(config.latency_reservoir_size, seed=config.seed)
    latency.load(state.get("latency", {}), "state.latency")
    known = {r.value: r for r in EnrichmentReason}
    tasks: Dict[str, _TaskStats] = {}
    raw_tasks = check_object(state.get("tasks", {}), "state.tasks")
    for name, data in raw_tasks.items():
        tasks[name] = _read_task(name, data, field_path("state.tasks", name), known)
    if tasks and sum(ts.total for ts in tasks.values()) != values["_total"]:
        raise StateFieldError(
            "state.tasks",
            f"task totals adding up to counters.total ({values['_total']})",
            sum(ts.total for ts in tasks.values()),
        )
    return _Restored(values, quality, latency, tasks)


def _delta(with_q: Welford, basis: Welford) -> Optional[float]:
    """Mean with features minus mean of the basis; ``None`` when either has no score."""
    return with_q.mean - basis.mean if with_q.n and basis.n else None


def _reason_name(reason: Any) -> str:
    return str(getattr(reason, "value", reason))


def _coerce_score(score: Any) -> Optional[float]:
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


class FeatureMonitor:
    """Tracks enrichment health and quality, and decides whether enrichment is worth it.

    Thread-safe: every update happens under one lock, so concurrent recording loses no
    record. Memory is bounded: latency is a fixed-size reservoir sample, quality is kept
    as running means/variances, the recent-availability window is a ring buffer, and the
    table that matches late quality scores to enrichments holds at most
    ``max_pending_quality`` ids (the oldest are evicted and counted).

    **Should we enrich?** (:meth:`should_enrich`, reason via :meth:`decision`)

    1. *Store failing persistently.* With a watched breaker (:meth:`watch`): ``False``
       while it is ``open``; ``True`` when half-open (so the guard's probe can run) and
       after it closes (closing also clears the recent-availability window).
       Independently, when at least ``failure_window_min_attempts`` of the last
       ``availability_window`` fetch attempts are known and fewer than
       ``min_availability_pct`` percent succeeded, enrichment is *paused*. While paused,
       one request per ``availability_probe_interval_seconds`` is let through as a
       probe; the first successful fetch attempt (or the watched breaker closing again)
       ends the pause and clears the window. No manual reset is ever needed.
    2. *Enrichment not helping.* Per task type, the "with features" group is compared
       with the *basis*: the held-out control group once it has ``min_samples`` scores,
       otherwise every scored request of the task that got no features
       (``quality_basis`` names which). Once both have ``min_samples`` scores, an
       **always-valid sequential test** (:mod:`asahi_features.monitor_sequential`)
       bounds ``gain = mean(with) - mean(basis)`` at every sample size at once, so the
       decision keeps its error rate however often it is read. Enrichment is disabled
       when the upper bound falls below ``min_quality_gain`` (when enrichment truly
       beats the margin, this happens with probability at most ``1 - confidence``,
       ever), and enabled again only when the lower bound rises above it (when it truly
       does not, at most ``1 - confidence`` as well). In between, the last decision
       stands, so it does not flip on noise. While disabled, a share
       ``exploration_fraction`` of calls still says ``True`` so the enriched group
       keeps receiving samples and the decision can change.

    **Quality groups.** ``quality_with_features`` is the mean score of requests whose
    prompt received features; ``quality_without_features`` the mean of every scored
    request that got none (the specification's key). Of those, the deliberately
    held-out control group is also reported alone as ``quality_held_out`` and the rest
    as ``quality_fallback``. ``quality_delta`` is with features minus the basis. Each
    enrichment counts at most one quality score: later scores for the same id are
    counted as ``duplicate_quality_scores`` and ignored.

    Args:
        config: the ``monitor:`` section (defaults to ``MonitorConfig()``).
        breaker: a circuit breaker or a client with ``.breaker`` to watch (see
            :meth:`watch`).
        clock: monotonic seconds, for the probe interval (tests pass a fake clock).
        rng: random source for the exploration share (anything with ``random()``);
            defaults to ``random.Random(config.seed)``.

    Raises:
        ConfigError: a holdout fraction outside ``[0, 1]``.

    Example:
        >>> from asahi_features.models import EnrichmentResult
        >>> monitor = FeatureMonitor()
        >>> result = EnrichmentResult(original_prompt="Hi", enriched_prompt="[ctx] Hi",
        ...     features_used=["tier"], feature_tokens_added=4,
        ...     enrichment_latency_ms=1.5, features_available=True, store_attempted=True)
        >>> monitor.record_enrichment(result, inference_quality=0.8)
        >>> stats = monitor.get_stats()
        >>> stats["total_enrichments"], stats["quality_with_features"]
        (1, 0.8)
        >>> monitor.should_enrich("general")
        True
    """

    def __init__(
        self,
        config: Optional[MonitorConfig] = None,
        *,
        breaker: Any = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Optional[Any] = None,
    ) -> None:
        self.config = config if config is not None else MonitorConfig()
        cfg = self.config
        for task, fraction in cfg.holdout_fraction.items():
            if not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
                raise ConfigError(
                    f"monitor.holdout_fraction[{task!r}] must be between 0 and 1, got {fraction}",
                    key_path=f"monitor.holdout_fraction.{task}",
                )
        self._holdout = dict(cfg.holdout_fraction)
        self._holdout_default = self._holdout.get("*", 0.0)
        self._holdout_key = hashlib.blake2b(str(cfg.seed).encode(), digest_size=16).digest()
        self._clock = clock
        self._rng = rng if rng is not None else random.Random(cfg.seed)
        self._lock = threading.Lock()
        self._watched: Any = None
        self._last_breaker_state: Optional[str] = None
        self._max_pending = cfg.max_pending_quality
        self._max_tasks = cfg.max_task_types
        self._init_state()
        if breaker is not None:
            self.watch(breaker)

    def _init_state(self) -> None:
        cfg = self.config
        self._tasks: Dict[str, _TaskStats] = {}
        self._pending: Dict[str, _Entry] = {}
        self._order: Deque[str] = deque()
        self._latency = LatencyReservoir(cfg.latency_reservoir_size, seed=cfg.seed)
        self._window = AvailabilityWindow(cfg.availability_window)
        self._quality = (Welford(), Welford(), Welford())
        self._total = 0
        self._successful = 0
        self._held_out = 0
        self._features_used = 0
        self._latency_sum = 0.0
        self._tokens = 0
        self._stale_dropped = 0
        self._stale_records = 0
        self._freshness_sum = 0.0
        self._freshness_max = 0.0
        self._attempts = 0
        self._failures = 0
        self._paused = False
        self._next_probe_at = 0.0
        self._probes = 0
        self._pauses = 0
        self._evicted = 0
        self._unmatched = 0
        self._duplicate_scores = 0
        self._invalid_scores = 0
        self._duplicate_records = 0

    def __repr__(self) -> str:
        return (
            f"FeatureMonitor(total_enrichments={self._total}, "
            f"tasks={len(self._tasks)}, paused={self._paused})"
        )

    # ------------------------------------------------------------------ recording

    def record_enrichment(
        self, result: EnrichmentResult, inference_quality: Optional[float] = None
    ) -> None:
        """Record one enrichment outcome, optionally with its quality score.

        Idempotent per ``result.enrichment_id`` while the id is in the pending table:
        recording the same result again counts nothing twice; if it brings a quality
        score and the enrichment has none yet, the score is added.

        Args:
            result: what the enricher returned (any object with the same attributes).
            inference_quality: a quality score of the answer (higher is better), or an
                object with a ``.score`` (e.g. a LlamaIndex ``EvaluationResult``).
                ``None``/NaN scores are counted as ``invalid_quality_scores``.
        """
        score = None if inference_quality is None else _coerce_score(inference_quality)
        # Read everything first: a malformed result fails here, before any counter moves.
        eid = result.enrichment_id
        task = result.task_type
        enriched = result.features_available
        held_out = result.held_out
        reason = result.reason
        tokens = result.feature_tokens_added + 0
        latency = result.enrichment_latency_ms + 0.0
        stale = len(result.dropped_stale)
        attempted = result.store_attempted
        failed = bool(result.store_failed)
        if enriched:
            used = len(result.features_used)
            freshness = result.max_freshness_seconds + 0.0
        with self._lock:
            pending = self._pending
            entry = pending.get(eid)
            if entry is not None:
                self._duplicate_records += 1
                if inference_quality is not None:
                    self._apply_score(eid, entry, score)
                return
            ts = self._tasks.get(task)
            if ts is None:
                ts = self._task_for(task)
            if enriched:
                group = _WITH
                self._successful += 1
                self._features_used += used
                self._freshness_sum += freshness
                if freshness > self._freshness_max:
                    self._freshness_max = freshness
            elif held_out:
                group = _HELD_OUT
                self._held_out += 1
            else:
                group = _FALLBACK
            self._total += 1
            ts.total += 1
            ts.groups[group] += 1
            reasons = ts.reasons
            reasons[reason] = reasons.get(reason, 0) + 1
            self._tokens += tokens
            ts.tokens += tokens
            self._latency_sum += latency
            self._latency.add(latency)
            if stale:
                self._stale_dropped += stale
                self._stale_records += 1
            if attempted:
                self._attempts += 1
                self._window.add(failed)
                if failed:
                    self._failures += 1
                elif self._paused:
                    self._resume("a fetch attempt succeeded")
            if len(pending) >= self._max_pending:
                old = pending.pop(self._order.popleft())
                if not old[2]:
                    self._evicted += 1
            self._order.append(eid)
            entry = ts.entries[group]
            pending[eid] = entry
            if inference_quality is not None:
                self._apply_score(eid, entry, score)

    def record_quality(self, enrichment_id: str, score: Any) -> bool:
        """Attach a (late) quality score to a recorded enrichment.

        Args:
            enrichment_id: ``EnrichmentResult.enrichment_id`` of the scored request.
            score: a number (higher is better), a bool, or an object with ``.score``.

        Returns:
            True when the score was attached. False when the id is unknown (never
            recorded, or evicted from the pending table: counted as
            ``unmatched_quality_scores``), already scored (``duplicate_quality_scores``)
            or the score is unusable (``invalid_quality_scores``).
        """
        value = _coerce_score(score)
        with self._lock:
            entry = self._pending.get(enrichment_id)
            if entry is None:
                self._unmatched += 1
                return False
            return self._apply_score(enrichment_id, entry, value)

    def _apply_score(self, eid: str, entry: _Entry, score: Optional[float]) -> bool:
        ts, group, scored = entry
        if score is None:
            self._invalid_scores += 1
            return False
        if scored:
            self._duplicate_scores += 1
            return False
        ts.quality[group].add(score)
        self._quality[group].add(score)
        ts.version += 1
        self._pending[eid] = ts.entries[group + 3]
        return True

    def _task_for(self, task: str) -> _TaskStats:
        if len(self._tasks) >= self._max_tasks:
            task = _OTHER_TASK
            existing = self._tasks.get(task)
            if existing is not None:
                return existing
        ts = _TaskStats(task)
        self._tasks[task] = ts
        return ts

    # ------------------------------------------------------------------ holdout

    def holdout_fraction(self, task_type: str) -> float:
        """The configured holdout share of ``task_type`` (``"*"`` applies to all)."""
        return self._holdout.get(task_type, self._holdout_default)

    def is_held_out(self, task_type: str, unit_id: Optional[str]) -> bool:
        """Does this request belong to the control group (deliberately not enriched)?

        Reproducible: a keyed BLAKE2b hash of ``(seed, task_type, unit_id)`` mapped to
        ``[0, 1)`` and compared with the task's holdout fraction, so one user always
        gets the same treatment for a task type. Without a ``unit_id`` the request is
        never held out. Any text is accepted, lone surrogates included.

        Args:
            task_type: the request's task type.
            unit_id: what is randomised, usually the user id.
        """
        if unit_id is None:
            return False
        fraction = self._holdout.get(task_type, self._holdout_default)
        if fraction <= 0.0:
            return False
        if fraction >= 1.0:
            return True
        # "surrogatepass": an id with a lone surrogate (json.loads of a cut emoji) hashes
        # too; every other id gives the same bytes (and the same group) as plain UTF-8
        text = f"{task_type}\x1f{unit_id}".encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(text, digest_size=8, key=self._holdout_key).digest()
        return int.from_bytes(digest, "big") < fraction * 18446744073709551616.0

    # ------------------------------------------------------------------ decision

    def watch(self, client_or_breaker: Any) -> None:
        """Follow a circuit breaker so that :meth:`should_enrich` agrees with it.

        Args:
            client_or_breaker: a ``GuardedClient`` (anything with ``.breaker.state``), a
                breaker (anything with ``.state``; an enum with value ``"closed"``,
                ``"open"`` or ``"half_open"``, or that string), or ``None`` to stop.

        Raises:
            TypeError: the object has neither ``.breaker`` nor ``.state``.
        """
        target = client_or_breaker
        if target is not None:
            breaker = getattr(target, "breaker", None)
            if breaker is not None:
                target = breaker
            try:
                target.state  # noqa: B018 - probing the attribute
            except AttributeError:
                raise TypeError(
                    "watch() needs a circuit breaker (with .state) or a client with "
                    f".breaker, got {type(client_or_breaker).__name__}"
                ) from None
            except Exception:  # present but failing now: read again at each decision
                logger.debug("the watched breaker's state cannot be read now", exc_info=True)
        with self._lock:
            self._watched = target
            self._last_breaker_state = None

    def _breaker_state(self) -> Optional[str]:
        target = self._watched
        if target is None:
            return None
        try:
            state = target.state
        except Exception:  # a broken breaker must not break the request path
            logger.debug("reading the watched breaker's state failed", exc_info=True)
            return None
        return str(getattr(state, "value", state)).lower()

    def should_enrich(self, task_type: str) -> bool:
        """Should the enricher fetch features for this request? See the class docs.

        Example:
            >>> FeatureMonitor().should_enrich("faq")
            True
        """
        return self.decision(task_type).enrich

    def decision(self, task_type: str) -> Decision:
        """:meth:`should_enrich` with its reason (one of :class:`DecisionReason`)."""
        with self._lock:
            state = self._breaker_state()
            if state is not None:
                last = self._last_breaker_state
                if state != last:
                    self._last_breaker_state = state
                    if state == "closed" and last is not None:
                        self._window.clear()
                        if self._paused:
                            self._resume("the circuit breaker closed")
                if state == "open":
                    return Decision(False, DecisionReason.BREAKER_OPEN)
                if state == "half_open":  # the guard's probe decides, not the window
                    return Decision(True, DecisionReason.BREAKER_HALF_OPEN)
            if self._availability_paused():
                now = self._clock()
                if now >= self._next_probe_at:
                    self._next_probe_at = now + self.config.availability_probe_interval_seconds
                    self._probes += 1
                    return Decision(True, DecisionReason.AVAILABILITY_PROBE)
                return Decision(False, DecisionReason.STORE_UNAVAILABLE)
            ts = self._lookup_task(task_type)
            if ts is not None and self._quality_disabled(ts):
                if self._rng.random() < self.config.exploration_fraction:
                    return Decision(True, DecisionReason.EXPLORATION)
                return Decision(False, DecisionReason.QUALITY_NO_GAIN)
            return Decision(True, DecisionReason.ENABLED)

    def _lookup_task(self, task_type: str) -> Optional[_TaskStats]:
        ts = self._tasks.get(task_type)
        if ts is None and len(self._tasks) >= self._max_tasks:
            ts = self._tasks.get(_OTHER_TASK)
        return ts

    def _availability_paused(self) -> bool:
        if self._paused:
            return True
        cfg = self.config
        window = self._window
        if window.count < cfg.failure_window_min_attempts:
            return False
        pct = window.availability_pct
        if pct is None or pct >= cfg.min_availability_pct:
            return False
        self._paused = True
        self._pauses += 1
        self._next_probe_at = self._clock() + cfg.availability_probe_interval_seconds
        logger.warning(
            "feature store availability %.1f%% over the last %d attempts is below %.1f%%: "
            "enrichment paused, probing every %.1fs",
            pct,
            window.count,
            cfg.min_availability_pct,
            cfg.availability_probe_interval_seconds,
        )
        return True

    def _resume(self, why: str) -> None:
        self._paused = False
        self._window.clear()
        logger.info("feature store recovered (%s): enrichment resumed", why)

    def _basis(self, quality: _Quality) -> Tuple[str, Welford]:
        """The comparison group: held out once it has ``min_samples`` scores, else every
        scored request without features (held out and fallback merged)."""
        held = quality[_HELD_OUT]
        if held.n >= self.config.min_samples:
            return _BASIS_HELD_OUT, held
        return _BASIS_UNENRICHED, Welford.merged(held, quality[_FALLBACK])

    def _quality_disabled(self, ts: _TaskStats) -> bool:
        """Is enrichment disabled for quality for this task? Re-evaluated (and the state
        moved) only when a new score arrived since the last look."""
        if ts.verdict_version == ts.version:
            return ts.disabled
        cfg = self.config
        with_q = ts.quality[_WITH]
        basis, other = self._basis(ts.quality)
        evidence = None
        if with_q.n >= cfg.min_samples and other.n >= cfg.min_samples:
            evidence = compare_gain(
                with_q,
                other,
                margin=cfg.min_quality_gain,
                alpha=1.0 - cfg.confidence,
                tuning_samples=_TUNING_FACTOR * cfg.min_samples,
            )
        ts.basis, ts.evidence, ts.bounds = basis, evidence, None
        ts.verdict_version = ts.version
        if evidence is not None and (evidence.no_gain if not ts.disabled else evidence.gain):
            ts.disabled = not ts.disabled
            lower, upper = self._bounds(ts)
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

    @staticmethod
    def _bounds(ts: _TaskStats) -> Tuple[Optional[float], Optional[float]]:
        """(lower, upper) always-valid bounds of the gain, cached with the evidence."""
        if ts.evidence is None:
            return None, None
        if ts.bounds is None:
            ts.bounds = ts.evidence.bounds()
        return ts.bounds

    # ------------------------------------------------------------------ reading

    def get_stats(self) -> Dict[str, Any]:
        """Everything the monitor knows, as a JSON-serialisable dict.

        Keys of the specification: ``total_enrichments``, ``successful_enrichments``
        (features reached the prompt), ``avg_features_used`` (over all enrichments),
        ``avg_latency_ms``, ``quality_with_features``, ``quality_without_features``
        (every scored request that got no features, whatever the reason) and
        ``feature_store_availability_pct`` (share of fetch attempts that did not fail;
        requests never sent to the store do not count). Means are ``None`` when there
        is no data.

        Quality, besides: ``quality_held_out`` (the control group alone),
        ``quality_fallback`` (the other requests without features), ``quality_basis``
        (``"held_out"`` once the control group has ``min_samples`` scores, else
        ``"unenriched"``) and ``quality_delta`` (with features minus the basis).

        Also: latency percentiles (``latency_ms``), tokens, staleness drops, fallbacks
        by reason, recent availability, breaker state, pending-table counters and a
        per-task breakdown under ``task_types`` with the same quality keys, the sample
        counts, the always-valid bounds of the gain (``quality_gain_lower_bound`` /
        ``..._upper_bound``, ``None`` until both compared groups have ``min_samples``
        scores) and ``disabled_for_quality``.
        """
        with self._lock:
            stats = self._stats_locked()
        return self._finish_stats(stats)

    def _stats_locked(self) -> Dict[str, Any]:
        breaker_state = self._breaker_state()
        tasks = {name: self._task_stats(ts) for name, ts in sorted(self._tasks.items())}
        reasons: Dict[str, int] = {}
        for ts in self._tasks.values():
            for reason, count in ts.reasons.items():
                key = _reason_name(reason)
                reasons[key] = reasons.get(key, 0) + count
        q = [acc.summary() for acc in self._quality]
        without = Welford.merged(self._quality[_HELD_OUT], self._quality[_FALLBACK])
        basis, basis_acc = self._basis(self._quality)
        latencies = list(self._latency.values)
        total, successful = self._total, self._successful
        stats: Dict[str, Any] = {
            "total_enrichments": total,
            "successful_enrichments": successful,
            "held_out_enrichments": self._held_out,
            "fallback_enrichments": total - successful - self._held_out,
            # the process was too busy to read the store in time: not a store failure,
            # never part of the availability figures
            "overloaded_enrichments": reasons.get("overloaded", 0),
            "avg_features_used": self._features_used / total if total else 0.0,
            "avg_features_used_when_enriched": (
                self._features_used / successful if successful else 0.0
            ),
            "avg_latency_ms": self._latency_sum / total if total else 0.0,
            "quality_with_features": q[_WITH]["mean"],
            "quality_without_features": without.mean if without.n else None,
            "quality_held_out": q[_HELD_OUT]["mean"],
            "quality_fallback": q[_FALLBACK]["mean"],
            "quality_basis": basis,
            "quality_delta": _delta(self._quality[_WITH], basis_acc),
            "quality": dict(zip(GROUPS, q, strict=True)),
            "feature_store_availability_pct": (
                100.0 * (self._attempts - self._failures) / self._attempts
                if self._attempts
                else None
            ),
            "feature_store_availability_pct_recent": self._window.availability_pct,
            "feature_store_attempts": self._attempts,
            "feature_store_failures": self._failures,
            "feature_store_window_attempts": self._window.count,
            "availability_paused": self._paused,
            "availability_pauses": self._pauses,
            "availability_probes": self._probes,
            "breaker_state": breaker_state,
            "feature_tokens_added_total": self._tokens,
            "avg_feature_tokens_added": self._tokens / total if total else 0.0,
            "avg_feature_tokens_added_when_enriched": (
                self._tokens / successful if successful else 0.0
            ),
            "stale_features_dropped": self._stale_dropped,
            "enrichments_with_stale_drops": self._stale_records,
            "avg_freshness_seconds": (self._freshness_sum / successful if successful else None),
            "max_freshness_seconds": self._freshness_max if successful else None,
            "reasons": dict(sorted(reasons.items())),
            "fallbacks_by_reason": {k: v for k, v in sorted(reasons.items()) if k != "enriched"},
            "pending_quality": len(self._pending),
            "pending_evicted": self._evicted,
            "unmatched_quality_scores": self._unmatched,
            "duplicate_quality_scores": self._duplicate_scores,
            "invalid_quality_scores": self._invalid_scores,
            "duplicate_records": self._duplicate_records,
            "task_types": tasks,
        }
        stats["_latencies"] = latencies
        return stats

    @staticmethod
    def _finish_stats(stats: Dict[str, Any]) -> Dict[str, Any]:
        latencies = stats.pop("_latencies")
        p50, p95, p99 = LatencyReservoir.percentiles_of(latencies, (50, 95, 99))
        stats["latency_ms"] = {"p50": p50, "p95": p95, "p99": p99, "sample_size": len(latencies)}
        return stats

    def _task_stats(self, ts: _TaskStats) -> Dict[str, Any]:
        disabled = self._quality_disabled(ts)
        lower, upper = self._bounds(ts)
        q = [acc.summary() for acc in ts.quality]
        without = Welford.merged(ts.quality[_HELD_OUT], ts.quality[_FALLBACK])
        basis_acc = ts.quality[_HELD_OUT] if ts.basis == _BASIS_HELD_OUT else without
        return {
            "total": ts.total,
            "enriched": ts.groups[_WITH],
            "held_out": ts.groups[_HELD_OUT],
            "fallback": ts.groups[_FALLBACK],
            "feature_tokens_added": ts.tokens,
            "reasons": dict(sorted((_reason_name(k), v) for k, v in ts.reasons.items())),
            "quality": dict(zip(GROUPS, q, strict=True)),
            "quality_without_features": without.mean if without.n else None,
            "quality_held_out": q[_HELD_OUT]["mean"],
            "quality_basis": ts.basis,
            "quality_delta": _delta(ts.quality[_WITH], basis_acc),
            "quality_delta_samples": {
                "with_features": q[_WITH]["n"],
                "held_out": q[_HELD_OUT]["n"],
                "unenriched": without.n,
            },
            "quality_gain_lower_bound": lower,
            "quality_gain_upper_bound": upper,
            "disabled_for_quality": disabled,
            "holdout_fraction": self.holdout_fraction(ts.name),
        }

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> Dict[str, Any]:
        """A JSON-serialisable snapshot: ``{"schema", "stats", "state"}``.

        ``stats`` is :meth:`get_stats`; ``state`` holds the raw accumulators that
        :meth:`save` writes and :meth:`load` restores (counters, quality means and
        variances, the latency sample). The pending table and the recent-availability
        window are not persisted: they describe the running process.
        """
        with self._lock:
            stats = self._stats_locked()
            state = self._state()
        stats = self._finish_stats(stats)
        return {"schema": _SCHEMA, "stats": stats, "state": state}

    def _state(self) -> Dict[str, Any]:
        return {
            "counters": {key: getattr(self, attr) for key, attr, _ in _COUNTERS},
            "quality": [acc.to_dict() for acc in self._quality],
            "latency": self._latency.to_dict(),
            "tasks": {
                name: {
                    "total": ts.total,
                    "tokens": ts.tokens,
                    "groups": list(ts.groups),
                    "reasons": {_reason_name(k): v for k, v in ts.reasons.items()},
                    "quality": [acc.to_dict() for acc in ts.quality],
                    "quality_disabled": ts.disabled,
                }
                for name, ts in self._tasks.items()
            },
        }

    def _restore(self, restored: _Restored) -> None:
        with self._lock:
            self._init_state()
            for attr, value in restored.counters.items():
                setattr(self, attr, value)
            self._quality = restored.quality
            self._latency = restored.latency
            self._tasks = restored.tasks

    def _read_snapshot(self, raw: bytes) -> _Restored:
        """Parse and check a whole saved snapshot; nothing of this monitor changes.

        Raises:
            StateFieldError: a field is missing or out of range (the path names it).
            ValueError: the bytes are not UTF-8 JSON.
        """
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise StateFieldError("(top level)", "an object with schema, stats and state", data)
        if "schema" not in data:
            raise StateFieldError("schema", f"{_SCHEMA}", missing=True)
        schema = data["schema"]
        if type(schema) is not int or schema != _SCHEMA:
            raise StateFieldError(
                "schema", f"{_SCHEMA} (the only version this library reads)", schema
            )
        if "stats" in data:  # informational: recomputed from the state
            check_object(data["stats"], "stats")
        if "state" not in data:
            raise StateFieldError("state", "an object", missing=True)
        return _read_state(check_object(data["state"], "state"), self.config)

    def save(self, path: Union[str, Path, None] = None) -> Path:
        """Write the counters and quality history to a JSON file, atomically.

        The file is written next to its destination and renamed over it, so a crash
        never leaves a half-written file.

        Args:
            path: destination; defaults to ``config.persist_path``.

        Returns:
            The path written.

        Raises:
            ConfigError: no path given and ``monitor.persist_path`` is not set.
            OSError: the file cannot be written.
        """
        target = self._persist_target(path)
        data = json.dumps(self.snapshot(), separators=(",", ":"))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        logger.debug("monitor state saved to %s", target)
        return target

    def _persist_target(self, path: Union[str, Path, None]) -> Path:
        if path is None:
            path = self.config.persist_path
        if path is None:
            raise ConfigError(
                "no path to save/load the monitor state: pass one or set monitor.persist_path",
                key_path="monitor.persist_path",
            )
        return Path(path)

    def restore(self, path: Union[str, Path, None] = None, *, missing_ok: bool = True) -> bool:
        """Replace this monitor's counters with those saved in ``path``.

        Args:
            path: the file :meth:`save` wrote; defaults to ``config.persist_path``.
            missing_ok: a missing file leaves the monitor empty and returns False
                (a first start); with ``False`` it raises ``FileNotFoundError``.

        The whole file is checked before anything is restored: the schema version, every
        counter (an integer from 0 to 2**63-1, or a finite number for sums), every task
        entry (its groups and reasons add up to its total) and every quality accumulator
        (finite mean, finite non-negative m2). A file that fails any check raises here,
        naming the field, and the monitor is left empty; a monitor that loaded never
        fails later because of what it loaded.

        Returns:
            True when a saved state was loaded.

        Raises:
            ConfigError: the file is not a saved monitor state (the message names the
                offending field and what is allowed there), or no path is known.
        """
        target = self._persist_target(path)
        try:
            raw = target.read_bytes()
        except FileNotFoundError:
            if missing_ok:
                logger.info("no saved monitor state at %s: starting empty", target)
                return False
            raise
        problem: Optional[str] = None
        try:
            restored = self._read_snapshot(raw)
        except StateFieldError as exc:
            problem = str(exc)
        except UnicodeDecodeError as exc:
            problem = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        except json.JSONDecodeError as exc:
            problem = f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        except RecursionError:
            problem = "not a snapshot (JSON nested too deeply)"
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            # a case the checks above do not name: still refused here, never later
            problem = f"{type(exc).__name__}: {str(exc)[:120]}"
        if problem is not None:
            with self._lock:
                self._init_state()
            raise ConfigError(
                f"{target} is not a saved FeatureMonitor state (schema {_SCHEMA}): {problem}",
                key_path="monitor.persist_path",
            )
        self._restore(restored)
        return True

    @classmethod
    def load(
        cls,
        path: Union[str, Path, None] = None,
        config: Optional[MonitorConfig] = None,
        **kwargs: Any,
    ) -> FeatureMonitor:
        """A monitor restored from :meth:`save`'s file (empty if the file is missing).

        Args:
            path: the saved file; defaults to ``config.persist_path``.
            config: the ``monitor:`` section for the new monitor.
            **kwargs: passed to the constructor (``breaker``, ``clock``, ``rng``).

        Raises:
            ConfigError: the file is not a saved monitor state, or no path is known.

        Example:
            >>> import tempfile, pathlib
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "monitor.json"
            >>> _ = FeatureMonitor().save(path)
            >>> FeatureMonitor.load(path).get_stats()["total_enrichments"]
            0
        """
        monitor = cls(config, **kwargs)
        monitor.restore(path)
        return monitor

    # ------------------------------------------------------------------ Prometheus

    def register_prometheus(self, registry: Any = None) -> Any:
        """Expose the monitor as Prometheus metrics (needs the ``prometheus`` extra).

        Metrics (all prefixed ``asahi_features_``): ``enrichments_total{task_type,
        reason}``, ``feature_tokens_added_total{task_type}``,
        ``stale_features_dropped_total``, ``feature_store_attempts_total``,
        ``feature_store_failures_total``, ``feature_store_availability_ratio{window=
        "overall"|"recent"}``, ``enrichment_latency_seconds`` (summary with 0.5/0.95/0.99
        quantiles), ``quality_mean{task_type,group}``, ``quality_samples_total{task_type,
        group}``, ``enrichment_enabled{task_type}`` (1 unless disabled for quality),
        ``availability_paused``, ``breaker_open``, ``pending_quality``,
        ``pending_evicted_total`` and ``unmatched_quality_scores_total``.

        One monitor per registry: the metric names carry no monitor label, so a second
        registration in the same registry is refused by prometheus-client.

        Args:
            registry: a ``prometheus_client.CollectorRegistry`` (default: the global
                ``REGISTRY``).

        Returns:
            The registered collector (pass it to ``registry.unregister`` to remove it).

        Raises:
            ImportError: prometheus-client is not installed.
            ValueError: the registry already holds these metric names.
        """
        prom = _require_prometheus()
        collector = _MonitorCollector(self)
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
