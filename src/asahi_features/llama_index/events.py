"""The instrumentation event of every enrichment and the handler that records it."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import BaseEventHandler, NullEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.span import active_span_id

from ..models import EnrichmentResult

if TYPE_CHECKING:
    from llama_index_instrumentation.dispatcher import Dispatcher

    from ..monitor import FeatureMonitor

from .evaluation import (
    EvaluationInput,
    EvaluationRecord,
    record_evaluation,
)
from .log import EnrichmentLog

logger = logging.getLogger(__name__)
# The dispatcher keeps the name the single-module integration had.
dispatcher = get_dispatcher("asahi_features.llama_index")


class FeatureEnrichmentEvent(BaseEvent):
    """Dispatched through LlamaIndex instrumentation after every enrichment.

    Attributes:
        result: the :class:`EnrichmentResult` (also when nothing was added).
        query_str: the query that was enriched.
    """

    result: EnrichmentResult
    query_str: Optional[str] = None

    @classmethod
    def class_name(cls) -> str:
        """Name used in serialised events."""
        return "FeatureEnrichmentEvent"


def _has_listeners() -> bool:
    """True when an event handler other than LlamaIndex's NullEventHandler would receive
    an event from this module's dispatcher (events are not even built otherwise)."""
    current: Optional[Dispatcher] = dispatcher
    while current is not None:
        for handler in current.event_handlers:
            if type(handler) is not NullEventHandler:
                return True
        if not current.propagate:
            return False
        current = current.parent
    return False  # pragma: no cover - the root dispatcher never propagates


def _dispatch(result: EnrichmentResult, query: Optional[str]) -> None:
    if not _has_listeners():
        return
    # model_construct: the fields are already typed, validation would only cost time
    event = FeatureEnrichmentEvent.model_construct(
        result=result,
        query_str=query,
        timestamp=datetime.now(),
        id_=str(uuid.uuid4()),
        span_id=active_span_id.get(),
        tags={},
    )
    dispatcher.event(event)


class FeatureMonitorEventHandler(BaseEventHandler):
    """Records every :class:`FeatureEnrichmentEvent` in a :class:`FeatureMonitor`.

    Attach it to the root dispatcher (or to ``asahi_features.llama_index``'s own) and
    every enrichment made by any :class:`FeatureContextPostprocessor` is counted. It also
    remembers recent enrichments by query string, so :meth:`record_evaluation` can map
    evaluation results back to them. Other events are ignored.

    Args:
        monitor: the :class:`~asahi_features.monitor.FeatureMonitor` to record into.
        max_tracked: enrichments remembered for :meth:`record_evaluation`.

    Example:
        >>> from llama_index.core.instrumentation import get_dispatcher  # doctest: +SKIP
        >>> handler = FeatureMonitorEventHandler(monitor).attach()  # doctest: +SKIP
        >>> # ... run queries, evaluate them ...
        >>> handler.record_evaluation(batch_results, queries=queries)  # doctest: +SKIP
    """

    max_tracked: int = Field(default=10_000, ge=1)

    _monitor: FeatureMonitor = PrivateAttr()
    _log: EnrichmentLog = PrivateAttr()

    def __init__(self, monitor: FeatureMonitor, **fields: Any) -> None:
        super().__init__(**fields)
        self._monitor = monitor
        self._log = EnrichmentLog(self.max_tracked)

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

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        """Record a :class:`FeatureEnrichmentEvent`; ignore every other event."""
        if not isinstance(event, FeatureEnrichmentEvent):
            return
        # The dispatcher swallows handler exceptions silently: log them instead.
        try:
            self._monitor.record_enrichment(event.result)
        except Exception:
            logger.warning(
                "recording enrichment %s failed", event.result.enrichment_id, exc_info=True
            )
        self._log.add(event.query_str, event.result)

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
        """:func:`record_evaluation` into this handler's monitor, using its log."""
        kwargs.setdefault("log", self._log)
        return record_evaluation(self._monitor, results, **kwargs)
