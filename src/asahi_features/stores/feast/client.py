"""FeastClient: features from a Feast repository's online store (SQLite, Redis, ...).

The client reads Feast's response protobuf directly (values by feature name, exact
event timestamps), so it costs only microseconds on top of the raw
``FeatureStore.get_online_features`` call. ``feast`` is imported only when a client is
built.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ...errors import ConfigError, FeatureConfigError, FeatureStoreUnavailableError
from ...models import FeatureVector
from ..base import BaseFeatureStore
from ..entity_keys import FEATURE_SERVICE_PREFIX, canonical_entity_type
from .drift import DriftTracker
from .keys import BAD_ID_ERRORS, HEALTH_ENTITY_ID, PROBES
from .registry import Plan, RegistryView, build_view
from .resolution import PlanResolver
from .response import entity_rows, read_vector, read_vectors
from .splitting import IdSplitter

if TYPE_CHECKING:
    from feast import FeatureStore

    from ...settings import FeatureStoreSettings

__all__ = ["FeastClient"]

logger = logging.getLogger(__name__)

DEFAULT_REFRESH_INTERVAL_SECONDS = 10.0
"""The least time between two registry re-reads the client makes on its own (an unknown
name or entity type, or Feast rejecting a cached plan); :meth:`FeastClient.refresh`
always re-reads."""


class FeastClient(PlanResolver, IdSplitter, BaseFeatureStore):
    """Feature vectors from the online store of a Feast repository.

    Feature names may be plain (``purchase_history``) or full references
    (``user_purchases:purchase_history``); a plain name must be served by exactly one
    feature view of the entity type. Every read is exactly one
    ``get_online_features`` call, whatever the number of entities.

    Feast keeps one process-wide feature-resolution cache: two ``FeatureStore`` objects
    used alternately in one process evict each other's entries and both become several
    times slower. An application that already holds a ``FeatureStore`` should pass it as
    ``feature_store``.

    Args:
        repo_path: the repository directory (holding ``feature_store.yaml``).
        project: the Feast project; must match the repository's.
        feature_store: an existing ``feast.FeatureStore`` to share (``repo_path`` is then
            only used in messages).
        entity_join_keys: entity type -> join key, overriding the registry.
        registry_ttl_seconds: how often Feast re-reads the registry (when the client
            builds the FeatureStore itself; rounded up to whole seconds, 0 = only when a
            requested name is unknown); ``None`` keeps ``feature_store.yaml``'s value.
        refresh_interval_seconds: the least time between two registry re-reads the
            client makes on its own, when a requested feature or entity type is unknown
            (a view applied since?) or Feast rejects a cached plan: at most one per
            interval, however many bad requests arrive (default 10 s).
            :meth:`refresh` always re-reads.

    Entity ids are converted to the join key's value type (from the entity, else from
    the views' entity columns: ``feast init``'s ``driver_id`` is INT64). An id that does
    not convert (``"abc"`` for an INT64 key) gets an empty vector with status
    ``INVALID_ID`` and an ``error`` saying why; the other ids of a batch are read
    normally, and nothing is re-read.

    Raises:
        ConfigError: feast is not installed, or ``project`` is not the repository's.

    A repository that cannot be loaded (missing directory, broken YAML) does not raise
    here: reads raise :class:`FeatureStoreUnavailableError` and ``health_check()``
    returns False until it can be loaded.

    Example:
        >>> client = FeastClient("examples/feast_repo", "asahi")  # doctest: +SKIP
        >>> client.get_features("u_0001", "user", ["tier", "purchase_history"])  # doctest: +SKIP
    """

    source = "feast"

    def __init__(
        self,
        repo_path: str,
        project: str,
        *,
        feature_store: Optional[FeatureStore] = None,
        entity_join_keys: Optional[Mapping[str, str]] = None,
        registry_ttl_seconds: Optional[float] = None,
        refresh_interval_seconds: float = DEFAULT_REFRESH_INTERVAL_SECONDS,
    ) -> None:
        if not refresh_interval_seconds >= 0:
            raise ConfigError(
                f"refresh_interval_seconds must be >= 0, got {refresh_interval_seconds!r}"
            )
        try:
            import feast  # noqa: F401
        except ImportError:
            raise ConfigError(
                "FeastClient needs the 'feast' package (pip install 'asahi-features[feast]')",
                key_path="feature_store.provider",
            ) from None
        self.repo_path = str(repo_path)
        self.project = project
        self._join_key_overrides = dict(entity_join_keys or {})
        self._registry_ttl = registry_ttl_seconds
        self._lock = threading.RLock()
        self._store: Optional[FeatureStore] = None
        self._view: Optional[RegistryView] = None
        self._plans: Dict[Tuple[str, Tuple[str, ...]], Plan] = {}
        self._native_async: Optional[bool] = None
        self._refresh_interval = float(refresh_interval_seconds)
        self._last_auto_refresh = -math.inf
        self._clock: Callable[[], float] = time.monotonic
        self._drift = DriftTracker(project)
        if feature_store is not None:
            self._check_project(feature_store)
            self._store = feature_store
        else:
            try:
                self._load_store()
            except FeatureStoreUnavailableError as exc:
                logger.warning("Feast repository not loadable yet: %s", exc)

    @classmethod
    def from_settings(cls, settings: FeatureStoreSettings) -> FeastClient:
        """Build from the ``feature_store.feast`` section of the configuration."""
        feast_settings = settings.feast
        if feast_settings is None:
            raise ConfigError(
                "feature_store.feast section is missing", key_path="feature_store.feast"
            )
        return cls(
            str(feast_settings.repo_path),
            feast_settings.project,
            entity_join_keys=feast_settings.entity_join_keys,
            registry_ttl_seconds=feast_settings.registry_ttl_seconds,
        )

    def __repr__(self) -> str:
        return f"FeastClient(repo_path={self.repo_path!r}, project={self.project!r})"

    @property
    def feature_store(self) -> FeatureStore:
        """The underlying ``feast.FeatureStore`` (loaded on first use).

        Raises:
            FeatureStoreUnavailableError: the repository cannot be loaded.
        """
        store = self._store
        if store is None:
            store = self._load_store()
        return store

    # -- loading -----------------------------------------------------------------------

    def _check_project(self, store: FeatureStore) -> None:
        actual = store.project
        if actual != self.project:
            raise ConfigError(
                f"Feast project mismatch: FeastClient was given project {self.project!r} but "
                f"the repository at {self.repo_path} is project {actual!r}; set "
                f"feature_store.feast.project to {actual!r}",
                key_path="feature_store.feast.project",
            )

    def _load_store(self) -> FeatureStore:
        with self._lock:
            if self._store is not None:
                return self._store
            from feast import FeatureStore

            try:
                store = FeatureStore(repo_path=self.repo_path)
            except Exception as exc:
                raise FeatureStoreUnavailableError(
                    f"cannot load the Feast repository at {self.repo_path}: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            self._check_project(store)
            if self._registry_ttl is not None:
                # Feast wants whole seconds (0 = never re-read on its own): round up, not down.
                store.config.registry.cache_ttl_seconds = math.ceil(self._registry_ttl)
            self._store = store
            return store

    def _build_view(self, store: FeatureStore) -> RegistryView:
        return build_view(store, self._join_key_overrides, self.repo_path)

    def _registry_view(self) -> RegistryView:
        view = self._view
        if view is None:
            store = self.feature_store
            with self._lock:
                view = self._view
                if view is None:
                    view = self._build_view(store)
                    self._view = view
        return view

    def refresh(self) -> None:
        """Re-read the registry now (new views and features become visible)."""
        store = self.feature_store
        with self._lock:
            try:
                store.refresh_registry()  # type: ignore[no-untyped-call]
            except Exception as exc:
                raise FeatureStoreUnavailableError(
                    f"cannot refresh the Feast registry of {self.repo_path}: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            self._view = self._build_view(store)
            self._plans = {}

    def _auto_refresh(self) -> bool:
        """Re-read the registry unless the client did so on its own within the last
        ``refresh_interval_seconds``; True when it re-read. No stream of bad requests
        re-reads more than once per interval."""
        now = self._clock()
        with self._lock:
            if now - self._last_auto_refresh < self._refresh_interval:
                return False
            self._last_auto_refresh = now
        self.refresh()
        return True

    def _refresh_note(self, refreshed: bool) -> str:
        if refreshed:
            return ""
        return (
            f" (the registry was re-read less than {self._refresh_interval:g} s ago; "
            "FeastClient.refresh() re-reads it now)"
        )

    # -- reading -----------------------------------------------------------------------

    def _feast_error(
        self, exc: Exception, plan: Plan, entity_type: str, feature_names: Sequence[str]
    ) -> Exception:
        """Map an exception of ``get_online_features`` to ours: features gone from the
        registry (re-read, rate-limited) are drift; Feast rejecting names is a
        configuration error; anything else is the store failing."""
        from feast.errors import FeastObjectNotFoundException

        try:
            refreshed = self._auto_refresh()
        except FeatureStoreUnavailableError as unavailable:
            return unavailable
        view = self._registry_view()
        vanished = [ref for ref in plan.names if ref not in view.refs]
        if vanished:
            self._plans = {}
            canonical = canonical_entity_type(entity_type)
            info = view.entities.get(canonical)
            return self._drift.gone(
                canonical,
                vanished,
                f" ({type(exc).__name__})",
                info.resolver.available if info else (),
            )
        if isinstance(exc, (KeyError, ValueError, FeastObjectNotFoundException)):
            self._plans = {}
            return FeatureConfigError(
                f"Feast rejected features {list(feature_names)!r} of entity type "
                f"{entity_type!r} (join key {plan.join_key!r}): {type(exc).__name__}: {exc}"
                f"{self._refresh_note(refreshed)}",
                self._available(entity_type),
            )
        return FeatureStoreUnavailableError(
            f"Feast online read failed ({self.repo_path}): {type(exc).__name__}: {exc}"
        )

    def _read(
        self, plan: Plan, keys: List[Any], entity_type: str, feature_names: Sequence[str]
    ) -> Any:
        """One ``get_online_features`` call for join key values ``keys``: the proto."""
        try:
            response = self.feature_store.get_online_features(
                features=plan.refs, entity_rows=entity_rows(plan, keys), full_feature_names=True
            )
        except (FeatureConfigError, FeatureStoreUnavailableError):
            raise
        except Exception as exc:
            raise self._feast_error(exc, plan, entity_type, feature_names) from exc
        return response.proto

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        """Fetch ``feature_names`` of one entity (one ``get_online_features`` call).

        Args:
            entity_id: the entity's join-key value (``"u_0001"``).
            entity_type: a Feast entity of the project (``"user"``).
            feature_names: plain names or ``view:feature`` references.

        Returns:
            The vector; empty (status MISSING) when the entity has no row, empty with
            status INVALID_ID when ``entity_id`` is no value of the join key's type.

        Raises:
            FeatureConfigError: unknown entity type or feature (the message lists what exists).
            FeatureStoreUnavailableError: the repository or online store cannot be read.
        """
        plan = self._plan(entity_type, feature_names)
        try:
            key = plan.convert(entity_id)
        except BAD_ID_ERRORS as exc:
            return self._invalid(plan, entity_id, entity_type, exc)
        proto = self._read(plan, [key], entity_type, feature_names)
        return read_vector(plan, proto, entity_id, entity_type, self.source, self.project)

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        """Fetch features of many entities in ONE ``get_online_features`` call.

        Returns one vector per id, in input order (duplicates included); an id that is
        no value of the join key's type gets an INVALID_ID vector, the others are read.

        Raises:
            FeatureConfigError: unknown entity type or feature.
            FeatureStoreUnavailableError: the repository or online store cannot be read.
        """
        plan = self._plan(entity_type, feature_names)  # validates an empty batch too
        if not entity_ids:
            return []
        keys, invalid = self._split(plan, entity_ids, entity_type)
        if invalid is None:
            proto = self._read(plan, keys, entity_type, feature_names)
            return read_vectors(plan, proto, entity_ids, entity_type, self.source, self.project)
        valid_ids = [eid for i, eid in enumerate(entity_ids) if i not in invalid]
        read: List[FeatureVector] = []
        if valid_ids:
            proto = self._read(plan, keys, entity_type, feature_names)
            read = read_vectors(plan, proto, valid_ids, entity_type, self.source, self.project)
        return self._merge(entity_ids, read, invalid)

    # -- async -------------------------------------------------------------------------

    def _async_native(self) -> bool:
        native = self._native_async
        if native is None:
            try:
                provider = self.feature_store._get_provider()
                native = bool(provider.async_supported.online.read)
            except Exception:  # an unknown provider: use the worker thread
                native = False
            self._native_async = native
            logger.debug("Feast native async reads: %s", native)
        return native

    async def _aread(
        self, entity_ids: Sequence[str], entity_type: str, feature_names: Sequence[str]
    ) -> List[FeatureVector]:
        plan = self._plan(entity_type, feature_names)
        keys, invalid = self._split(plan, entity_ids, entity_type)
        valid_ids = (
            entity_ids
            if invalid is None
            else [e for i, e in enumerate(entity_ids) if i not in invalid]
        )
        read: List[FeatureVector] = []
        if valid_ids:
            try:
                response = await self.feature_store.get_online_features_async(
                    features=plan.refs,
                    entity_rows=entity_rows(plan, keys),
                    full_feature_names=True,
                )
            except (FeatureConfigError, FeatureStoreUnavailableError):
                raise
            except Exception as exc:
                raise self._feast_error(exc, plan, entity_type, feature_names) from exc
            read = read_vectors(
                plan, response.proto, valid_ids, entity_type, self.source, self.project
            )
        return read if invalid is None else self._merge(entity_ids, read, invalid)

    async def aget_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        """Async :meth:`get_features`: Feast's native async read where the online store
        has one (Redis), a worker thread otherwise (SQLite); decided once per client."""
        if self._async_native():
            return (await self._aread((entity_id,), entity_type, feature_names))[0]
        return await asyncio.to_thread(self.get_features, entity_id, entity_type, feature_names)

    async def aget_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        """Async :meth:`get_batch_features` (native on Redis, worker thread on SQLite)."""
        if not entity_ids:
            return self.get_batch_features(entity_ids, entity_type, feature_names)
        if self._async_native():
            return await self._aread(entity_ids, entity_type, feature_names)
        return await asyncio.to_thread(
            self.get_batch_features, entity_ids, entity_type, feature_names
        )

    # -- introspection -----------------------------------------------------------------

    def list_features(self, entity_type: Optional[str] = None) -> Dict[str, List[str]]:
        """Plain feature names per entity type (only ``entity_type`` when given).

        Raises:
            FeatureConfigError: ``entity_type`` is not an entity of the project.
        """
        view = self._registry_view()
        if entity_type is None:
            return {name: self._listed(view, name) for name in sorted(view.entities)}
        entity_type = canonical_entity_type(entity_type)
        info = view.entities.get(entity_type)
        if info is None:
            refreshed = self._auto_refresh()
            if refreshed:
                view = self._registry_view()
                info = view.entities.get(entity_type)
            if info is None:
                raise self._unknown_entity(view, entity_type, self._refresh_note(refreshed))
        return {entity_type: self._listed(view, entity_type)}

    @staticmethod
    def _listed(view: RegistryView, entity_type: str) -> List[str]:
        """Plain feature names, then ``@service`` for each feature service of the type."""
        services = sorted(
            f"{FEATURE_SERVICE_PREFIX}{name}"
            for name, service in view.services.items()
            if service.entity_type == entity_type
        )
        return view.entities[entity_type].resolver.plain_names + services

    def health_check(self) -> bool:
        """True when the registry loads and an online read succeeds; never raises.

        The read asks for one feature of one entity type with an id of the join key's
        type (``0`` for an integer key, a string otherwise)."""
        try:
            view = self._registry_view()
            for entity_type, info in view.entities.items():
                refs = sorted(info.carriers.values())  # feature views only (no request data)
                if len(info.parts) == 1 and refs:
                    self.feature_store.get_online_features(
                        features=refs[:1],
                        entity_rows={info.join_key: [PROBES.get(info.key_type, HEALTH_ENTITY_ID)]},
                    )
                    logger.debug("Feast health check read %s of %s", refs[0], entity_type)
                    return True
            return True
        except Exception as exc:
            logger.warning("Feast health check failed for %s: %s", self.repo_path, exc)
            return False

    def close(self) -> None:
        """Drop the cached registry view (a shared FeatureStore is left untouched)."""
        with self._lock:
            self._view = None
            self._plans = {}
