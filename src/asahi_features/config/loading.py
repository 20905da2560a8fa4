"""Loading the YAML configuration: a bounded YAML loader and error messages naming the key.

Reads the file (YAML, environment, relative paths resolved against its directory),
validates it against the settings models and turns every problem into one short
:class:`~asahi_features.errors.ConfigError` that names the key path.

A configuration is small: a few hundred values. Whatever a file or a caller hands in,
loading it stays proportionate and every error message stays short:

* YAML anchors and aliases are allowed (a shared feature list is a fair use), but the
  document as the application sees it, every alias expanded in full, may hold at most
  :data:`MAX_CONFIG_NODES` values, nest at most :data:`MAX_CONFIG_DEPTH` levels and may
  not contain itself. An "alias bomb" (a few lines that expand to millions of values, or
  a merge key ``<<:`` doing the same) is refused before it is built.
* Values YAML cannot represent in Python (a 5,000-digit integer, the 45th of a month) are
  errors with the line and column, not raw ``ValueError`` s.
* Messages quote at most a short excerpt of a value (:func:`~asahi_features.errors.excerpt`),
  list at most :data:`MAX_LISTED_ERRORS` problems and are never longer than
  :data:`~asahi_features.errors.MAX_MESSAGE_CHARS`; each names the key path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union, get_args

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import MAX_EXCERPT_CHARS, ConfigError, cap_message, excerpt
from ..settings import AsahiConfig, nested_model

__all__ = [
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "MAX_LISTED_ERRORS",
    "load_config",
    "parse_config",
]

MAX_CONFIG_NODES = 100_000
"""Most values (mapping keys, values and list items, every alias counted in full) a
configuration may expand to. A real one has a few hundred."""
MAX_CONFIG_DEPTH = 64
"""Deepest nesting of mappings and lists a configuration may have (aliases expanded)."""
MAX_LISTED_ERRORS = 10
"""Problems listed in one :class:`ConfigError` (the rest are counted)."""
_MAX_PART_CHARS = 700
"""Longest text of one problem in a :class:`ConfigError`."""
_MESSAGE_BUDGET = 1700
"""Problems are listed while the message stays under this (the rest are counted)."""


class _Refused(Exception):
    """A configuration too large, too deep or cyclic (raised before validation)."""

    def __init__(self, key_path: str, reason: str, where: str = "") -> None:
        super().__init__(reason)
        self.key_path = key_path
        self.reason = reason
        self.where = where


def _label(key: Any) -> str:
    """One part of a key path: the key itself when short, else an excerpt."""
    if isinstance(key, str) and len(key) <= MAX_EXCERPT_CHARS:
        return key
    if isinstance(key, int) and not isinstance(key, bool) and abs(key) < 10**12:
        return str(key)
    return excerpt(key, 40)


def _join(parts: Iterable[str]) -> str:
    return ".".join(parts) or "(top level)"


def _check_graph(
    root: Any, children: Callable[[Any], Optional[List[Tuple[str, Any]]]], where: str = ""
) -> None:
    """Refuse ``root`` when, with shared parts counted at every use, it holds more than
    MAX_CONFIG_NODES values, nests deeper than MAX_CONFIG_DEPTH or contains itself.

    ``children(x)`` gives ``[(label, child), ...]`` for a container, ``None`` for a leaf.
    Linear in the number of distinct objects (sizes and depths are memoised), iterative
    (no recursion, whatever the depth).
    """
    limit = MAX_CONFIG_NODES
    size: Dict[int, int] = {}
    depth: Dict[int, int] = {}
    kids: Dict[int, List[Tuple[str, Any]]] = {}
    on_path: Dict[int, int] = {}  # id -> index in the stack
    stack: List[Tuple[Any, str, int]] = [(root, "", 0)]  # (object, label, next child)
    while stack:
        obj, label, nxt = stack[-1]
        key = id(obj)
        if nxt == 0:
            listed = children(obj)
            if not listed:
                size[key], depth[key] = 1, 0
                stack.pop()
                continue
            kids[key] = listed
            on_path[key] = len(stack) - 1
            if len(stack) > MAX_CONFIG_DEPTH:
                path = [entry[1] for entry in stack[1:]]
                raise _Refused(_join(path), f"nested deeper than {MAX_CONFIG_DEPTH} levels", where)
        listed = kids[key]
        if nxt < len(listed):
            stack[-1] = (obj, label, nxt + 1)
            child_label, child = listed[nxt]
            child_key = id(child)
            if child_key in on_path:
                path = [entry[1] for entry in stack[1:]] + [child_label]
                raise _Refused(
                    _join(path),
                    "refers to itself (a recursive YAML alias or a cyclic structure)",
                    where,
                )
            if child_key not in size:
                stack.append((child, child_label, 0))
            continue
        total, deepest = 1, 0
        for _, child in listed:
            total = min(total + size[id(child)], limit + 1)
            deepest = max(deepest, depth[id(child)] + 1)
        size[key], depth[key] = total, deepest
        del on_path[key]
        stack.pop()
        if deepest > MAX_CONFIG_DEPTH:
            path = [entry[1] for entry in stack[1:]] + ([label] if stack else [])
            raise _Refused(
                _join(path),
                f"nested deeper than {MAX_CONFIG_DEPTH} levels (YAML aliases expanded)",
                where,
            )
    if size.get(id(root), 0) > limit:
        # name the smallest part that is still too large: where the expansion blows up
        parts: List[str] = []
        node = root
        while True:
            over = next((c for c in kids.get(id(node), []) if size[id(c[1])] > limit), None)
            if over is None:
                break
            parts.append(over[0])
            node = over[1]
        raise _Refused(
            _join(parts),
            f"expands to more than {limit:,} values (a YAML alias counts in full at every "
            f"use: an alias bomb?); a configuration needs far fewer",
            where,
        )


def _data_children(obj: Any) -> Optional[List[Tuple[str, Any]]]:
    if isinstance(obj, dict):
        out = [(_label(k), v) for k, v in obj.items()]
        out += [(_label(k), k) for k in obj if isinstance(k, (tuple, frozenset))]
        return out
    if isinstance(obj, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return [(str(i), v) for i, v in enumerate(obj)]
    return None


def _node_children(node: Any) -> Optional[List[Tuple[str, Any]]]:
    if isinstance(node, yaml.MappingNode):
        out: List[Tuple[str, Any]] = []
        for key, value in node.value:
            name = _label(key.value) if isinstance(key, yaml.ScalarNode) else "(key)"
            out.append((name, key))
            out.append((name, value))
        return out
    if isinstance(node, yaml.SequenceNode):
        return [(str(i), item) for i, item in enumerate(node.value)]
    return None


def _mark(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses alias bombs, deep nesting and recursive aliases
    before constructing anything, and turns unrepresentable values into YAML errors."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._labels: List[str] = []

    def compose_node(self, parent: Any, index: Any) -> Any:
        # PyYAML composes recursively: bound the depth before Python's stack runs out.
        if parent is None:
            label = None
        elif isinstance(index, int):
            label = str(index)
        elif isinstance(index, yaml.ScalarNode):
            label = _label(index.value)
        else:
            label = "(key)"
        if label is not None and len(self._labels) >= MAX_CONFIG_DEPTH:
            raise _Refused(
                _join([*self._labels, label]),
                f"nested deeper than {MAX_CONFIG_DEPTH} levels",
                _mark(self.peek_event().start_mark),  # type: ignore[no-untyped-call]
            )
        if label is not None:
            self._labels.append(label)
        try:
            return super().compose_node(parent, index)
        finally:
            if label is not None:
                self._labels.pop()

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _check_graph(node, _node_children)
        return node

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"cannot read this value: {cap_message(str(exc), 120)}",
                node.start_mark,
            ) from None


def load_config(path: Union[str, Path]) -> AsahiConfig:
    """Read and validate a YAML configuration file.

    Relative paths inside it resolve against the file's directory.

    Raises:
        ConfigError: the file is missing, is not YAML, is refused (an alias bomb, nested
            deeper than MAX_CONFIG_DEPTH, recursive) or a key is invalid; the message names
            the key path (or the line and column) and what is allowed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte offset {exc.start})"
        ) from None
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass
    except _Refused as exc:
        raise ConfigError(
            f"config file {path}: {exc.key_path}{exc.where}: {exc.reason}", key_path=exc.key_path
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"config file {path} is not valid YAML{_mark(mark)}: "
            f"{cap_message(problem, _MAX_PART_CHARS)}"
        ) from None
    except RecursionError:  # pragma: no cover - the loader bounds the depth first
        raise ConfigError(f"config file {path} is nested too deeply") from None
    config = parse_config(data, base_dir=path.parent.resolve(), source=str(path))
    config.source_path = path
    return config


def parse_config(
    data: Any, *, base_dir: Union[str, Path, None] = None, source: str = "config"
) -> AsahiConfig:
    """Validate an already-parsed mapping (relative paths resolve against ``base_dir``).

    Raises:
        ConfigError: ``data`` is not a mapping, is refused (more than MAX_CONFIG_NODES
            values with shared parts counted at every use, deeper than MAX_CONFIG_DEPTH,
            cyclic) or a key is invalid; the message names the key path.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source} must be a mapping with a 'feature_store:' section, "
            f"got {type(data).__name__}",
            key_path="(top level)",
        )
    try:
        _check_graph(data, _data_children)
    except _Refused as exc:
        raise ConfigError(
            f"{source}: {exc.key_path}: {exc.reason}", key_path=exc.key_path
        ) from None
    try:
        return AsahiConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise _config_error(exc, source) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # pragma: no cover
        # pydantic reports what it validates as ValidationError; this is a safety net
        raise ConfigError(
            f"invalid {source}: {type(exc).__name__}: {cap_message(str(exc), _MAX_PART_CHARS)}"
        ) from None


def _config_error(exc: ValidationError, source: str) -> ConfigError:
    head = f"invalid {source}: "
    messages: List[str] = []
    used = len(head)
    first_path = None
    errors = exc.errors(include_url=False, include_context=False)
    for err in errors[:MAX_LISTED_ERRORS]:
        loc = [_label(part) for part in err["loc"]]
        key_path = _join(loc)
        first_path = first_path or key_path
        part = cap_message(f"{key_path}: {_describe(err, loc)}", _MAX_PART_CHARS)
        if messages and used + len(part) > _MESSAGE_BUDGET:
            break
        messages.append(part)
        used += len(part) + 2
    more = len(errors) - len(messages)
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
    return ConfigError(head + "; ".join(messages) + tail, key_path=first_path)


def _type_name(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length():,} bits"
    return type(value).__name__


def _describe(err: Any, loc: list[str]) -> str:
    kind = err["type"]
    value = err.get("input")
    if kind == "literal_error":
        allowed = _literal_choices(loc)
        return f"{excerpt(value)} is not one of {allowed}"
    if kind == "extra_forbidden":
        allowed_keys = _allowed_keys(loc[:-1])
        return f"unknown key; allowed keys here: {allowed_keys}"
    if kind == "missing":
        return "is required"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    msg = cap_message(msg, _MAX_PART_CHARS // 2)
    if str(kind).endswith("_type"):
        # the type only: a misplaced value may be a secret, so it is never echoed
        return f"{msg} (got {_type_name(value)})"
    return msg


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = AsahiConfig
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            field = next((f for f in model.model_fields.values() if f.alias == part), None)
        if field is None:
            return None
        nested = nested_model(field.annotation)
        if nested is None:
            return None
        model = nested
    return model


def _allowed_keys(loc: list[str]) -> str:
    model = _model_at(loc)
    if model is None:
        return "(unknown)"
    names = [f.alias or name for name, f in model.model_fields.items() if not f.exclude]
    return ", ".join(names)


def _literal_choices(loc: list[str]) -> str:
    model = _model_at(loc[:-1])
    field = model.model_fields.get(loc[-1]) if model else None
    if field is None:
        return "the allowed values"
    return ", ".join(str(c) for c in get_args(field.annotation))
