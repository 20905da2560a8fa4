"""The feature context node: its metadata keys, builders and the block text."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Union

from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle, TextNode

from ..models import EnrichmentResult, trusted_constructor
from .identity import _CURRENT_REQUEST

logger = logging.getLogger(__name__)

FEATURE_CONTEXT_METADATA_KEY = "asahi_feature_context"
"""Metadata flag (``True``) of the node that carries the feature context block."""
ENRICHMENT_ID_METADATA_KEY = "asahi_enrichment_id"
"""Metadata key of that node holding :attr:`EnrichmentResult.enrichment_id`."""
TASK_TYPE_METADATA_KEY = "asahi_task_type"


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
    from .run import current_block

    block = current_block()
    if block:
        return block
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


def is_feature_context_node(node: Union[NodeWithScore, BaseNode]) -> bool:
    """True for the node :class:`FeatureContextPostprocessor` injects."""
    inner = node.node if isinstance(node, NodeWithScore) else node
    return bool(inner.metadata.get(FEATURE_CONTEXT_METADATA_KEY))
