"""Tie LlamaIndex's own LLM events to the enrichment that preceded them in a request.

:class:`LLMCallTracker` follows ``LLMChatStartEvent`` / ``LLMCompletionStartEvent``
(the model, from ``model_dict``) and ``LLMChatEndEvent`` / ``LLMCompletionEndEvent``
(the token usage the response reports) and files them under the enrichment of the same
request, so that :func:`~asahi_features.llama_index.record_evaluation` can record each
score with the model that answered (``FeatureMonitor.record_quality(model=...)``).

The request is found in one of two ways:

* inside a workflow run (``FunctionAgent``, ``AgentWorkflow``, any ``Workflow``): the
  run id LlamaIndex puts in the instrument tags of every event of the run. Steps run as
  separate tasks, but all carry the same run id, and a new run never sees an earlier
  run's enrichment;
* elsewhere (query and chat engines, direct LLM calls): a ``ContextVar`` set when the
  enrichment event is handled (a plain call, so the value lands in the caller's context
  and every task it starts afterwards). A ``QueryStartEvent`` clears it, so a query
  without an enrichment is never filed under an earlier query's on the same thread.

Several LLM calls after one enrichment (an agent's loop, a refine synthesizer): the
model is the last call's (that names one) and the token counts are summed over the
calls that report usage.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Optional, Tuple

from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.events.query import QueryStartEvent
from llama_index_instrumentation.dispatcher import active_instrument_tags

from ..monitor.model_names import model_name_of
from ..monitor.per_model import LLMCall

__all__ = ["LLMCallTracker", "usage_of"]

RUN_ID_TAG = "llamaindex.run_id"
"""The instrument tag a workflow run puts on every event dispatched inside it."""

_CURRENT: ContextVar[Optional[str]] = ContextVar("asahi_features_llm_enrichment", default=None)

_INPUT_KEYS = ("prompt_tokens", "input_tokens", "prompt_token_count")
_OUTPUT_KEYS = ("completion_tokens", "output_tokens", "candidates_token_count")
_USAGE_KEYS = ("usage", "usage_metadata", "token_usage")

Usage = Tuple[Optional[int], Optional[int]]


def _get(source: Any, key: str) -> Any:
    try:
        if isinstance(source, Mapping):
            return source.get(key)
        return getattr(source, key, None)
    except Exception:  # a failing property or mapping: no usage, never an error
        return None


def _count(value: Any) -> Optional[int]:
    if type(value) is int and value >= 0:
        return value
    if type(value) is float and value >= 0 and value.is_integer():
        return int(value)
    return None


def _first(source: Any, keys: Tuple[str, ...]) -> Optional[int]:
    for key in keys:
        found = _count(_get(source, key))
        if found is not None:
            return found
    return None


def _usage_in(container: Any) -> Usage:
    if container is None or isinstance(container, (str, bytes, int, float)):
        return None, None
    for key in _USAGE_KEYS:
        usage = _get(container, key)
        if usage is not None:
            found = (_first(usage, _INPUT_KEYS), _first(usage, _OUTPUT_KEYS))
            if found != (None, None):
                return found
    return _first(container, _INPUT_KEYS), _first(container, _OUTPUT_KEYS)


def usage_of(response: Any) -> Tuple[Optional[int], Optional[int], Any]:
    """The ``(input_tokens, output_tokens, container)`` an LLM response reports.

    Looks in ``response.raw``, ``response.additional_kwargs`` and (chat responses)
    ``response.message.additional_kwargs``, for OpenAI-style ``usage.prompt_tokens`` /
    ``completion_tokens``, ``usage.input_tokens`` / ``output_tokens`` (attributes or
    mapping keys), or the same keys at the top level. Unknown counts are ``None``;
    ``container`` is the object they were read from (``None`` when none). Never raises.
    """
    if response is None:
        return None, None, None
    message = _get(response, "message")
    for container in (
        _get(response, "raw"),
        _get(response, "additional_kwargs"),
        _get(message, "additional_kwargs") if message is not None else None,
    ):
        found = _usage_in(container)
        if found != (None, None):
            return found[0], found[1], container
    return None, None, None


class _Call:
    """The model and summed usage of the LLM calls after one enrichment."""

    __slots__ = ("input_tokens", "last_source", "model", "output_tokens")

    def __init__(self) -> None:
        self.model: Optional[str] = None
        self.input_tokens: Optional[int] = None
        self.output_tokens: Optional[int] = None
        self.last_source: Any = None

    def add(self, input_tokens: Optional[int], output_tokens: Optional[int]) -> None:
        if input_tokens is not None:
            self.input_tokens = (self.input_tokens or 0) + input_tokens
        if output_tokens is not None:
            self.output_tokens = (self.output_tokens or 0) + output_tokens


def _run_id(event: BaseEvent) -> Optional[str]:
    run = active_instrument_tags.get().get(RUN_ID_TAG)
    if run is None:
        tags = getattr(event, "tags", None)
        run = tags.get(RUN_ID_TAG) if isinstance(tags, Mapping) else None
    return None if run is None else str(run)


class LLMCallTracker:
    """Enrichment id -> the model and token usage of the LLM calls that followed it.

    Bounded: at most ``max_tracked`` enrichments (and workflow runs) are remembered, the
    oldest forgotten first. Thread-safe. See the module docs for how a call is tied to
    its enrichment.

    Args:
        max_tracked: enrichments (and workflow runs) remembered.
    """

    def __init__(self, max_tracked: int = 10_000) -> None:
        self._max = max(1, int(max_tracked))
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        self._runs: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def enrichment(self, event: BaseEvent, enrichment_id: str) -> None:
        """The LLM calls that follow ``event`` in its request answer ``enrichment_id``."""
        run = _run_id(event)
        if run is None:
            _CURRENT.set(enrichment_id)
            return
        with self._lock:
            self._runs[run] = enrichment_id
            self._runs.move_to_end(run)
            while len(self._runs) > self._max:
                self._runs.popitem(last=False)

    def observe(self, event: BaseEvent) -> None:
        """Follow one LlamaIndex event (LLM start / end, query start); others are ignored."""
        if isinstance(event, (LLMChatStartEvent, LLMCompletionStartEvent)):
            name = model_name_of(event)
            if name is not None:
                call = self._call(event)
                if call is not None:
                    call.model = name
        elif isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)):
            self._end(event)
        elif isinstance(event, QueryStartEvent) and _run_id(event) is None:
            _CURRENT.set(None)  # a new query: nothing is tied until it enriches

    def _end(self, event: BaseEvent) -> None:
        input_tokens, output_tokens, source = usage_of(getattr(event, "response", None))
        if source is None:
            return
        call = self._call(event)
        if call is None:
            return
        with self._lock:
            # A chat implemented by a completion (CustomLLM) ends twice with the same
            # raw response: count it once.
            if source is call.last_source:
                return
            call.last_source = source
            call.add(input_tokens, output_tokens)

    def _call(self, event: BaseEvent) -> Optional[_Call]:
        run = _run_id(event)
        if run is None:
            enrichment_id = _CURRENT.get()
        else:
            with self._lock:
                enrichment_id = self._runs.get(run)
        if enrichment_id is None:
            return None
        with self._lock:
            call = self._calls.get(enrichment_id)
            if call is None:
                call = self._calls[enrichment_id] = _Call()
                while len(self._calls) > self._max:
                    self._calls.popitem(last=False)
            return call

    def get(self, enrichment_id: str) -> Optional[LLMCall]:
        """The model and summed usage of the calls after ``enrichment_id`` (``None``
        when no call was seen)."""
        with self._lock:
            call = self._calls.get(enrichment_id)
            if call is None:
                return None
            return LLMCall(call.model, call.input_tokens, call.output_tokens)

    __call__ = get

    def __len__(self) -> int:
        return len(self._calls)
