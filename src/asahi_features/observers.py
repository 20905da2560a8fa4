"""The enricher's observer seam: what an observer of a
:class:`~asahi_features.enricher.FeatureEnricher` is told, and the per-instance wrapper
that reports calls raising to their caller (see
:meth:`~asahi_features.enricher.FeatureEnricher.add_observer`).

Observers are how telemetry (:mod:`asahi_features.telemetry`) sees enrichment without
living inside the enricher.
"""

from __future__ import annotations

import functools
import inspect
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    NamedTuple,
    Optional,
    Protocol,
    TypeVar,
    runtime_checkable,
)

if TYPE_CHECKING:
    from .enricher import EnrichmentTuple
    from .models import EnrichmentResult

__all__ = ["OBSERVED_METHODS", "EnrichmentObserver", "EnrichmentTrace", "FailedCall", "observed"]


class EnrichmentTrace(NamedTuple):
    """What an :class:`EnrichmentObserver` learns about one request besides its result."""

    request: EnrichmentTuple
    """The request as given. It holds the prompt, the ids and the context: an observer
    must not export them unless told to."""
    elapsed_ms: float
    """From the start of the call to the result (its ``enrichment_latency_ms``)."""
    store_latency_ms: Optional[float]
    """How long the store read took (for a batch: the whole batch read); ``None`` when
    the store was not asked for this request."""
    batch_size: int
    """Requests of the call (1 for :meth:`FeatureEnricher.enrich` / ``aenrich``)."""


@runtime_checkable
class EnrichmentObserver(Protocol):
    """Told about every request the enricher finishes, enriched or not (e.g. the
    OpenTelemetry integration, :mod:`asahi_features.telemetry`). Called on the caller's
    thread (or task) right after the monitor, so the caller's current context is the
    request's. An observer that raises is logged and ignored: it never fails a request.
    A call that raises to its caller (a configuration error, or a store failure with
    ``fallback_on_timeout: false``) finishes no request: an observer with an
    ``enrichment_failed(error, call)`` method is told with a :class:`FailedCall`."""

    def enrichment_finished(self, result: EnrichmentResult, trace: EnrichmentTrace) -> None:
        """One request finished."""
        ...


class FailedCall(NamedTuple):
    """An enrich call that raised to its caller, as an observer's optional
    ``enrichment_failed(error, call)`` method sees it."""

    task_type: Optional[str]
    """The request's task type (``None`` for a batch call)."""
    batch_size: int
    elapsed_ms: float
    """From the start of the call to the error."""


_Method = TypeVar("_Method", bound=Callable[..., Any])


OBSERVED_METHODS = ("enrich", "aenrich", "enrich_requests", "aenrich_requests")
"""The calls whose errors :meth:`FeatureEnricher.add_observer` reports."""


def observed(method: _Method) -> _Method:
    """``method`` telling the enricher's observers about a call that raises to its caller
    (a configuration error, or a store failure with ``fallback_on_timeout: false``:
    these finish no request). Installed per instance by
    :meth:`FeatureEnricher.add_observer`, so an enricher without such an observer pays
    nothing."""
    signature = inspect.signature(method)

    def failed(self: Any, exc: Exception, args: Any, kwargs: Any, t0: float) -> None:
        elapsed = (self._clock() - t0) * 1000.0
        bound = signature.bind_partial(self, *args, **kwargs).arguments
        requests = bound.get("requests")
        task = None if requests is not None else str(bound.get("task_type", "general"))
        call = FailedCall(task, 1 if requests is None else len(requests), elapsed)
        for observer in self.observers:
            try:
                notify = getattr(observer, "enrichment_failed", None)
                if notify is not None:
                    notify(exc, call)
            except Exception:  # the caller gets its own error, not the observer's
                self._monitor_failed("enrichment_failed", "observer")

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def awrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not self.observers:
                return await method(self, *args, **kwargs)
            t0 = self._clock()
            try:
                return await method(self, *args, **kwargs)
            except Exception as exc:
                failed(self, exc, args, kwargs, t0)
                raise

        return awrapper  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.observers:
            return method(self, *args, **kwargs)
        t0 = self._clock()
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            failed(self, exc, args, kwargs, t0)
            raise

    return wrapper  # type: ignore[return-value]
