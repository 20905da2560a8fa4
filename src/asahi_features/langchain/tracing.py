"""Trace hygiene: what an enrichment step reports to tracers, and a LangSmith anonymizer.

* :class:`TracedEnrichment` is what a :class:`FeatureEnrichmentRunnable` run reports as
  its output when ``trace_values=False`` (the default): feature names, outcome and
  counts, no feature value and no prompt. The chain itself still gets the real output.
* :func:`feature_anonymizer` masks every context block (``[Context from ...]`` ...
  ``[End context]``) in any payload, e.g. ``langsmith.Client(anonymizer=...)``: the
  prompts that the *next* steps (templates, chat models) receive do carry the block.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional

from langchain_core.callbacks import AsyncCallbackManagerForChainRun
from pydantic import BaseModel, PrivateAttr

from ..models import EnrichmentResult

ENRICHMENT_EVENT = "asahi_features.enrichment"
"""Name of the custom callback event an agent's enrichment is announced with (its data:
a :class:`TracedEnrichment`, no values)."""

MASK = "[feature context removed]"
"""What :func:`feature_anonymizer` writes in place of a context block."""

BLOCK_PATTERN = re.compile(r"\[Context from [^\]\n]{1,80}\].*?\[End context\]", re.DOTALL)
"""A rendered context block. The renderer guarantees no feature value can spell either
marker, so a block always ends at its own ``[End context]``."""


class TracedEnrichment(BaseModel):
    """An enrichment as tracers see it with ``trace_values=False``: names, outcome and
    counts, never a feature value or a prompt."""

    enrichment_id: str
    task_type: str
    reason: str
    features_used: List[str]
    feature_count: int
    feature_tokens_added: int
    features_available: bool
    held_out: bool
    store_failed: bool
    missing_entities: List[str]
    dropped_stale: List[str]
    dropped_budget: List[str]
    dropped_policy: List[str]
    entity_status: Dict[str, str]
    enrichment_latency_ms: float

    _result: Optional[EnrichmentResult] = PrivateAttr(default=None)

    @property
    def result(self) -> Optional[EnrichmentResult]:
        """The full result this summary was made from (in this process only; never
        serialised)."""
        return self._result

    @classmethod
    def of(cls, result: EnrichmentResult) -> TracedEnrichment:
        """The summary of ``result`` (which it keeps a private reference to)."""
        traced = cls.model_construct(  # the fields are typed already: no validation cost
            enrichment_id=result.enrichment_id,
            task_type=str(result.task_type),
            reason=_text(result.reason),
            features_used=list(result.features_used),
            feature_count=len(result.features_used),
            feature_tokens_added=result.feature_tokens_added,
            features_available=result.features_available,
            held_out=result.held_out,
            store_failed=result.store_failed,
            missing_entities=list(result.missing_entities),
            dropped_stale=list(result.dropped_stale),
            dropped_budget=list(result.dropped_budget),
            dropped_policy=list(result.dropped_policy),
            entity_status={k: _text(v) for k, v in result.entity_status.items()},
            enrichment_latency_ms=result.enrichment_latency_ms,
        )
        traced._result = result
        return traced


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


def traced_outputs(result: EnrichmentResult) -> Dict[str, Any]:
    """The outputs a hygienic enrichment run reports: ``{"enrichment": summary}``."""
    return {"enrichment": TracedEnrichment.of(result)}


def mask_blocks(text: str) -> str:
    """``text`` with every context block replaced by :data:`MASK`."""
    if "[Context from " not in text:
        return text
    return BLOCK_PATTERN.sub(MASK, text)


def feature_anonymizer(*, max_depth: int = 64) -> Callable[[Any], Any]:
    """A LangSmith anonymizer that masks every feature-context block in run payloads.

    Pass it to the LangSmith client that traces your chains or agents::

        from langsmith import Client
        client = Client(anonymizer=feature_anonymizer())

    Every string of every run's inputs and outputs (prompts, messages, the
    ``enriched_prompt`` / ``feature_context`` of ``output="dict"``) has its blocks
    replaced by :data:`MASK`; the rest of the text is kept.

    Args:
        max_depth: how deep into nested payloads strings are looked for.
    """
    from langsmith.anonymizer import create_anonymizer

    if not isinstance(max_depth, int) or max_depth < 1:
        raise ValueError(f"max_depth must be an int >= 1, got {max_depth!r}")
    return create_anonymizer(lambda text, path: mask_blocks(text), max_depth=max_depth)


def report_without_values(run_manager: Any, result: EnrichmentResult) -> None:
    """Make this run report :func:`traced_outputs` (names, outcome, counts) as its
    output to callback handlers and tracers; the chain still gets the real output.
    A run manager belongs to one run, so the override touches nothing else."""
    end = run_manager.on_chain_end
    summary = traced_outputs(result)
    if isinstance(run_manager, AsyncCallbackManagerForChainRun):

        async def aon_chain_end(outputs: Any, **kwargs: Any) -> Any:
            return await end(summary, **kwargs)

        run_manager.on_chain_end = aon_chain_end  # type: ignore[method-assign]
        return

    def on_chain_end(outputs: Any, **kwargs: Any) -> Any:
        return end(summary, **kwargs)

    run_manager.on_chain_end = on_chain_end
