"""The OpenTelemetry observers (imported only when the integration is enabled).

:class:`EnrichmentSpans` observes a :class:`~asahi_features.enricher.FeatureEnricher`:
one span per finished request, started at the request's start and ended at its end,
as a child of the span current on the caller's thread or task (a LangChain or
LlamaIndex LLM span, a web request span...). :class:`EvaluationEvents` observes a
:class:`~asahi_features.monitor.FeatureMonitor`: one ``gen_ai.evaluation.result``
event per accepted quality score.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Optional

from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from .. import __version__
from . import attributes as attrs

if TYPE_CHECKING:
    from ..models import EnrichmentResult
    from ..monitor import ScoreEvent
    from ..observers import EnrichmentTrace, FailedCall

__all__ = ["EnrichmentSpans", "EvaluationEvents", "SpanIndex"]

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
_NS_PER_MS = 1_000_000


def get_tracer(tracer_provider: Any = None) -> trace.Tracer:
    """The library's tracer from ``tracer_provider`` (default: the global provider)."""
    return trace.get_tracer(
        "asahi_features", __version__, tracer_provider=tracer_provider, schema_url=SCHEMA_URL
    )


class SpanIndex:
    """The span context of the most recent enrichments, by enrichment id, so that a late
    quality score can point at the enrichment it scores. Bounded: the oldest go first."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._spans: OrderedDict[str, SpanContext] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, enrichment_id: str, context: SpanContext) -> None:
        with self._lock:
            spans = self._spans
            spans[enrichment_id] = context
            if len(spans) > self._max:
                spans.popitem(last=False)

    def get(self, enrichment_id: str) -> Optional[SpanContext]:
        with self._lock:
            return self._spans.get(enrichment_id)


class EnrichmentSpans:
    """An :class:`~asahi_features.enricher.EnrichmentObserver` making one span per request.

    The span is named ``retrieval asahi_features`` (kind ``INTERNAL``,
    ``gen_ai.operation.name = retrieval``) and covers the request from its start to its
    result; its attributes are :func:`~asahi_features.telemetry.attributes.enrichment_attributes`.
    A request degraded by a failure (``store_unavailable``, ``overloaded``,
    ``invalid_input``) gets status ERROR with the reason as its description and
    ``error.type``; a call that raised to its caller gets one span, status ERROR, with
    the error's type.
    """

    def __init__(
        self,
        tracer: trace.Tracer,
        *,
        record_ids: bool = False,
        index: Optional[SpanIndex] = None,
    ) -> None:
        self.tracer = tracer
        self.record_ids = record_ids
        self.index = index

    def enrichment_finished(self, result: EnrichmentResult, trace_: EnrichmentTrace) -> None:
        """One request finished: its span, from the request's start to now."""
        end = time.time_ns()
        span = self.tracer.start_span(
            attrs.ENRICHMENT_SPAN_NAME,
            kind=SpanKind.INTERNAL,
            # what a sampler may decide on; the rest only for spans that are recorded
            attributes={
                attrs.GEN_AI_OPERATION_NAME: attrs.RETRIEVAL,
                attrs.TASK_TYPE: result.task_type,
            },
            start_time=end - int(max(result.enrichment_latency_ms, 0.0) * _NS_PER_MS),
        )
        if span.is_recording():  # sampled out, or no SDK: no attribute is built
            attributes = attrs.enrichment_attributes(result, trace_, record_ids=self.record_ids)
            span.set_attributes(attributes)
            error = attributes.get(attrs.ERROR_TYPE)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end(end_time=end)
        if self.index is not None:
            context = span.get_span_context()
            # a sampled-out span is remembered too: its score then follows the same
            # sampling decision (parent-based samplers drop it with its enrichment)
            if context.is_valid:
                self.index.add(result.enrichment_id, context)

    def enrichment_failed(self, error: BaseException, call: FailedCall) -> None:
        """A call raised to its caller: one span for the call, status ERROR, named by
        the error's type."""
        end = time.time_ns()
        span = self.tracer.start_span(
            attrs.ENRICHMENT_SPAN_NAME,
            kind=SpanKind.INTERNAL,
            attributes=attrs.failure_attributes(error, call),
            start_time=end - int(max(call.elapsed_ms, 0.0) * _NS_PER_MS),
        )
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end(end_time=end)


class EvaluationEvents:
    """A :attr:`FeatureMonitor.score_observers <asahi_features.monitor.FeatureMonitor>`
    entry emitting each accepted quality score as a ``gen_ai.evaluation.result`` event.

    The event goes on the span current on the caller's thread when one is recording
    (the caller scores inside its own evaluation or LLM span); otherwise on a short
    ``evaluation asahi_features`` span, child of the scored enrichment's span when that
    is still known (:class:`SpanIndex`), so the score shows in the request's trace.
    """

    def __init__(
        self,
        tracer: trace.Tracer,
        *,
        evaluation_name: str = attrs.DEFAULT_EVALUATION_NAME,
        index: Optional[SpanIndex] = None,
    ) -> None:
        self.tracer = tracer
        self.evaluation_name = evaluation_name
        self.index = index

    def __call__(self, event: ScoreEvent) -> None:
        attributes = attrs.evaluation_attributes(event, self.evaluation_name)
        current = trace.get_current_span()
        if current.is_recording():
            current.add_event(attrs.EVALUATION_EVENT_NAME, attributes)
            return
        parent = None if self.index is None else self.index.get(event.enrichment_id)
        context = (
            None if parent is None else trace.set_span_in_context(trace.NonRecordingSpan(parent))
        )
        span = self.tracer.start_span(
            attrs.EVALUATION_SPAN_NAME,
            context=context,
            kind=SpanKind.INTERNAL,
            attributes={attrs.ENRICHMENT_ID: event.enrichment_id},
        )
        span.add_event(attrs.EVALUATION_EVENT_NAME, attributes)
        span.end()
