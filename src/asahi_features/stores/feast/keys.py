"""Entity ids as values of a Feast join key's type, and the ids health checks probe with."""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, Dict

__all__ = [
    "BAD_ID_ERRORS",
    "CONVERTERS",
    "HEALTH_ENTITY_ID",
    "PROBES",
    "KeyProblem",
    "converter",
]

HEALTH_ENTITY_ID = "__asahi_health_check__"
BAD_ID_ERRORS = (ValueError, TypeError, OverflowError)
"""What a converter raises for an id that is no value of the key's type."""


class KeyProblem(ValueError):
    """A composite key that lacks something; its message is safe to show (no values)."""


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


CONVERTERS: Dict[str, Callable[[Any], Any]] = {
    "INT64": _int_converter(64),
    "INT32": _int_converter(32),
    "STRING": _to_str,
    "BYTES": _to_bytes,
    "DOUBLE": _to_float,
    "FLOAT": _to_float,
}
"""Join key value type -> how an entity id becomes a value of that type (an exception
in ``_BAD_ID_ERRORS``: the id is invalid). Other types pass the id through unchanged."""


PROBES: Dict[str, Any] = {
    "INT64": 0,
    "INT32": 0,
    "DOUBLE": 0.0,
    "FLOAT": 0.0,
    "BYTES": HEALTH_ENTITY_ID.encode(),
}
"""Join key value type -> the id health_check reads (a string for the rest)."""


def _pass(value: Any) -> Any:
    return value


def converter(key_type: str) -> Callable[[Any], Any]:
    """How an id becomes a value of join key type ``key_type`` (unchanged for other types)."""
    return CONVERTERS.get(key_type, _pass)
