"""Public exceptions.

Every exception the library raises on purpose derives from :class:`AsahiFeaturesError`.
Two families matter to callers:

* **Configuration mistakes** (:class:`FeatureConfigError`, :class:`ConfigError`): the
  caller asked for something that does not exist or is not allowed. They are never
  swallowed by the fallback, because retrying or degrading cannot fix them.
* **Store unavailability** (:class:`FeatureStoreUnavailableError` and its subclasses):
  the store is down, slow or returned garbage. With ``fallback_on_timeout: true`` the
  guard turns these into an un-enriched prompt instead of a failed request.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "AsahiFeaturesError",
    "ConfigError",
    "FeatureConfigError",
    "FeatureStoreDataError",
    "FeatureStoreError",
    "FeatureStoreTimeoutError",
    "FeatureStoreUnavailableError",
    "GuardOverloadedError",
    "TokenizerUnavailableError",
]

_MAX_LISTED = 50


class AsahiFeaturesError(Exception):
    """Base class of every error raised by asahi-features."""


class ConfigError(AsahiFeaturesError, ValueError):
    """A configuration file or value is invalid.

    Args:
        message: what was wrong and what is allowed instead.
        key_path: the dotted path of the offending key (``feature_store.provider``), if any.
    """

    def __init__(self, message: str, key_path: str | None = None) -> None:
        super().__init__(message)
        self.key_path = key_path


class FeatureConfigError(AsahiFeaturesError, ValueError):
    """Requested features, feature views or entity types do not exist in the store.

    The message lists what *is* available so the caller can fix the request.

    Args:
        message: what was wrong.
        available_features: the names that would have been accepted.
        kind: what the list contains (``"features"``, ``"entity types"``...), for the message.
    """

    def __init__(
        self,
        message: str,
        available_features: Iterable[str] = (),
        *,
        kind: str = "features",
    ) -> None:
        self.available_features: list[str] = sorted(set(available_features))
        self.kind = kind
        shown = self.available_features[:_MAX_LISTED]
        more = len(self.available_features) - len(shown)
        listing = ", ".join(shown) if shown else "(none)"
        if more > 0:
            listing += f", ... ({more} more)"
        super().__init__(f"{message}. Available {kind}: {listing}")
        self.reason = message


class FeatureStoreError(AsahiFeaturesError):
    """Base class for failures of the feature store itself (not of the request)."""


class FeatureStoreUnavailableError(FeatureStoreError, ConnectionError):
    """The store could not be reached or failed to answer (connection refused, 5xx, ...)."""


class FeatureStoreTimeoutError(FeatureStoreUnavailableError, TimeoutError):
    """The store did not answer within ``timeout_ms``."""


class FeatureStoreDataError(FeatureStoreUnavailableError):
    """The store answered, but with data that cannot be parsed (malformed file or body)."""


class GuardOverloadedError(FeatureStoreUnavailableError):
    """This process was too busy to read the store in time: the store was not judged.

    Raised (or, with fallback, reported as :attr:`FeatureStatus.OVERLOADED`) when a read
    never left this process before its deadline, because every worker was busy with
    healthy calls or the event loop ran late. It subclasses
    :class:`FeatureStoreUnavailableError` so that code handling unavailability keeps
    working, but it never counts against the store: not in the circuit breaker, not in the
    monitor's availability.
    """


class TokenizerUnavailableError(AsahiFeaturesError, RuntimeError):
    """No tiktoken encoding could be loaded offline."""
