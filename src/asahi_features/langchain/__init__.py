"""LangChain integration: an enrichment ``Runnable`` and a monitor callback handler.

Needs the ``[langchain]`` extra (``langchain-core`` and, for evaluation, ``langsmith``).

* :class:`FeatureEnrichmentRunnable` puts a :class:`~asahi_features.enricher.FeatureEnricher`
  into any chain: ``runnable | llm`` or ``runnable | ChatPromptTemplate | llm``.
  ``batch`` / ``abatch`` of N inputs cost one backend batch fetch per entity type while
  every input keeps its own callback run.
* :class:`FeatureMonitorCallbackHandler` (a ``BaseTracer``) records every enrichment of a
  chain in a :class:`~asahi_features.monitor.FeatureMonitor` and ties it to the chain's
  root run, so that a quality score for that run lands on the enrichment. It can run
  evaluators on every finished root run.
* :func:`evaluate_runs`, :func:`record_langsmith_results` and :func:`evaluate_offline`
  score finished runs with LangSmith ``RunEvaluator`` objects or plain functions and
  record the scores, without any network access or LangSmith account.

One module per job: ``identity`` (who a request is for), ``messages`` (input shapes and
block placement), ``notes`` (warn once), ``provenance`` (genuine results), ``runnable``
(with ``batching``), ``runs`` (results in run trees), ``handler``, ``evaluation``,
``model_calls`` (which model answered a run, for the per-model monitor),
``middleware`` (agents), ``tool`` (a features tool), ``tracing`` (trace hygiene, the
anonymizer) and ``serde`` (LangChain and LangGraph serialisation). Every module logs to
the ``asahi_features.langchain`` logger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .evaluation import (
    Evaluator,
    RunQuality,
    evaluate_offline,
    evaluate_runs,
    offline_langsmith_client,
    record_langsmith_results,
)
from .handler import FeatureMonitorCallbackHandler
from .identity import IDENTITY_PREFIX
from .messages import (
    ENRICHMENT_KEY,
    EnrichedChatPromptValue,
    EnrichedMessages,
    EnrichedPrompt,
    EnrichedStringPromptValue,
)
from .model_calls import ModelCall, model_call_of_run
from .runnable import FeatureEnrichmentRunnable
from .runs import find_enrichments
from .tracing import MASK, TracedEnrichment, feature_anonymizer

if TYPE_CHECKING:
    from .middleware import FeatureContextMiddleware, MissingIdentityError
    from .serde import (
        SERDE_ALLOWLIST,
        SerializableEnrichmentResult,
        feature_serializer,
        serializable,
    )
    from .tool import create_feature_tool

_LAZY = {
    # these import langchain.agents (and so langgraph): loaded on first use only
    "FeatureContextMiddleware": ".middleware",
    "MissingIdentityError": ".middleware",
    "create_feature_tool": ".tool",
    "SERDE_ALLOWLIST": ".serde",
    "SerializableEnrichmentResult": ".serde",
    "feature_serializer": ".serde",
    "serializable": ".serde",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ENRICHMENT_KEY",
    "IDENTITY_PREFIX",
    "MASK",
    "SERDE_ALLOWLIST",
    "EnrichedChatPromptValue",
    "EnrichedMessages",
    "EnrichedPrompt",
    "EnrichedStringPromptValue",
    "Evaluator",
    "FeatureContextMiddleware",
    "FeatureEnrichmentRunnable",
    "FeatureMonitorCallbackHandler",
    "MissingIdentityError",
    "ModelCall",
    "RunQuality",
    "SerializableEnrichmentResult",
    "TracedEnrichment",
    "create_feature_tool",
    "evaluate_offline",
    "evaluate_runs",
    "feature_anonymizer",
    "feature_serializer",
    "find_enrichments",
    "model_call_of_run",
    "offline_langsmith_client",
    "record_langsmith_results",
    "serializable",
]
