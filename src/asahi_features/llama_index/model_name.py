"""The model name behind a LlamaIndex LLM, agent or engine (for per-model monitoring)."""

from __future__ import annotations

from typing import Any, Optional

_LLM_ATTRIBUTES = ("llm", "_llm", "_response_synthesizer")


def model_name(component: Any) -> Optional[str]:
    """The ``metadata.model_name`` of an LLM, or of the LLM inside an agent
    (``agent.llm``), a query or chat engine (``engine._llm``, or its synthesizer's), or a
    synthesizer; ``None`` when there is none to find.

    This is the single place the integration reads a model name from, for the monitor's
    per-model statistics.
    """
    seen = 0
    current = component
    while current is not None and seen < 4:  # engine -> synthesizer -> llm at most
        metadata = getattr(current, "metadata", None)
        name = getattr(metadata, "model_name", None)
        if isinstance(name, str) and name and hasattr(current, "complete"):
            return name
        current = next(
            (
                value
                for value in (getattr(current, a, None) for a in _LLM_ATTRIBUTES)
                if value is not None and value is not current
            ),
            None,
        )
        seen += 1
    return None
