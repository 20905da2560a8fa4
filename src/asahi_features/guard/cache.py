"""A bounded, thread-safe TTL cache of feature vectors whose freshness keeps ageing.

Entries are keyed by ``(entity_type, entity_id, tuple(feature_names))`` and held in a
:class:`cachetools.TTLCache`. A hit returns a *copy* of the stored vector with
``freshness_seconds`` and every ``feature_freshness`` age increased by the time spent in
the cache, so a cached vector never looks fresher than the data really is.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple

from ..models import FeatureStatus, FeatureVector

__all__ = ["FeatureCache", "cache_key"]

CacheKey = Tuple[str, str, Tuple[str, ...]]


def cache_key(entity_type: str, entity_id: str, feature_names: Sequence[str]) -> CacheKey:
    """The key of one entity's vector for one feature set (order matters)."""
    return (entity_type, entity_id, tuple(feature_names))


def _aged_copy(vector: FeatureVector, elapsed: float) -> FeatureVector:
    if vector.features:
        freshness = vector.freshness_seconds + elapsed
        ages = {name: age + elapsed for name, age in vector.feature_freshness.items()}
    else:
        freshness = vector.freshness_seconds
        ages = dict(vector.feature_freshness)
    return FeatureVector.model_construct(
        entity_id=vector.entity_id,
        entity_type=vector.entity_type,
        features=dict(vector.features),
        retrieved_at=vector.retrieved_at,
        freshness_seconds=freshness,
        source=vector.source,
        status=vector.status,
        feature_freshness=ages,
        error=vector.error,
        freshness_limits=vector.freshness_limits,
    )


_CACHED = frozenset({FeatureStatus.FOUND, FeatureStatus.MISSING})
"""The statuses the cache keeps: answers the store gave."""


class FeatureCache:
    """Recent vectors per (entity type, entity id, feature set), bounded in size and age.

    Only answers from the store are cached (``FOUND`` and ``MISSING``); fallback vectors
    (``UNAVAILABLE``, ``OVERLOADED``) and ``INVALID_ID`` answers (nothing was read, and a
    stream of bad ids must not fill the cache) never are. Feature dicts are copied on the
    way in and out; the values themselves (lists, nested dicts) are shared, so treat them
    as read-only.

    Args:
        ttl_seconds: how long an entry is served (> 0).
        max_entries: the most entries kept; the least recently used go first (>= 1).
        clock: monotonic seconds; tests pass a controllable clock.

    Raises:
        ValueError: a non-positive TTL or size.

    Example:
        >>> cache = FeatureCache(ttl_seconds=60, max_entries=1000)
        >>> cache.get("user", "u1", ["tier"]) is None
        True
    """

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int = 10_000,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from cachetools import TTLCache

        if not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.ttl_seconds = float(ttl_seconds)
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._data: TTLCache[Hashable, Tuple[FeatureVector, float]] = TTLCache(
            maxsize=max_entries, ttl=ttl_seconds, timer=clock
        )

    def __len__(self) -> int:
        with self._lock:
            self._data.expire()
            return len(self._data)

    def get(
        self, entity_type: str, entity_id: str, feature_names: Sequence[str]
    ) -> Optional[FeatureVector]:
        """An aged copy of the cached vector, or ``None`` (absent or expired)."""
        key = cache_key(entity_type, entity_id, feature_names)
        with self._lock:
            entry = self._data.get(key)
        if entry is None:
            return None
        vector, stored_at = entry
        return _aged_copy(vector, max(0.0, self._clock() - stored_at))

    def get_many(
        self, entity_type: str, entity_ids: Sequence[str], feature_names: Sequence[str]
    ) -> List[Optional[FeatureVector]]:
        """:meth:`get` for many ids at once (one lock acquisition), in input order."""
        names = tuple(feature_names)
        with self._lock:
            entries = [self._data.get((entity_type, eid, names)) for eid in entity_ids]
        now = self._clock()
        return [
            None if entry is None else _aged_copy(entry[0], max(0.0, now - entry[1]))
            for entry in entries
        ]

    def put(
        self,
        entity_type: str,
        entity_id: str,
        feature_names: Sequence[str],
        vector: FeatureVector,
    ) -> None:
        """Keep a copy of ``vector`` under the requested key (only FOUND and MISSING)."""
        if vector.status not in _CACHED:
            return
        stored = _aged_copy(vector, 0.0)
        with self._lock:
            self._data[cache_key(entity_type, entity_id, feature_names)] = (stored, self._clock())

    def put_many(
        self,
        entity_type: str,
        entity_ids: Sequence[str],
        feature_names: Sequence[str],
        vectors: Sequence[FeatureVector],
    ) -> None:
        """:meth:`put` for each (requested id, vector) pair, in one lock acquisition."""
        names = tuple(feature_names)
        now = self._clock()
        items: Dict[Hashable, Tuple[FeatureVector, float]] = {}
        for entity_id, vector in zip(entity_ids, vectors, strict=True):
            if vector.status in _CACHED:
                items[(entity_type, entity_id, names)] = (_aged_copy(vector, 0.0), now)
        with self._lock:
            self._data.update(items)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._data.clear()
