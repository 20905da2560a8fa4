"""The model's name from what LangChain and LlamaIndex hand to callbacks and handlers.

:func:`model_name_of` is the one place that knows where each framework keeps it, for
the ``model=`` argument of :meth:`FeatureMonitor.record_enrichment
<asahi_features.monitor.FeatureMonitor.record_enrichment>` / ``record_quality``. It
imports neither framework: it reads plain attributes and mappings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

__all__ = ["model_name_of"]

# LangChain: ``ls_model_name`` in a chat model run's metadata (BaseChatModel puts its
# LangSmith params there), ``model`` / ``model_name`` in ``invocation_params`` and on
# the model objects. LlamaIndex: ``model_name`` in an event's ``model_dict`` (the LLM's
# ``to_payload()``: its metadata) and on ``LLM.metadata``.
_KEYS = ("ls_model_name", "model_name", "model", "model_id")
_UNKNOWN = "unknown"  # LlamaIndex's LLMMetadata default: no name given


def _name(value: Any) -> Optional[str]:
    if isinstance(value, str) and value.strip() and value != _UNKNOWN:
        return value
    return None


def _attr(source: Any, name: str) -> Any:
    try:
        return getattr(source, name, None)
    except Exception:  # a property that fails: no name, never a failed callback
        return None


def model_name_of(source: Any) -> Optional[str]:
    """The name of the model behind ``source``; ``None`` when it names none.

    Accepts:

    * a string (returned as is unless blank);
    * a mapping: LangChain run ``metadata`` (``ls_model_name``) or ``invocation_params``
      (``model`` / ``model_name``), a LlamaIndex event's ``model_dict`` (``model_name``);
    * a LlamaIndex LLM event (anything with a ``model_dict`` mapping);
    * a model object: a LangChain chat model or LLM (``model_name``, ``model`` or
      ``model_id``), a LlamaIndex LLM (``metadata.model_name``).

    LlamaIndex's placeholder name ``"unknown"`` counts as no name.

    Example:
        >>> model_name_of({"ls_provider": "openai", "ls_model_name": "gpt-4o-mini"})
        'gpt-4o-mini'
        >>> model_name_of({"class_name": "MockLLM", "model_name": "unknown"}) is None
        True
    """
    if isinstance(source, str):
        return _name(source)
    if isinstance(source, Mapping):
        for key in _KEYS:
            name = _name(source.get(key))
            if name is not None:
                return name
        return None
    if source is None:
        return None
    payload = _attr(source, "model_dict")  # a LlamaIndex LLM start event
    if isinstance(payload, Mapping):
        return model_name_of(payload)
    for key in _KEYS[1:]:
        name = _name(_attr(source, key))
        if name is not None:
            return name
    metadata = _attr(source, "metadata")  # LlamaIndex LLM.metadata (LLMMetadata)
    if metadata is not None and not isinstance(metadata, Mapping):
        return _name(_attr(metadata, "model_name"))
    return None
