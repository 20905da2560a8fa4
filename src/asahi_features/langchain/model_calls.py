"""Which model answered a finished run, and the tokens it used: read from the chat
model (or LLM) runs in the run tree, for the per-model monitor (``model=``,
``input_tokens=``, ``output_tokens=`` of ``FeatureMonitor.record_quality``).

A run with several model calls (an agent's tool loop) is attributed to the model of
its *last* call, the one that gave the answer, and its token counts are the *sums*
over every call that reported usage: the cost of the request, not of its last step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterable, List, NamedTuple, Optional, Tuple

from ..monitor.model_names import model_name_of

__all__ = ["ModelCall", "model_call_of_run"]


class ModelCall(NamedTuple):
    """The model of a run and its token usage (``None`` where not reported)."""

    model: str
    input_tokens: Optional[int]
    output_tokens: Optional[int]

    def as_kwargs(self) -> dict[str, Any]:
        """``model=``, ``input_tokens=``, ``output_tokens=`` for the monitor."""
        return {
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


def _get(source: Any, key: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(key)
    try:
        return getattr(source, key, None)
    except Exception:  # a failing property: nothing to read
        return None


def _count(value: Any) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _usage_pair(usage: Any) -> Tuple[Optional[int], Optional[int]]:
    """(input, output) tokens of a usage mapping or object: LangChain's
    ``usage_metadata`` (``input_tokens`` / ``output_tokens``) or a provider's
    ``token_usage`` (``prompt_tokens`` / ``completion_tokens``)."""
    if usage is None:
        return None, None
    first = _count(_get(usage, "input_tokens"))
    if first is None:
        first = _count(_get(usage, "prompt_tokens"))
    second = _count(_get(usage, "output_tokens"))
    if second is None:
        second = _count(_get(usage, "completion_tokens"))
    return first, second


def _message_usage(message: Any) -> Any:
    usage = _get(message, "usage_metadata")
    if usage is None:  # a message serialised by dumpd: {"lc": 1, "kwargs": {...}}
        usage = _get(_get(message, "kwargs"), "usage_metadata")
    return usage


def _run_usage(outputs: Any) -> Tuple[Optional[int], Optional[int]]:
    """The tokens one model run reports: summed over its generations' messages, else
    from ``llm_output`` (``token_usage`` or ``usage``)."""
    total_in: Optional[int] = None
    total_out: Optional[int] = None
    for batch in _get(outputs, "generations") or ():
        for generation in batch if isinstance(batch, (list, tuple)) else (batch,):
            got_in, got_out = _usage_pair(_message_usage(_get(generation, "message")))
            total_in = _add(total_in, got_in)
            total_out = _add(total_out, got_out)
    if total_in is None and total_out is None:
        llm_output = _get(outputs, "llm_output")
        for key in ("token_usage", "usage"):
            got_in, got_out = _usage_pair(_get(llm_output, key))
            if got_in is not None or got_out is not None:
                return got_in, got_out
    return total_in, total_out


def _add(total: Optional[int], value: Optional[int]) -> Optional[int]:
    if value is None:
        return total
    return value if total is None else total + value


def _model_runs(run: Any) -> List[Any]:
    """The model runs of a tree in the order they started."""
    found: List[Tuple[Any, int, Any]] = []
    stack = [run]
    order = 0
    while stack:
        node = stack.pop()
        if _get(node, "run_type") == "llm":
            found.append((_get(node, "start_time"), order, node))
            order += 1
        children: Iterable[Any] = _get(node, "child_runs") or ()
        stack.extend(reversed(list(children)))
    timed = all(start is not None for start, _, _ in found)
    found.sort(key=lambda item: (item[0], item[1]) if timed else item[1])
    return [node for _, _, node in found]


def _model_name(run: Any) -> Optional[str]:
    extra = _get(run, "extra") or {}
    for source in (_get(extra, "metadata"), _get(extra, "invocation_params")):
        if isinstance(source, Mapping):
            name = model_name_of(source)
            if name is not None:
                return name
    return None


def model_call_of_run(run: Any) -> Optional[ModelCall]:
    """The model that answered ``run`` (a LangChain tracer run or a LangSmith run tree)
    and the tokens of every model call in it; ``None`` when no model run names its
    model (``ls_model_name`` in the metadata, or ``model`` / ``model_name`` in the
    invocation parameters)."""
    model: Optional[str] = None
    total_in: Optional[int] = None
    total_out: Optional[int] = None
    for node in _model_runs(run):
        name = _model_name(node)
        if name is not None:
            model = name
        got_in, got_out = _run_usage(_get(node, "outputs"))
        total_in = _add(total_in, got_in)
        total_out = _add(total_out, got_out)
    if model is None:
        return None
    return ModelCall(model, total_in, total_out)
