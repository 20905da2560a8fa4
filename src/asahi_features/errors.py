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

import reprlib
from collections.abc import Iterable, Mapping
from typing import Any

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
    "excerpt",
]

_MAX_LISTED = 50
MAX_MESSAGE_CHARS = 2000
"""No error message of this library is longer than this (longer ones are cut)."""
MAX_EXCERPT_CHARS = 80
"""A value quoted in an error message shows at most about this many characters."""
_LISTING_CHARS = 1200
"""Budget of the "Available ..." listing of a :class:`FeatureConfigError`."""


class _Excerpt(reprlib.Repr):
    """A repr that is short whatever the value: long strings, big or deep or cyclic
    containers (an expanded YAML alias bomb) come out as a bounded excerpt."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 4
        self.maxdeque = self.maxarray = 4
        self.maxstring = self.maxother = MAX_EXCERPT_CHARS
        self.maxlong = 40

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() of a 5,000-digit int raises ValueError
            return f"<integer of {x.bit_length():,} bits>"
        return repr(x)

    def repr_str(self, x: str, level: int) -> str:
        if len(x) <= self.maxstring:
            return repr(x)
        return repr(x[: self.maxstring - 20]) + f"... ({len(x):,} characters)"


_EXCERPT = _Excerpt()


def excerpt(value: Any, limit: int = MAX_EXCERPT_CHARS) -> str:
    """A short ``repr`` of ``value`` for an error message (at most about ``limit`` + 40
    characters, never raising, whatever the value's size, depth or cycles)."""
    try:
        text = _EXCERPT.repr(value)
    except Exception:  # a hostile __repr__: say what it is, not what it says
        text = f"<{type(value).__name__}>"
    if len(text) > limit + 40:
        text = text[:limit] + f"... ({len(text):,} characters)"
    return text


def cap_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to at most ``limit`` characters, saying how much was cut."""
    if len(message) <= limit:
        return message
    tail = f" ... [message cut: {len(message) - limit:,} more characters]"
    return message[: limit - len(tail)] + tail


class AsahiFeaturesError(Exception):
    """Base class of every error raised by asahi-features.

    A message longer than :data:`MAX_MESSAGE_CHARS` is cut: a quoted value, a server's
    answer or an unknown name can never turn an error (or the log line it ends up in)
    into megabytes.
    """

    def __init__(self, *args: Any) -> None:
        if args and isinstance(args[0], str) and len(args[0]) > MAX_MESSAGE_CHARS:
            args = (cap_message(args[0]), *args[1:])
        super().__init__(*args)


class ConfigError(AsahiFeaturesError, ValueError):
    """A configuration file or value is invalid.

    Args:
        message: what was wrong and what is allowed instead.
        key_path: the dotted path of the offending key (``feature_store.provider``), if any.
    """

    def __init__(self, message: str, key_path: str | None = None) -> None:
        super().__init__(message)
        self.key_path = key_path if key_path is None else cap_message(key_path, 300)


class FeatureConfigError(AsahiFeaturesError, ValueError):
    """Requested features, feature views or entity types do not exist in the store.

    The message lists what *is* available so the caller can fix the request.

    Args:
        message: what was wrong.
        available_features: the names that would have been accepted.
        kind: what the list contains (``"features"``, ``"entity types"``...), for the message.
        suggestions: close matches of the unknown name(s), best first: the message asks
            "did you mean ...?" before listing the rest.
        groups: the available names grouped for the message (e.g. feature view ->
            features); ``available_features`` stays the flat list.
    """

    def __init__(
        self,
        message: str,
        available_features: Iterable[str] = (),
        *,
        kind: str = "features",
        suggestions: Iterable[str] = (),
        groups: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.available_features: list[str] = sorted(set(available_features))
        self.kind = kind
        self.suggestions: list[str] = list(dict.fromkeys(suggestions))
        """Close matches of the unknown name(s), best first ("did you mean")."""
        # the listing: close matches first (in the hint), then the rest, grouped when
        # ``groups`` is given (e.g. view -> features), each name capped in length
        if groups:
            grouped = [
                (group, [n for n in names if n not in self.suggestions])
                for group, names in groups.items()
            ]
        else:
            rest = [n for n in self.available_features if n not in self.suggestions]
            grouped = [("", rest)]
        parts: list[str] = []
        used = listed = total = 0
        for group, members in grouped:
            shown: list[str] = []
            for name in members:
                total += 1
                text = name if len(name) <= MAX_EXCERPT_CHARS else excerpt(name)
                if listed >= _MAX_LISTED or used + len(text) > _LISTING_CHARS:
                    continue
                shown.append(text)
                listed += 1
                used += len(text) + 2
            if shown:
                parts.append(f"{group}: {', '.join(shown)}" if group else ", ".join(shown))
        separator = "; " if groups else ", "
        listing = separator.join(parts) if parts else "(none)"
        if total > listed:
            listing += f"{separator}... ({total - listed} more)"
        hint = ""
        if self.suggestions:
            close = [n if len(n) <= MAX_EXCERPT_CHARS else excerpt(n) for n in self.suggestions]
            hint = " (did you mean " + " or ".join(map(repr, close[:5])) + "?)"
        label = f"{'other ' if self.suggestions else ''}{kind}{' by view' if groups else ''}"
        reason = cap_message(
            message, MAX_MESSAGE_CHARS - len(listing) - len(label) - len(hint) - 20
        )
        super().__init__(f"{reason}{hint}. Available {label}: {listing}")
        self.reason = reason


class RegistryDriftError(FeatureConfigError):
    """Features that the store served before are gone from its registry (a view or
    feature removed by someone's ``feast apply`` while this process runs).

    Not the caller's mistake and not an outage: the enricher degrades only the requests
    that ask for them (no exception, no circuit-breaker failure) and they are enriched
    again once the features come back.
    """


class FeatureStoreError(AsahiFeaturesError):
    """Base class for failures of the feature store itself (not of the request)."""


class FeatureStoreUnavailableError(FeatureStoreError, ConnectionError):
    """The store could not be reached or failed to answer (connection refused, 5xx, ...)."""


class FeatureStoreTimeoutError(FeatureStoreUnavailableError, TimeoutError):
    """The store did not answer within ``timeout_ms``."""


class FeatureStoreAuthError(FeatureStoreUnavailableError):
    """The store rejected the credentials (HTTP 401/403, also after the token was re-read
    once), or no credential could be had. Like any store failure it degrades the request
    to an un-enriched prompt; it raises only with ``fallback_on_timeout: false``."""


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
