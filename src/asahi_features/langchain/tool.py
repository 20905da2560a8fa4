"""``create_feature_tool``: the user's feature context as a tool an agent can call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Optional, Tuple

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, InjectedToolArg, StructuredTool

from ..models import EnrichmentResult
from .identity import _NOTHING, AgentIdentity, _context_id_keys, agent_identity
from .middleware import MissingIdentityError
from .serde import serializable

DEFAULT_TOOL_NAME = "get_user_context"
DEFAULT_TOOL_DESCRIPTION = (
    "Returns what is known about the current user and their organization (profile, "
    "preferences, account facts) from the feature store. Takes no arguments: the user is "
    "the one this conversation is with."
)
NO_CONTEXT = "No context is available for this user."
"""The tool's content when nothing could be added (no identity, no features, store down)."""


def create_feature_tool(
    enricher: Any,
    *,
    task_type: str = "general",
    name: str = DEFAULT_TOOL_NAME,
    description: str = DEFAULT_TOOL_DESCRIPTION,
    require_identity: bool = False,
) -> BaseTool:
    """A tool returning the current user's feature context (content) and the
    :class:`~asahi_features.models.EnrichmentResult` (artifact, as a
    :class:`~asahi_features.langchain.serde.SerializableEnrichmentResult`: the tool
    message checkpoints without warnings and round-trips through ``dumpd`` / ``load``).

    The model calls the tool without arguments; anything it passes (a ``user_id``
    included) is dropped. Identity comes only from the injected ``ToolRuntime``
    (``runtime.context``, as for :class:`FeatureContextMiddleware`), then from
    ``config["configurable"]`` (``asahi_user_id`` / ``user_id``, ...). ``invoke`` calls
    ``enricher.enrich``, ``ainvoke`` awaits ``enricher.aenrich``. A store that fails
    gives :data:`NO_CONTEXT`, never an error. (The tool function's ``runtime`` parameter is
    what LangGraph's tool node fills with the ``ToolRuntime``; the model never sees it.)

    Args:
        enricher: the :class:`~asahi_features.enricher.FeatureEnricher`.
        task_type: the task type unless the context or ``configurable`` gives one.
        name: the tool's name (letters, digits, ``_`` and ``-``, at most 64).
        description: what the model reads about the tool.
        require_identity: raise :class:`MissingIdentityError` when no identity is given
            (default: answer :data:`NO_CONTEXT`).

    Raises:
        TypeError: no enricher.
        ValueError: a bad ``name`` or empty ``description``.
    """
    if enricher is None or not callable(getattr(enricher, "aenrich", None)):
        raise TypeError(
            "create_feature_tool needs an enricher (a FeatureEnricher, with enrich and "
            f"aenrich), got {type(enricher).__name__}"
        )
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= 64
        or not all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
    ):
        raise ValueError(f"tool name must be 1-64 ASCII letters, digits, '_' or '-', got {name!r}")
    if not isinstance(description, str) or not description.strip():
        raise ValueError("tool description must be a non-empty str")
    by_task = _context_id_keys(enricher)

    def who(runtime: Any, config: Optional[RunnableConfig]) -> AgentIdentity:
        run_config = getattr(runtime, "config", None) or config or {}
        configurable: Mapping[str, Any] = run_config.get("configurable") or _NOTHING
        identity = agent_identity(
            getattr(runtime, "context", None), configurable, task_type, by_task
        )
        if identity.missing and require_identity:
            raise MissingIdentityError(
                f"tool {name!r}: no identity for task type {identity.task_type!r} and "
                "require_identity=True. Pass user_id, organization_id or <entity_type>_id "
                "in the agent's context or in config['configurable'] (asahi_user_id, ...)"
            )
        return identity

    def answer(result: EnrichmentResult) -> Tuple[str, EnrichmentResult]:
        return result.feature_context.strip() or NO_CONTEXT, serializable(result)

    def get_context(
        config: RunnableConfig, runtime: Annotated[Any, InjectedToolArg] = None
    ) -> Tuple[str, EnrichmentResult]:
        return answer(enricher.enrich(**who(runtime, config).enrich_kwargs("")))

    async def aget_context(
        config: RunnableConfig, runtime: Annotated[Any, InjectedToolArg] = None
    ) -> Tuple[str, EnrichmentResult]:
        return answer(await enricher.aenrich(**who(runtime, config).enrich_kwargs("")))

    return StructuredTool.from_function(
        func=get_context,
        coroutine=aget_context,
        name=name,
        description=description,
        response_format="content_and_artifact",
    )
