"""The backend protocol (spec section 2.3), its async counterpart and a base class."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from abc import ABC, abstractmethod
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Protocol, runtime_checkable

from ..models import FeatureVector

__all__ = [
    "FUTURE_TOLERANCE_SECONDS",
    "UNKNOWN_AGE",
    "AsyncFeatureStoreClient",
    "BaseFeatureStore",
    "FeatureStoreClient",
    "age_of",
    "aget_batch_features",
    "aget_features",
    "io_timeout",
    "is_unknown_age",
    "missing_protocol_methods",
    "ordered_map",
    "parse_timestamp",
    "read_deadline",
]

read_deadline: ContextVar[Optional[float]] = ContextVar("asahi_read_deadline", default=None)
"""The ``time.monotonic()`` deadline of the guarded read in progress (``None`` outside one).

The guard sets it around every backend call; backends with their own I/O timeouts
(:func:`io_timeout`) follow it, so a batch given two seconds is not cut at 200 ms and a
hung connection is not kept open long after every caller has stopped waiting.
"""


def io_timeout(default_seconds: float) -> float:
    """Seconds an I/O call may take now: the time left before :data:`read_deadline`
    (at least 1 ms), or ``default_seconds`` outside a guarded read."""
    deadline = read_deadline.get()
    if deadline is None:
        return default_seconds
    return max(deadline - time.monotonic(), 0.001)


@runtime_checkable
class FeatureStoreClient(Protocol):
    """What every backend offers: exactly the specification's three methods.

    A user's own backend only needs these; every async path of the library runs them in
    a worker thread when the backend has no native async methods.
    """

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector: ...

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]: ...

    def health_check(self) -> bool: ...


@runtime_checkable
class AsyncFeatureStoreClient(FeatureStoreClient, Protocol):
    """A backend that also offers native async reads (every backend of ours does)."""

    async def aget_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector: ...

    async def aget_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]: ...


_REQUIRED_METHODS = ("get_features", "get_batch_features", "health_check")


def missing_protocol_methods(obj: object) -> List[str]:
    """Names of the :class:`FeatureStoreClient` methods that ``obj`` lacks (or are not callable)."""
    return [name for name in _REQUIRED_METHODS if not callable(getattr(obj, name, None))]


async def aget_features(
    client: FeatureStoreClient, entity_id: str, entity_type: str, feature_names: List[str]
) -> FeatureVector:
    """Async read from any client: native when it has ``aget_features``, else in a thread."""
    native = getattr(client, "aget_features", None)
    if native is not None:
        result: FeatureVector = await native(entity_id, entity_type, feature_names)
        return result
    return await asyncio.to_thread(client.get_features, entity_id, entity_type, feature_names)


async def aget_batch_features(
    client: FeatureStoreClient,
    entity_ids: List[str],
    entity_type: str,
    feature_names: List[str],
) -> List[FeatureVector]:
    """Async batch read from any client: native when available, else in a thread."""
    native = getattr(client, "aget_batch_features", None)
    if native is not None:
        result: List[FeatureVector] = await native(entity_ids, entity_type, feature_names)
        return result
    return await asyncio.to_thread(
        client.get_batch_features, entity_ids, entity_type, feature_names
    )


class BaseFeatureStore(ABC):
    """Convenience base for backends: batch by looping, async by worker thread.

    Backends override whatever they can do better (one round trip per batch, native
    async). ``list_features`` feeds the CLI's ``features`` command and error messages.
    """

    source: str = "custom"

    @abstractmethod
    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        """Fetch ``feature_names`` of one entity."""

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        """Fetch features of many entities: one vector per id, in input order."""
        return [self.get_features(eid, entity_type, feature_names) for eid in entity_ids]

    @abstractmethod
    def health_check(self) -> bool:
        """True when the store can serve reads right now."""

    async def aget_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        """Async :meth:`get_features` (a worker thread unless the backend overrides it)."""
        return await asyncio.to_thread(self.get_features, entity_id, entity_type, feature_names)

    async def aget_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        """Async :meth:`get_batch_features` (a worker thread unless overridden)."""
        return await asyncio.to_thread(
            self.get_batch_features, entity_ids, entity_type, feature_names
        )

    def list_features(self, entity_type: Optional[str] = None) -> Dict[str, List[str]]:
        """Feature names the store offers, per entity type (all types when ``None``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its features")

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections and files (no-op by default)."""

    def __enter__(self) -> BaseFeatureStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def parse_timestamp(value: str) -> Optional[datetime]:
    """An aware UTC datetime from an ISO-8601 string (``Z`` or offset); None if unparsable."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        match = re.match(r"^(.*T\d\d:\d\d(?::\d\d)?)(?:\.(\d+))?([+-]\d\d:\d\d)?$", text)
        if not match:
            return None
        base, frac, offset = match.groups()
        try:
            ts = datetime.fromisoformat(f"{base}.{(frac or '0')[:6].ljust(6, '0')}{offset or ''}")
        except ValueError:
            return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


UNKNOWN_AGE: float = sys.float_info.max
"""The age, in seconds, of a feature whose event time is unknown.

One rule on every backend: a timestamp that is missing, unparsable, at or before the
Unix epoch (what online stores send for "no timestamp") or implausibly far in the future
gives an *unknown* age, never a fresh one. The value is larger than any freshness
threshold, so the enricher drops such features as stale unless
``enricher.unknown_age: keep``. It is the largest finite float, not ``inf``: pydantic
writes ``inf`` as JSON ``null`` (which does not validate back into a ``float``), while
this value round-trips through every JSON encoder exactly, and adding the seconds a
vector spends in the guard's cache leaves it unchanged.
"""

FUTURE_TOLERANCE_SECONDS = 300.0
"""A timestamp up to this far ahead of "now" is clock skew (age 0); further ahead it is
not a real event time, and the age is :data:`UNKNOWN_AGE`."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def age_of(ts: Optional[datetime], now: datetime) -> float:
    """Seconds between the event time ``ts`` and ``now`` (both aware), or
    :data:`UNKNOWN_AGE` when ``ts`` is ``None``, at or before the epoch, or more than
    :data:`FUTURE_TOLERANCE_SECONDS` in the future. Small clock skew counts as age 0."""
    if ts is None or ts <= _EPOCH:
        return UNKNOWN_AGE
    age = (now - ts).total_seconds()
    if age < -FUTURE_TOLERANCE_SECONDS:
        return UNKNOWN_AGE
    return age if age > 0.0 else 0.0


def is_unknown_age(age: float) -> bool:
    """True for :data:`UNKNOWN_AGE` (also after the guard's cache has aged it)."""
    return age >= UNKNOWN_AGE


def ordered_map(value: Any) -> Any:
    """``value`` with the keys of every mapping in it sorted (recursively).

    Feast ``Map`` and ``Struct`` values are protobuf maps, which have no order: the
    embedded backend and ``feast serve`` each give their keys in an arbitrary order that
    changes between processes. Sorted keys make the rendered prompt the same on every
    run and on both backends (``Json`` objects keep their authored order: they are not
    maps)."""
    if isinstance(value, dict):
        return {k: ordered_map(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [ordered_map(v) for v in value]
    return value
