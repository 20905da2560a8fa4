"""asahi-features: enrich LLM prompts with real-time context from feature stores.

The core API is importable from here: the enricher, the backends, the guard, the
monitor, OpenTelemetry (``enable_opentelemetry``), configuration, models and errors.
The framework adapters live in their own subpackages, imported on use
(``asahi_features.langchain``, ``asahi_features.llama_index``), as do the test helpers
(``asahi_features.testing``) and the sample repository (``asahi_features.sample_repo``).

Names are resolved on first use (PEP 562) rather than imported here: importing every core
module eagerly takes about 250 ms (pydantic models, asyncio), lazily ``import asahi_features``
takes about 10 ms, and feast, tecton_client, langchain_core, llama_index, tiktoken, httpx
and opentelemetry are loaded only by the part that needs them. The ``TYPE_CHECKING``
imports below are what type checkers and readers see; ``_EXPORTS`` is the same list for
the runtime, and a test keeps the two equal.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .config import client_from_config as client_from_config
    from .config import load_config as load_config
    from .enricher import EnrichmentGate as EnrichmentGate
    from .enricher import FeatureEnricher as FeatureEnricher
    from .enricher import build_enricher as build_enricher
    from .errors import AsahiFeaturesError as AsahiFeaturesError
    from .errors import ConfigError as ConfigError
    from .errors import FeatureConfigError as FeatureConfigError
    from .errors import FeatureStoreAuthError as FeatureStoreAuthError
    from .errors import FeatureStoreDataError as FeatureStoreDataError
    from .errors import FeatureStoreError as FeatureStoreError
    from .errors import FeatureStoreTimeoutError as FeatureStoreTimeoutError
    from .errors import FeatureStoreUnavailableError as FeatureStoreUnavailableError
    from .errors import GuardOverloadedError as GuardOverloadedError
    from .errors import TokenizerUnavailableError as TokenizerUnavailableError
    from .guard import BreakerState as BreakerState
    from .guard import CircuitBreaker as CircuitBreaker
    from .guard import GuardedClient as GuardedClient
    from .models import EnrichmentReason as EnrichmentReason
    from .models import EnrichmentRequest as EnrichmentRequest
    from .models import EnrichmentResult as EnrichmentResult
    from .models import FeatureStatus as FeatureStatus
    from .models import FeatureVector as FeatureVector
    from .monitor import Decision as Decision
    from .monitor import DecisionReason as DecisionReason
    from .monitor import FeatureMonitor as FeatureMonitor
    from .settings import AsahiConfig as AsahiConfig
    from .settings import EnricherConfig as EnricherConfig
    from .settings import FeaturePolicy as FeaturePolicy
    from .settings import FeatureStoreSettings as FeatureStoreSettings
    from .settings import MonitorConfig as MonitorConfig
    from .settings import TelemetryConfig as TelemetryConfig
    from .stores.base import AsyncFeatureStoreClient as AsyncFeatureStoreClient
    from .stores.base import BaseFeatureStore as BaseFeatureStore
    from .stores.base import FeatureStoreClient as FeatureStoreClient
    from .stores.custom import CustomBackend as CustomBackend
    from .stores.feast import FeastClient as FeastClient
    from .stores.http import HttpFeatureStore as HttpFeatureStore
    from .stores.local import LocalFeatureStore as LocalFeatureStore
    from .stores.tecton import TectonClient as TectonClient
    from .telemetry import enable_opentelemetry as enable_opentelemetry
    from .tokens import TokenCounter as TokenCounter

# module -> the names it exports here (the runtime twin of the imports above)
_EXPORTS_BY_MODULE: dict[str, tuple[str, ...]] = {
    "asahi_features.config": ("client_from_config", "load_config"),
    "asahi_features.enricher": ("EnrichmentGate", "FeatureEnricher", "build_enricher"),
    "asahi_features.errors": (
        "AsahiFeaturesError",
        "ConfigError",
        "FeatureConfigError",
        "FeatureStoreAuthError",
        "FeatureStoreDataError",
        "FeatureStoreError",
        "FeatureStoreTimeoutError",
        "FeatureStoreUnavailableError",
        "GuardOverloadedError",
        "TokenizerUnavailableError",
    ),
    "asahi_features.guard": ("BreakerState", "CircuitBreaker", "GuardedClient"),
    "asahi_features.models": (
        "EnrichmentReason",
        "EnrichmentRequest",
        "EnrichmentResult",
        "FeatureStatus",
        "FeatureVector",
    ),
    "asahi_features.monitor": ("Decision", "DecisionReason", "FeatureMonitor"),
    "asahi_features.settings": (
        "AsahiConfig",
        "EnricherConfig",
        "FeaturePolicy",
        "FeatureStoreSettings",
        "MonitorConfig",
        "TelemetryConfig",
    ),
    "asahi_features.stores.base": (
        "AsyncFeatureStoreClient",
        "BaseFeatureStore",
        "FeatureStoreClient",
    ),
    "asahi_features.stores.custom": ("CustomBackend",),
    "asahi_features.stores.feast": ("FeastClient",),
    "asahi_features.stores.http": ("HttpFeatureStore",),
    "asahi_features.stores.local": ("LocalFeatureStore",),
    "asahi_features.stores.tecton": ("TectonClient",),
    "asahi_features.telemetry": ("enable_opentelemetry",),
    "asahi_features.tokens": ("TokenCounter",),
}
_EXPORTS: dict[str, str] = {
    name: module for module, names in _EXPORTS_BY_MODULE.items() for name in names
}

# names that moved to the subpackage that owns them: a helpful error, not a bare one
_MOVED: dict[str, str] = {
    "FeatureEnrichmentRunnable": "asahi_features.langchain",
    "FeatureMonitorCallbackHandler": "asahi_features.langchain",
    "FeatureContextMiddleware": "asahi_features.langchain",
    "FeatureContextPostprocessor": "asahi_features.llama_index",
    "FeatureMonitorEventHandler": "asahi_features.llama_index",
    "FeatureEnrichmentEvent": "asahi_features.llama_index",
    "build_sample_repo": "asahi_features.sample_repo",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        if name in _MOVED:
            raise AttributeError(
                f"{name} is not exported from the package root: from {_MOVED[name]} import {name}"
            )
        raise AttributeError(f"module 'asahi_features' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
