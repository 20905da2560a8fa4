"""Span and event attributes of the OpenTelemetry integration, built without OpenTelemetry.

Names follow the OpenTelemetry GenAI semantic conventions where one applies
(``gen_ai.operation.name``, the ``gen_ai.evaluation.*`` attributes of the
``gen_ai.evaluation.result`` event, ``error.type``, ``user.id``); everything specific to
enrichment lives under ``asahi.``. Only names, counts, reasons and timings are exported:
never a feature value, a prompt or a context value, and ids only when asked for
(``record_ids``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Union

from ..models import EnrichmentReason

if TYPE_CHECKING:
    from ..models import EnrichmentResult
    from ..monitor import ScoreEvent
    from ..observers import EnrichmentTrace, FailedCall

__all__ = [
    "ENRICHMENT_SPAN_NAME",
    "EVALUATION_EVENT_NAME",
    "EVALUATION_SPAN_NAME",
    "FAILURE_REASONS",
    "enrichment_attributes",
    "evaluation_attributes",
    "failure_attributes",
    "score_label",
]

Attributes = Dict[str, Union[str, bool, int, float, Tuple[str, ...]]]

# -- GenAI semantic conventions -------------------------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
RETRIEVAL = "retrieval"
"""The GenAI operation an enrichment is: it retrieves context for a prompt."""
GEN_AI_EVALUATION_NAME = "gen_ai.evaluation.name"
GEN_AI_EVALUATION_SCORE_VALUE = "gen_ai.evaluation.score.value"
GEN_AI_EVALUATION_SCORE_LABEL = "gen_ai.evaluation.score.label"
ERROR_TYPE = "error.type"
USER_ID = "user.id"

ENRICHMENT_SPAN_NAME = "retrieval asahi_features"
"""``{gen_ai.operation.name} {data source}``: one span per enrichment."""
EVALUATION_EVENT_NAME = "gen_ai.evaluation.result"
EVALUATION_SPAN_NAME = "evaluation asahi_features"
"""The short span carrying an evaluation event when no span is current."""
DEFAULT_EVALUATION_NAME = "asahi.inference_quality"

# -- asahi namespace ------------------------------------------------------------------
TASK_TYPE = "asahi.task_type"
ENRICHMENT_ID = "asahi.enrichment.id"
REASON = "asahi.enrichment.reason"
ENRICHED = "asahi.enrichment.enriched"
HELD_OUT = "asahi.enrichment.held_out"
LATENCY_MS = "asahi.enrichment.latency_ms"
TOKENS_ADDED = "asahi.enrichment.tokens_added"
FEATURES_USED = "asahi.features.used"
FEATURES_USED_COUNT = "asahi.features.used_count"
DROPPED_STALE_COUNT = "asahi.features.dropped_stale_count"
DROPPED_BUDGET_COUNT = "asahi.features.dropped_budget_count"
DROPPED_POLICY_COUNT = "asahi.features.dropped_policy_count"
MAX_AGE_SECONDS = "asahi.features.max_age_seconds"
STORE_ATTEMPTED = "asahi.store.attempted"
STORE_FAILED = "asahi.store.failed"
STORE_LATENCY_MS = "asahi.store.latency_ms"
ENTITY_STATUS = "asahi.entity.{}.status"
ENTITIES_MISSING = "asahi.entity.missing"
BATCH_SIZE = "asahi.batch.size"
ORGANIZATION_ID = "asahi.organization.id"
QUALITY_GROUP = "asahi.quality.group"

FAILURE_REASONS = frozenset(
    {
        EnrichmentReason.STORE_UNAVAILABLE,
        EnrichmentReason.OVERLOADED,
        EnrichmentReason.INVALID_INPUT,
    }
)
"""Reasons that make an enrichment span's status ERROR (the request still got its
un-enriched prompt). Every other reason is a normal outcome (status unset)."""


def _value(reason: Any) -> str:
    return str(getattr(reason, "value", reason))


def _ids(trace: EnrichmentTrace, out: Attributes) -> None:
    request = trace.request
    if request.user_id is not None:
        out[USER_ID] = str(request.user_id)
    if request.organization_id is not None:
        out[ORGANIZATION_ID] = str(request.organization_id)


def enrichment_attributes(
    result: EnrichmentResult, trace: EnrichmentTrace, *, record_ids: bool = False
) -> Attributes:
    """The attributes of one enrichment's span (feature names and counts, no values)."""
    out: Attributes = {
        GEN_AI_OPERATION_NAME: RETRIEVAL,
        TASK_TYPE: result.task_type,
        ENRICHMENT_ID: result.enrichment_id,
        REASON: _value(result.reason),
        ENRICHED: bool(result.features_available),
        HELD_OUT: bool(result.held_out),
        LATENCY_MS: float(result.enrichment_latency_ms),
        TOKENS_ADDED: int(result.feature_tokens_added),
        FEATURES_USED: tuple(result.features_used),
        FEATURES_USED_COUNT: len(result.features_used),
        DROPPED_STALE_COUNT: len(result.dropped_stale),
        DROPPED_BUDGET_COUNT: len(result.dropped_budget),
        DROPPED_POLICY_COUNT: len(result.dropped_policy),
        MAX_AGE_SECONDS: float(result.max_freshness_seconds),
        STORE_ATTEMPTED: bool(result.store_attempted),
        STORE_FAILED: bool(result.store_failed),
        BATCH_SIZE: trace.batch_size,
    }
    if trace.store_latency_ms is not None:
        out[STORE_LATENCY_MS] = float(trace.store_latency_ms)
    for entity_type, status in result.entity_status.items():
        out[ENTITY_STATUS.format(entity_type)] = _value(status)
    if result.missing_entities:
        out[ENTITIES_MISSING] = tuple(result.missing_entities)
    if result.reason in FAILURE_REASONS:
        out[ERROR_TYPE] = _value(result.reason)
    if record_ids:
        _ids(trace, out)
    return out


def failure_attributes(error: BaseException, call: FailedCall) -> Attributes:
    """The attributes of the span of a call that raised to its caller: the error's
    type, never its message (a message may quote what the caller sent)."""
    out: Attributes = {
        GEN_AI_OPERATION_NAME: RETRIEVAL,
        ERROR_TYPE: f"{type(error).__module__}.{type(error).__qualname__}",
        LATENCY_MS: float(call.elapsed_ms),
        BATCH_SIZE: call.batch_size,
    }
    if call.task_type is not None:
        out[TASK_TYPE] = call.task_type
    return out


def score_label(raw: Any) -> Optional[str]:
    """``pass`` / ``fail`` for a pass/fail score (a bool, or an object whose
    ``passing`` is a bool, as LlamaIndex's ``EvaluationResult``); else ``None``."""
    passing = raw if isinstance(raw, bool) else getattr(raw, "passing", None)
    if isinstance(passing, bool):
        return "pass" if passing else "fail"
    return None


def evaluation_attributes(event: ScoreEvent, evaluation_name: str) -> Attributes:
    """The attributes of one ``gen_ai.evaluation.result`` event."""
    out: Attributes = {
        GEN_AI_EVALUATION_NAME: evaluation_name,
        GEN_AI_EVALUATION_SCORE_VALUE: float(event.score),
        ENRICHMENT_ID: event.enrichment_id,
        TASK_TYPE: event.task_type,
        QUALITY_GROUP: event.group,
    }
    label = score_label(event.raw)
    if label is not None:
        out[GEN_AI_EVALUATION_SCORE_LABEL] = label
    return out
