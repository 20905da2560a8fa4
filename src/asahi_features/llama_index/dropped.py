"""Noticing a feature node that never reached the answer.

In ``mode="node"`` the block is one node of the engine's context. A node postprocessor
placed after :class:`~asahi_features.llama_index.FeatureContextPostprocessor` (a
similarity cut-off, a re-ranker keeping the top k) can drop it, and the LLM then answers
without the user's context. When the engine's prompts are wrapped
(:func:`~asahi_features.llama_index.apply_feature_prompts`) the block is re-injected by
the prompt; otherwise this module makes the loss loud: the postprocessor notes the node
it injected for this request, and a handler on LlamaIndex's root dispatcher checks, when
the synthesizer ends (``SynthesizeEndEvent``), that the node is among the response's
``source_nodes``. If it is not, a WARNING names the remedy (once per postprocessor,
DEBUG after): put the postprocessor last, or use ``mode="prompt"`` with
``apply_feature_prompts``. The log line carries no query text and no feature value.
"""

from __future__ import annotations

import logging
import threading
from contextvars import ContextVar
from typing import Any, List, Optional

from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.synthesis import SynthesizeEndEvent

from ..warn_once import WarnOnce

logger = logging.getLogger("asahi_features.llama_index")


class _Injected:
    """The feature node injected for the current request, and whether a wrapped prompt
    carried the block anyway (then losing the node loses nothing)."""

    __slots__ = ("node_id", "query", "served", "warned")

    def __init__(self, node_id: str, query: str, warned: WarnOnce) -> None:
        self.node_id = node_id
        self.query = query
        self.served = False
        self.warned = warned


_INJECTED: ContextVar[Optional[_Injected]] = ContextVar(
    "asahi_features_llama_index_injected", default=None
)
_ATTACHED = threading.Lock()
_handler: Optional[DroppedFeatureNodeCheck] = None


def note_injected(node_id: str, query: str, warned: WarnOnce) -> None:
    """Remember the feature node injected for this request (and make sure the check
    listens on the root dispatcher); ``warned`` is the injecting component's
    :class:`~asahi_features.warn_once.WarnOnce` (each component warns once)."""
    if _handler is None:
        _attach()
    _INJECTED.set(_Injected(node_id, query, warned))


def note_served() -> None:
    """A wrapped prompt carried the block: the node is no longer needed."""
    injected = _INJECTED.get()
    if injected is not None:
        injected.served = True


class DroppedFeatureNodeCheck(BaseEventHandler):
    """Warns when the feature node injected for a query is missing from the answer's
    ``source_nodes`` and no wrapped prompt carried the block (see the module docs)."""

    @classmethod
    def class_name(cls) -> str:
        """Name of the handler class."""
        return "DroppedFeatureNodeCheck"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        """Check a ``SynthesizeEndEvent`` against the node noted for this request."""
        if not isinstance(event, SynthesizeEndEvent):
            return
        injected = _INJECTED.get()
        if injected is None:
            return
        _INJECTED.set(None)
        query = event.query if isinstance(event.query, str) else event.query.query_str
        if injected.served or query != injected.query:
            return  # carried by the prompt, or a note left by another request
        sources: List[Any] = list(getattr(event.response, "source_nodes", None) or ())
        if any(getattr(n, "node_id", None) == injected.node_id for n in sources):
            return
        if injected.warned.claim("feature node dropped"):
            logger.warning(
                "FeatureContextPostprocessor: the feature node (the user's context) was "
                "dropped before the answer, by a node postprocessor placed after it, so the "
                "LLM answered without the user's features. Put FeatureContextPostprocessor "
                "last in node_postprocessors, or use mode='prompt' with "
                "apply_feature_prompts(engine) (later occurrences are logged at DEBUG)"
            )
        else:
            logger.debug("FeatureContextPostprocessor: the feature node was dropped again")


def _attach() -> None:
    global _handler
    with _ATTACHED:
        if _handler is None:
            handler = DroppedFeatureNodeCheck()
            get_dispatcher().add_event_handler(handler)
            _handler = handler
