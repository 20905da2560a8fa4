"""Recording: what one enrichment and one quality score change in a monitor's counts.

:func:`read_outcome` reads what counts of an
:class:`~asahi_features.models.EnrichmentResult` (outside the monitor's lock, so that a
malformed result fails before any counter moves). :class:`Tally` holds everything a
monitor has counted (counters, quality, latency sample, tasks, the pending table that
matches late quality scores to enrichments, the availability gate) and applies
outcomes and scores to it under the monitor's lock. :class:`ScoreEvent` is what the
monitor's ``score_observers`` are told about an accepted score (:func:`notify_score`).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, NamedTuple, Optional, Tuple

from ..settings import MonitorConfig
from . import per_model
from .availability import AvailabilityGate
from .counters import (
    FALLBACK,
    GROUPS,
    HELD_OUT,
    OTHER_TASK,
    WITH,
    Counters,
    Entry,
    TaskStats,
    new_quality,
)
from .per_model import LLMCall, merge_calls
from .persistence import Restored
from .stats import LatencyReservoir

logger = logging.getLogger("asahi_features.monitor")

__all__ = ["Outcome", "ScoreEvent", "Scored", "Tally", "notify_score", "read_outcome"]


class ScoreEvent(NamedTuple):
    """One quality score the monitor accepted, as its ``score_observers`` see it."""

    enrichment_id: str
    task_type: str
    """The task it was counted under (``"__other__"`` past ``max_task_types``)."""
    group: str
    """``with_features``, ``held_out`` or ``fallback``."""
    score: float
    raw: Any
    """The score as given (a number, a bool or an object with ``.score``)."""


Scored = Tuple[Entry, float]
"""An accepted score: the pending entry it was counted under, and the score."""


Outcome = Tuple[str, str, bool, bool, Any, int, float, int, bool, bool, int, float]
"""What one enrichment result counts (see :func:`read_outcome`), in this order:
enrichment id, task type, enriched, held out, reason, feature tokens added, latency (ms),
stale features dropped, store attempted, store failed, features used and freshness
(seconds; both 0 unless enriched). A plain tuple: this is on every request's path."""


def read_outcome(result: Any) -> Outcome:
    """Read every counted attribute of ``result`` (an ``EnrichmentResult`` or any object
    with its attributes) at once.

    Raises:
        AttributeError, TypeError: the result lacks an attribute or a number is not one.
    """
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
    used, freshness = 0, 0.0
    if enriched:
        used = len(result.features_used)
        freshness = result.max_freshness_seconds + 0.0
    return (
        eid,
        task,
        enriched,
        held_out,
        reason,
        tokens,
        latency,
        stale,
        attempted,
        failed,
        used,
        freshness,
    )


def notify_score(
    observers: Iterable[Callable[[ScoreEvent], None]],
    enrichment_id: str,
    scored: Scored,
    raw: Any,
) -> None:
    """Tell the score observers (outside the lock, on the caller's thread) about an
    accepted score; an observer that raises is logged, never the caller's problem."""
    (ts, group, _), value = scored
    event = ScoreEvent(enrichment_id, ts.name, GROUPS[group], value, raw)
    for observer in observers:
        try:
            observer(event)
        except Exception:
            logger.warning("a quality score observer failed; ignored", exc_info=True)


class Tally:
    """Everything one monitor has counted, mutated only under the monitor's lock.

    A restore (or a shared-state replica starting again from zero) replaces the whole
    tally: the pending table and the availability gate describe the running process and
    start empty; counters, quality, latency and tasks come from ``restored`` if given.
    """

    __slots__ = (
        "counters",
        "gate",
        "latency",
        "max_models",
        "max_pending",
        "max_tasks",
        "order",
        "pending",
        "pending_calls",
        "quality",
        "tasks",
    )

    def __init__(self, config: MonitorConfig, restored: Optional[Restored] = None) -> None:
        self.max_pending = config.max_pending_quality
        self.max_tasks = config.max_task_types
        self.max_models = config.max_models
        self.pending: Dict[str, Entry] = {}
        # the model (and usage) given for a pending id before its score arrives
        self.pending_calls: Dict[str, LLMCall] = {}
        self.order: Deque[str] = deque()
        self.gate = AvailabilityGate(config.availability_window)
        if restored is None:
            self.counters = Counters()
            self.quality = new_quality()
            self.latency = LatencyReservoir(config.latency_reservoir_size, seed=config.seed)
            self.tasks: Dict[str, TaskStats] = {}
        else:
            self.counters, self.quality, self.latency, self.tasks = restored

    def record(
        self, outcome: Outcome, given: bool, score: Optional[float], call: Optional[LLMCall]
    ) -> Optional[Scored]:
        """Count one outcome (once per enrichment id while it is pending) and, when a
        score was ``given`` (``score`` is ``None`` if it was unusable), apply it.

        Returns:
            The entry and score when a score was taken.
        """
        (
            eid,
            task,
            enriched,
            held_out,
            reason,
            tokens,
            latency,
            stale,
            attempted,
            failed,
            used,
            freshness,
        ) = outcome
        c = self.counters
        pending = self.pending
        entry = pending.get(eid)
        if entry is not None:
            c.duplicate_records += 1
            if given:
                return self.take(eid, entry, score, call)
            if call is not None and not entry[2]:
                self.remember_call(eid, call)
            return None
        ts = self.tasks.get(task)
        if ts is None:
            ts = self.task_for(task)
        if enriched:
            group = WITH
            c.successful += 1
            c.features_used += used
            c.freshness_sum += freshness
            if freshness > c.freshness_max:
                c.freshness_max = freshness
        elif held_out:
            group = HELD_OUT
            c.held_out += 1
        else:
            group = FALLBACK
        c.total += 1
        ts.total += 1
        ts.groups[group] += 1
        reasons = ts.reasons
        reasons[reason] = reasons.get(reason, 0) + 1
        c.tokens += tokens
        ts.tokens += tokens
        c.latency_sum += latency
        self.latency.add(latency)
        if stale:
            c.stale_dropped += stale
            c.stale_records += 1
        if attempted:
            c.attempts += 1
            if failed:
                c.failures += 1
            self.gate.attempt(failed)
        if len(pending) >= self.max_pending:
            old_id = self.order.popleft()
            old = pending.pop(old_id)
            if not old[2]:
                c.evicted += 1
            if self.pending_calls:
                self.pending_calls.pop(old_id, None)
        self.order.append(eid)
        entry = ts.entries[group]
        pending[eid] = entry
        if given:
            return self.take(eid, entry, score, call)
        if call is not None:
            self.pending_calls[eid] = call
        return None

    def record_quality(
        self, eid: str, score: Optional[float], call: Optional[LLMCall]
    ) -> Optional[Scored]:
        """Apply a (late) score to a pending enrichment (an unknown id is counted as
        unmatched); the entry and score when it was taken."""
        entry = self.pending.get(eid)
        if entry is None:
            self.counters.unmatched += 1
            return None
        return self.take(eid, entry, score, call)

    def take(
        self, eid: str, entry: Entry, score: Optional[float], call: Optional[LLMCall]
    ) -> Optional[Scored]:
        """:meth:`score`, as the entry and the score when it was taken."""
        if self.score(eid, entry, score, call) and score is not None:
            return entry, score
        return None

    def score(
        self, eid: str, entry: Entry, score: Optional[float], call: Optional[LLMCall] = None
    ) -> bool:
        """Count ``score`` for a pending entry: False (and counted) when the score is
        unusable or the enrichment already has one."""
        ts, group, scored = entry
        if score is None:
            self.counters.invalid_scores += 1
            if call is not None and not scored:  # a valid score may follow
                self.remember_call(eid, call)
            return False
        if scored:
            self.counters.duplicate_scores += 1
            return False
        ts.quality[group].add(score)
        self.quality[group].add(score)
        ts.version += 1
        self.pending[eid] = ts.entries[group + 3]
        if self.pending_calls:
            call = merge_calls(call, self.pending_calls.pop(eid, None))
        if call is not None:
            per_model.add_score(ts.models, call, group, score, self.max_models)
        return True

    def remember_call(self, eid: str, call: LLMCall) -> None:
        """Keep the model and usage given for ``eid`` until its score arrives."""
        self.pending_calls[eid] = merge_calls(call, self.pending_calls.get(eid)) or call

    def task_for(self, task: str) -> TaskStats:
        """The counters of ``task``, created (or ``"__other__"`` past ``max_task_types``)."""
        if len(self.tasks) >= self.max_tasks:
            task = OTHER_TASK
            existing = self.tasks.get(task)
            if existing is not None:
                return existing
        ts = TaskStats(task)
        self.tasks[task] = ts
        return ts

    def lookup_task(self, task_type: str) -> Optional[TaskStats]:
        """The counters ``task_type`` is counted under, if any (never creates one)."""
        ts = self.tasks.get(task_type)
        if ts is None and len(self.tasks) >= self.max_tasks:
            ts = self.tasks.get(OTHER_TASK)
        return ts
