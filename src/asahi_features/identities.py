"""The id a request gives each entity type of its task (the enricher's identity step).

A plain entity type's id comes from ``user_id`` / ``organization_id`` for ``user`` and
``organization``, otherwise from ``entity_ids[<type>]``, then from
``context["<type>_id"]``. A compound entity type (``merchant+user``, a Feast view keyed
on several entities) needs the id of each of its entities; a read whose features need
request data (Feast on-demand views) carries the declared fields of ``context``. Both
become one composite key (:func:`~asahi_features.stores.entity_keys.compose_key`).
Nothing here does I/O: :meth:`FeatureEnricher.enrich` and ``aenrich`` share it.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

from .stores.entity_keys import COMPOUND_SEPARATOR, compose_key, entity_parts

__all__ = ["PINNED_ENTITY_TYPES", "check_entity_ids", "identity_of"]

PINNED_ENTITY_TYPES = {"user": "user_id", "organization": "organization_id"}
"""Entity types whose id has its own parameter (never taken from ``entity_ids``)."""


def check_entity_ids(entity_ids: Optional[Mapping[str, Any]]) -> None:
    """Refuse ``entity_ids`` that is no mapping or names ``user`` / ``organization``.

    Raises:
        TypeError: not a mapping of entity type to id.
        ValueError: names an entity type that has its own parameter.
    """
    if entity_ids is None:
        return
    if not isinstance(entity_ids, Mapping):
        raise TypeError(
            f"entity_ids must be a mapping of entity type to id, got {type(entity_ids).__name__}"
        )
    for entity_type in entity_ids:
        param = PINNED_ENTITY_TYPES.get(entity_type)
        if param is not None:
            raise ValueError(f"entity_ids may not name {entity_type!r}: pass {param} instead")


def _text(raw: Any) -> Optional[str]:
    if raw is None or raw == "":
        return None
    identity = raw if type(raw) is str else str(raw)
    if not identity.isascii():
        # a lone surrogate (json.loads of a cut emoji) cannot reach a store:
        # UnicodeEncodeError, this request only
        identity.encode("utf-8")
    return identity


def _plain_id(
    entity_type: str,
    request: Any,
    context: Mapping[str, Any],
    entity_ids: Optional[Mapping[str, Any]],
) -> Optional[str]:
    param = PINNED_ENTITY_TYPES.get(entity_type)
    if param is not None:
        return _text(getattr(request, param))
    if entity_ids:
        found = _text(entity_ids.get(entity_type))
        if found is not None:
            return found
    return _text(context.get(f"{entity_type}_id"))


def identity_of(
    entity_type: str,
    request: Any,
    context: Mapping[str, Any],
    fields: Sequence[str] = (),
) -> Optional[str]:
    """The id ``request`` gives ``entity_type`` (``None``: none given).

    ``request`` has ``user_id``, ``organization_id`` and ``entity_ids`` attributes;
    ``fields`` are the request-data fields the read needs (taken from ``context``; a
    field the context lacks is left out and the store says what is missing).

    Raises:
        UnicodeEncodeError: an id that cannot be encoded (this request only).
    """
    entity_ids = getattr(request, "entity_ids", None)
    if COMPOUND_SEPARATOR not in entity_type and not fields:
        return _plain_id(entity_type, request, context, entity_ids)
    ids: Dict[str, str] = {}
    for part in entity_parts(entity_type):
        found = _plain_id(part, request, context, entity_ids)
        if found is None:
            return None
        ids[part] = found
    data = {name: context[name] for name in fields if name in context}
    return compose_key(ids, data)
