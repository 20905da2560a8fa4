"""Results: a fetched plan becomes an :class:`~asahi_features.models.EnrichmentResult`.

Stale features are left out one by one (with their reason), the policy applied, the
blocks fitted into ``max_feature_tokens``, the reason of a request left un-enriched
chosen, and the monitor and the observers told. Shared by the sync and async paths.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from ..budget import LAST_BLOCK_END, Block, Line, Seam, fit_blocks
from ..errors import ConfigError, FeatureConfigError
from ..models import (
    EnrichmentReason,
    EnrichmentResult,
    FeatureStatus,
    FeatureVector,
    trusted_constructor,
    utc_now,
)
from ..observers import EnrichmentObserver, EnrichmentTrace
from ..stores.base import UNKNOWN_AGE
from .blocks import _BAD_LINE, _NO_LINE, _STALE_NOTE, _Blocks
from .gate import EnrichmentGate
from .planning import _INVALID, _Plan
from .policy import _plain

logger = logging.getLogger("asahi_features.enricher")
"""Every part logs as ``asahi_features.enricher`` (the name the module had before it was
split: log configuration and filters keep working)."""

_FOUND = FeatureStatus.FOUND
_UNAVAILABLE = FeatureStatus.UNAVAILABLE
_OVERLOADED = FeatureStatus.OVERLOADED
_INVALID_ID = FeatureStatus.INVALID_ID
_ENRICHED = EnrichmentReason.ENRICHED
_NO_VECTORS: Dict[str, FeatureVector] = {}
"""A finished plan's vectors (released); shared, never written to."""
_NO_LIMITS: Dict[str, float] = {}


_new_result = trusted_constructor(EnrichmentResult)
"""An EnrichmentResult from the complete field dict that ``_result`` / ``_empty`` give."""


class _Results(_Blocks):
    """The result-building part of :class:`~asahi_features.enricher.FeatureEnricher`."""

    monitor: Optional[EnrichmentGate]
    observers: List[EnrichmentObserver]
    _clock: Callable[[], float]
    _seam: Seam
    _end_tokens: Optional[int]

    if TYPE_CHECKING:  # defined by the other parts of FeatureEnricher

        def _monitor_failed(self, call: str, what: str = "monitor") -> None: ...

    def _finish_all(
        self, plans: List[_Plan], store_ms: Optional[float] = None
    ) -> List[EnrichmentResult]:
        """Finish the plans in order, releasing each plan's vectors once it is rendered
        (fewer live objects for the garbage collector to promote and scan). ``store_ms``:
        how long the batch's store read took (timed only when there are observers)."""
        results: List[EnrichmentResult] = []
        append = results.append
        ids = os.urandom(16 * len(plans)).hex()  # one system call for the batch's ids
        size = len(plans)
        for k, plan in enumerate(plans):
            append(self._finish(plan, ids[32 * k : 32 * k + 32], store_ms, size))
            plan.vectors = _NO_VECTORS
        plans.clear()
        return results

    def _finish(
        self,
        plan: _Plan,
        enrichment_id: Optional[str] = None,
        store_ms: Optional[float] = None,
        batch_size: int = 1,
    ) -> EnrichmentResult:
        values = plan.done
        if values is not None:
            store_ms = None  # decided before any read: the store was not asked
        else:
            try:
                values = self._build(plan)
            except (FeatureConfigError, ConfigError):
                raise
            except Exception as exc:  # this request only: un-enriched, with a reason
                self._invalid(exc, "request")
                values = self._empty(plan, _INVALID)
                values["store_attempted"] = True
                values["store_failed"] = plan.failed
        values["enrichment_latency_ms"] = (self._clock() - plan.started) * 1000.0
        values["enrichment_id"] = enrichment_id or os.urandom(16).hex()
        result = _new_result(values)
        if self.monitor is not None:
            try:
                self.monitor.record_enrichment(result)
            except Exception:  # a monitor bug must never fail the request
                self._monitor_failed("record_enrichment")
        if self.observers:
            latency = values["enrichment_latency_ms"]
            trace = EnrichmentTrace(plan.request, latency, store_ms, batch_size)
            for observer in self.observers:
                try:
                    observer.enrichment_finished(result, trace)
                except Exception:  # an observer bug must never fail the request
                    self._monitor_failed("enrichment_finished", "observer")
        return result

    def _build(self, plan: _Plan) -> Dict[str, Any]:
        # The hot path of every request: locals, constants and cached lines on purpose.
        threshold = self.config.freshness_threshold_seconds
        overridden = bool(self.config.freshness_overrides)
        stale_note = self.config.stale_note
        noted = False  # a stale note line was added (it is no feature line)
        keep_unknown = self.config.unknown_age == "keep"
        line_cache = self._line_cache
        blocks: List[Block] = []
        status: Dict[str, FeatureStatus] = {}
        dropped_stale: List[str] = []
        dropped_policy: List[str] = []
        block_ages: List[List[float]] = []  # per feature block, the age of each line
        # the sum of the known token counts of the blocks (None once one is unknown)
        known_tokens: Optional[int] = self._end_tokens
        found = with_values = fresh = allowed = invalid = 0
        failed = plan.failed
        vectors = plan.vectors
        for entity_type in plan.identities:
            vector = vectors.get(entity_type)
            if vector is None:
                status[entity_type] = _UNAVAILABLE
                failed = True
                continue
            vector_status = vector.status
            status[entity_type] = vector_status
            if vector_status is not _FOUND:
                if vector_status is _UNAVAILABLE:
                    failed = True
                elif vector_status is _OVERLOADED:
                    plan.overloaded = True
                continue
            found += 1
            lines: List[Line] = []
            line_ages: List[float] = []
            stale_before = len(dropped_stale)
            features = vector.features
            freshness = vector.feature_freshness
            default_age = vector.freshness_seconds
            # a Feast view's ttl, or a configured override, may tighten the threshold
            limits = getattr(vector, "freshness_limits", None) or _NO_LIMITS
            limited = bool(limits) or overridden
            recipe = plan.features.recipes[entity_type]
            if entity_type in plan.features.services:
                # a feature service: its features in the store's order, each under policy
                decide = self._policy.decide
                recipe = tuple((name, decide(name)) for name in features)
            for name, decision in recipe:
                value = features.get(name)
                if value is None:
                    continue
                kind = type(value)
                if kind is not str and isinstance(value, float) and math.isnan(value):
                    continue
                with_values += 1
                age = freshness.get(name, default_age)
                limit: float = threshold
                if limited:  # inline: the common case is one dict lookup
                    if overridden:
                        limit = self._limit(name, limits, threshold)[0]
                    else:
                        ttl = limits.get(name)
                        if ttl is not None and ttl < threshold:
                            limit = ttl
                if age > limit and not (keep_unknown and age >= UNKNOWN_AGE):
                    dropped_stale.append(name)
                    self._note_stale(plan, name, age, limits, threshold)
                    continue
                fresh += 1
                if decision == "drop":
                    dropped_policy.append(name)
                    continue
                allowed += 1
                if kind is str and decision is None and len(value) <= 256:
                    # the key _value_key gives a str is the str
                    line = line_cache.get((name, value)) or self._line(name, value, None)
                else:
                    line = self._line(name, value, decision)
                if line is _NO_LINE:
                    continue
                if line is _BAD_LINE:
                    invalid += 1
                    continue
                lines.append(line)
                line_ages.append(age)
                if known_tokens is not None:
                    counted = line.tokens
                    known_tokens = None if counted is None else known_tokens + counted
            if stale_note and len(dropped_stale) > stale_before and lines:
                note = self._stale_line(plan, dropped_stale[stale_before:])
                if note is not None:
                    noted = True
                    lines.append(note)
                    line_ages.append(0.0)
                    if known_tokens is not None:
                        counted = note.tokens
                        known_tokens = None if counted is None else known_tokens + counted
            if lines:
                header, head_tokens = self._header_counted(entity_type)
                blocks.append(Block(header, lines, head_tokens))
                block_ages.append(line_ages)
                if known_tokens is not None:
                    known_tokens = None if head_tokens is None else known_tokens + head_tokens
        counts = (found, with_values, fresh, allowed, invalid)
        if not blocks:
            return self._result(
                plan, "", 0, [], [], status, dropped_stale, dropped_policy, 0.0, counts, failed
            )
        # what the added text costs at its seam with this prompt (see budget.Seam)
        seam = self._seam.delta(plan.request.prompt)
        if (
            len(blocks) == 1
            and known_tokens is not None
            and known_tokens + seam <= self.config.max_feature_tokens
            and not plan.request.context
        ):
            # The common case, joined here: exactly what fit_blocks gives for one block
            # that fits (segment counts are exact, so the sum is the count).
            lines = blocks[0].lines
            text = blocks[0].head + "".join([line.text_nl for line in lines]) + LAST_BLOCK_END
            return self._result(
                plan,
                text,
                known_tokens + seam,
                [line.name for line in lines if not noted or line.name != _STALE_NOTE],
                [],
                status,
                dropped_stale,
                dropped_policy,
                max(block_ages[0]),
                counts,
                failed,
            )
        try:
            context_block = self._context_block(plan, dropped_policy)
        except Exception as exc:  # a context that cannot be read: left out, not the features
            self._invalid(exc, "request context")
            context_block = None
        if context_block is not None:
            blocks.append(context_block)
        fitted = fit_blocks(
            blocks,
            self._count_tokens,
            self.config.max_feature_tokens - seam,
            count_segment=self._segment_tokens if self._segments_exact else None,
        )
        # feature lines are those of the feature blocks (the context block comes last)
        used: List[str] = []
        kept_ages: List[float] = []
        for line, (index, position) in zip(fitted.kept, fitted.kept_at, strict=True):
            if index < len(block_ages) and not (noted and line.name == _STALE_NOTE):
                used.append(line.name)
                kept_ages.append(block_ages[index][position])
        return self._result(
            plan,
            fitted.text,
            fitted.tokens + seam,
            used,
            fitted.dropped,
            status,
            dropped_stale,
            dropped_policy,
            max(kept_ages, default=0.0),
            counts,
            failed,
        )

    def _limit(self, name: str, limits: Mapping[str, float], threshold: float) -> Tuple[float, str]:
        """A feature's freshness limit and where it comes from: its override, else its
        view's ttl when shorter than the threshold, else the threshold."""
        overrides = self.config.freshness_overrides
        if overrides:
            override = overrides.get(name)
            if override is None and ":" in name:
                override = overrides.get(_plain(name))
            if override is not None:
                return float(override), "freshness_overrides"
        ttl = limits.get(name)
        if ttl is not None and ttl < threshold:
            return ttl, "view ttl"
        return float(threshold), "freshness_threshold_seconds"

    def _note_stale(
        self, plan: _Plan, name: str, age: float, limits: Mapping[str, float], threshold: float
    ) -> None:
        """Say in the result why ``name`` was dropped as stale."""
        limit, source = self._limit(name, limits, threshold)
        if age >= UNKNOWN_AGE:
            why = "unknown age (no usable event timestamp)"
        else:
            why = f"age {age:.0f} s > limit {limit:g} s ({source})"
        if plan.stale_reasons is None:
            plan.stale_reasons = {}
        plan.stale_reasons[name] = why

    def _result(
        self,
        plan: _Plan,
        text: str,
        tokens: int,
        used: List[str],
        dropped_budget: List[str],
        status: Dict[str, FeatureStatus],
        dropped_stale: List[str],
        dropped_policy: List[str],
        max_age: float,
        counts: Tuple[int, int, int, int, int],
        failed: bool,
    ) -> Dict[str, Any]:
        """The result's field values. ``text`` and ``tokens`` are what fitting gave,
        ``used`` the feature lines that made it in and ``max_age`` the oldest of them."""
        request = plan.request
        if used:
            reason = _ENRICHED
        else:
            text = ""  # context lines alone never make an enrichment
            reason = self._reason_not_enriched(
                counts,
                failed,
                bool(dropped_budget),
                plan.overloaded,
                bool(status) and all(s is _INVALID_ID for s in status.values()),
            )
        # A read that never left this process tells nothing about the store: a request
        # whose every read was refused that way did not attempt the store at all.
        attempted = not plan.overloaded or any(s is not _OVERLOADED for s in status.values())
        return {  # in the model's field order (model_dump follows this dict)
            "original_prompt": request.prompt,
            "enriched_prompt": text + request.prompt if text else request.prompt,
            "features_used": used,
            "feature_tokens_added": tokens if text else 0,
            "enrichment_latency_ms": 0.0,  # set by _finish
            "features_available": bool(used),
            "enrichment_id": "",  # set by _finish
            "task_type": request.task_type,
            "reason": reason,
            "feature_context": text,
            "entity_status": status,
            "missing_entities": plan.missing_entities,
            "dropped_stale": dropped_stale,
            "dropped_budget": dropped_budget,
            "dropped_policy": dropped_policy,
            "held_out": False,
            "store_attempted": attempted,
            "store_failed": failed,
            "max_freshness_seconds": max_age if used else 0.0,
            "created_at": datetime.now(timezone.utc),
            "stale_reasons": plan.stale_reasons or {},
        }

    @staticmethod
    def _reason_not_enriched(
        counts: Tuple[int, int, int, int, int],
        failed: bool,
        budget_dropped: bool,
        overloaded: bool = False,
        invalid_ids: bool = False,
    ) -> EnrichmentReason:
        found, with_values, fresh, allowed, invalid = counts
        if failed and found == 0:
            return EnrichmentReason.STORE_UNAVAILABLE
        if overloaded and found == 0:
            return EnrichmentReason.OVERLOADED
        if invalid_ids and found == 0:  # every entity's id was invalid: nothing else failed
            return EnrichmentReason.INVALID_ENTITY_ID
        if found == 0:
            return EnrichmentReason.ENTITY_MISSING
        if with_values == 0:
            return EnrichmentReason.NO_FEATURE_VALUES
        if fresh == 0:
            return EnrichmentReason.ALL_STALE
        if allowed == 0:
            return EnrichmentReason.POLICY_FILTERED
        if budget_dropped:
            return EnrichmentReason.BUDGET_EXHAUSTED
        if invalid:
            return EnrichmentReason.INVALID_INPUT
        return EnrichmentReason.NO_FEATURE_VALUES

    def _empty(
        self, plan: _Plan, reason: EnrichmentReason, *, held_out: bool = False
    ) -> Dict[str, Any]:
        request = plan.request
        return {  # in the model's field order, like _result
            "original_prompt": request.prompt,
            "enriched_prompt": request.prompt,
            "features_used": [],
            "feature_tokens_added": 0,
            "enrichment_latency_ms": 0.0,
            "features_available": False,
            "enrichment_id": "",
            "task_type": request.task_type,
            "reason": reason,
            "feature_context": "",
            "entity_status": {},
            "missing_entities": list(plan.missing_entities),
            "dropped_stale": [],
            "dropped_budget": [],
            "dropped_policy": [],
            "held_out": held_out,
            "store_attempted": False,
            "store_failed": False,
            "max_freshness_seconds": 0.0,
            "created_at": utc_now(),
            "stale_reasons": {},
        }
