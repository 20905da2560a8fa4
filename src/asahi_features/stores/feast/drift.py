"""Registry drift: features the client served before that are gone from the registry
(someone's ``feast apply`` removed a view or a feature while the client runs).

Such a read degrades with :class:`~asahi_features.errors.RegistryDriftError` (the enricher
leaves those features out; no outage, no circuit-breaker failure), with ONE WARNING per
set of vanished names, and an INFO line when they come back.
"""

from __future__ import annotations

import logging
import threading
from typing import Dict, Iterable, Sequence, Set, Tuple

from ...errors import RegistryDriftError

__all__ = ["DriftTracker"]

logger = logging.getLogger("asahi_features.stores.feast")

_MAX_SERVED = 100_000


class DriftTracker:
    """Which (entity type, feature name) pairs were served, and which are gone now."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._served: Dict[Tuple[str, str], str] = {}
        """(entity type, name asked) -> the ``view:feature`` ref it was read as."""
        self._gone: Set[Tuple[str, str]] = set()
        self._lock = threading.Lock()

    def served(self, entity_type: str, resolved: Iterable[Tuple[str, str]]) -> None:
        """``(name asked, ref)`` pairs resolved for ``entity_type``: remember them; log
        the refs that are back."""
        refs = set()
        with self._lock:
            for name, ref in resolved:
                if len(self._served) < _MAX_SERVED:
                    self._served[(entity_type, name)] = ref
                refs.add((entity_type, ref))
            back = refs & self._gone
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
            return bool(pairs) and all(pair in self._served for pair in pairs)

    def gone(
        self,
        entity_type: str,
        names: Iterable[str],
        detail: str = "",
        available: Sequence[str] = (),
    ) -> RegistryDriftError:
        """The error for ``names`` that vanished (``available``: what the entity type
        still serves); the first time, one WARNING naming them."""
        with self._lock:
            listed = sorted({self._served.get((entity_type, name), name) for name in names})
            pairs = {(entity_type, ref) for ref in listed}
            new = pairs - self._gone
            self._gone |= pairs
        message = (
            f"{', '.join(map(repr, listed))} of entity type {entity_type!r} disappeared from "
            f"Feast project {self.project!r} (removed by a feast apply?){detail}; requests "
            "asking for them are not enriched until they come back"
        )
        if new:
            logger.warning("%s (logged once)", message)
        return RegistryDriftError(message, available, kind="features")
