"""asahi-features: enrich LLM prompts with real-time context from feature stores.

Everything public is importable from here. Names are resolved lazily so that
``import asahi_features`` stays fast: feast, tecton_client, langchain_core, llama_index,
tiktoken and httpx are imported only when the part that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # models and errors
    "FeatureVector": "asahi_features.models",
    "FeatureStatus": "asahi_features.models",
    "EnrichmentResult": "asahi_features.models",
    "EnrichmentReason": "asahi_features.models",
    "EnrichmentRequest": "asahi_features.models",
    "AsahiFeaturesError": "asahi_features.errors",
    "ConfigError": "asahi_features.errors",
    "FeatureConfigError": "asahi_features.errors",
    "FeatureStoreError": "asahi_features.errors",
    "FeatureStoreUnavailableError": "asahi_features.errors",
    "FeatureStoreTimeoutError": "asahi_features.errors",
    "GuardOverloadedError": "asahi_features.errors",
    "FeatureStoreDataError": "asahi_features.errors",
    "FeatureStoreAuthError": "asahi_features.errors",
    "TokenizerUnavailableError": "asahi_features.errors",
    # configuration
    "AsahiConfig": "asahi_features.settings",
    "FeatureStoreSettings": "asahi_features.settings",
    "EnricherConfig": "asahi_features.settings",
    "MonitorConfig": "asahi_features.settings",
    "FeaturePolicy": "asahi_features.settings",
    "load_config": "asahi_features.config",
    "client_from_config": "asahi_features.config",
    # backends
    "FeatureStoreClient": "asahi_features.stores.base",
    "AsyncFeatureStoreClient": "asahi_features.stores.base",
    "BaseFeatureStore": "asahi_features.stores.base",
    "LocalFeatureStore": "asahi_features.stores.local",
    "FeastClient": "asahi_features.stores.feast_store",
    "TectonClient": "asahi_features.stores.tecton",
    "HttpFeatureStore": "asahi_features.stores.http",
    "GuardedClient": "asahi_features.guard",
    "CircuitBreaker": "asahi_features.guard",
    "BreakerState": "asahi_features.guard",
    "CustomBackend": "asahi_features.stores.custom",
    "build_sample_repo": "asahi_features.sample_repo",
    # enrichment and monitoring
    "FeatureEnricher": "asahi_features.enricher",
    "build_enricher": "asahi_features.enricher",
    "EnrichmentGate": "asahi_features.enricher",
    "FeatureMonitor": "asahi_features.monitor",
    "Decision": "asahi_features.monitor",
    "DecisionReason": "asahi_features.monitor",
    # framework adapters (need the langchain / llama-index extras)
    "FeatureEnrichmentRunnable": "asahi_features.langchain",
    "FeatureMonitorCallbackHandler": "asahi_features.langchain",
    "FeatureContextPostprocessor": "asahi_features.llama_index",
    "FeatureMonitorEventHandler": "asahi_features.llama_index",
    "FeatureEnrichmentEvent": "asahi_features.llama_index",
    "TokenCounter": "asahi_features.tokens",
}

# A literal list, so that type checkers see the re-exports (tests check it matches).
__all__ = [
    "AsahiConfig",
    "AsahiFeaturesError",
    "AsyncFeatureStoreClient",
    "BaseFeatureStore",
    "BreakerState",
    "CircuitBreaker",
    "ConfigError",
    "CustomBackend",
    "Decision",
    "DecisionReason",
    "EnricherConfig",
    "EnrichmentGate",
    "EnrichmentReason",
    "EnrichmentRequest",
    "EnrichmentResult",
    "FeastClient",
    "FeatureConfigError",
    "FeatureContextPostprocessor",
    "FeatureEnricher",
    "FeatureEnrichmentEvent",
    "FeatureEnrichmentRunnable",
    "FeatureMonitor",
    "FeatureMonitorCallbackHandler",
    "FeatureMonitorEventHandler",
    "FeaturePolicy",
    "FeatureStatus",
    "FeatureStoreAuthError",
    "FeatureStoreClient",
    "FeatureStoreDataError",
    "FeatureStoreError",
    "FeatureStoreSettings",
    "FeatureStoreTimeoutError",
    "FeatureStoreUnavailableError",
    "FeatureVector",
    "GuardOverloadedError",
    "GuardedClient",
    "HttpFeatureStore",
    "LocalFeatureStore",
    "MonitorConfig",
    "TectonClient",
    "TokenCounter",
    "TokenizerUnavailableError",
    "__version__",
    "build_enricher",
    "build_sample_repo",
    "client_from_config",
    "load_config",
]

if TYPE_CHECKING:
    from .config import client_from_config, load_config
    from .enricher import EnrichmentGate, FeatureEnricher, build_enricher
    from .errors import (
        AsahiFeaturesError,
        ConfigError,
        FeatureConfigError,
        FeatureStoreAuthError,
        FeatureStoreDataError,
        FeatureStoreError,
        FeatureStoreTimeoutError,
        FeatureStoreUnavailableError,
        GuardOverloadedError,
        TokenizerUnavailableError,
    )
    from .guard import BreakerState, CircuitBreaker, GuardedClient
    from .langchain import FeatureEnrichmentRunnable, FeatureMonitorCallbackHandler
    from .llama_index import (
        FeatureContextPostprocessor,
        FeatureEnrichmentEvent,
        FeatureMonitorEventHandler,
    )
    from .models import (
        EnrichmentReason,
        EnrichmentRequest,
        EnrichmentResult,
        FeatureStatus,
        FeatureVector,
    )
    from .monitor import Decision, DecisionReason, FeatureMonitor
    from .sample_repo import build_sample_repo
    from .settings import (
        AsahiConfig,
        EnricherConfig,
        FeaturePolicy,
        FeatureStoreSettings,
        MonitorConfig,
    )
    from .stores.base import AsyncFeatureStoreClient, BaseFeatureStore, FeatureStoreClient
    from .stores.custom import CustomBackend
    from .stores.feast_store import FeastClient
    from .stores.http import HttpFeatureStore
    from .stores.local import LocalFeatureStore
    from .stores.tecton import TectonClient
    from .tokens import TokenCounter


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'asahi_features' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
