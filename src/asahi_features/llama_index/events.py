"""The instrumentation event of every enrichment and the handler that records it."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import BaseEventHandler, NullEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.span import active_span_id

from ..models import EnrichmentResult
from .dropped import DroppedFeatureNodeCheck
from .evaluation import (
    EvaluationInput,
    EvaluationRecord,
    record_evaluation,
)
from .llm_calls import LLMCallTracker
from .log import EnrichmentLog

if TYPE_CHECKING:
    from llama_index_instrumentation.dispatcher import Dispatcher

    from ..monitor import FeatureMonitor

logger = logging.getLogger(__name__)
# The dispatcher keeps the name the single-module integration had.
dispatcher = get_dispatcher("asahi_features.llama_index")


class FeatureEnrichmentEvent(BaseEvent):
    """Dispatched through LlamaIndex instrumentation after every enrichment.

    By default the event carries no raw text: ids, the task, the outcome, the feature
    names, counts and timings, so that any generic trace exporter (which serialises
    events with ``model_dump``) never writes a user's profile or prompt. The texts
    (``query_str``, ``feature_context``) are filled only when the component that
    enriched was built with ``event_texts=True``. The full :class:`EnrichmentResult`
    stays in memory for in-process handlers (``event.result``) and is excluded from
    ``model_dump`` / ``repr``.

    Attributes:
        result: the :class:`EnrichmentResult` (excluded from serialisation).
        enrichment_id: the enrichment's id.
        task_type: the task type asked for.
        reason: the outcome (``"enriched"``, ``"no_identity"``, ``"held_out"``, ...).
        features_used: names of the features that reached the prompt.
        feature_tokens_added: tokens the block added.
        enrichment_latency_ms: time the enrichment took.
        held_out: the request is in the monitor's control group.
        missing_entities: entity types the task uses for which no identity was given.
        identity_source: where the identity came from (``"workflow"``, ``"request"``,
            ``"fixed"``, ``"component"``, ``"call"`` or ``"none"``).
        component: the class name of the component that enriched.
        query_str: the query (only with ``event_texts=True``).
        feature_context: the block (only with ``event_texts=True``).
    """

    result: EnrichmentResult = Field(exclude=True, repr=False)
    enrichment_id: str = ""
    task_type: str = ""
    reason: str = ""
    features_used: List[str] = Field(default_factory=list)
    feature_tokens_added: int = 0
    enrichment_latency_ms: float = 0.0
    held_out: bool = False
    missing_entities: List[str] = Field(default_factory=list)
    identity_source: str = ""
    component: str = ""
    query_str: Optional[str] = None
    feature_context: Optional[str] = None

    @classmethod
    def class_name(cls) -> str:
        """Name used in serialised events."""
        return "FeatureEnrichmentEvent"


def _listeners() -> Tuple[bool, List[FeatureMonitor]]:
    """Whether an event handler that listens (not one of ``_DEAF``) would receive an
    event from this module's dispatcher (events are not even built otherwise), and the
    monitors of the :class:`FeatureMonitorEventHandler` among them."""
    any_handler = False
    monitors: Optional[List[FeatureMonitor]] = None
    current: Optional[Dispatcher] = dispatcher
    while current is not None:
        for handler in current.event_handlers:
            if type(handler) not in _DEAF:
                any_handler = True
                if isinstance(handler, FeatureMonitorEventHandler):
                    if monitors is None:
                        monitors = []
                    monitors.append(handler.monitor)
        if not current.propagate:
            break
        current = current.parent
    return any_handler, monitors if monitors is not None else _NO_MONITORS


_NO_MONITORS: List[FeatureMonitor] = []  # shared, never mutated
_DEAF: Tuple[type, ...] = (NullEventHandler, DroppedFeatureNodeCheck)
"""Handlers that ignore enrichment events (LlamaIndex's null handler, and this package's
dropped-node check): enrichment events are not built for them alone."""


def _dispatch(
    result: EnrichmentResult,
    query: Optional[str],
    *,
    texts: bool = False,
    identity_source: str = "",
    component: str = "",
    listening: Optional[bool] = None,
) -> None:
    if not (_listeners()[0] if listening is None else listening):
        return
    reason = result.reason
    # model_construct: the fields are already typed, validation would only cost time
    event = FeatureEnrichmentEvent.model_construct(
        result=result,
        enrichment_id=result.enrichment_id,
        task_type=result.task_type,
        reason=getattr(reason, "value", str(reason)),
        features_used=list(result.features_used),
        feature_tokens_added=result.feature_tokens_added,
        enrichment_latency_ms=result.enrichment_latency_ms,
        held_out=result.held_out,
        missing_entities=list(result.missing_entities),
        identity_source=identity_source,
        component=component,
        query_str=query if texts else None,
        feature_context=result.feature_context.strip() if texts else None,
        timestamp=datetime.now(),
        id_=str(uuid.uuid4()),
        span_id=active_span_id.get(),
        tags={},
    )
    dispatcher.event(event)


class FeatureMonitorEventHandler(BaseEventHandler):
    """Records every :class:`FeatureEnrichmentEvent` in a :class:`FeatureMonitor`.

    Attach it to the root dispatcher (or to ``asahi_features.llama_index``'s own) and
    every enrichment made by any component of this package is counted (and, when the
    enricher has no monitor of its own, this monitor's holdout is applied). It also
    remembers recent enrichments by query string, so :meth:`record_evaluation` can map
    evaluation results back to them, and follows LlamaIndex's LLM events to remember
    which model answered each enrichment and the tokens it used (see
    :class:`~asahi_features.llama_index.llm_calls.LLMCallTracker`: the LLM calls of a
    request are tied to the enrichment that preceded them; after several calls, the
    last call's model and the sum of their token counts). Other events are ignored.

    Args:
        monitor: the :class:`~asahi_features.monitor.FeatureMonitor` to record into.
        max_tracked: enrichments (and their LLM calls) remembered for
            :meth:`record_evaluation`.

    Example:
        >>> from llama_index.core.instrumentation import get_dispatcher  # doctest: +SKIP
        >>> handler = FeatureMonitorEventHandler(monitor).attach()  # doctest: +SKIP
        >>> # ... run queries, evaluate them ...
        >>> handler.record_evaluation(batch_results, queries=queries)  # doctest: +SKIP
    """

    max_tracked: int = Field(default=10_000, ge=1)

    _monitor: FeatureMonitor = PrivateAttr()
    _log: EnrichmentLog = PrivateAttr()
    _calls: LLMCallTracker = PrivateAttr()

    def __init__(self, monitor: FeatureMonitor, **fields: Any) -> None:
        super().__init__(**fields)
        self._monitor = monitor
        self._log = EnrichmentLog(self.max_tracked)
        self._calls = LLMCallTracker(self.max_tracked)

    @classmethod
    def class_name(cls) -> str:
        """Name of the handler class."""
        return "FeatureMonitorEventHandler"

    @property
    def monitor(self) -> FeatureMonitor:
        """The monitor events are recorded in."""
        return self._monitor

    @property
    def enrichment_log(self) -> EnrichmentLog:
        """Recent enrichments seen by this handler, by query string."""
        return self._log

    @property
    def llm_calls(self) -> LLMCallTracker:
        """The model and token usage of the LLM calls seen after each enrichment."""
        return self._calls

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        """Record a :class:`FeatureEnrichmentEvent`; follow LlamaIndex's LLM events (and
        query starts) to tie each LLM call to its enrichment; ignore every other event."""
        if not isinstance(event, FeatureEnrichmentEvent):
            try:
                self._calls.observe(event)
            except Exception:  # an odd payload never fails the request
                logger.debug("following %s failed", type(event).__name__, exc_info=True)
            return
        # The dispatcher swallows handler exceptions silently: log them instead.
        try:
            self._monitor.record_enrichment(event.result)
        except Exception:
            logger.warning(
                "recording enrichment %s failed", event.result.enrichment_id, exc_info=True
            )
        # the query text is the result's own prompt: events carry no text by default
        self._log.add(event.result.original_prompt, event.result)
        self._calls.enrichment(event, event.result.enrichment_id)

    def attach(self, target: Optional[Dispatcher] = None) -> FeatureMonitorEventHandler:
        """Add this handler to ``target`` (default: the root dispatcher); returns self."""
        target = target if target is not None else get_dispatcher()
        if self not in target.event_handlers:
            target.add_event_handler(self)
        return self

    def detach(self, target: Optional[Dispatcher] = None) -> None:
        """Remove this handler from ``target`` (default: the root dispatcher)."""
        target = target if target is not None else get_dispatcher()
        target.event_handlers = [h for h in target.event_handlers if h is not self]

    def record_evaluation(self, results: EvaluationInput, **kwargs: Any) -> EvaluationRecord:
        """:func:`record_evaluation` into this handler's monitor, using its log and the
        model / token usage of the LLM calls it saw (``calls=``)."""
        kwargs.setdefault("log", self._log)
        kwargs.setdefault("calls", self._calls)
        return record_evaluation(self._monitor, results, **kwargs)
