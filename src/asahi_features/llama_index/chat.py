"""A path without a retriever: the feature block in plain chat calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from llama_index.core.base.llms.types import ChatMessage

from .identity import _CURRENT_REQUEST, FeatureRequest
from .memory import _last_user_text
from .prompts import messages_with_block
from .run import Enrichment, Identity, check_policy, resolve_identity, warn_unknown_task
from .workflow import current_step_context, workflow_identity

if TYPE_CHECKING:
    from ..enricher import FeatureEnricher
    from ..models import EnrichmentResult
    from ..monitor import FeatureMonitor


class FeatureChatEnricher:
    """Puts the feature block in the system message of a plain ``llm.chat(messages)``.

    For chat without a retriever (``SimpleChatEngine`` takes a
    :class:`FeatureMemoryBlock` instead). The enricher is asked with the last user
    message; the block heads the leading system message (a new one when there is none);
    the caller's messages are never modified.

    Identity: the ``user_id`` / ``organization_id`` / ``context`` passed to the call;
    else the workflow ``Context`` store (async, inside a step); else
    :func:`feature_context`. Never a mix of them.

    Args:
        enricher: the :class:`~asahi_features.enricher.FeatureEnricher`.
        task_type: the default task type.
        monitor: optional monitor (recorded in unless it is the enricher's own).
        on_missing_identity: ``"warn"`` (default), ``"ignore"`` or ``"raise"``.
        event_texts: put the query and the block in the instrumentation events.

    Example:
        >>> chat = FeatureChatEnricher(enricher)  # doctest: +SKIP
        >>> with feature_context(user_id="u_1001"):  # doctest: +SKIP
        ...     reply = llm.chat(chat.messages([ChatMessage(role="user", content="Hi")]))
    """

    def __init__(
        self,
        enricher: FeatureEnricher,
        *,
        task_type: str = "general",
        monitor: Optional[FeatureMonitor] = None,
        on_missing_identity: str = "warn",
        event_texts: bool = False,
    ) -> None:
        if not isinstance(task_type, str) or not task_type:
            raise ValueError(f"task_type must be a non-empty str, got {task_type!r}")
        self.task_type = task_type
        self._run = Enrichment(
            enricher,
            "FeatureChatEnricher",
            monitor=monitor,
            on_missing_identity=check_policy(on_missing_identity),
            event_texts=event_texts,
        )
        warn_unknown_task(enricher, task_type, "FeatureChatEnricher")

    def _identity(
        self,
        workflow: Optional[FeatureRequest],
        given: Tuple[Optional[str], Optional[str], Optional[str], Optional[Dict[str, Any]]],
    ) -> Identity:
        user_id, organization_id, task_type, context = given
        task = task_type or self.task_type
        if user_id or organization_id or context:
            return Identity(user_id, organization_id, task, context, "call")
        return resolve_identity(workflow, _CURRENT_REQUEST.get(), task_type=task)

    def messages(
        self,
        messages: Sequence[ChatMessage],
        *,
        user_id: Optional[str] = None,
        organization_id: Optional[str] = None,
        task_type: Optional[str] = None,
        context: Optional[Dict[str, Any]] = None,
    ) -> List[ChatMessage]:
        """``messages`` with the block in the system message (sync)."""
        return self.enrich(
            messages,
            user_id=user_id,
            organization_id=organization_id,
            task_type=task_type,
            context=context,
        )[0]

    async def amessages(
        self,
        messages: Sequence[ChatMessage],
        *,
        user_id: Optional[str] = None,
        organization_id: Optional[str] = None,
        task_type: Optional[str] = None,
        context: Optional[Dict[str, Any]] = None,
    ) -> List[ChatMessage]:
        """``messages`` with the block in the system message (async)."""
        return (
            await self.aenrich(
                messages,
                user_id=user_id,
                organization_id=organization_id,
                task_type=task_type,
                context=context,
            )
        )[0]

    def enrich(
        self, messages: Sequence[ChatMessage], **identity: Any
    ) -> Tuple[List[ChatMessage], EnrichmentResult]:
        """:meth:`messages` and the :class:`EnrichmentResult` (sync)."""
        given = _given(identity)
        who = self._identity(None, given)
        result, block = self._run.run(_last_user_text(list(messages)), who, _CURRENT_REQUEST.get())
        return messages_with_block(messages, block), result

    async def aenrich(
        self, messages: Sequence[ChatMessage], **identity: Any
    ) -> Tuple[List[ChatMessage], EnrichmentResult]:
        """:meth:`amessages` and the :class:`EnrichmentResult` (async)."""
        given = _given(identity)
        workflow = await workflow_identity() if current_step_context() is not None else None
        who = self._identity(workflow, given)
        result, block = await self._run.arun(
            _last_user_text(list(messages)), who, _CURRENT_REQUEST.get()
        )
        return messages_with_block(messages, block), result


_KEYS = ("user_id", "organization_id", "task_type", "context")


def _given(
    identity: Dict[str, Any],
) -> Tuple[Optional[str], Optional[str], Optional[str], Optional[Dict[str, Any]]]:
    unknown = sorted(set(identity) - set(_KEYS))
    if unknown:
        raise TypeError(f"unexpected argument(s) {unknown}; allowed: {', '.join(_KEYS)}")
    return (
        identity.get("user_id"),
        identity.get("organization_id"),
        identity.get("task_type"),
        identity.get("context"),
    )
