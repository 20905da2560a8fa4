"""LlamaIndex integration: a node postprocessor, an instrumentation event, evaluation scores.

Needs the ``[llama-index]`` extra (``llama-index-core`` 0.14). The pieces:

* :class:`FeatureContextPostprocessor` enriches the query of every query or chat engine
  call and injects the feature context block as one scored node. Put it **last** in
  ``node_postprocessors`` (score cut-offs and re-orderers placed after it would drop or
  move the block).
* :func:`feature_context` says who the current request is for. It is a context manager
  over a :class:`~contextvars.ContextVar`, so one shared engine serves many users at once
  from threads or asyncio tasks without mixing their features.
* :class:`FeatureEnrichmentEvent` is dispatched through LlamaIndex instrumentation on
  every enrichment; :class:`FeatureMonitorEventHandler` records those events in a
  :class:`~asahi_features.monitor.FeatureMonitor`.
* :func:`record_evaluation` maps LlamaIndex ``EvaluationResult`` objects (one, a list,
  or the dict ``BatchEvalRunner`` returns) back to the enrichments of the queries they
  evaluated and records their scores as quality in the monitor.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Literal, Optional, Tuple, Union, cast

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.evaluation import EvaluationResult
    from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler, NullEventHandler
    from llama_index.core.instrumentation.events import BaseEvent
    from llama_index.core.instrumentation.span import active_span_id
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle, TextNode
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "asahi_features.llama_index needs llama-index-core; install it with "
        "`pip install 'asahi-features[llama-index]'`"
    ) from exc

from .models import EnrichmentResult, trusted_constructor

if TYPE_CHECKING:
    from llama_index_instrumentation.dispatcher import Dispatcher

    from .enricher import FeatureEnricher
    from .monitor import FeatureMonitor

__all__ = [
    "ENRICHMENT_ID_METADATA_KEY",
    "FEATURE_CONTEXT_METADATA_KEY",
    "EnrichmentLog",
    "EvaluationRecord",
    "FeatureContextPostprocessor",
    "FeatureEnrichmentEvent",
    "FeatureMonitorEventHandler",
    "FeatureRequest",
    "current_feature_request",
    "enrichment_id_from_response",
    "feature_context",
    "feature_context_text",
    "is_feature_context_node",
    "record_evaluation",
]

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

FEATURE_CONTEXT_METADATA_KEY = "asahi_feature_context"
"""Metadata flag (``True``) of the node that carries the feature context block."""
ENRICHMENT_ID_METADATA_KEY = "asahi_enrichment_id"
"""Metadata key of that node holding :attr:`EnrichmentResult.enrichment_id`."""
TASK_TYPE_METADATA_KEY = "asahi_task_type"

_UNSET: Any = object()


# --------------------------------------------------------------------------- identity


@dataclass(slots=True)
class FeatureRequest:
    """Who the current request is for, and what the postprocessor did for it.

    Returned by :func:`feature_context` (it is the context manager itself); ``results``
    fills in as the postprocessor runs (one entry per enrichment, e.g. one per chat
    turn), so the caller can read the enrichment ids afterwards without shared state.
    """

    user_id: Optional[str] = None
    organization_id: Optional[str] = None
    task_type: Optional[str] = None
    context: Optional[Dict[str, Any]] = None
    results: List[EnrichmentResult] = field(default_factory=list)
    _token: Optional[Token[Optional[FeatureRequest]]] = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def last_result(self) -> Optional[EnrichmentResult]:
        """The most recent enrichment of this request, if any."""
        return self.results[-1] if self.results else None

    @property
    def enrichment_ids(self) -> List[str]:
        """The ids of every enrichment made for this request, oldest first."""
        return [r.enrichment_id for r in self.results]

    def __enter__(self) -> FeatureRequest:
        if self._token is not None:
            raise RuntimeError("this feature_context(...) block is already active")
        self._token = _CURRENT_REQUEST.set(self)
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        token, self._token = self._token, None
        if token is not None:
            _CURRENT_REQUEST.reset(token)


_CURRENT_REQUEST: ContextVar[Optional[FeatureRequest]] = ContextVar(
    "asahi_features_llama_index_request", default=None
)


def feature_context(
    user_id: Optional[str] = _UNSET,
    organization_id: Optional[str] = _UNSET,
    task_type: Optional[str] = _UNSET,
    context: Optional[Dict[str, Any]] = _UNSET,
) -> FeatureRequest:
    """Set the identity of the current request for :class:`FeatureContextPostprocessor`.

    Use it as a context manager around the engine call. The values live in a
    :class:`~contextvars.ContextVar`: each thread and each asyncio task sees only its
    own, so a single engine can be shared by concurrent requests. Nested blocks inherit
    the arguments they do not pass from the enclosing block.

    Args:
        user_id: the user the request is for.
        organization_id: the organisation the request is for.
        task_type: overrides the postprocessor's ``task_type`` for this request.
        context: request context passed on to :meth:`FeatureEnricher.enrich`.

    Returns:
        The :class:`FeatureRequest`, a context manager whose ``with ... as`` target is
        itself; its ``results`` list the enrichments made inside the block.

    Example:
        >>> with feature_context(user_id="u_1001") as request:  # doctest: +SKIP
        ...     response = query_engine.query("Recommend a jacket")
        >>> request.enrichment_ids  # doctest: +SKIP
        ['3f2a...']
    """
    outer = _CURRENT_REQUEST.get()
    if outer is None:
        request = FeatureRequest(
            user_id=None if user_id is _UNSET else user_id,
            organization_id=None if organization_id is _UNSET else organization_id,
            task_type=None if task_type is _UNSET else task_type,
            context=None if context is _UNSET else context,
        )
    else:
        request = FeatureRequest(
            user_id=outer.user_id if user_id is _UNSET else user_id,
            organization_id=(
                outer.organization_id if organization_id is _UNSET else organization_id
            ),
            task_type=outer.task_type if task_type is _UNSET else task_type,
            context=outer.context if context is _UNSET else context,
        )
    return request


def current_feature_request() -> Optional[FeatureRequest]:
    """The :class:`FeatureRequest` set by the innermost active :func:`feature_context`."""
    return _CURRENT_REQUEST.get()


def feature_context_text(**_: Any) -> str:
    """The current request's feature context block, for a prompt template function mapping.

    LlamaIndex calls function mappings with the template's keyword arguments (ignored
    here). Use it to put the block into every refine call, not only the first chunk::

        template = PromptTemplate(
            "{features}\\n{context_str}\\nQuestion: {query_str}\\nAnswer: ",
            function_mappings={"features": feature_context_text},
        )

    Returns ``""`` outside :func:`feature_context` or when nothing was enriched.
    """
    request = _CURRENT_REQUEST.get()
    result = request.last_result if request is not None else None
    if result is None or not result.features_available:
        return ""
    return _block_text(result)


_NODE_DEFAULTS: Dict[str, Any] = dict(TextNode(id_="asahi-feature-context", text="").__dict__)
# Validation-free builders (the values are already typed; model_fields_set as if the
# nodes had been built with these keyword arguments).
_new_text_node = trusted_constructor(TextNode, {"id_", "text", "metadata"})
_new_scored_node = trusted_constructor(NodeWithScore, {"node", "score"})


def _bundle(query_bundle: Optional[QueryBundle], query_str: str) -> QueryBundle:
    if query_bundle is not None:
        raise ValueError("Cannot specify both query_str and query_bundle")
    return QueryBundle(query_str)


def _block_text(result: EnrichmentResult) -> str:
    # feature_context is the added block plus its separator, never the prompt itself
    return result.feature_context.strip()


# --------------------------------------------------------------------------- bookkeeping


class EnrichmentLog:
    """A bounded, thread-safe memory of recent enrichments and the queries they enriched.

    The postprocessor and the event handler each keep one, so that evaluation results
    that carry only a query string can be mapped back to their enrichments. Adding is a
    single append to a ring buffer (lock-free, on the request path); lookups scan it,
    which is fine at evaluation time. When more than ``max_entries`` enrichments are
    remembered the oldest are forgotten.

    Args:
        max_entries: how many enrichments to remember (at least 1).
        keep_results: also keep the :class:`EnrichmentResult` objects (so that
            :func:`record_evaluation` can record an enrichment the monitor never saw).
            The postprocessor keeps ids only: holding thousands of results alive costs
            the request path measurably more than holding their ids.
    """

    def __init__(self, max_entries: int = 10_000, *, keep_results: bool = True) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._keep = keep_results
        self._ring: Deque[Tuple[str, str, Optional[EnrichmentResult]]] = deque(maxlen=max_entries)

    @property
    def keeps_results(self) -> bool:
        """Whether :meth:`get` can return the remembered results."""
        return self._keep

    def add(self, query: Optional[str], result: EnrichmentResult) -> None:
        """Remember ``result`` as the enrichment of ``query``."""
        # deque.append is atomic: no lock on the request path
        self._ring.append((query or "", result.enrichment_id, result if self._keep else None))

    def _entries(self) -> List[Tuple[str, str, Optional[EnrichmentResult]]]:
        while True:
            try:
                return list(self._ring)
            except RuntimeError:  # pragma: no cover - mutated during the copy: retry
                continue

    def get(self, enrichment_id: str) -> Optional[EnrichmentResult]:
        """The remembered result with this id (``None`` if forgotten or ids-only)."""
        for _, eid, result in reversed(self._entries()):
            if eid == enrichment_id:
                return result
        return None

    def ids_for_query(self, query: str) -> List[str]:
        """The ids of every remembered enrichment of ``query`` (each once), oldest first."""
        seen: set[str] = set()
        found: List[str] = []
        for key, eid, _ in self._entries():
            if key == query and eid not in seen:
                seen.add(eid)
                found.append(eid)
        return found

    def __len__(self) -> int:
        return len(self._ring)


# --------------------------------------------------------------------------- events


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


def is_feature_context_node(node: Union[NodeWithScore, BaseNode]) -> bool:
    """True for the node :class:`FeatureContextPostprocessor` injects."""
    inner = node.node if isinstance(node, NodeWithScore) else node
    return bool(inner.metadata.get(FEATURE_CONTEXT_METADATA_KEY))


# --------------------------------------------------------------------------- postprocessor


class FeatureContextPostprocessor(BaseNodePostprocessor):
    """Adds the feature context block of the request's user/organisation as one node.

    For each query (``QueryBundle.query_str``) it calls :meth:`FeatureEnricher.enrich`
    (``aenrich`` on the async path) with the identity of the current
    :func:`feature_context` block, falling back to the fixed ``user_id`` /
    ``organization_id`` fields. When features were found it inserts one ``TextNode``
    whose text is the context block, marked in its metadata
    (``asahi_feature_context: True`` plus the enrichment id; both excluded from the
    embedding and LLM metadata text) and scored ``node_score`` so that score cut-offs
    keep it. Any feature node already in the list is replaced, never duplicated.

    Place it **last** in ``node_postprocessors``: ``SimilarityPostprocessor`` and other
    cut-offs placed after it judge the block by a score it does not really have, and
    re-orderers such as ``LongContextReorder`` move it away from the top of the context.

    Without an identity (no :func:`feature_context`, no fixed values) the nodes pass
    through unchanged and the reason is logged at DEBUG. Every enrichment, enriched or
    not, is dispatched as a :class:`FeatureEnrichmentEvent`, recorded in ``monitor``
    (when given) and remembered in :attr:`enrichment_log`.

    Args:
        enricher: the :class:`~asahi_features.enricher.FeatureEnricher` to call.
        monitor: optional :class:`~asahi_features.monitor.FeatureMonitor` that records
            every enrichment (``record_enrichment`` is idempotent, so sharing the
            enricher's own monitor is safe).
        **fields: any of the settings below.

    Settings:
        task_type: task type used when the request does not set one (``"general"``).
        user_id / organization_id: fixed identity used when the request sets none.
        node_score: score of the injected node (default 1.0, the top cosine similarity).
        position: ``"first"`` (default: the block heads the context) or ``"last"``.
        inject_node: ``False`` to only enrich (for :func:`feature_context_text` templates).
        max_tracked: enrichment ids remembered in :attr:`enrichment_log`.
        emit_span: ``True`` to open LlamaIndex's instrumentation span around each call
            (off by default: the span costs more than the rest of the postprocessor).

    Raises:
        TypeError: ``enricher`` has no ``enrich`` / ``aenrich`` methods.

    Example:
        >>> post = FeatureContextPostprocessor(enricher, task_type="general")  # doctest: +SKIP
        >>> engine = index.as_query_engine(node_postprocessors=[cutoff, post])  # doctest: +SKIP
        >>> with feature_context(user_id="u_1001"):  # doctest: +SKIP
        ...     print(engine.query("What should I buy next?"))
    """

    task_type: str = Field(default="general", description="Default task type.")
    user_id: Optional[str] = Field(default=None, description="Fixed user id (fallback).")
    organization_id: Optional[str] = Field(
        default=None, description="Fixed organization id (fallback)."
    )
    node_score: float = Field(default=1.0, description="Score of the injected node.")
    position: Literal["first", "last"] = Field(
        default="first", description="Where the feature node goes in the node list."
    )
    inject_node: bool = Field(default=True, description="Add the block as a node.")
    max_tracked: int = Field(
        default=10_000, ge=1, description="Enrichments remembered for evaluation mapping."
    )
    emit_span: bool = Field(
        default=False,
        description="Open LlamaIndex's own instrumentation span around each call.",
    )

    _enricher: FeatureEnricher = PrivateAttr()
    _monitor: Optional[FeatureMonitor] = PrivateAttr(default=None)
    _log: EnrichmentLog = PrivateAttr()

    def __init__(
        self,
        enricher: FeatureEnricher,
        monitor: Optional[FeatureMonitor] = None,
        **fields: Any,
    ) -> None:
        super().__init__(**fields)
        if not (hasattr(enricher, "enrich") and hasattr(enricher, "aenrich")):
            raise TypeError(
                "enricher must be a FeatureEnricher (an object with enrich() and aenrich()), "
                f"got {type(enricher).__name__}"
            )
        self._enricher = enricher
        self._monitor = monitor
        self._log = EnrichmentLog(self.max_tracked, keep_results=False)

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "FeatureContextPostprocessor"

    @property
    def enricher(self) -> FeatureEnricher:
        """The enricher this postprocessor calls."""
        return self._enricher

    @property
    def monitor(self) -> Optional[FeatureMonitor]:
        """The monitor that records every enrichment, if any."""
        return self._monitor

    @property
    def enrichment_log(self) -> EnrichmentLog:
        """Recent enrichments by query string, for :func:`record_evaluation`."""
        return self._log

    # -- entry points ---------------------------------------------------------------

    def postprocess_nodes(
        self,
        nodes: List[NodeWithScore],
        query_bundle: Optional[QueryBundle] = None,
        query_str: Optional[str] = None,
    ) -> List[NodeWithScore]:
        """Add the feature node for the current request (what the engines call)."""
        if self.emit_span:
            result: List[NodeWithScore] = super().postprocess_nodes(
                nodes, query_bundle=query_bundle, query_str=query_str
            )
            return result
        if query_str is not None:
            query_bundle = _bundle(query_bundle, query_str)
        return self._enrich_nodes(nodes, query_bundle)

    async def apostprocess_nodes(
        self,
        nodes: List[NodeWithScore],
        query_bundle: Optional[QueryBundle] = None,
        query_str: Optional[str] = None,
    ) -> List[NodeWithScore]:
        """Async :meth:`postprocess_nodes`, awaiting :meth:`FeatureEnricher.aenrich`."""
        if self.emit_span:
            result: List[NodeWithScore] = await super().apostprocess_nodes(
                nodes, query_bundle=query_bundle, query_str=query_str
            )
            return result
        if query_str is not None:
            query_bundle = _bundle(query_bundle, query_str)
        return await self._aenrich_nodes(nodes, query_bundle)

    def _postprocess_nodes(
        self,
        nodes: List[NodeWithScore],
        query_bundle: Optional[QueryBundle] = None,
    ) -> List[NodeWithScore]:
        return self._enrich_nodes(nodes, query_bundle)

    async def _apostprocess_nodes(
        self,
        nodes: List[NodeWithScore],
        query_bundle: Optional[QueryBundle] = None,
    ) -> List[NodeWithScore]:
        return await self._aenrich_nodes(nodes, query_bundle)

    def _enrich_nodes(
        self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle]
    ) -> List[NodeWithScore]:
        request = _CURRENT_REQUEST.get()
        identity = self._identity(request)
        if identity is None:
            return nodes
        query = query_bundle.query_str if query_bundle is not None else ""
        # pydantic serves private attributes through a slow __getattr__ (~1.8 us each)
        private = cast(Dict[str, Any], self.__pydantic_private__)
        result = private["_enricher"].enrich(query, *identity)
        return self._apply(nodes, query, result, request, private)

    async def _aenrich_nodes(
        self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle]
    ) -> List[NodeWithScore]:
        request = _CURRENT_REQUEST.get()
        identity = self._identity(request)
        if identity is None:
            return nodes
        query = query_bundle.query_str if query_bundle is not None else ""
        # pydantic serves private attributes through a slow __getattr__ (~1.8 us each)
        private = cast(Dict[str, Any], self.__pydantic_private__)
        result = await private["_enricher"].aenrich(query, *identity)
        return self._apply(nodes, query, result, request, private)

    # -- helpers ------------------------------------------------------------------

    def _identity(
        self, request: Optional[FeatureRequest]
    ) -> Optional[Tuple[Optional[str], Optional[str], str, Optional[Dict[str, Any]]]]:
        """(user_id, organization_id, task_type, context), or None without identity."""
        if request is None:
            user_id, org_id, task_type, context = (
                self.user_id,
                self.organization_id,
                self.task_type,
                None,
            )
        else:
            user_id = request.user_id or self.user_id
            org_id = request.organization_id or self.organization_id
            task_type = request.task_type or self.task_type
            context = request.context
        if not (user_id or org_id or context):
            logger.debug(
                "no feature node added: no user_id, organization_id or context for this "
                "request (wrap the call in feature_context(...) or set fixed ids on %s)",
                self.class_name(),
            )
            return None
        return user_id, org_id, task_type, context

    def _apply(
        self,
        nodes: List[NodeWithScore],
        query: str,
        result: EnrichmentResult,
        request: Optional[FeatureRequest],
        private: Dict[str, Any],
    ) -> List[NodeWithScore]:
        if request is not None:
            request.results.append(result)
        private["_log"].add(query, result)
        monitor = private["_monitor"]
        if monitor is not None and monitor is not getattr(private["_enricher"], "monitor", None):
            monitor.record_enrichment(result)
        _dispatch(result, query)

        kept = [n for n in nodes if not n.node.metadata.get(FEATURE_CONTEXT_METADATA_KEY)]
        text = _block_text(result) if result.features_available else ""
        if not text or not self.inject_node:
            if not text:
                logger.debug(
                    "no feature node added for task %r: %s",
                    result.task_type,
                    getattr(result.reason, "value", result.reason),
                )
            return kept
        node = _new_scored_node({"node": self._make_node(text, result), "score": self.node_score})
        if self.position == "first":
            kept.insert(0, node)
        else:
            kept.append(node)
        return kept

    @staticmethod
    def _make_node(text: str, result: EnrichmentResult) -> TextNode:
        metadata: Dict[str, Any] = {
            FEATURE_CONTEXT_METADATA_KEY: True,
            ENRICHMENT_ID_METADATA_KEY: result.enrichment_id,
            TASK_TYPE_METADATA_KEY: result.task_type,
        }
        keys = list(metadata)
        # The fields of a validated prototype with every mutable value replaced: the
        # values are already typed, and this is several times cheaper than validating a
        # new TextNode (pydantic resolves a dozen defaults) on the hot path.
        fields = dict(_NODE_DEFAULTS)
        fields["id_"] = f"asahi-feature-context-{result.enrichment_id}"
        fields["text"] = text
        fields["metadata"] = metadata
        fields["excluded_embed_metadata_keys"] = keys
        fields["excluded_llm_metadata_keys"] = list(keys)
        fields["relationships"] = {}
        return _new_text_node(fields)


# --------------------------------------------------------------------------- event handler


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


# --------------------------------------------------------------------------- evaluation

EvaluationInput = Union[
    EvaluationResult,
    Sequence[EvaluationResult],
    Mapping[str, Sequence[EvaluationResult]],
]


@dataclass
class EvaluationRecord:
    """What :func:`record_evaluation` did.

    Attributes:
        scores: enrichment id -> the quality score recorded for it.
        unmatched: evaluation positions that could not be mapped to an enrichment.
        invalid: results skipped because invalid or without score and passing.
    """

    scores: Dict[str, float] = field(default_factory=dict)
    unmatched: int = 0
    invalid: int = 0

    @property
    def recorded(self) -> int:
        """How many enrichments received a quality score."""
        return len(self.scores)


def enrichment_id_from_response(response: Any) -> Optional[str]:
    """The enrichment id carried by a response's feature context source node, if any.

    Works with ``Response``, ``StreamingResponse`` and chat responses (anything with
    ``source_nodes``). Un-enriched requests have no feature node and give ``None``.
    """
    for node in getattr(response, "source_nodes", None) or ():
        if is_feature_context_node(node):
            value = node.node.metadata.get(ENRICHMENT_ID_METADATA_KEY)
            return str(value) if value is not None else None
    return None


def _score_of(result: EvaluationResult) -> Optional[float]:
    if result.invalid_result:
        return None
    if result.score is not None and math.isfinite(float(result.score)):
        return float(result.score)
    if result.passing is not None:
        return 1.0 if result.passing else 0.0
    return None


def _as_list(value: Any) -> Optional[List[Any]]:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [value]
    return list(value)


def record_evaluation(
    monitor: FeatureMonitor,
    results: EvaluationInput,
    *,
    queries: Union[str, Sequence[str], None] = None,
    responses: Any = None,
    enrichment_ids: Union[str, Sequence[Optional[str]], None] = None,
    log: Optional[EnrichmentLog] = None,
    evaluator: Optional[str] = None,
) -> EvaluationRecord:
    """Record LlamaIndex evaluation scores as quality of the enrichments they evaluated.

    LlamaIndex evaluators emit no completion event, so scores are handed over here.
    ``results`` is one ``EvaluationResult``, a list of them, or the dict
    ``BatchEvalRunner`` returns (evaluator name -> list, every list aligned with the
    queries / responses it was given). Position ``i`` of each list is mapped to an
    enrichment by the first rule that applies:

    1. ``enrichment_ids[i]`` when given (e.g. from ``FeatureRequest.enrichment_ids``);
    2. the feature node in ``responses[i].source_nodes`` (exact, but only enriched
       requests carry such a node);
    3. the query (``result.query``, else ``queries[i]``) looked up in ``log`` (the
       postprocessor's or handler's :class:`EnrichmentLog`). A query asked ``n`` times
       in ``results`` maps to the ``n`` most recent enrichments of that query, oldest
       first; so re-running an evaluation set maps to the latest run. When the same
       query was asked for different users, pass ``enrichment_ids`` or ``responses``.

    Several evaluators scoring one enrichment are averaged (or pick one with
    ``evaluator``). A result's score is ``score``, else ``passing`` as 1.0/0.0; invalid
    results are skipped. Each enrichment known to ``log`` is first recorded with
    ``monitor.record_enrichment`` (idempotent), then ``monitor.record_quality`` gets the
    score, which the monitor files under "with" or "without features".

    Args:
        monitor: the :class:`~asahi_features.monitor.FeatureMonitor`.
        results: the evaluation results.
        queries: the queries evaluated, aligned with each result list.
        responses: the responses evaluated, aligned with each result list.
        enrichment_ids: explicit enrichment ids, aligned with each result list.
        log: where to look queries and ids up.
        evaluator: for a ``BatchEvalRunner`` dict, use only this evaluator's results.

    Returns:
        An :class:`EvaluationRecord` with the recorded scores and what was skipped.

    Raises:
        KeyError: ``evaluator`` is not a key of the results dict (the message lists them).
        TypeError: ``results`` is not an EvaluationResult, list or dict of lists.
    """
    groups = _groups(results, evaluator)
    query_list = _as_list(queries)
    response_list = _as_list(responses)
    id_list = _as_list(enrichment_ids)

    record = EvaluationRecord()
    collected: Dict[str, List[float]] = {}
    known: Dict[str, EnrichmentResult] = {}
    # One scan of the log for all items (log.ids_for_query / log.get per item would
    # scan the whole ring each time).
    ids_by_query, result_by_id = _log_lookups(log) if log is not None else ({}, {})
    for items in groups:
        totals: Dict[str, int] = {}
        nth: List[int] = []
        for position, item in enumerate(items):
            query = item.query or _at(query_list, position)
            nth.append(totals.get(query, 0) if query is not None else 0)
            if query is not None:
                totals[query] = totals.get(query, 0) + 1
        for position, item in enumerate(items):
            score = _score_of(item)
            if score is None:
                record.invalid += 1
                continue
            query = item.query or _at(query_list, position)
            target: Optional[str] = _at(id_list, position)
            if target is None:
                target = enrichment_id_from_response(_at(response_list, position))
            if target is None and query is not None and log is not None:
                candidates = ids_by_query.get(query, [])[-totals[query] :]
                if nth[position] < len(candidates):
                    target = candidates[nth[position]]
            if target is None:
                record.unmatched += 1
                continue
            collected.setdefault(target, []).append(score)
            if log is not None and target not in known:
                found = result_by_id.get(target)
                if found is not None:
                    known[target] = found
    for enrichment_id, scores in collected.items():
        quality = sum(scores) / len(scores)
        if enrichment_id in known:
            # records the enrichment if the monitor has not seen it, else adds the score
            monitor.record_enrichment(known[enrichment_id], inference_quality=quality)
        else:
            monitor.record_quality(enrichment_id, quality)
        record.scores[enrichment_id] = quality
    if record.unmatched:
        logger.warning(
            "%d evaluation result(s) could not be mapped to an enrichment; pass "
            "enrichment_ids=, responses= or queries= with log=",
            record.unmatched,
        )
    return record


def _log_lookups(
    log: EnrichmentLog,
) -> Tuple[Dict[str, List[str]], Dict[str, Optional[EnrichmentResult]]]:
    """``log.ids_for_query`` for every query and ``log.get`` for every id, from one scan."""
    ids_by_query: Dict[str, List[str]] = {}
    seen: Dict[str, set[str]] = {}
    result_by_id: Dict[str, Optional[EnrichmentResult]] = {}
    for key, eid, result in log._entries():
        ids_seen = seen.setdefault(key, set())
        if eid not in ids_seen:
            ids_seen.add(eid)
            ids_by_query.setdefault(key, []).append(eid)
        result_by_id[eid] = result  # the newest entry of an id wins, as in log.get
    return ids_by_query, result_by_id


def _at(values: Optional[List[Any]], position: int) -> Any:
    if values is None or position >= len(values):
        return None
    return values[position]


def _groups(results: EvaluationInput, evaluator: Optional[str]) -> List[List[EvaluationResult]]:
    if isinstance(results, EvaluationResult):
        groups: List[List[EvaluationResult]] = [[results]]
    elif isinstance(results, Mapping):
        if evaluator is not None:
            if evaluator not in results:
                raise KeyError(
                    f"evaluator {evaluator!r} is not in the results; "
                    f"available: {', '.join(sorted(results)) or '(none)'}"
                )
            groups = [list(results[evaluator])]
        else:
            groups = [list(v) for v in results.values()]
    elif isinstance(results, Sequence) and not isinstance(results, (str, bytes)):
        groups = [list(results)]
    else:
        raise TypeError(
            "results must be an EvaluationResult, a list of them or a dict of lists "
            f"(BatchEvalRunner output), got {type(results).__name__}"
        )
    for group in groups:
        for item in group:
            if not isinstance(item, EvaluationResult):
                raise TypeError(f"expected EvaluationResult items, got {type(item).__name__}")
    return groups
