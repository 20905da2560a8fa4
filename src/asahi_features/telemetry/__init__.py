"""OpenTelemetry for enrichment: a span per request, an event per quality score.

Optional (the ``otel`` extra): nothing here imports OpenTelemetry until
:func:`enable_opentelemetry` is called (or ``telemetry.opentelemetry: true`` is set and
:func:`~asahi_features.enricher.build_enricher` runs). See
:mod:`asahi_features.telemetry.attributes` for what is exported: names, counts,
reasons and timings, never a feature value, a prompt or (unless ``record_ids``) an id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional

from ..errors import ConfigError
from .attributes import DEFAULT_EVALUATION_NAME

if TYPE_CHECKING:
    from ..enricher import FeatureEnricher
    from ..monitor import FeatureMonitor

__all__ = ["OpenTelemetryHandle", "enable_opentelemetry", "require_opentelemetry"]

EXTRA_HINT = "pip install 'asahi-features[otel]'"
DEFAULT_MAX_TRACKED = 10_000


def require_opentelemetry(key_path: Optional[str] = None) -> None:
    """Check that opentelemetry-api is importable.

    Raises:
        ConfigError: it is not; the message names the ``otel`` extra (and ``key_path``,
            the setting that asked for it, when given).
    """
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError as exc:
        where = f"{key_path} is true, but " if key_path else ""
        raise ConfigError(
            f"{where}OpenTelemetry is not installed: the integration needs "
            f"opentelemetry-api ({EXTRA_HINT})",
            key_path=key_path,
        ) from exc


class OpenTelemetryHandle:
    """What :func:`enable_opentelemetry` instrumented; :meth:`disable` undoes it."""

    def __init__(self, enrichers: List[Any], monitors: List[Any], observers: List[Any]) -> None:
        self.enrichers = enrichers
        """The instrumented enrichers (each got one span observer)."""
        self.monitors = monitors
        """The instrumented monitors (each got one evaluation-event observer)."""
        self._observers = observers

    def disable(self) -> None:
        """Remove the observers: no more spans or events from these objects."""
        for holder in (*self.enrichers, *self.monitors):
            _remove_ours(holder)


def _remove_ours(holder: Any) -> None:
    from ..enricher import FeatureEnricher
    from .otel import EnrichmentSpans, EvaluationEvents

    if isinstance(holder, FeatureEnricher):
        for observer in [o for o in holder.observers if isinstance(o, EnrichmentSpans)]:
            holder.remove_observer(observer)
    else:
        kept = [o for o in holder.score_observers if not isinstance(o, EvaluationEvents)]
        holder.score_observers = kept  # a new list: a score being notified is undisturbed


def _targets(target: Any) -> tuple[List[FeatureEnricher], List[FeatureMonitor]]:
    from ..enricher import FeatureEnricher
    from ..monitor import FeatureMonitor

    enrichers: List[FeatureEnricher] = []
    monitors: List[FeatureMonitor] = []
    candidates = [target, getattr(target, "enricher", None)]
    for candidate in candidates:
        if isinstance(candidate, FeatureEnricher) and candidate not in enrichers:
            enrichers.append(candidate)
    for candidate in [target, getattr(target, "monitor", None)] + [e.monitor for e in enrichers]:
        if isinstance(candidate, FeatureMonitor) and all(candidate is not m for m in monitors):
            monitors.append(candidate)
    if not enrichers and not monitors:
        raise TypeError(
            "enable_opentelemetry() instruments a FeatureEnricher, a FeatureMonitor, or an "
            "object with .enricher (the LangChain runnable, the LlamaIndex postprocessor); "
            f"got {type(target).__name__}"
        )
    return enrichers, monitors


def enable_opentelemetry(
    target: Any,
    *,
    tracer_provider: Any = None,
    record_ids: bool = False,
    evaluation_name: str = DEFAULT_EVALUATION_NAME,
    max_tracked: int = DEFAULT_MAX_TRACKED,
) -> OpenTelemetryHandle:
    """Trace enrichments and quality scores with OpenTelemetry.

    Every request of an instrumented enricher becomes a span ``retrieval
    asahi_features`` (child of the span current when it was enriched), and every quality
    score an instrumented monitor accepts a ``gen_ai.evaluation.result`` event. Calling
    it again on the same objects replaces the earlier instrumentation (never two spans
    per request).

    Args:
        target: a :class:`~asahi_features.enricher.FeatureEnricher` (its monitor, when it
            is a :class:`~asahi_features.monitor.FeatureMonitor`, is instrumented too), a
            ``FeatureMonitor`` alone, or an object with ``.enricher`` / ``.monitor``
            (the LangChain runnable, the LlamaIndex postprocessor).
        tracer_provider: the OpenTelemetry ``TracerProvider`` (default: the global one,
            as set by ``trace.set_tracer_provider`` or the OpenTelemetry distro).
        record_ids: also export the request's user id (``user.id``) and organisation id
            (``asahi.organization.id``). Off by default: ids are personal data.
        evaluation_name: ``gen_ai.evaluation.name`` of the quality events.
        max_tracked: recent enrichments whose span a late score can still point at.

    Returns:
        A handle whose ``disable()`` removes the instrumentation.

    Raises:
        ConfigError: opentelemetry-api is not installed (names the ``otel`` extra).
        TypeError: ``target`` is none of the above.
        ValueError: ``evaluation_name`` is empty or ``max_tracked`` < 1.

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider  # doctest: +SKIP
        >>> provider = TracerProvider()  # doctest: +SKIP
        >>> handle = enable_opentelemetry(enricher, tracer_provider=provider)  # doctest: +SKIP
    """
    if not isinstance(evaluation_name, str) or not evaluation_name.strip():
        raise ValueError("evaluation_name must be a non-empty string")
    if isinstance(max_tracked, bool) or not isinstance(max_tracked, int) or max_tracked < 1:
        raise ValueError(f"max_tracked must be an integer >= 1, got {max_tracked!r}")
    require_opentelemetry()
    from .otel import EnrichmentSpans, EvaluationEvents, SpanIndex, get_tracer

    enrichers, monitors = _targets(target)
    tracer = get_tracer(tracer_provider)
    index = SpanIndex(max_tracked) if monitors else None
    observers: List[Any] = []
    for enricher in enrichers:
        _remove_ours(enricher)
        spans = EnrichmentSpans(tracer, record_ids=bool(record_ids), index=index)
        enricher.add_observer(spans)
        observers.append(spans)
    for monitor in monitors:
        _remove_ours(monitor)
        events = EvaluationEvents(tracer, evaluation_name=evaluation_name, index=index)
        monitor.score_observers.append(events)
        observers.append(events)
    return OpenTelemetryHandle(list(enrichers), list(monitors), observers)
