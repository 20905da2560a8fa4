"""FeatureMemoryBlock: the feature block as a LlamaIndex ``Memory`` block, for agents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, field_validator
from llama_index.core.memory.memory import BaseMemoryBlock

from .identity import _CURRENT_REQUEST
from .run import Enrichment, Identity, resolve_identity, warn_unknown_task
from .workflow import current_step_context, workflow_identity

if TYPE_CHECKING:
    from ..enricher import FeatureEnricher
    from ..models import EnrichmentResult
    from ..monitor import FeatureMonitor


class FeatureMemoryBlock(BaseMemoryBlock[str]):
    """The user's feature block in every LLM call of an agent, through its ``Memory``.

    Add it to ``Memory.from_defaults(session_id=..., memory_blocks=[block])`` and pass
    the memory to ``FunctionAgent`` / ``ReActAgent`` / ``AgentWorkflow`` with
    ``agent.run(msg, memory=memory)`` (or to ``SimpleChatEngine.from_defaults(memory=...)``).
    Each time the memory is read (every LLM call of every turn) the block is refreshed
    with :meth:`FeatureEnricher.aenrich` (async-native, behind the guard), asked with the
    last user message. Its priority is 0, so the memory's token limit never truncates it.

    Identity: the block's own ``user_id`` / ``organization_id`` / ``context`` (a memory
    is one session, so one user) when set; otherwise the workflow ``Context`` store
    (:func:`set_workflow_identity`), then :func:`feature_context`. Without any,
    ``on_missing_identity`` applies (``"warn"`` by default, once per cause).

    Args:
        enricher: the :class:`~asahi_features.enricher.FeatureEnricher`.
        monitor: optional monitor (recorded in unless it is the enricher's own).
        **fields: ``user_id``, ``organization_id``, ``context``, ``task_type``
            (``"general"``), ``name`` (``"user_features"``), ``on_missing_identity``,
            ``event_texts``.

    Raises:
        TypeError: ``enricher`` has no ``enrich`` / ``aenrich`` methods.
        ValueError: ``priority`` is not 0 (the block must never be truncated).

    Example:
        >>> block = FeatureMemoryBlock(enricher, user_id="u_1001")  # doctest: +SKIP
        >>> memory = Memory.from_defaults(session_id="s1", memory_blocks=[block])  # doctest: +SKIP
        >>> await agent.run("What should I buy?", memory=memory)  # doctest: +SKIP
    """

    model_config = ConfigDict(validate_assignment=True, arbitrary_types_allowed=True)

    name: str = Field(default="user_features", min_length=1)
    description: Optional[str] = "What the feature store knows about the user."
    priority: int = 0
    accept_short_term_memory: bool = False
    user_id: Optional[str] = None
    organization_id: Optional[str] = None
    context: Optional[Dict[str, Any]] = None
    task_type: str = Field(default="general", min_length=1)
    on_missing_identity: Literal["ignore", "warn", "raise"] = "warn"
    event_texts: bool = False

    _run: Enrichment = PrivateAttr()
    _last: Optional[EnrichmentResult] = PrivateAttr(default=None)
    _own: Optional[Identity] = PrivateAttr(default=None)
    _recent: Dict[Any, str] = PrivateAttr(default_factory=dict)

    @field_validator("priority")
    @classmethod
    def _never_truncated(cls, value: int) -> int:
        if value != 0:
            raise ValueError(
                f"priority must be 0 (the feature block is never truncated), got {value}"
            )
        return value

    def __init__(
        self,
        enricher: FeatureEnricher,
        monitor: Optional[FeatureMonitor] = None,
        **fields: Any,
    ) -> None:
        super().__init__(**fields)
        self._run = Enrichment(
            enricher,
            "FeatureMemoryBlock",
            monitor=monitor,
            on_missing_identity=self.on_missing_identity,
            event_texts=self.event_texts,
        )
        warn_unknown_task(enricher, self.task_type, "FeatureMemoryBlock")
        # computed once (and again on assignment): read on every LLM call
        self._own = self._own_identity()

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in ("on_missing_identity", "event_texts") and hasattr(self, "_run"):
            self._run.on_missing = self.on_missing_identity
            self._run.event_texts = self.event_texts
        if name in ("user_id", "organization_id", "context", "task_type"):
            self._own = self._own_identity()

    @property
    def last_result(self) -> Optional[EnrichmentResult]:
        """The latest enrichment made by this block (``None`` before the first read)."""
        return self._last

    def _own_identity(self) -> Optional[Identity]:
        if not (self.user_id or self.organization_id or self.context):
            return None
        return Identity(
            self.user_id, self.organization_id, self.task_type, self.context, "component"
        )

    async def identity(self) -> Identity:
        """The identity the next read uses (see the class docs)."""
        own: Optional[Identity] = self.__pydantic_private__["_own"]  # type: ignore[index]
        if own is not None:
            return own
        workflow = await workflow_identity() if current_step_context() is not None else None
        return resolve_identity(workflow, _CURRENT_REQUEST.get(), task_type=self.task_type)

    async def _aget(self, messages: Optional[List[ChatMessage]] = None, **_: Any) -> str:
        identity = await self.identity()
        key = _cache_key(identity)
        recent: Dict[Any, str] = self.__pydantic_private__["_recent"]  # type: ignore[index]
        if key is not None and messages and messages[-1].role == MessageRole.ASSISTANT:
            # The read after the answer (agents fetch the history once more after
            # finalising a turn): no LLM call answers the user with it, so the turn's
            # block is reused rather than enriched and counted a second time.
            cached = recent.get(key)
            if cached is not None:
                return cached
        result, block = await self._run.arun(
            _last_user_text(messages), identity, _CURRENT_REQUEST.get()
        )
        self._last = result
        if key is not None:
            if len(recent) >= _RECENT_MAX and key not in recent:
                recent.pop(next(iter(recent)), None)  # oldest first (insertion order)
            recent[key] = block
        return block

    async def _aput(self, messages: List[ChatMessage]) -> None:
        """Nothing to store: the features come from the feature store."""


_RECENT_MAX = 1024
"""Identities whose latest block a shared block remembers (for the post-answer read)."""


def _cache_key(identity: Identity) -> Any:
    if identity.context is not None or identity.source == "none":
        return None  # a dict is not hashable; no identity: nothing worth reusing
    return identity[:3]


def _last_user_text(messages: Optional[List[ChatMessage]]) -> str:
    for message in reversed(messages or ()):
        if message.role == MessageRole.USER:
            return message.content or ""
    return ""
