"""Enriched output types and the message plumbing: finding the messages of an input,
the last human text, and placing the block (system message or last human message).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import (
    Any,
    List,
    Optional,
)

from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompt_values import (
    ChatPromptValue,
    StringPromptValue,
)
from pydantic import BaseModel, PrivateAttr

from ..models import EnrichmentResult

ENRICHMENT_KEY = "enrichment"
"""Reserved output key (``output="dict"``) holding the :class:`EnrichmentResult`."""


class EnrichedPrompt(str):
    """The enriched prompt (a ``str``) that also carries its :class:`EnrichmentResult`.

    Returned by :class:`FeatureEnrichmentRunnable` with ``output="prompt"``: it is the
    prompt string every LLM accepts, and the monitor handler reads ``.enrichment`` from
    the step's output.
    """

    enrichment: EnrichmentResult

    def __new__(cls, text: str, enrichment: EnrichmentResult) -> EnrichedPrompt:
        obj = str.__new__(cls, text)
        obj.enrichment = enrichment
        return obj

    def __reduce__(self) -> Any:
        return (EnrichedPrompt, (str(self), self.enrichment))


class EnrichedMessages(List[BaseMessage]):
    """The enriched messages (a ``list``) that also carry their :class:`EnrichmentResult`.

    Returned for a message list or a single message input (``output="prompt"``), and as
    ``state["messages"]`` for a ``{"messages": [...]}`` input: any chat model accepts it,
    and the monitor handler reads ``.enrichment`` from the step's output.
    """

    enrichment: EnrichmentResult

    def __init__(self, messages: Iterable[BaseMessage], enrichment: EnrichmentResult) -> None:
        super().__init__(messages)
        self.enrichment = enrichment

    def __reduce__(self) -> Any:
        return (EnrichedMessages, (list(self), self.enrichment))


class EnrichedChatPromptValue(ChatPromptValue):
    """A ``ChatPromptValue`` with the block added, carrying its :class:`EnrichmentResult`
    (``.enrichment``); returned for a ``ChatPromptValue`` input."""

    _enrichment: Optional[EnrichmentResult] = PrivateAttr(default=None)

    @property
    def enrichment(self) -> Optional[EnrichmentResult]:
        """The result of the enrichment that produced this value."""
        return self._enrichment


class EnrichedStringPromptValue(StringPromptValue):
    """A ``StringPromptValue`` holding the enriched prompt, carrying its
    :class:`EnrichmentResult` (``.enrichment``); returned for a ``StringPromptValue``."""

    _enrichment: Optional[EnrichmentResult] = PrivateAttr(default=None)

    @property
    def enrichment(self) -> Optional[EnrichmentResult]:
        """The result of the enrichment that produced this value."""
        return self._enrichment


def _messages_of(input: Any, prompt_key: str) -> Optional[Sequence[Any]]:
    """The messages of a message-shaped input (chat prompt value, message list, single
    message, ``{"messages": [...]}`` state without ``prompt_key``), else ``None``."""
    if isinstance(input, ChatPromptValue):
        return input.messages
    if isinstance(input, BaseMessage):
        return [input]
    if isinstance(input, (list, tuple)) and all(isinstance(m, BaseMessage) for m in input):
        return input
    if isinstance(input, Mapping) and prompt_key not in input:
        messages = input.get("messages")
        if isinstance(messages, (list, tuple)) and all(
            isinstance(m, BaseMessage) for m in messages
        ):
            return messages
    return None


def _last_human_text(messages: Sequence[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.text
    return ""


def _with_block(content: Any, block: str, before: bool) -> Any:
    """``content`` (a str or a list of content blocks) with ``block`` added before or
    after it; a new object, the original is not touched."""
    if isinstance(content, str):
        if not content:
            return block
        return f"{block}\n\n{content}" if before else f"{content}\n\n{block}"
    part = {"type": "text", "text": block}
    items = list(content or [])
    return [part, *items] if before else [*items, part]


def _place(messages: Sequence[BaseMessage], block: str, placement: str) -> List[BaseMessage]:
    """A new message list with ``block`` in the leading system message (merged into an
    existing one, else a new one) or, with ``placement="human"``, in front of the last
    human message's text. The caller's messages are copied, never changed."""
    out = list(messages)
    if not block:
        return out
    if placement == "human":
        for i in range(len(out) - 1, -1, -1):
            message = out[i]
            if isinstance(message, HumanMessage):
                out[i] = message.model_copy(
                    update={"content": _with_block(message.content, block, before=True)}
                )
                return out
        # no human message: fall back to the system message
    if out and isinstance(out[0], SystemMessage):
        first = out[0]
        out[0] = first.model_copy(
            update={"content": _with_block(first.content, block, before=False)}
        )
    else:
        out.insert(0, SystemMessage(content=block))
    return out


class MessagesInput(BaseModel):
    """A ``{"messages": [...]}`` state (e.g. LangGraph's ``MessagesState``)."""

    messages: List[AnyMessage]
