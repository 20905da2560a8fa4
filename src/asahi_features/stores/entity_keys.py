"""Composite entity keys: how one request's ids of several entities, and the request
data an on-demand view needs, travel through the backend protocol as one ``entity_id``.

The protocol reads one ``entity_id`` per entity type. A view keyed on several entities
(``user`` and ``merchant``) is served under a *compound entity type* (the entity names
joined by ``+`` in sorted order: ``merchant+user``), and a read whose features need
request data carries that data with the id. Both become one canonical JSON string, so
that the guard's cache, coalescing and batching (which work by id) stay correct: equal
keys mean equal reads.

Example:
    >>> compose_key({"user": "u1", "merchant": "m-1"}, {})
    '{"ids":{"merchant":"m-1","user":"u1"}}'
    >>> parse_key('{"ids":{"user":"u1"},"request":{"amount":3}}')
    ({'user': 'u1'}, {'amount': 3})
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Tuple

__all__ = [
    "COMPOUND_SEPARATOR",
    "FEATURE_SERVICE_PREFIX",
    "canonical_entity_type",
    "compose_key",
    "entity_parts",
    "parse_key",
]

COMPOUND_SEPARATOR = "+"
"""Joins the entity names of a compound entity type (``merchant+user``)."""

FEATURE_SERVICE_PREFIX = "@"
"""A feature name ``@<service>`` asks for a Feast FeatureService (alone in its list)."""


def entity_parts(entity_type: str) -> Tuple[str, ...]:
    """The entity names of an entity type, sorted (one name for a plain type)."""
    if COMPOUND_SEPARATOR not in entity_type:
        return (entity_type,)
    return tuple(sorted(p.strip() for p in entity_type.split(COMPOUND_SEPARATOR)))


def canonical_entity_type(entity_type: str) -> str:
    """``user+merchant`` and ``merchant + user`` are both ``merchant+user``."""
    if COMPOUND_SEPARATOR not in entity_type:
        return entity_type
    return COMPOUND_SEPARATOR.join(entity_parts(entity_type))


def compose_key(ids: Mapping[str, str], request: Mapping[str, Any]) -> str:
    """The canonical key of entity ``ids`` (entity name -> id) and ``request`` data.

    Raises:
        TypeError: a request value is not JSON-serialisable.
    """
    body: Dict[str, Any] = {"ids": dict(ids)}
    if request:
        body["request"] = dict(request)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_key(key: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(ids, request data)`` of a :func:`compose_key` key.

    Raises:
        ValueError: ``key`` is not such a key.
    """
    if type(key) is not str or not key.startswith("{"):
        raise ValueError("not a composite entity key")
    body = json.loads(key)
    ids = body.get("ids") if isinstance(body, dict) else None
    request = body.get("request", {}) if isinstance(body, dict) else None
    if not isinstance(ids, dict) or not isinstance(request, dict):
        raise ValueError("not a composite entity key")
    return ids, request
