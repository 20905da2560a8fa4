"""Rendering feature values for people: numbers, dates, lists, maps, JSON and text, and the
cache keys of rendered values.

Everything rendered passes through :func:`~asahi_features.sanitizing.sanitize` (in
:mod:`asahi_features.sanitizing`, re-exported here), which keeps it inert inside the
context block.

:func:`format_value` turns Python values into short readable text: lists joined with
``", "``, numbers rounded, booleans ``yes``/``no``, nested mappings flattened as
``key: value; key: value``; ``None`` and NaN render as nothing (the line is left out).
A huge value is cut before it is cleaned (see :func:`read_limit`).
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Dict, Hashable, List, Optional, Tuple

from .sanitizing import ELLIPSIS, cut_at_word, prepare, sanitize

__all__ = [
    "ELLIPSIS",
    "MAX_DEPTH",
    "RenderedValue",
    "cut_at_word",
    "format_number",
    "format_scalar",
    "format_value",
    "humanize",
    "prepare",
    "read_limit",
    "render_value",
    "sanitize",
    "value_key",
]


def humanize(name: str) -> str:
    """A label for a name without a configured label: ``budget_level`` -> ``Budget level``."""
    plain = name.rsplit(":", 1)[-1]
    words = plain.replace("_", " ").replace("-", " ").split()
    if not words:
        return sanitize(name) or "Value"
    text = " ".join(words)
    return sanitize(text[0].upper() + text[1:])


def format_number(value: float) -> Optional[str]:
    """Round a number for people: ``3`` -> ``3``, ``2.5`` -> ``2.5``, ``0.123456`` -> ``0.123``,
    ``1234.56`` -> ``1235``; NaN -> ``None``; infinities -> ``unlimited`` / ``-unlimited``."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "unlimited" if value > 0 else "-unlimited"
    magnitude = abs(value)
    if magnitude >= 1000 or value == int(value):
        return str(round(value))
    if magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
        if "e" in text:
            return "0"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _format_decimal(value: Decimal) -> Optional[str]:
    if value.is_nan():  # quiet and signalling NaN alike: nothing to show
        return None
    number = float(value)
    if math.isinf(number) and value.is_finite():  # beyond float range, but finite
        return f"{value:.3e}"
    return format_number(number)


MAX_DEPTH = 4
"""Nesting deeper than this renders as ``…`` (never recursing into the rest)."""


def read_limit(max_value_chars: int) -> int:
    """How many characters of one text are read at most: a longer text (or list item) is
    cut to this length *before* it is cleaned, so that a multi-megabyte value costs no
    more than a short one. Generous: cleaning rarely shortens text by more than half."""
    return 4 * max_value_chars + 256


def _scalar_text(value: Any, limit: int = -1) -> Optional[str]:
    """:func:`format_scalar` without the safety net: raises when ``value`` cannot be
    converted (``Decimal('sNaN')`` aside, which is NaN; an int too long to print, a
    hostile ``__str__``). ``limit`` > 0 bounds the bytes decoded from a bytes value."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)  # ValueError past sys.get_int_max_str_digits()
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, Decimal):
        return _format_decimal(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="minutes")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return _scalar_text(value.value, limit)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _decode(value, limit)
    if _is_sequence(value) or isinstance(value, Mapping):
        return ELLIPSIS
    return str(value)


def _decode(value: Any, limit: int) -> str:
    raw = memoryview(value).cast("B")
    size = len(raw)
    if limit > 0 and size > 4 * limit:
        # only the head is decoded; a character cut at the end is left out
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            return decoder.decode(bytes(raw[: 4 * limit]), final=False)
        except UnicodeDecodeError:
            return f"({size} bytes of binary data)"
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return f"({size} bytes of binary data)"


def format_scalar(value: Any) -> Optional[str]:
    """Render one non-container value as text (not yet sanitised); ``None`` = nothing.

    A container reaching this function (nested past :data:`MAX_DEPTH`) renders as ``…``;
    a value that cannot be converted (an object whose ``str()`` fails, an int too long
    to print) renders as nothing.
    """
    try:
        return _scalar_text(value)
    except Exception:  # a hostile value must not fail the request
        return None


def _key_text(key: Any) -> str:
    text = format_scalar(key) if not isinstance(key, str) else key
    return (text or "").replace("_", " ")


def _flatten_mapping(
    value: Mapping[Any, Any], prefix: str, out: List[str], depth: int, room: List[int]
) -> None:
    """Append ``key: value`` texts to ``out``; stops once ``room[0]`` characters are used."""
    for key, item in value.items():
        if room[0] <= 0:
            return
        name = f"{prefix}{_key_text(key)}"
        if isinstance(item, Mapping):
            if depth < MAX_DEPTH:
                _flatten_mapping(item, f"{name} ", out, depth + 1, room)
            elif item:
                out.append(f"{name}: {ELLIPSIS}")
            continue
        if _is_sequence(item):
            text: Optional[str] = ", ".join(_items_of(item, depth + 1, room[0]))
        else:
            text = format_scalar(item)
        if text:
            name = name.strip()
            part = f"{name}: {text}" if name else text
            part = part[: room[0]]
            room[0] -= len(part) + 2
            out.append(part)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple, set, frozenset))


def _items_of(value: Any, depth: int = 0, wanted: int = 1 << 62) -> List[str]:
    """Flat list of item texts of a (possibly nested) sequence, ``None``/NaN and items
    that cannot be converted skipped; at most ``wanted`` of them (all of a set, which is
    sorted for a stable order), reading at most ``16 * wanted + 1024`` items."""
    if depth > MAX_DEPTH:
        return [ELLIPSIS] if value else []
    ordered = not isinstance(value, (set, frozenset))
    budget = 16 * wanted + 1024
    items: List[str] = []
    for item in value:
        if ordered:
            if len(items) >= wanted or budget == 0:
                break
            budget -= 1
        if type(item) is str:  # the common case first
            if item:
                items.append(item)
            continue
        if _is_sequence(item):
            nested = _items_of(item, depth + 1, wanted - len(items) if ordered else wanted)
            items.extend(nested)
        elif isinstance(item, Mapping):
            parts: List[str] = []
            if depth < MAX_DEPTH:
                _flatten_mapping(item, "", parts, depth + 1, [16 * wanted + 1024])
            elif item:
                parts.append(ELLIPSIS)
            if parts:
                items.append("; ".join(parts))
        else:
            text = format_scalar(item)
            if text:
                items.append(text)
    if not ordered:
        items.sort()  # a stable order for unordered collections
    return items[:wanted] if len(items) > wanted else items


class RenderedValue:
    """A value ready for a context line, as units that the budget may shorten.

    The full text is ``separator.join(units)`` (plus ``shortened_suffix`` when
    ``truncated``). Lists shorten to their first (most recent) units with no marker;
    text shortens to its first words followed by ``…``.
    """

    __slots__ = ("separator", "shortened_suffix", "text", "truncated", "units")

    def __init__(
        self,
        units: Tuple[str, ...],
        separator: str,
        shortened_suffix: str,
        truncated: bool = False,
    ) -> None:
        self.units = units
        self.separator = separator
        self.shortened_suffix = shortened_suffix
        self.truncated = truncated
        body = separator.join(units)
        self.text = body + shortened_suffix if truncated else body
        """The whole value."""


# -- cache keys -------------------------------------------------------------------------

_KEY_TEXT = 1024
"""At most this many characters of text are held by one cache key."""
_KEY_ITEMS = 64
"""At most this many items (all levels together) are held by one cache key."""
_KEY_INT = 1 << 64
_STR_KEY_CHARS = 256


def value_key(value: Any) -> Optional[Hashable]:
    """A hashable key equal for two values only when they are of identical types all the
    way down and render identically, or ``None`` (the value is not cached).

    Equality is not enough: ``1 == 1.0 == True`` (``1``, ``1``, ``yes``), ``0.0 == -0.0``,
    two aware datetimes of the same instant in different zones, ``[(1,)] == [(True,)]``.
    So every item carries its exact type, floats their ``repr``-exact value, datetimes
    their ISO text with the offset. Keys stay small (at most 1,024 characters of text and
    64 items): a value that would need more is not cached, so a cache never keeps a big
    value alive. Keyed: ``str`` (256 characters at most; the key is the string itself),
    ``bool``, ``int`` (within 64 bits), ``float``, ``Decimal``, ``datetime``, ``date``,
    and ``list`` / ``tuple`` / ``dict`` of those, nested up to :data:`MAX_DEPTH`.
    """
    kind = type(value)
    if kind is str:
        return value if len(value) <= _STR_KEY_CHARS else None
    if kind is list or kind is tuple:
        if len(value) > _KEY_ITEMS:
            return None
        total = 0
        for item in value:  # the common case: a short list of short strings
            if type(item) is not str:
                break
            total += len(item)
        else:
            return (kind, tuple(value)) if total <= _KEY_TEXT else None
    room = [_KEY_TEXT, _KEY_ITEMS]
    try:
        return _key(value, room, 0)
    except Exception:  # a hostile value (tzinfo, ...) is simply not cached
        return None


def _key(value: Any, room: List[int], depth: int) -> Optional[Hashable]:
    kind = type(value)
    if kind is str:
        room[0] -= len(value)
        return value if room[0] >= 0 else None
    if kind is bool:
        return (bool, value)
    if kind is int:
        return (int, value) if -_KEY_INT < value < _KEY_INT else None
    if kind is float:
        # equal floats render alike except 0.0 / -0.0; NaN is not equal to itself
        return (float, value) if value == value and value != 0.0 else (float, repr(value))
    if kind is Decimal or kind is datetime or kind is date:
        text = str(value) if kind is Decimal else value.isoformat()
        room[0] -= len(text)
        return (kind, text) if room[0] >= 0 else None
    if depth >= MAX_DEPTH:
        return None
    if kind is list or kind is tuple:
        room[1] -= len(value)
        if room[1] < 0:
            return None
        keys = []
        for item in value:
            key = _key(item, room, depth + 1)
            if key is None:
                return None
            keys.append(key)
        return (kind, tuple(keys))
    if kind is dict:
        room[1] -= 2 * len(value)
        if room[1] < 0:
            return None
        pairs = []
        for k, item in value.items():
            key = _key(k, room, depth + 1)
            if key is None:
                return None
            item_key = _key(item, room, depth + 1)
            if item_key is None:
                return None
            pairs.append((key, item_key))
        return (dict, tuple(pairs))
    return None


# -- rendering ------------------------------------------------------------------------

_CACHE: Dict[Tuple[Hashable, int, int], RenderedValue] = {}
"""Renderings shared by every enricher, by (:func:`value_key`, list items, chars)."""
_CACHE_SIZE = 4096
_UNKEYED = object()


def format_value(
    value: Any, *, max_list_items: int, max_value_chars: int
) -> Optional[RenderedValue]:
    """Render ``value`` for a context line, sanitised and capped.

    Lists keep their first ``max_list_items`` items (the most recent) and as many of those
    as fit in ``max_value_chars``; other values are cut at a word boundary at
    ``max_value_chars`` with ``…``. Returns ``None`` when there is nothing to show
    (``None``, NaN, an empty list or string) or when the value cannot be rendered (an
    object whose ``str()`` fails, an int too long to print).

    Example:
        >>> format_value(["shoes", "jacket", "belt"], max_list_items=10, max_value_chars=500).text
        'shoes, jacket, belt'
    """
    try:
        return render_value(value, max_list_items=max_list_items, max_value_chars=max_value_chars)
    except Exception:
        return None


def render_value(
    value: Any, *, max_list_items: int, max_value_chars: int, key: Any = _UNKEYED
) -> Optional[RenderedValue]:
    """:func:`format_value` that raises when the value itself cannot be converted (the
    caller drops the line); items of a list or mapping that cannot be converted are
    skipped. ``key``: the value's :func:`value_key`, when the caller already has it.

    A cache hit only ever returns the rendering of a value of identical types and
    identical rendering (see :func:`value_key`).
    """
    if key is _UNKEYED:
        key = value_key(value)
    if key is None:
        return _render(value, max_list_items, max_value_chars)
    cache_key = (key, max_list_items, max_value_chars)
    cached = _CACHE.get(cache_key)
    if cached is not None:
        return cached
    rendered = _render(value, max_list_items, max_value_chars)
    if rendered is not None:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[cache_key] = rendered
    return rendered


def _render(value: Any, max_list_items: int, max_value_chars: int) -> Optional[RenderedValue]:
    if isinstance(value, str):
        return _render_text(value, max_value_chars)
    if _is_sequence(value):
        return _render_list(value, max_list_items, max_value_chars)
    limit = read_limit(max_value_chars)
    if isinstance(value, Mapping):
        parts: List[str] = []
        _flatten_mapping(value, "", parts, 0, [limit])
        return _render_text("; ".join(parts), max_value_chars)
    text = _scalar_text(value, limit)
    return None if text is None else _render_text(text, max_value_chars)


def _clean_head(text: str, limit: int) -> str:
    """``sanitize`` of the first ``limit`` characters of a longer ``text``, without its
    last word (which may have been cut)."""
    clean = sanitize(text[:limit])
    space = clean.rfind(" ")
    if space > 0:
        clean = clean[:space].rstrip(" ,;:") or clean[:space]
    return clean


def _render_text(text: str, max_value_chars: int) -> Optional[RenderedValue]:
    limit = 4 * max_value_chars + 256  # read_limit(max_value_chars), inlined
    cut = len(text) > limit
    clean = _clean_head(text, limit) if cut else sanitize(text)
    if not clean:
        return None
    if len(clean) > max_value_chars:
        clean = cut_at_word(clean, max_value_chars)[: -len(ELLIPSIS)]
        cut = True
    return RenderedValue(tuple(clean.split(" ")), " ", ELLIPSIS, cut)


def _render_list(value: Any, max_list_items: int, max_value_chars: int) -> Optional[RenderedValue]:
    units: List[str] = []
    used = 0
    limit = 4 * max_value_chars + 256  # read_limit(max_value_chars), inlined
    for raw in _items_of(value, 0, max_list_items):
        if len(raw) <= limit:
            item = sanitize(raw)
        else:
            item = _clean_head(raw, limit)
            if item:
                item += ELLIPSIS
        if not item:
            continue
        cost = len(item) + (2 if units else 0)
        if used + cost > max_value_chars:
            if not units:
                units.append(cut_at_word(item, max_value_chars))
            break
        units.append(item)
        used += cost
    if not units:
        return None
    return RenderedValue(tuple(units), ", ", "")
