"""Fetching: the store reads of planned requests, sync and async twins.

A request's (or a batch's) identities are grouped per (entity type, feature list), each
group read once (a guard reads all groups concurrently under one deadline), and the
answers matched back to the plans by entity id. A failed read degrades the plans it
served (logged, never raised) unless it is a configuration error or the caller asked
for the failure (``fallback_on_timeout: false``). Only the reads differ between the
twins: grouping and assigning are shared.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import (
    ConfigError,
    FeatureConfigError,
    FeatureStoreUnavailableError,
    RegistryDriftError,
)
from ..models import FeatureVector
from ..stores.base import FeatureStoreClient, aget_batch_features, aget_features
from .planning import _Group, _Plan

logger = logging.getLogger("asahi_features.enricher")
"""Every part logs as ``asahi_features.enricher`` (the name the module had before it was
split: log configuration and filters keep working)."""


def _by_entity_id(
    vectors: Sequence[FeatureVector], entity_type: str, ids: List[str]
) -> Dict[str, FeatureVector]:
    """A backend's answer indexed by ``entity_id``, never by position: a vector of another
    entity type, or two for one id, give nobody anything (that entity degrades)."""
    by_id: Dict[str, FeatureVector] = {}
    repeated: List[str] = []
    try:
        for vector in vectors:
            eid = vector.entity_id
            if vector.entity_type != entity_type:
                continue
            if eid in by_id:
                repeated.append(eid)
            else:
                by_id[eid] = vector
    except (AttributeError, TypeError):  # not vectors at all: nobody gets anything
        by_id.clear()
    for eid in repeated:
        by_id.pop(eid, None)
    if repeated or len(by_id) < len(ids):
        missing = sum(1 for eid in ids if eid not in by_id)
        if missing:
            logger.warning(
                "feature fetch for %r answered %d of %d ids unusably (missing, repeated or "
                "of another entity type); those requests proceed without them",
                entity_type,
                missing,
                len(ids),
            )
    return by_id


class _Fetching:
    """The fetching part of :class:`~asahi_features.enricher.FeatureEnricher`."""

    client: FeatureStoreClient
    _read_groups: Optional[Callable[[List[_Group]], Any]]
    _aread_groups: Optional[Callable[[List[_Group]], Any]]

    def _raise_unavailable(self) -> bool:
        """True when the client is a guard told not to fall back (errors then propagate)."""
        settings = getattr(self.client, "settings", None)
        fallback = getattr(self.client, "fallback_on_timeout", None)
        if fallback is None and settings is not None:
            fallback = getattr(settings, "fallback_on_timeout", None)
        return fallback is False

    def _on_fetch_error(self, exc: Exception, entity_type: str) -> None:
        if isinstance(exc, RegistryDriftError):  # the backend warned once; this read degrades
            logger.debug("features of %r gone from the registry: %s", entity_type, exc)
            return
        if isinstance(exc, (FeatureConfigError, ConfigError)):
            raise exc
        if isinstance(exc, FeatureStoreUnavailableError) and self._raise_unavailable():
            raise exc
        from ..guard.failures import describe  # light; only on this rare path

        # The library's own errors are secret-free; anything else is named by type only
        # (a transport error's text can quote a header, and so a key).
        logger.warning(
            "feature fetch for entity type %r failed (%s); continuing without it",
            entity_type,
            describe(exc),
        )

    def _fetch(self, plans: List[_Plan], single: bool = False) -> None:
        """Read every (entity type, feature list) group of ``plans`` and hand the vectors
        to the plans. A guard reads all groups concurrently under one deadline."""
        groups = self._groups(plans)
        if not groups:
            return
        reader = self._read_groups
        if reader is not None:
            try:
                results: List[Optional[Sequence[FeatureVector]]] = list(reader(groups))
            except Exception as exc:
                self._on_fetch_error(exc, groups[0][0])
                results = [None] * len(groups)
        else:
            results = [self._read_one_group(group, single) for group in groups]
        self._assign_all(plans, groups, results)

    def _read_one_group(self, group: _Group, single: bool) -> Optional[Sequence[FeatureVector]]:
        entity_type, names, ids = group
        client = self.client
        try:
            if single and len(ids) == 1:
                return [client.get_features(ids[0], entity_type, list(names))]
            return client.get_batch_features(ids, entity_type, list(names))
        except Exception as exc:
            self._on_fetch_error(exc, entity_type)
            return None

    async def _afetch(self, plans: List[_Plan], single: bool = False) -> None:
        """Async :meth:`_fetch`: groups are read concurrently, never blocking the loop."""
        groups = self._groups(plans)
        if not groups:
            return
        reader = self._aread_groups
        if reader is not None:
            try:
                results: List[Optional[Sequence[FeatureVector]]] = list(await reader(groups))
            except Exception as exc:
                self._on_fetch_error(exc, groups[0][0])
                results = [None] * len(groups)
        else:
            results = list(
                await asyncio.gather(*(self._aread_one_group(g, single) for g in groups))
            )
        self._assign_all(plans, groups, results)

    async def _aread_one_group(
        self, group: _Group, single: bool
    ) -> Optional[Sequence[FeatureVector]]:
        entity_type, names, ids = group
        client = self.client
        try:
            if single and len(ids) == 1:
                return [await aget_features(client, ids[0], entity_type, list(names))]
            return await aget_batch_features(client, ids, entity_type, list(names))
        except Exception as exc:
            self._on_fetch_error(exc, entity_type)
            return None

    @staticmethod
    def _lone_read(plan: _Plan) -> Optional[Tuple[str, str, List[str]]]:
        """(entity type, id, features) when the request reads one entity (the common case:
        one read, nothing to group), else ``None``."""
        if len(plan.identities) != 1:
            return None
        ((entity_type, entity_id),) = plan.identities.items()
        return entity_type, entity_id, list(plan.features.mapping[entity_type])

    @staticmethod
    def _take(
        plan: _Plan, entity_type: str, entity_id: str, vector: Optional[FeatureVector]
    ) -> None:
        """Give one request its one vector, if it is the answer for its entity."""
        if (
            vector is not None
            and getattr(vector, "entity_id", None) == entity_id
            and getattr(vector, "entity_type", None) == entity_type
        ):
            plan.vectors[entity_type] = vector
            return
        if vector is not None:
            logger.warning(
                "feature fetch for %r answered for another entity; proceeding without it",
                entity_type,
            )
        plan.failed = True

    def _assign_all(
        self,
        plans: List[_Plan],
        groups: List[_Group],
        results: List[Optional[Sequence[FeatureVector]]],
    ) -> None:
        for (entity_type, names, ids), vectors in zip(groups, results, strict=True):
            self._assign(plans, entity_type, names, ids, vectors)

    @staticmethod
    def _groups(plans: Sequence[_Plan]) -> List[_Group]:
        """The (entity type, feature list, ids) groups of the plans, each id once."""
        # dicts as ordered sets: each id once, in first-seen order
        groups: Dict[Tuple[str, Tuple[str, ...]], Dict[str, None]] = {}
        for plan in plans:
            if plan.done is not None:
                continue
            keys = plan.features.keys
            for entity_type, entity_id in plan.identities.items():
                group_key = (entity_type, keys[entity_type])
                ids = groups.get(group_key)
                if ids is None:
                    ids = groups[group_key] = {}
                ids[entity_id] = None
        return [(et, names, list(ids)) for (et, names), ids in groups.items()]

    @staticmethod
    def _assign(
        plans: Sequence[_Plan],
        entity_type: str,
        names: Tuple[str, ...],
        ids: List[str],
        vectors: Optional[Sequence[FeatureVector]],
    ) -> None:
        by_id = {} if vectors is None else _by_entity_id(vectors, entity_type, ids)
        for plan in plans:
            if plan.done is not None or entity_type not in plan.identities:
                continue
            if plan.features.keys[entity_type] != names:
                continue
            vector = by_id.get(plan.identities[entity_type])
            if vector is None:
                plan.failed = True
            else:
                plan.vectors[entity_type] = vector
