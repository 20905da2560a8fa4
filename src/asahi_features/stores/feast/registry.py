"""What the client knows about a Feast project: entity types, their join keys and
views, and resolved read plans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Tuple

from ...errors import FeatureStoreUnavailableError
from ..naming import FeatureNameResolver
from .keys import converter

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = ["EntityInfo", "Plan", "RegistryView", "build_view"]


@dataclass(frozen=True)
class EntityInfo:
    join_key: str
    key_type: str
    """The join key's Feast value type name (``INT64``, ``STRING``, ``UNKNOWN``...)."""
    resolver: FeatureNameResolver

    @property
    def convert(self) -> Callable[[Any], Any]:
        return converter(self.key_type)


@dataclass(frozen=True)
class RegistryView:
    """What the client knows about the project: entity types and their views."""

    entities: Dict[str, EntityInfo]


@dataclass(frozen=True)
class Plan:
    """A resolved request: refs to ask Feast for and how to read the answer."""

    join_key: str
    key_type: str
    convert: Callable[[Any], Any]
    """An entity id as a value of the join key's type (raises for an invalid id)."""
    refs: List[str]
    columns: Dict[str, Tuple[str, str]]
    """Response column (``view__feature``) -> (the name the caller asked for, view)."""


def build_view(
    store: FeatureStore, join_key_overrides: Mapping[str, str], repo_path: str
) -> RegistryView:
    """Read the registry's entities and views (one call each, from Feast's cache).

    Raises:
        FeatureStoreUnavailableError: the registry cannot be read.
    """
    try:
        entities = store.list_entities(allow_cache=True)
        views = store.list_feature_views(allow_cache=True)
    except Exception as exc:
        raise FeatureStoreUnavailableError(
            f"cannot read the Feast registry of {repo_path}: {type(exc).__name__}: {exc}"
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
    infos: Dict[str, EntityInfo] = {}
    for entity in entities:
        join_key = join_key_overrides.get(entity.name, entity.join_key)
        key_type = getattr(getattr(entity, "value_type", None), "name", None) or "UNKNOWN"
        if key_type == "UNKNOWN":
            key_type = column_types.get((entity.name, join_key), "UNKNOWN")
        infos[entity.name] = EntityInfo(
            join_key=join_key,
            key_type=key_type,
            resolver=FeatureNameResolver(entity.name, per_entity[entity.name], ":"),
        )
    return RegistryView(infos)
