"""Finding enrichment results in finished run trees."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import (
    Any,
    Dict,
    List,
    Optional,
)

from ..models import EnrichmentResult
from .messages import (
    ENRICHMENT_KEY,
    EnrichedChatPromptValue,
    EnrichedMessages,
    EnrichedPrompt,
    EnrichedStringPromptValue,
)
from .tracing import TracedEnrichment

# -- finding enrichments in runs --------------------------------------------------------


def _enrichment_in(value: Any) -> Optional[EnrichmentResult]:
    if isinstance(
        value,
        (EnrichedPrompt, EnrichedMessages, EnrichedChatPromptValue, EnrichedStringPromptValue),
    ):
        return value.enrichment
    if isinstance(value, EnrichmentResult):
        return value
    if isinstance(value, TracedEnrichment):  # a hygienic run's output: its own result
        return value.result
    if isinstance(value, Mapping) and "enrichment_id" in value and "enriched_prompt" in value:
        try:  # a tracer that serialised the output
            return EnrichmentResult.model_validate(value)
        except Exception:
            return None
    return None


def _enrichment_of_outputs(outputs: Any) -> Optional[EnrichmentResult]:
    if not isinstance(outputs, Mapping):
        return _enrichment_in(outputs)
    found = _enrichment_in(outputs.get(ENRICHMENT_KEY))
    if found is None:
        found = _enrichment_in(outputs.get("output"))
    if found is None:  # a {"messages": [...]} state
        found = _enrichment_in(outputs.get("messages"))
    return found


def find_enrichments(run: Any) -> List[EnrichmentResult]:
    """Every enrichment-like output in a finished run tree (the run and its
    ``child_runs``).

    Works on LangChain tracer runs and on the runs returned by ``langsmith.evaluate``.
    Each enrichment appears once (by ``enrichment_id``), in the order found. This reads
    what the outputs *say*: any step can return something that looks like a result.
    The recording helpers of this module (the handler, :func:`evaluate_runs`,
    :func:`record_langsmith_results`, :func:`evaluate_offline`) record only results a
    :class:`FeatureEnrichmentRunnable` of this process produced.
    """
    found: Dict[str, EnrichmentResult] = {}
    for result in _outputs_in_tree(run):
        found.setdefault(result.enrichment_id, result)
    return list(found.values())


def _outputs_in_tree(run: Any) -> Iterable[EnrichmentResult]:
    """Every enrichment-like output of a run tree, depth first, repeats included."""
    stack = [run]
    while stack:
        node = stack.pop()
        result = _enrichment_of_outputs(getattr(node, "outputs", None))
        if result is not None:
            yield result
        stack.extend(reversed(list(getattr(node, "child_runs", None) or [])))
