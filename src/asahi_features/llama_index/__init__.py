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
* :class:`FeatureMemoryBlock` (agents' ``Memory``), :func:`create_feature_tool` (a tool
  whose identity never comes from the model) and :class:`FeatureChatEnricher` (plain
  chat calls) cover agents and chat without a retriever; :func:`apply_feature_prompts`
  puts the block in every LLM call of every response mode of a query engine.
* :func:`set_workflow_identity` keeps the identity in a workflow ``Context`` so that it
  survives every step, tool and handler of the run.
* :func:`record_evaluation` maps LlamaIndex ``EvaluationResult`` objects (one, a list,
  or the dict ``BatchEvalRunner`` returns) back to the enrichments of the queries they
  evaluated and records their scores as quality in the monitor.

One module per job: ``identity`` (feature_context), ``workflow`` (the Context store),
``run`` (the steps every component shares), ``nodes`` (the feature node), ``log`` (recent
enrichments), ``events`` (instrumentation), ``postprocessor``, ``prompts``, ``memory``,
``tools``, ``chat`` and ``evaluation``.
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "asahi_features.llama_index needs llama-index-core; install it with "
        "`pip install 'asahi-features[llama-index]'`"
    ) from exc

from .chat import FeatureChatEnricher
from .evaluation import (
    EvaluationInput,
    EvaluationRecord,
    enrichment_id_from_response,
    record_evaluation,
)
from .events import FeatureEnrichmentEvent, FeatureMonitorEventHandler
from .identity import FeatureRequest, current_feature_request, feature_context
from .log import EnrichmentLog
from .memory import FeatureMemoryBlock
from .model_name import model_name
from .nodes import (
    ENRICHMENT_ID_METADATA_KEY,
    FEATURE_CONTEXT_METADATA_KEY,
    TASK_TYPE_METADATA_KEY,
    feature_context_text,
    is_feature_context_node,
)
from .postprocessor import FeatureContextPostprocessor
from .prompts import FeaturePromptTemplate, apply_feature_prompts, messages_with_block
from .run import MissingIdentityError
from .tools import create_feature_tool
from .workflow import WORKFLOW_IDENTITY_KEY, set_workflow_identity, workflow_identity

__all__ = [
    "ENRICHMENT_ID_METADATA_KEY",
    "FEATURE_CONTEXT_METADATA_KEY",
    "TASK_TYPE_METADATA_KEY",
    "WORKFLOW_IDENTITY_KEY",
    "EnrichmentLog",
    "EvaluationInput",
    "EvaluationRecord",
    "FeatureChatEnricher",
    "FeatureContextPostprocessor",
    "FeatureEnrichmentEvent",
    "FeatureMemoryBlock",
    "FeatureMonitorEventHandler",
    "FeaturePromptTemplate",
    "FeatureRequest",
    "MissingIdentityError",
    "apply_feature_prompts",
    "create_feature_tool",
    "current_feature_request",
    "enrichment_id_from_response",
    "feature_context",
    "feature_context_text",
    "is_feature_context_node",
    "messages_with_block",
    "model_name",
    "record_evaluation",
    "set_workflow_identity",
    "workflow_identity",
]
