"""What the client knows about a Feast project: entity types (plain and compound), their
join keys and views, view TTLs, on-demand views' request fields, feature services, and
resolved read plans."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple

from ...errors import FeatureStoreUnavailableError
from ..entity_keys import COMPOUND_SEPARATOR, parse_key
from ..naming import FeatureNameResolver
from .keys import KeyProblem, converter

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = [
    "EntityInfo",
    "Plan",
    "RegistryView",
    "ServiceInfo",
    "build_view",
    "composite_converter",
    "make_plan",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EntityInfo:
    """One entity type: a Feast entity, or a compound of several (``merchant+user``)."""

    parts: Tuple[str, ...]
    """The Feast entities, sorted (one for a plain entity type)."""
    join_keys: Tuple[str, ...]
    key_types: Tuple[str, ...]
    """Each join key's Feast value type name (``INT64``, ``STRING``, ``UNKNOWN``...)."""
    resolver: FeatureNameResolver
    ttls: Dict[str, float] = field(default_factory=dict)
    """View -> its ``ttl`` in seconds (views with a ttl only; an on-demand view has
    the ttl of its source view)."""
    request_fields: Dict[str, Tuple[Tuple[str, str], ...]] = field(default_factory=dict)
    """On-demand view -> the (field, value type) pairs of its request sources."""
    age_views: Dict[str, str] = field(default_factory=dict)
    """On-demand view -> the feature view whose event time is its age."""
    carriers: Dict[str, str] = field(default_factory=dict)
    """Feature view -> one of its refs (asked for its timestamp when an on-demand view
    built on it is read without it)."""

    @property
    def join_key(self) -> str:
        """The join key (``merchant_id+user_id`` for a compound type, in messages)."""
        return COMPOUND_SEPARATOR.join(self.join_keys)

    @property
    def key_type(self) -> str:
        return COMPOUND_SEPARATOR.join(self.key_types)

    @property
    def convert(self) -> Callable[[Any], Any]:
        return converter(self.key_types[0])


@dataclass(frozen=True)
class ServiceInfo:
    """A Feast FeatureService: the entity type it serves and its features."""

    name: str
    entity_type: str
    refs: Tuple[str, ...]
    """``view:feature`` of every feature of the service, in its order."""
    service: Any
    """The ``feast.FeatureService`` object (passed to ``get_online_features``)."""


@dataclass(frozen=True)
class RegistryView:
    """What the client knows about the project: entity types, views and services."""

    entities: Dict[str, EntityInfo]
    services: Dict[str, ServiceInfo] = field(default_factory=dict)
    refs: Dict[str, str] = field(default_factory=dict)
    """``view:feature`` -> its entity type, for every feature the client serves."""


@dataclass(frozen=True)
class Plan:
    """A resolved request: refs to ask Feast for and how to read the answer."""

    join_key: str
    key_type: str
    convert: Callable[[Any], Any]
    """An entity id as a value of the join key's type, or for a composite plan the row
    of entity-row values (raises for an invalid id)."""
    refs: Any
    """``view:feature`` refs, or a ``feast.FeatureService``."""
    columns: Dict[str, Tuple[Optional[str], str]]
    """Response column (``view__feature``) -> (the name the caller asked for, or None for
    a column read only for its timestamp; the view whose event time is its age)."""
    row_columns: Tuple[str, ...] = ()
    """For a composite plan (several join keys or request data): the entity-row column
    of each value of a converted row; empty for one plain join key."""
    limits: Dict[str, float] = field(default_factory=dict)
    """Requested name -> its view's ttl in seconds (the store's freshness limit)."""
    names: Tuple[str, ...] = ()
    """The ``view:feature`` refs read (a feature service's refs for a service plan)."""


def _value_type(dtype: Any) -> str:
    try:
        return str(dtype.to_value_type().name)
    except Exception:  # a type Feast cannot map: leave the value as it is
        return "UNKNOWN"


def _ttl_seconds(fv: Any) -> Optional[float]:
    ttl = getattr(fv, "ttl", None)
    seconds = ttl.total_seconds() if ttl is not None else 0.0
    return seconds if seconds > 0 else None


def build_view(
    store: FeatureStore, join_key_overrides: Mapping[str, str], repo_path: str
) -> RegistryView:
    """Read the registry's entities, views, on-demand views and feature services (from
    Feast's registry cache).

    A view keyed on several entities is served under the compound entity type of their
    sorted names; an on-demand view belongs to the entity type of its source views.

    Raises:
        FeatureStoreUnavailableError: the registry cannot be read.
    """
    try:
        entities = store.list_entities(allow_cache=True)
        views = store.list_feature_views(allow_cache=True)
        odfvs = store.list_on_demand_feature_views(allow_cache=True)
        services = store.list_feature_services()
    except Exception as exc:
        raise FeatureStoreUnavailableError(
            f"cannot read the Feast registry of {repo_path}: {type(exc).__name__}: {exc}"
        ) from None
    known = {e.name: e for e in entities}
    per_type: Dict[str, Dict[str, List[str]]] = {}
    ttls: Dict[str, Dict[str, float]] = {}
    carriers: Dict[str, Dict[str, str]] = {}
    view_type: Dict[str, str] = {}
    # (entity, column) -> value type of the views' entity columns: an entity declared
    # without a value_type (``feast init``'s driver) is typed by its views
    column_types: Dict[Tuple[str, str], str] = {}
    for fv in views:
        parts = tuple(sorted(fv.entities))
        if not parts or any(p not in known for p in parts):
            continue
        entity_type = COMPOUND_SEPARATOR.join(parts)
        view_type[fv.name] = entity_type
        per_type.setdefault(entity_type, {})[fv.name] = [f.name for f in fv.features]
        if fv.features:
            carriers.setdefault(entity_type, {})[fv.name] = f"{fv.name}:{fv.features[0].name}"
        ttl = _ttl_seconds(fv)
        if ttl is not None:
            ttls.setdefault(entity_type, {})[fv.name] = ttl
        for column in getattr(fv, "entity_columns", None) or ():
            type_name = _value_type(column.dtype)
            if type_name == "UNKNOWN":
                continue
            for part in parts:
                column_types.setdefault((part, column.name), type_name)
    request_fields: Dict[str, Dict[str, Tuple[Tuple[str, str], ...]]] = {}
    age_views: Dict[str, Dict[str, str]] = {}
    for odfv in odfvs:
        sources = [p.name for p in odfv.source_feature_view_projections.values()]
        types = {view_type.get(s) for s in sources}
        if len(types) != 1 or None in types:
            continue  # no source view, or sources of several entity types: not served
        entity_type = str(types.pop())
        per_type[entity_type][odfv.name] = [f.name for f in odfv.features]
        age_views.setdefault(entity_type, {})[odfv.name] = sources[0]
        source_ttl = ttls.get(entity_type, {}).get(sources[0])
        if source_ttl is not None:
            ttls[entity_type][odfv.name] = source_ttl
        fields = tuple(
            (f.name, _value_type(f.dtype))
            for request in odfv.source_request_sources.values()
            for f in request.schema
        )
        if fields:
            request_fields.setdefault(entity_type, {})[odfv.name] = fields
    infos: Dict[str, EntityInfo] = {}
    for entity_type in sorted(set(per_type) | set(known)):
        parts = tuple(entity_type.split(COMPOUND_SEPARATOR))
        join_keys: List[str] = []
        key_types: List[str] = []
        for part in parts:
            entity = known[part]
            join_key = join_key_overrides.get(part, entity.join_key)
            key_type = getattr(getattr(entity, "value_type", None), "name", None) or "UNKNOWN"
            if key_type == "UNKNOWN":
                key_type = column_types.get((part, join_key), "UNKNOWN")
            join_keys.append(join_key)
            key_types.append(key_type)
        infos[entity_type] = EntityInfo(
            parts=parts,
            join_keys=tuple(join_keys),
            key_types=tuple(key_types),
            resolver=FeatureNameResolver(entity_type, per_type.get(entity_type, {}), ":"),
            ttls=ttls.get(entity_type, {}),
            request_fields=request_fields.get(entity_type, {}),
            age_views=age_views.get(entity_type, {}),
            carriers=carriers.get(entity_type, {}),
        )
    refs = {
        f"{view}:{name}": entity_type
        for entity_type, by_view in per_type.items()
        for view, names in by_view.items()
        for name in names
    }
    return RegistryView(infos, _services(services, refs), refs)


def _services(services: List[Any], refs: Mapping[str, str]) -> Dict[str, ServiceInfo]:
    """The feature services whose every feature the client serves for ONE entity type."""
    out: Dict[str, ServiceInfo] = {}
    for service in services:
        service_refs = tuple(
            f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features
        )
        types = {refs.get(r) for r in service_refs}
        if not service_refs or len(types) != 1 or None in types:
            logger.debug("feature service %s is not served (entity types %s)", service.name, types)
            continue
        out[service.name] = ServiceInfo(service.name, str(types.pop()), service_refs, service)
    return out


def make_plan(info: EntityInfo, resolved: List[Tuple[str, str]], service: Any = None) -> Plan:
    """The plan reading ``resolved`` ``(requested name, view:feature)`` pairs of ``info``
    (or the feature ``service`` whose refs they are).

    An on-demand view's features are as old as its source view: the source view's
    timestamp is read too (one of its features, left out of the answer) unless the
    request already reads it. Request fields make the plan composite (the ids are keys
    of :func:`~asahi_features.stores.entity_keys.compose_key`)."""
    refs: List[str] = []
    columns: Dict[str, Tuple[Optional[str], str]] = {}
    limits: Dict[str, float] = {}
    fields: Dict[str, str] = {}
    sources: List[str] = []
    for requested, ref in resolved:
        view_name, _, feature = ref.partition(":")
        column = f"{view_name}__{feature}"
        if column in columns:
            continue  # the same feature asked twice (e.g. plain and full name)
        refs.append(ref)
        age_view = info.age_views.get(view_name, view_name)
        columns[column] = (requested, age_view)
        if age_view != view_name:
            sources.append(age_view)
        ttl = info.ttls.get(view_name)
        if ttl is not None:
            limits[requested] = ttl
        for name, value_type in info.request_fields.get(view_name, ()):
            fields.setdefault(name, value_type)
    if service is None:
        read_views = {ref.partition(":")[0] for ref in refs}
        for source in dict.fromkeys(sources):
            carrier = info.carriers.get(source)
            if source not in read_views and carrier is not None:
                view_name, _, feature = carrier.partition(":")
                # Feast answers feature views before on-demand ones: the timestamp is
                # read before the on-demand columns that need it
                refs.insert(0, carrier)
                columns[f"{view_name}__{feature}"] = (None, source)
                read_views.add(source)
    names = tuple(ref for _, ref in resolved)
    if len(info.join_keys) == 1 and not fields:
        return Plan(
            info.join_key,
            info.key_type,
            info.convert,
            service or refs,
            columns,
            (),
            limits,
            names,
        )
    convert = composite_converter(info.parts, info.key_types, tuple(fields.items()))
    row_columns = info.join_keys + tuple(fields)
    return Plan(
        info.join_key,
        info.key_type,
        convert,
        service or refs,
        columns,
        row_columns,
        limits,
        names,
    )


def composite_converter(
    parts: Tuple[str, ...], key_types: Tuple[str, ...], fields: Tuple[Tuple[str, str], ...]
) -> Callable[[Any], Tuple[Any, ...]]:
    """A :func:`~asahi_features.stores.entity_keys.compose_key` key as the row of entity
    values: each entity's id as its join key's type, then each request field.

    Raises (from the converter):
        KeyProblem: not a composite key, an entity id or a request field missing.
        ValueError, TypeError, OverflowError: a value of the wrong type.
    """
    id_converters = tuple((part, converter(t)) for part, t in zip(parts, key_types, strict=True))
    field_converters = tuple((name, converter(t)) for name, t in fields)

    single = id_converters[0] if len(id_converters) == 1 else None
    loads = json.loads
    no_request: Dict[str, Any] = {}

    def problem(key: Any) -> KeyProblem:
        try:
            ids, request = parse_key(key)
        except ValueError:
            what = " and ".join(parts)
            needs = f" with request data {[n for n, _ in fields]}" if fields else ""
            return KeyProblem(
                f"these features need the ids of {what}{needs} as one key "
                "(asahi_features.stores.entity_keys.compose_key)"
            )
        for part in parts:
            if part not in ids:
                return KeyProblem(f"no {part} id in the key")
        missing = next(name for name, _ in fields if name not in request)
        return KeyProblem(f"request data {missing!r} missing from the request context")

    def convert(key: Any) -> Tuple[Any, ...]:
        # the hot path of composite reads: one C-level parse, no checks that cannot fail
        try:
            body = loads(key)
            ids = body["ids"]
            request = body.get("request", no_request)
            if single is not None:
                row = [single[1](ids[single[0]])]
            else:
                row = [convert_id(ids[part]) for part, convert_id in id_converters]
            for name, convert_field in field_converters:
                row.append(convert_field(request[name]))
        except (KeyError, AttributeError, TypeError, ValueError) as exc:
            converting = isinstance(exc, (TypeError, ValueError)) and not isinstance(
                exc, json.JSONDecodeError
            )
            if converting and type(key) is str and key.startswith("{"):
                raise  # a value of the wrong type (the converters' errors)
            raise problem(key) from None
        return tuple(row)

    return convert
