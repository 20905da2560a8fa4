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
import operator
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import ConfigError, FeatureConfigError, FeatureStoreUnavailableError
from ..models import FeatureStatus, FeatureVector, trusted_constructor
from .base import UNKNOWN_AGE, BaseFeatureStore, ordered_map
from .naming import FeatureNameResolver, close_matches

if TYPE_CHECKING:
    from feast import FeatureStore

    from ..settings import FeatureStoreSettings

__all__ = ["FeastClient"]

logger = logging.getLogger(__name__)

_HEALTH_ENTITY_ID = "__asahi_health_check__"
DEFAULT_REFRESH_INTERVAL_SECONDS = 10.0
"""The least time between two registry re-reads the client makes on its own (an unknown
name or entity type, or Feast rejecting a cached plan); :meth:`FeastClient.refresh`
always re-reads."""
_BAD_ID_ERRORS = (ValueError, TypeError, OverflowError)
_SCALAR_KINDS = frozenset(
    {"string_val", "int32_val", "int64_val", "double_val", "float_val", "bool_val", "bytes_val"}
)
_LIST_KINDS = frozenset(f"{k[:-4]}_list_val" for k in _SCALAR_KINDS)
_slow_convert: Optional[Any] = None
_MAP_KINDS = frozenset({"map_val", "struct_val", "map_list_val", "struct_list_val"})
"""Protobuf maps (Feast Map / Struct): no key order, so keys are sorted (``ordered_map``)."""
_FOUND = FeatureStatus.FOUND
# How the batch loop reads a oneof kind: 1 scalar, 2 list, 3 Feast's conversion; absent
# (None, "null_val"): no value. Unknown kinds fall back to 3 via ``_Modes.__missing__``.


class _Modes(Dict[Optional[str], Optional[int]]):
    def __missing__(self, kind: Optional[str]) -> Optional[int]:
        return 3


_MODES = _Modes({k: 1 for k in _SCALAR_KINDS})
_MODES.update({k: 2 for k in _LIST_KINDS})
_MODES.update({None: None, "null_val": None})


def _convert(value: Any, kind: str) -> Any:
    """A Feast ``Value`` proto as Python: fast for plain scalars and lists, Feast's own
    conversion for the rest (timestamps, sets, maps, structs, ...)."""
    if kind in _SCALAR_KINDS:
        return getattr(value, kind)
    if kind in _LIST_KINDS:
        return list(getattr(value, kind).val)
    global _slow_convert
    if _slow_convert is None:
        from feast.type_map import feast_value_type_to_python_type

        _slow_convert = feast_value_type_to_python_type
    converted = _slow_convert(value)
    return ordered_map(converted) if kind in _MAP_KINDS else converted


def _int_converter(bits: int) -> Callable[[Any], int]:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def to_int(value: Any) -> int:
        # a str is parsed; anything else must be an integer already (int, numpy int):
        # 2.5 or "2.5" is not an id of an integer key
        number = int(value) if type(value) is str else operator.index(value)
        if low <= number <= high:
            return number
        raise OverflowError(f"out of the INT{bits} range")

    return to_int


def _to_str(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, (bytes, bytearray)):
        raise TypeError("bytes for a STRING join key")
    return str(value)


def _to_bytes(value: Any) -> bytes:
    return value.encode("utf-8") if type(value) is str else bytes(value)


def _to_float(value: Any) -> float:
    number = float(value)
    if math.isnan(number):
        raise ValueError("NaN is no entity id")
    return number


_CONVERTERS: Dict[str, Callable[[Any], Any]] = {
    "INT64": _int_converter(64),
    "INT32": _int_converter(32),
    "STRING": _to_str,
    "BYTES": _to_bytes,
    "DOUBLE": _to_float,
    "FLOAT": _to_float,
}
"""Join key value type -> how an entity id becomes a value of that type (an exception
in ``_BAD_ID_ERRORS``: the id is invalid). Other types pass the id through unchanged."""

_PROBES: Dict[str, Any] = {
    "INT64": 0,
    "INT32": 0,
    "DOUBLE": 0.0,
    "FLOAT": 0.0,
    "BYTES": _HEALTH_ENTITY_ID.encode(),
}
"""Join key value type -> the id health_check reads (a string for the rest)."""


def _pass(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class _EntityInfo:
    join_key: str
    key_type: str
    """The join key's Feast value type name (``INT64``, ``STRING``, ``UNKNOWN``...)."""
    resolver: FeatureNameResolver

    @property
    def convert(self) -> Callable[[Any], Any]:
        return _CONVERTERS.get(self.key_type, _pass)


@dataclass(frozen=True)
class _RegistryView:
    """What the client knows about the project: entity types and their views."""

    entities: Dict[str, _EntityInfo]


@dataclass(frozen=True)
class _Plan:
    """A resolved request: refs to ask Feast for and how to read the answer."""

    join_key: str
    key_type: str
    convert: Callable[[Any], Any]
    """An entity id as a value of the join key's type (raises for an invalid id)."""
    refs: List[str]
    columns: Dict[str, Tuple[str, str]]
    """Response column (``view__feature``) -> (the name the caller asked for, view)."""


_new_vector = trusted_constructor(FeatureVector)


def _found_vector(
    entity_id: str,
    entity_type: str,
    source: str,
    features: Dict[str, Any],
    ages: Dict[str, float],
    retrieved_at: datetime,
) -> FeatureVector:
    """What ``FeatureVector.from_ages`` builds, for a non-empty ``features``, in a third
    of the time (the hot path of every read; pydantic's ``model_construct`` costs ~7 us).

    ``ages`` holds an age for every feature in ``features``.
    """
    return _new_vector(
        {
            "entity_id": entity_id,
            "entity_type": entity_type,
            "features": features,
            "retrieved_at": retrieved_at,
            "freshness_seconds": max(ages.values()),
            "source": source,
            "status": _FOUND,
            "feature_freshness": ages,
            "error": None,
        }
    )


class FeastClient(BaseFeatureStore):
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
        self._view: Optional[_RegistryView] = None
        self._plans: Dict[Tuple[str, Tuple[str, ...]], _Plan] = {}
        self._native_async: Optional[bool] = None
        self._refresh_interval = float(refresh_interval_seconds)
        self._last_auto_refresh = -math.inf
        self._clock: Callable[[], float] = time.monotonic
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

    def _build_view(self, store: FeatureStore) -> _RegistryView:
        try:
            entities = store.list_entities(allow_cache=True)
            views = store.list_feature_views(allow_cache=True)
        except Exception as exc:
            raise FeatureStoreUnavailableError(
                f"cannot read the Feast registry of {self.repo_path}: {type(exc).__name__}: {exc}"
            ) from None
        per_entity: Dict[str, Dict[str, List[str]]] = {e.name: {} for e in entities}
        # (entity, column) -> value type of the views' entity columns: an entity declared
        # without a value_type (``feast init``'s driver) is typed by its views
        column_types: Dict[Tuple[str, str], str] = {}
        for fv in views:
            if len(fv.entities) != 1 or fv.entities[0] not in per_entity:
                continue  # views keyed by several entities need compound keys: not served
            per_entity[fv.entities[0]][fv.name] = [f.name for f in fv.features]
            for column in getattr(fv, "entity_columns", None) or ():
                try:
                    type_name = column.dtype.to_value_type().name
                except Exception:  # a type Feast cannot map: leave the id as it is
                    continue
                column_types.setdefault((fv.entities[0], column.name), type_name)
        infos: Dict[str, _EntityInfo] = {}
        for entity in entities:
            join_key = self._join_key_overrides.get(entity.name, entity.join_key)
            key_type = getattr(getattr(entity, "value_type", None), "name", None) or "UNKNOWN"
            if key_type == "UNKNOWN":
                key_type = column_types.get((entity.name, join_key), "UNKNOWN")
            infos[entity.name] = _EntityInfo(
                join_key=join_key,
                key_type=key_type,
                resolver=FeatureNameResolver(entity.name, per_entity[entity.name], ":"),
            )
        return _RegistryView(infos)

    def _registry_view(self) -> _RegistryView:
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

    # -- resolution --------------------------------------------------------------------

    def _entity(self, view: _RegistryView, entity_type: str) -> Optional[_EntityInfo]:
        return view.entities.get(entity_type)

    def _unknown_entity(
        self, view: _RegistryView, entity_type: str, note: str = ""
    ) -> FeatureConfigError:
        return FeatureConfigError(
            f"unknown entity type {entity_type!r} in Feast project {self.project!r}{note}",
            view.entities,
            kind="entity types",
            suggestions=close_matches([entity_type], view.entities),
        )

    def _plan(self, entity_type: str, feature_names: Sequence[str]) -> _Plan:
        key = (entity_type, tuple(feature_names))
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        if not feature_names:
            raise FeatureConfigError(
                f"no feature names requested for entity type {entity_type!r}",
                self._available(entity_type),
            )
        view = self._registry_view()
        info = self._entity(view, entity_type)
        resolved: List[Tuple[str, str]] = []
        unknown: List[str] = []
        if info is not None:
            resolved, unknown = info.resolver.try_resolve(feature_names)
        if info is None or unknown:
            refreshed = self._auto_refresh()  # a view applied since we last looked?
            note = self._refresh_note(refreshed)
            if refreshed:
                view = self._registry_view()
                info = self._entity(view, entity_type)
            if info is None:
                raise self._unknown_entity(view, entity_type, note)
            resolved, unknown = info.resolver.try_resolve(feature_names)
            if unknown:
                raise info.resolver.unknown_error(unknown, note)
        refs: List[str] = []
        columns: Dict[str, Tuple[str, str]] = {}
        for requested, ref in resolved:
            view_name, _, feature = ref.partition(":")
            column = f"{view_name}__{feature}"
            if column in columns:
                continue  # the same feature asked twice (e.g. plain and full name)
            refs.append(ref)
            columns[column] = (requested, view_name)
        plan = _Plan(info.join_key, info.key_type, info.convert, refs, columns)
        with self._lock:
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _available(self, entity_type: str) -> List[str]:
        info = self._registry_view().entities.get(entity_type)
        return info.resolver.available if info else []

    # -- reading -----------------------------------------------------------------------

    def _invalid(
        self, plan: _Plan, entity_id: Any, entity_type: str, exc: Exception
    ) -> FeatureVector:
        """The answer for an id that is no value of the join key's type."""
        logger.debug(
            "invalid %s id %r for join key %s: %s", entity_type, entity_id, plan.join_key, exc
        )
        shown = repr(entity_id)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return FeatureVector.empty(
            entity_id,
            entity_type,
            self.source,
            FeatureStatus.INVALID_ID,
            error=(
                f"entity id {shown} is not a valid {plan.key_type} value of join key "
                f"{plan.join_key!r} ({type(exc).__name__})"
            ),
        )

    def _split(
        self, plan: _Plan, entity_ids: Sequence[Any], entity_type: str
    ) -> Tuple[List[Any], Optional[Dict[int, FeatureVector]]]:
        """The join key values of the ids, and None, when every id converts; otherwise
        the values of the valid ids and position -> INVALID_ID vector of the others."""
        convert = plan.convert
        try:
            return [convert(eid) for eid in entity_ids], None
        except _BAD_ID_ERRORS:
            pass
        keys: List[Any] = []
        invalid: Dict[int, FeatureVector] = {}
        for i, eid in enumerate(entity_ids):
            try:
                keys.append(convert(eid))
            except _BAD_ID_ERRORS as exc:
                invalid[i] = self._invalid(plan, eid, entity_type, exc)
        return keys, invalid

    @staticmethod
    def _merge(
        entity_ids: Sequence[Any],
        read: List[FeatureVector],
        invalid: Dict[int, FeatureVector],
    ) -> List[FeatureVector]:
        """The vectors of the valid ids (in order) with the invalid ones at their places."""
        valid = iter(read)
        return [invalid[i] if i in invalid else next(valid) for i in range(len(entity_ids))]

    def _feast_error(
        self, exc: Exception, plan: _Plan, entity_type: str, feature_names: Sequence[str]
    ) -> Exception:
        """Map an exception of ``get_online_features`` to ours."""
        from feast.errors import FeastObjectNotFoundException

        if isinstance(exc, (KeyError, ValueError, FeastObjectNotFoundException)):
            # The registry changed under a cached plan (a view or feature was removed).
            self._plans = {}
            try:
                refreshed = self._auto_refresh()
            except FeatureStoreUnavailableError as unavailable:
                return unavailable
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
        self, plan: _Plan, keys: List[Any], entity_type: str, feature_names: Sequence[str]
    ) -> Any:
        """One ``get_online_features`` call for join key values ``keys``: the proto."""
        try:
            response = self.feature_store.get_online_features(
                features=plan.refs,
                entity_rows={plan.join_key: keys},
                full_feature_names=True,
            )
        except (FeatureConfigError, FeatureStoreUnavailableError):
            raise
        except Exception as exc:
            raise self._feast_error(exc, plan, entity_type, feature_names) from exc
        return response.proto

    def _vector(self, plan: _Plan, proto: Any, entity_id: str, entity_type: str) -> FeatureVector:
        """The single-entity case of :meth:`_vectors`, without per-entity lists.

        All features of one view share one event timestamp, read once per view.
        """
        now = time.time()
        features: Dict[str, Any] = {}
        ages: Dict[str, float] = {}
        view_ages: Dict[str, Optional[float]] = {}
        seen = False
        columns = plan.columns
        results = proto.results
        for j, column in enumerate(proto.metadata.feature_names.val):
            target = columns.get(column)
            if target is None:
                continue  # the join key column
            requested, view = target
            result = results[j]
            if view in view_ages:
                age = view_ages[view]
            else:
                ts = result.event_timestamps[0]
                seconds = ts.seconds
                age = now - (seconds + ts.nanos * 1e-9) if seconds else None
                view_ages[view] = age
            value = result.values[0]
            kind = value.WhichOneof("val")
            if age is not None:
                seen = True
            if kind is None or kind == "null_val":
                continue  # individually null (or no row in this view): left out
            features[requested] = _convert(value, kind)
            seen = True
            ages[requested] = UNKNOWN_AGE if age is None else age  # no timestamp: unknown
        retrieved_at = datetime.fromtimestamp(now, timezone.utc)
        if not seen:
            logger.info(
                "entity %s %r not found in Feast project %s", entity_type, entity_id, self.project
            )
            return FeatureVector.empty(
                entity_id, entity_type, self.source, retrieved_at=retrieved_at
            )
        if not features:  # the entity exists but every requested feature is null
            return FeatureVector.empty(
                entity_id, entity_type, self.source, FeatureStatus.FOUND, retrieved_at=retrieved_at
            )
        return _found_vector(entity_id, entity_type, self.source, features, ages, retrieved_at)

    def _vectors(
        self, plan: _Plan, proto: Any, entity_ids: Sequence[str], entity_type: str
    ) -> List[FeatureVector]:
        """Read a response proto by column name into one vector per entity id.

        A feature whose value is unset and whose event timestamp is zero has no row for
        that entity (SQLite says NOT_FOUND, Redis says PRESENT with timestamp 0); an
        entity none of whose features has a row is missing. Ages come from the exact
        event timestamps.
        """
        if len(entity_ids) == 1:
            return [self._vector(plan, proto, entity_ids[0], entity_type)]
        now = time.time()
        count = len(entity_ids)
        features: List[Dict[str, Any]] = [{} for _ in range(count)]
        ages: List[Dict[str, float]] = [{} for _ in range(count)]
        seen = [False] * count
        view_ages: Dict[str, List[float]] = {}
        columns = plan.columns
        results = proto.results
        modes = _MODES
        for j, column in enumerate(proto.metadata.feature_names.val):
            target = columns.get(column)
            if target is None:
                continue  # the join key column
            requested, view = target
            result = results[j]
            row_ages = view_ages.get(view)
            if row_ages is None:
                # one timestamp per (view, entity); no timestamp: an unknown age
                row_ages = []
                for i, ts in enumerate(result.event_timestamps):
                    seconds = ts.seconds
                    if seconds:
                        seen[i] = True
                        row_ages.append(now - (seconds + ts.nanos * 1e-9))
                    else:
                        row_ages.append(UNKNOWN_AGE)
                view_ages[view] = row_ages
            for value, row_features, feature_ages, age in zip(
                result.values, features, ages, row_ages, strict=True
            ):
                kind = value.WhichOneof("val")
                mode = modes[kind]
                if mode is None:
                    continue  # unset or null_val: left out
                if mode == 1:
                    row_features[requested] = getattr(value, kind)
                elif mode == 2:
                    row_features[requested] = list(getattr(value, kind).val)
                else:
                    row_features[requested] = _convert(value, kind)
                feature_ages[requested] = age
        retrieved_at = datetime.fromtimestamp(now, timezone.utc)
        source = self.source
        out: List[FeatureVector] = []
        for i, entity_id in enumerate(entity_ids):
            if features[i]:
                out.append(
                    _found_vector(
                        entity_id, entity_type, source, features[i], ages[i], retrieved_at
                    )
                )
            elif seen[i]:
                out.append(
                    FeatureVector.empty(
                        entity_id,
                        entity_type,
                        source,
                        FeatureStatus.FOUND,
                        retrieved_at=retrieved_at,
                    )
                )
            else:
                logger.info(
                    "entity %s %r not found in Feast project %s",
                    entity_type,
                    entity_id,
                    self.project,
                )
                out.append(
                    FeatureVector.empty(entity_id, entity_type, source, retrieved_at=retrieved_at)
                )
        return out

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
        except _BAD_ID_ERRORS as exc:
            return self._invalid(plan, entity_id, entity_type, exc)
        proto = self._read(plan, [key], entity_type, feature_names)
        return self._vector(plan, proto, entity_id, entity_type)

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
            return self._vectors(plan, proto, entity_ids, entity_type)
        valid_ids = [eid for i, eid in enumerate(entity_ids) if i not in invalid]
        read: List[FeatureVector] = []
        if valid_ids:
            proto = self._read(plan, keys, entity_type, feature_names)
            read = self._vectors(plan, proto, valid_ids, entity_type)
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
                    entity_rows={plan.join_key: keys},
                    full_feature_names=True,
                )
            except (FeatureConfigError, FeatureStoreUnavailableError):
                raise
            except Exception as exc:
                raise self._feast_error(exc, plan, entity_type, feature_names) from exc
            read = self._vectors(plan, response.proto, valid_ids, entity_type)
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
            return {name: info.resolver.plain_names for name, info in sorted(view.entities.items())}
        info = view.entities.get(entity_type)
        if info is None:
            refreshed = self._auto_refresh()
            if refreshed:
                view = self._registry_view()
                info = view.entities.get(entity_type)
            if info is None:
                raise self._unknown_entity(view, entity_type, self._refresh_note(refreshed))
        return {entity_type: info.resolver.plain_names}

    def health_check(self) -> bool:
        """True when the registry loads and an online read succeeds; never raises.

        The read asks for one feature of one entity type with an id of the join key's
        type (``0`` for an integer key, a string otherwise)."""
        try:
            view = self._registry_view()
            for entity_type, info in view.entities.items():
                names = info.resolver.plain_names
                refs = [r for r in info.resolver.available if ":" in r]
                if names and refs:
                    self.feature_store.get_online_features(
                        features=refs[:1],
                        entity_rows={
                            info.join_key: [_PROBES.get(info.key_type, _HEALTH_ENTITY_ID)]
                        },
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
