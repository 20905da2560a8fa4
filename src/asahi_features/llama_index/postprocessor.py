"""FeatureContextPostprocessor: the feature block as one node of a query or chat engine."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional, Tuple, cast

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from ..models import EnrichmentResult

if TYPE_CHECKING:
    from ..enricher import FeatureEnricher
    from ..monitor import FeatureMonitor

from .events import _dispatch
from .identity import _CURRENT_REQUEST, FeatureRequest
from .log import EnrichmentLog
from .nodes import (
    _NODE_DEFAULTS,
    ENRICHMENT_ID_METADATA_KEY,
    FEATURE_CONTEXT_METADATA_KEY,
    TASK_TYPE_METADATA_KEY,
    _block_text,
    _bundle,
    _new_scored_node,
    _new_text_node,
)

logger = logging.getLogger(__name__)


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
