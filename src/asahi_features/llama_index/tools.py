"""create_feature_tool: the user's feature block as a tool an agent can call."""

# No ``from __future__ import annotations`` here: FunctionTool finds the workflow
# Context parameter by its evaluated annotation.

from typing import TYPE_CHECKING, Optional

from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import Context

from .identity import _CURRENT_REQUEST
from .run import Enrichment, check_policy, resolve_identity, warn_unknown_task
from .workflow import workflow_identity

if TYPE_CHECKING:
    from ..enricher import FeatureEnricher
    from ..monitor import FeatureMonitor

NO_PROFILE_TEXT = "No profile information is available for this user."
"""What the tool answers when no feature reached the block."""

DEFAULT_TOOL_DESCRIPTION = (
    "Returns what is known about the current user and their organisation (profile, "
    "preferences, plan). Call it before answering anything that depends on who the user "
    "is. It takes no user id: the user is the one this conversation is for."
)


def create_feature_tool(
    enricher: "FeatureEnricher",
    *,
    task_type: str = "general",
    name: str = "get_user_context",
    description: str = DEFAULT_TOOL_DESCRIPTION,
    monitor: "Optional[FeatureMonitor]" = None,
    on_missing_identity: str = "warn",
    event_texts: bool = False,
) -> FunctionTool:
    """A ``FunctionTool`` that returns the current user's feature block.

    The identity comes from the workflow ``Context`` the agent passes to the tool (its
    store, set with :func:`set_workflow_identity`), else from the :func:`feature_context`
    block around the run; never from the model's arguments: the tool's only argument is
    an optional ``question`` (what the model wants to know, used as the prompt the
    enricher is asked with), so a model cannot ask for another user's features.

    Args:
        enricher: the :class:`~asahi_features.enricher.FeatureEnricher`.
        task_type: the task type the features are selected for.
        name: the tool's name (a non-empty identifier).
        description: what the model is told the tool does.
        monitor: optional monitor (recorded in unless it is the enricher's own).
        on_missing_identity: ``"warn"`` (default), ``"ignore"`` or ``"raise"``.
        event_texts: put the question and the block in the instrumentation events.

    Raises:
        ValueError: ``name`` is not an identifier, ``task_type`` is empty or
            ``on_missing_identity`` is not one of the three.
        TypeError: ``enricher`` has no ``enrich`` / ``aenrich`` methods.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a non-empty identifier (letters, digits, _), got {name!r}")
    if not isinstance(task_type, str) or not task_type:
        raise ValueError(f"task_type must be a non-empty str, got {task_type!r}")
    run = Enrichment(
        enricher,
        "create_feature_tool",
        monitor=monitor,
        on_missing_identity=check_policy(on_missing_identity),
        event_texts=event_texts,
    )
    warn_unknown_task(enricher, task_type, f"create_feature_tool({name!r})")

    async def get_user_context(ctx: Context, question: str = "") -> str:
        workflow = await workflow_identity(ctx)
        request = _CURRENT_REQUEST.get()
        identity = resolve_identity(workflow, request, task_type=task_type)
        _, block = await run.arun(question, identity, request)
        return block or NO_PROFILE_TEXT

    return FunctionTool.from_defaults(async_fn=get_user_context, name=name, description=description)


__all__ = ["DEFAULT_TOOL_DESCRIPTION", "NO_PROFILE_TEXT", "create_feature_tool"]
