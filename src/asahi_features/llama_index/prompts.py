"""Prompt-level injection: the feature block in every LLM call of a query engine.

A node reaches only the LLM calls whose chunk holds it (one of N in ``refine``,
``compact``, ``tree_summarize``, ``accumulate`` ...). :func:`apply_feature_prompts` wraps
every prompt template of an engine or synthesizer instead, so each call starts with the
block of the current request, whatever the response mode and without a custom template.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, TypeVar

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import SerializeAsAny
from llama_index.core.prompts.base import BasePromptTemplate

from .dropped import note_served
from .run import current_block

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _with_block(text: str) -> str:
    block = current_block()
    if not block:
        return text
    note_served()
    # node mode: the node may already be in this call's context; never twice
    return text if block in text else f"{block}\n\n{text}"


def messages_with_block(messages: Sequence[ChatMessage], block: str) -> List[ChatMessage]:
    """A copy of ``messages`` whose leading system message starts with ``block`` (a new
    system message first when there is none); unchanged when ``block`` is empty or
    already in one of them. The caller's messages are never modified."""
    result = list(messages)
    if not block or any(block in (m.content or "") for m in result):
        return result
    if result and result[0].role == MessageRole.SYSTEM:
        first = result[0]
        result[0] = ChatMessage(
            role=MessageRole.SYSTEM,
            content=f"{block}\n\n{first.content or ''}",
            additional_kwargs=dict(first.additional_kwargs),
        )
    else:
        result.insert(0, ChatMessage(role=MessageRole.SYSTEM, content=block))
    return result


class FeaturePromptTemplate(BasePromptTemplate):  # type: ignore[no-redef]  # the kwargs field
    """Any prompt template, preceded by the current request's feature block.

    The block is the one the latest enrichment in this context produced (a
    :class:`FeatureContextPostprocessor`, :class:`FeatureMemoryBlock` or tool call); an
    un-enriched request formats exactly like ``inner``. When the formatted prompt already
    contains the block (the feature node survived into this call's context) nothing is
    added; when a re-ranker or cut-off dropped the node, the block is re-injected here.
    Chat formatting puts it at the head of the leading system message (a new one when
    there is none).

    Args:
        inner: the template to wrap (``PromptTemplate``, ``ChatPromptTemplate``,
            ``SelectorPromptTemplate`` ...).
    """

    inner: SerializeAsAny[BasePromptTemplate]

    def __init__(self, inner: BasePromptTemplate, **_: Any) -> None:
        if not isinstance(inner, BasePromptTemplate):
            raise TypeError(
                "FeaturePromptTemplate wraps a LlamaIndex prompt template "
                f"(BasePromptTemplate), got {type(inner).__name__}"
            )
        super().__init__(
            inner=inner,
            metadata=inner.metadata,
            template_vars=inner.template_vars,
            kwargs=inner.kwargs,
            output_parser=inner.output_parser,
            template_var_mappings=inner.template_var_mappings,
            function_mappings=inner.function_mappings,
        )

    def partial_format(self, **kwargs: Any) -> FeaturePromptTemplate:
        """The wrapped template partially formatted, still wrapped."""
        return FeaturePromptTemplate(self.inner.partial_format(**kwargs))

    def format(self, llm: Any = None, **kwargs: Any) -> str:
        """The wrapped template's text, preceded by the block."""
        return _with_block(self.inner.format(llm=llm, **kwargs))

    def format_messages(self, llm: Any = None, **kwargs: Any) -> List[ChatMessage]:
        """The wrapped template's messages, the block heading the system message."""
        block = current_block()
        if block:
            note_served()
        return messages_with_block(self.inner.format_messages(llm=llm, **kwargs), block)

    def get_template(self, llm: Any = None) -> str:
        """The wrapped template's text (without the per-request block)."""
        return self.inner.get_template(llm=llm)


def apply_feature_prompts(component: T) -> T:
    """Wrap every prompt of a query engine, synthesizer or any LlamaIndex ``PromptMixin``
    in a :class:`FeaturePromptTemplate`; returns ``component`` (changed in place).

    A :class:`FeatureContextPostprocessor` of the engine's ``node_postprocessors`` in the
    default ``mode="auto"`` is replaced, in this engine only, by a copy in
    ``mode="prompt"`` (sharing its enricher, monitor and ``enrichment_log``): the block is
    then in every LLM call of every response mode and never a node (so never a cited
    source, never in ``source_nodes``). One set to ``mode="node"`` keeps its node, and a
    block that a postprocessor placed after it dropped is re-injected by the prompt; it
    is warned about when it is not the last node postprocessor. Applying it twice wraps
    nothing twice.

    Raises:
        TypeError: ``component`` has no ``get_prompts`` / ``update_prompts``.
    """
    get = getattr(component, "get_prompts", None)
    update = getattr(component, "update_prompts", None)
    if get is None or update is None:
        raise TypeError(
            "apply_feature_prompts needs a LlamaIndex query engine, synthesizer or other "
            f"PromptMixin (with get_prompts/update_prompts), got {type(component).__name__}"
        )
    prompts: Dict[str, BasePromptTemplate] = get()
    wrapped = {
        key: FeaturePromptTemplate(prompt)
        for key, prompt in prompts.items()
        if not isinstance(prompt, FeaturePromptTemplate)
    }
    if wrapped:
        update(wrapped)
    _switch_to_prompt_mode(component)
    _warn_if_not_last(component)
    return component


def _switch_to_prompt_mode(component: Any) -> None:
    """Put a prompt-mode copy of each ``mode="auto"`` postprocessor in the engine's list
    (the caller's postprocessor, maybe shared with other engines, is not changed)."""
    from .postprocessor import FeatureContextPostprocessor

    posts: Optional[List[Any]] = getattr(component, "_node_postprocessors", None)
    if not isinstance(posts, list):
        return
    for position, post in enumerate(posts):
        if isinstance(post, FeatureContextPostprocessor) and post.mode == "auto":
            posts[position] = post.model_copy(update={"mode": "prompt"})


def _warn_if_not_last(component: Any) -> None:
    from .postprocessor import FeatureContextPostprocessor

    posts: Optional[List[Any]] = getattr(component, "_node_postprocessors", None)
    if not isinstance(posts, list):
        return
    for position, post in enumerate(posts):
        if (
            isinstance(post, FeatureContextPostprocessor)
            and post.mode == "node"
            and position != len(posts) - 1
        ):
            logger.warning(
                "FeatureContextPostprocessor is not the last node postprocessor of %s: "
                "%s after it may drop or move the feature node (the prompts re-inject the "
                "block; put it last, or use mode='prompt')",
                type(component).__name__,
                ", ".join(type(p).__name__ for p in posts[position + 1 :]),
            )
