"""What a backend failure becomes: the caller's error, a secret-free description, and,
with ``fallback_on_timeout``, an empty vector announced by a rate-limited WARNING."""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional, Tuple

from ..errors import (
    AsahiFeaturesError,
    ConfigError,
    FeatureConfigError,
    FeatureStoreTimeoutError,
    FeatureStoreUnavailableError,
    GuardOverloadedError,
)
from ..models import FeatureStatus, FeatureVector

__all__ = ["PASS_THROUGH", "Fallback", "classify", "describe", "shorten"]

logger = logging.getLogger("asahi_features.guard")

PASS_THROUGH = (FeatureConfigError, ConfigError)
"""The caller's mistakes: never swallowed, never counted against the backend."""

_MAX_ERROR_CHARS = 200


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a backend failure.

    The library's own errors are written to be secret-free, so their message is kept
    (shortened); for anything else only the exception type is reported.
    """
    if isinstance(exc, AsahiFeaturesError):
        return shorten(f"{type(exc).__name__}: {exc}")
    return f"backend raised {type(exc).__name__}"


def shorten(text: str) -> str:
    if len(text) > _MAX_ERROR_CHARS:
        return text[: _MAX_ERROR_CHARS - 3] + "..."
    return text


def classify(exc: BaseException) -> Tuple[BaseException, str]:
    """The error a backend exception becomes for its callers, and the counter it moves.

    The caller's mistakes pass through (``config_errors``); the library's own store errors
    keep their type; anything else becomes :class:`FeatureStoreUnavailableError` naming
    only the exception's type, with the original as ``__cause__`` (``unavailable``).
    """
    if isinstance(exc, PASS_THROUGH):
        return exc, "config_errors"
    if isinstance(exc, FeatureStoreUnavailableError):
        if isinstance(exc, FeatureStoreTimeoutError):
            return FeatureStoreTimeoutError(describe(exc)), "unavailable"
        return exc, "unavailable"
    err = FeatureStoreUnavailableError(describe(exc))
    err.__cause__ = exc
    return err, "unavailable"


class Fallback:
    """Empty vectors instead of errors (or the error, without fallback), and the WARNING.

    Args:
        source: the backend's ``source``, for the vectors and the log line.
        enabled: ``fallback_on_timeout``; when False :meth:`vector` raises the error.
        warning_interval_seconds: at most one WARNING per interval; the next says how
            many were suppressed.
        clock: monotonic seconds.
        count: ``count(name)`` moves one of the guard's counters.
    """

    def __init__(
        self,
        source: str,
        enabled: bool,
        warning_interval_seconds: float,
        clock: Callable[[], float],
        count: Callable[[str], None],
    ) -> None:
        self.source = source
        self.enabled = enabled
        self.warning_interval_seconds = warning_interval_seconds
        self._clock = clock
        self._count = count
        self._lock = threading.Lock()
        self._last_warning: Optional[float] = None
        self.suppressed = 0

    def bad_vector(self, entity_id: str, entity_type: str) -> FeatureVector:
        return self.vector(
            FeatureStoreUnavailableError(
                "the store's answer had no usable vector for this entity (missing, "
                "repeated, or of another entity type)"
            ),
            entity_id,
            entity_type,
        )

    def vector(
        self, error: Optional[BaseException], entity_id: str, entity_type: str
    ) -> FeatureVector:
        if error is None:  # pragma: no cover - every unanswered id has an error
            error = FeatureStoreUnavailableError("no answer")
        if isinstance(error, PASS_THROUGH) or not self.enabled:
            raise error
        overloaded = isinstance(error, GuardOverloadedError)
        reason = shorten(str(error))
        self._count("fallbacks")
        self._warn(reason, overloaded)
        status = FeatureStatus.OVERLOADED if overloaded else FeatureStatus.UNAVAILABLE
        return FeatureVector.empty(entity_id, entity_type, self.source, status, error=reason)

    def _warn(self, reason: str, overloaded: bool) -> None:
        now = self._clock()
        with self._lock:
            last = self._last_warning
            if last is not None and now - last < self.warning_interval_seconds:
                self.suppressed += 1
                return
            suppressed = self.suppressed
            self._last_warning = now
            self.suppressed = 0
        extra = f" ({suppressed} similar warnings suppressed)" if suppressed else ""
        what = "this process is overloaded" if overloaded else "unavailable"
        logger.warning(
            "feature store %r %s, proceeding without features: %s%s",
            self.source,
            what,
            reason,
            extra,
        )
