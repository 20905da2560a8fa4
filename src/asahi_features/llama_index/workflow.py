"""Identity that survives a workflow: kept in the workflow ``Context`` store.

A :func:`~asahi_features.llama_index.feature_context` block is a ContextVar: it reaches
every step of a workflow whose handler is created inside the block (``agent.run(...)``
called inside it), but not a handler created before the block is entered (the run keeps
the context it was created in). The workflow ``Context`` store reaches every step and
every tool of the run, whenever the handler was created::

    ctx = Context(agent)
    await set_workflow_identity(ctx, user_id="u_1001")
    response = await agent.run("What should I buy?", ctx=ctx, memory=memory)
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .identity import FeatureRequest

WORKFLOW_IDENTITY_KEY = "asahi_identity"
"""The key of the identity in the workflow ``Context`` store (a plain dict)."""


async def set_workflow_identity(
    ctx: Any,
    *,
    user_id: Optional[str] = None,
    organization_id: Optional[str] = None,
    task_type: Optional[str] = None,
    context: Optional[Dict[str, Any]] = None,
) -> None:
    """Put the request's identity in a workflow ``Context`` store.

    Every step, memory block and tool of the run reads it from there
    (:class:`FeatureMemoryBlock`, :func:`create_feature_tool`, and the async paths of
    :class:`FeatureContextPostprocessor`), and it wins over a :func:`feature_context`
    block. It is JSON-serialisable, so it survives ``ctx.to_dict()`` / ``from_dict``.

    Args:
        ctx: the ``llama_index.core.workflow.Context`` of the run (before or during it).
        user_id: the user the run is for.
        organization_id: the organisation the run is for.
        task_type: the task type (the component's own when ``None``).
        context: request context passed on to :meth:`FeatureEnricher.enrich`.

    Raises:
        TypeError: ``ctx`` has no ``store`` (not a workflow Context), or an id is not a str.
    """
    store = getattr(ctx, "store", None)
    if store is None or not hasattr(store, "set"):
        raise TypeError(
            "set_workflow_identity needs a llama_index.core.workflow.Context (with a "
            f"store), got {type(ctx).__name__}"
        )
    for name, value in (
        ("user_id", user_id),
        ("organization_id", organization_id),
        ("task_type", task_type),
    ):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
    if context is not None and not isinstance(context, dict):
        raise TypeError(f"context must be a dict or None, got {type(context).__name__}")
    await store.set(
        WORKFLOW_IDENTITY_KEY,
        {
            "user_id": user_id,
            "organization_id": organization_id,
            "task_type": task_type,
            "context": context,
        },
    )


def _step_context_var() -> Any:
    try:  # the ContextVar behind Context.get_step_context(): a lookup, no exception
        from workflows.runtime.types.results import InternalContextVar
    except ImportError:  # pragma: no cover - another llama-index-workflows layout
        return None
    return InternalContextVar


_STEP_CONTEXT = _step_context_var()


def current_step_context() -> Any:
    """The workflow ``Context`` of the step running now, or ``None`` outside a step."""
    if _STEP_CONTEXT is not None:
        ref = _STEP_CONTEXT.get(None)
        return ref() if ref is not None else None
    try:  # pragma: no cover - only without the ContextVar above
        from workflows import Context

        return Context.get_step_context()
    except Exception:  # pragma: no cover
        return None


async def workflow_identity(ctx: Any = None) -> Optional[FeatureRequest]:
    """The identity stored by :func:`set_workflow_identity` in ``ctx`` (default: the
    ``Context`` of the running step), or ``None`` when there is none."""
    if ctx is None:
        ctx = current_step_context()
        if ctx is None:
            return None
    store = getattr(ctx, "store", None)
    if store is None:
        return None
    value = await store.get(WORKFLOW_IDENTITY_KEY, default=None)
    if not isinstance(value, dict):
        return None
    context = value.get("context")
    return FeatureRequest(
        user_id=_text(value.get("user_id")),
        organization_id=_text(value.get("organization_id")),
        task_type=_text(value.get("task_type")),
        context=context if isinstance(context, dict) else None,
    )


def _text(value: Any) -> Optional[str]:
    return None if value is None else str(value)
