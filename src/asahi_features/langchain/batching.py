"""Batch plumbing of the runnable: whether anyone observes a batch's runs, and the
request objects of enrichers without ``enrich_requests``."""

from __future__ import annotations

from typing import Any, List, Optional, Union

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config, get_callback_manager_for_config

from ..enricher import EnrichmentTuple
from ..models import EnrichmentRequest


def _as_request(request: EnrichmentTuple) -> EnrichmentRequest:
    return EnrichmentRequest.model_construct(**request._asdict())


def _no_handlers(callbacks: Any) -> bool:
    if callbacks is None:
        return True
    if isinstance(callbacks, list):
        return not callbacks
    return not getattr(callbacks, "handlers", True)


def _observed(config: Optional[Union[RunnableConfig, List[RunnableConfig]]], n: int) -> bool:
    """Would any callback handler see the per-input runs of a batch?

    No handler in any config and none added globally (tracing, debug, context hooks):
    the runs would be invisible, so the batch skips creating them.
    """
    configs = config if isinstance(config, list) else [config or {}]
    if not all(_no_handlers(c.get("callbacks")) for c in configs):
        return True
    return bool(get_callback_manager_for_config(ensure_config(configs[0])).handlers)


def _unobserved(outputs: List[Any], return_exceptions: bool) -> List[Any]:
    if not return_exceptions:
        for out in outputs:
            if isinstance(out, Exception):
                raise out
    return outputs
