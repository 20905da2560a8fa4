"""The body of ``POST /get-online-features`` for :class:`~.http.HttpFeatureStore`:
features or a feature service, and the entity columns of plain ids, compound keys
(several entities) and request data (on-demand views).

Feast's server (``feature_server.GetOnlineFeaturesRequest``) takes ``entities`` (column ->
values: join keys and request-data fields alike), ``features`` or ``feature_service``, and
``full_feature_names``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import FeatureConfigError
from .entity_keys import FEATURE_SERVICE_PREFIX, entity_parts, parse_key

__all__ = ["SERVICE_COLUMNS", "build_body", "is_service", "service_columns"]

SERVICE_COLUMNS = "__service__"
"""Marks a resolved list read through a feature service (its columns are the answer's)."""


def is_service(feature_names: Sequence[str]) -> Optional[str]:
    """The feature service's name when ``feature_names`` is ``["@<service>"]``."""
    if len(feature_names) == 1 and feature_names[0].startswith(FEATURE_SERVICE_PREFIX):
        return feature_names[0][len(FEATURE_SERVICE_PREFIX) :]
    return None


def _entities(
    entity_ids: List[str],
    entity_type: str,
    join_keys: Mapping[str, str],
    composite: bool,
) -> Dict[str, List[Any]]:
    parts = entity_parts(entity_type)
    if not composite and len(parts) == 1:
        return {join_keys.get(entity_type, f"{entity_type}_id"): entity_ids}
    columns: Dict[str, List[Any]] = {join_keys.get(p, f"{p}_id"): [] for p in parts}
    rows: List[Tuple[Dict[str, Any], Dict[str, Any]]] = []
    for key in entity_ids:
        try:
            ids, request = parse_key(key)
        except ValueError:
            if len(parts) == 1:  # a plain id: no request data with this read
                rows.append(({entity_type: key}, {}))
                continue
            raise FeatureConfigError(
                f"compound entity type {entity_type!r} is read with composite keys "
                "(asahi_features.stores.entity_keys.compose_key), got a plain id",
                list(parts),
                kind="entities",
            ) from None
        rows.append((ids, request))
        for name in request:
            columns.setdefault(name, [])
    fields = [c for c in columns if c not in {join_keys.get(p, f"{p}_id") for p in parts}]
    for ids, request in rows:
        for part in parts:
            columns[join_keys.get(part, f"{part}_id")].append(ids.get(part))
        for name in fields:
            columns[name].append(request.get(name))
    return columns


def build_body(
    entity_ids: List[str],
    entity_type: str,
    refs: Sequence[str],
    join_keys: Mapping[str, str],
    composite: bool,
) -> Dict[str, Any]:
    """The JSON body reading ``refs`` (``["@service"]`` for a feature service).

    Raises:
        FeatureConfigError: a plain id where a composite key is needed.
    """
    body: Dict[str, Any] = {
        "entities": _entities(entity_ids, entity_type, join_keys, composite),
        "full_feature_names": True,
    }
    service = is_service(refs)
    if service is not None:
        body["feature_service"] = service
    else:
        body["features"] = list(refs)
    return body


def service_columns(names: Sequence[str]) -> List[str]:
    """The feature columns (``view__feature``) of a feature service's answer, as
    ``view:feature``: every column but the entity and request-data ones."""
    return [name.replace("__", ":", 1) for name in names if "__" in name]
