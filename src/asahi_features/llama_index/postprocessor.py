"""FeatureContextPostprocessor: the feature block as one node of a query or chat engine."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional, cast

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from ..models import EnrichmentResult
from ..warn_once import WarnOnce
from .dropped import note_injected
from .identity import _CURRENT_REQUEST, FeatureRequest
from .log import EnrichmentLog
from .nodes import (
    _NODE_DEFAULTS,
    ENRICHMENT_ID_METADATA_KEY,
    FEATURE_CONTEXT_METADATA_KEY,
    TASK_TYPE_METADATA_KEY,
    _bundle,
    _new_scored_node,
    _new_text_node,
)
from .run import Enrichment, Identity, resolve_identity, warn_unknown_task
from .workflow import current_step_context, workflow_identity

if TYPE_CHECKING:
    from ..enricher import FeatureEnricher
    from ..monitor import FeatureMonitor

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
    A node dropped before the answer is never silent: the engine's wrapped prompts
    (:func:`apply_feature_prompts`) re-inject the block, otherwise a WARNING (once) says
    the answer went out without the user's features and how to fix the order.

    Identity, first found wins and sources are never mixed: the workflow ``Context``
    store (:func:`set_workflow_identity`, async path inside a workflow step), the
    :func:`feature_context` block, then the fixed ``user_id`` / ``organization_id``
    (only when the request brings no identity at all). A request without any identity
    still reaches the enricher (a ``no_identity`` result: events and the monitor see it)
    and ``on_missing_identity`` decides the rest: ``"warn"`` (default, one WARNING per
    cause, DEBUG after), ``"ignore"`` (DEBUG) or ``"raise"``
    (:class:`MissingIdentityError`). Every enrichment is dispatched as a
    :class:`FeatureEnrichmentEvent` (no raw text unless ``event_texts``), recorded in
    ``monitor`` (when given) and remembered in :attr:`enrichment_log`. When the enricher
    has no monitor of its own, the holdout of ``monitor`` (or of a monitor attached only
    through :class:`FeatureMonitorEventHandler`) is applied here.

    ``mode="prompt"`` adds no node at all: the block is then a source of no citation and
    never among a response's ``source_nodes``; :func:`apply_feature_prompts` on the engine
    puts it in every LLM call of every response mode. The default, ``mode="auto"``, is
    the prompt mode in an engine wrapped by :func:`apply_feature_prompts` (it switches the
    engine's copy) and the node mode elsewhere (chat engines and retrievers format the
    context themselves: the node is how the block reaches them).

    Args:
        enricher: the :class:`~asahi_features.enricher.FeatureEnricher` to call.
        monitor: optional :class:`~asahi_features.monitor.FeatureMonitor` that records
            every enrichment (``record_enrichment`` is idempotent, so sharing the
            enricher's own monitor is safe).
        **fields: any of the settings below.

    Settings (validated, also on assignment):
        task_type: task type used when the request does not set one (``"general"``);
            one the enricher cannot enrich is warned about at construction.
        user_id / organization_id: fixed identity used when the request brings none.
        node_score: score of the injected node: finite and >= 0 (default 1.0).
        position: ``"first"`` (default: the block heads the context) or ``"last"``.
        mode: ``"auto"`` (default: ``"prompt"`` in an engine wrapped by
            :func:`apply_feature_prompts`, else ``"node"``), ``"node"`` (the block is one
            node, also in a wrapped engine) or ``"prompt"`` (no node).
        inject_node: ``False`` to only enrich (same as ``mode="prompt"``).
        on_missing_identity: ``"warn"`` (default), ``"ignore"`` or ``"raise"``.
        event_texts: ``True`` to put the query and the block in the events.
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
    node_score: float = Field(
        default=1.0, ge=0.0, allow_inf_nan=False, description="Score of the injected node."
    )
    position: Literal["first", "last"] = Field(
        default="first", description="Where the feature node goes in the node list."
    )
    mode: Literal["auto", "node", "prompt"] = Field(
        default="auto",
        description=(
            "'auto': 'prompt' in an engine wrapped by apply_feature_prompts, else 'node'; "
            "'node': the block is one node; 'prompt': no node."
        ),
    )
    inject_node: bool = Field(default=True, description="Add the block as a node.")
    on_missing_identity: Literal["ignore", "warn", "raise"] = Field(
        default="warn", description="What a request without any identity does."
    )
    event_texts: bool = Field(
        default=False, description="Put the query and the block in the events."
    )
    max_tracked: int = Field(
        default=10_000, ge=1, description="Enrichments remembered for evaluation mapping."
    )
    emit_span: bool = Field(
        default=False,
        description="Open LlamaIndex's own instrumentation span around each call.",
    )

    model_config = ConfigDict(validate_assignment=True)

    _enricher: FeatureEnricher = PrivateAttr()
    _monitor: Optional[FeatureMonitor] = PrivateAttr(default=None)
    _log: EnrichmentLog = PrivateAttr()
    _run: Enrichment = PrivateAttr()

    def __init__(
        self,
        enricher: FeatureEnricher,
        monitor: Optional[FeatureMonitor] = None,
        **fields: Any,
    ) -> None:
        super().__init__(**fields)
        self._log = EnrichmentLog(self.max_tracked, keep_results=False)
        self._run = Enrichment(
            enricher,
            self.class_name(),
            monitor=monitor,
            on_missing_identity=self.on_missing_identity,
            event_texts=self.event_texts,
            log=self._log,
        )
        self._enricher = enricher
        self._monitor = monitor
        warn_unknown_task(enricher, self.task_type, self.class_name())

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in ("on_missing_identity", "event_texts") and hasattr(self, "_run"):
            self._run.on_missing = self.on_missing_identity
            self._run.event_texts = self.event_texts

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
        identity = self._identity(None, request)
        query = query_bundle.query_str if query_bundle is not None else ""
        # pydantic serves private attributes through a slow __getattr__ (~1.8 us each)
        private = cast(Dict[str, Any], self.__pydantic_private__)
        run: Enrichment = private["_run"]
        result, block = run.run(query, identity, request)
        return self._apply(nodes, result, block, query, run.warned)

    async def _aenrich_nodes(
        self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle]
    ) -> List[NodeWithScore]:
        request = _CURRENT_REQUEST.get()
        workflow = await workflow_identity() if current_step_context() is not None else None
        identity = self._identity(workflow, request)
        query = query_bundle.query_str if query_bundle is not None else ""
        private = cast(Dict[str, Any], self.__pydantic_private__)
        run: Enrichment = private["_run"]
        result, block = await run.arun(query, identity, request)
        return self._apply(nodes, result, block, query, run.warned)

    # -- helpers ------------------------------------------------------------------

    def _identity(
        self, workflow: Optional[FeatureRequest], request: Optional[FeatureRequest]
    ) -> Identity:
        return resolve_identity(
            workflow,
            request,
            task_type=self.task_type,
            user_id=self.user_id,
            organization_id=self.organization_id,
        )

    def _apply(
        self,
        nodes: List[NodeWithScore],
        result: EnrichmentResult,
        block: str,
        query: str,
        warned: WarnOnce,
    ) -> List[NodeWithScore]:
        kept = [n for n in nodes if not n.node.metadata.get(FEATURE_CONTEXT_METADATA_KEY)]
        if not block or not self.inject_node or self.mode == "prompt":
            return kept
        node = _new_scored_node({"node": self._make_node(block, result), "score": self.node_score})
        if self.position == "first":
            kept.insert(0, node)
        else:
            kept.append(node)
        # a cut-off placed after this one must not drop the node silently
        note_injected(node.node.node_id, query, warned)
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
