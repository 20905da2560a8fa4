"""The factory: :func:`build_enricher`, an enricher from a configuration (client, task
map check, monitor, OpenTelemetry)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from ..settings import AsahiConfig
from .core import FeatureEnricher
from .gate import EnrichmentGate

__all__ = ["build_enricher"]


def build_enricher(
    config: Union[str, Path, AsahiConfig],
    *,
    monitor: Union[bool, EnrichmentGate, None] = None,
    check_features: bool = True,
) -> FeatureEnricher:
    """An enricher over the guarded client described by a configuration.

    Configuration mistakes are found here, not on the first request: when the store can
    list its features, every feature that an enabled task type maps must exist in it
    (see :func:`~asahi_features.config.check_task_features`). The check waits at most
    ``max(timeout_ms, 1 s)``; a store that is down or slow is skipped with one WARNING,
    one that cannot list its features (no ``list_features``) silently.

    Args:
        config: a configuration file path or a loaded
            :class:`~asahi_features.settings.AsahiConfig`.
        monitor: ``True`` builds a :class:`~asahi_features.monitor.FeatureMonitor` from the
            ``monitor:`` section, watching the guard's circuit breaker; an object
            implementing :class:`EnrichmentGate` is used as is; ``None`` / ``False``: none.
        check_features: check the task map against the store (default ``True``).

    With ``telemetry.opentelemetry: true`` the enricher (and its monitor) is traced with
    OpenTelemetry (see :func:`~asahi_features.telemetry.enable_opentelemetry`).

    Raises:
        ConfigError: the file or a key is invalid, the backend is not available, or
            ``telemetry.opentelemetry`` is true without the ``otel`` extra.
        FeatureConfigError: an enabled task maps a feature or entity type the store does
            not have; the message names the task and suggests close matches.
        TokenizerUnavailableError: the configured encoding cannot be loaded offline.

    Example:
        >>> enricher = build_enricher("examples/config.yaml")  # doctest: +SKIP
        >>> enricher.enrich("Recommend a product", user_id="u_1001",
        ...                 task_type="product_recommendation").features_available  # doctest: +SKIP
        True
    """
    from ..config import check_task_features, client_from_config, load_config

    if not isinstance(config, AsahiConfig):
        config = load_config(config)
    telemetry = config.telemetry
    if telemetry.opentelemetry:  # before anything is opened: a missing extra fails first
        from ..telemetry import require_opentelemetry

        require_opentelemetry("telemetry.opentelemetry")
    client = client_from_config(config)
    if check_features:
        seconds = max(config.feature_store.timeout_ms / 1000.0, 1.0)
        try:
            check_task_features(client, config.enricher, timeout_seconds=seconds)
        except BaseException:
            closer = getattr(client, "close", None)
            if callable(closer):
                closer()
            raise
    gate: Optional[EnrichmentGate]
    if monitor is True:
        from ..monitor import FeatureMonitor

        # The monitor follows the guard's circuit breaker, so should_enrich agrees with it.
        watched = client if getattr(client, "breaker", None) is not None else None
        gate = FeatureMonitor(config.monitor, breaker=watched)
    elif monitor is None or monitor is False:
        gate = None
    else:
        gate = monitor
    enricher = FeatureEnricher(client, config.enricher, monitor=gate)
    if telemetry.opentelemetry:
        from ..telemetry import enable_opentelemetry

        enable_opentelemetry(
            enricher, record_ids=telemetry.record_ids, evaluation_name=telemetry.evaluation_name
        )
    return enricher
