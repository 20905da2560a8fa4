"""Registry drift: features the client served before that are gone from the registry
(someone's ``feast apply`` removed a view or a feature while the client runs).

Such a read degrades with :class:`~asahi_features.errors.RegistryDriftError` (the enricher
leaves those features out; no outage, no circuit-breaker failure), with ONE WARNING per
set of vanished names, and an INFO line when they come back.
"""

from __future__ import annotations

import logging
import threading
from typing import Iterable, Set, Tuple

from ...errors import RegistryDriftError

__all__ = ["DriftTracker"]

logger = logging.getLogger("asahi_features.stores.feast")

_MAX_SERVED = 100_000


class DriftTracker:
    """Which (entity type, feature name) pairs were served, and which are gone now."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._served: Set[Tuple[str, str]] = set()
        self._gone: Set[Tuple[str, str]] = set()
        self._lock = threading.Lock()

    def served(self, entity_type: str, names: Iterable[str]) -> None:
        """``names`` resolved for ``entity_type``: remember them; log the ones back."""
        pairs = {(entity_type, name) for name in names}
        with self._lock:
            if len(self._served) < _MAX_SERVED:
                self._served |= pairs
            back = pairs & self._gone
            self._gone -= back
        if back:
            logger.info(
                "Feast project %s serves %s again",
                self.project,
                ", ".join(sorted(f"{et}: {name}" for et, name in back)),
            )

    def was_served(self, entity_type: str, names: Iterable[str]) -> bool:
        """True when every one of ``names`` was served for ``entity_type`` before."""
        pairs = {(entity_type, name) for name in names}
        with self._lock:
            return bool(pairs) and pairs <= self._served

    def gone(self, entity_type: str, names: Iterable[str], detail: str = "") -> RegistryDriftError:
        """The error for ``names`` that vanished; the first time, one WARNING naming them."""
        listed = sorted(dict.fromkeys(names))
        pairs = {(entity_type, name) for name in listed}
        with self._lock:
            new = pairs - self._gone
            self._gone |= pairs
        message = (
            f"{', '.join(map(repr, listed))} of entity type {entity_type!r} disappeared from "
            f"Feast project {self.project!r} (removed by a feast apply?){detail}; requests "
            "asking for them are not enriched until they come back"
        )
        if new:
            logger.warning("%s (logged once)", message)
        return RegistryDriftError(message, [], kind="features")
