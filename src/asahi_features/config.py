"""Loading the YAML configuration and building the configured client.

One module on purpose (about 690 lines): loading the file (YAML, environment, relative
paths), the error messages that name the key path, and building each backend's client,
which reads every settings section once.

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

import difflib
import importlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union, get_args

import yaml
from pydantic import BaseModel, ValidationError

from .errors import MAX_EXCERPT_CHARS, ConfigError, FeatureConfigError, cap_message, excerpt
from .settings import AsahiConfig, EnricherConfig, FeatureStoreSettings, nested_model
from .stores.base import FeatureStoreClient

__all__ = [
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "MAX_LISTED_ERRORS",
    "check_task_features",
    "client_from_config",
    "load_config",
    "parse_config",
]

logger = logging.getLogger(__name__)

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


def client_from_config(
    config: Union[AsahiConfig, FeatureStoreSettings, str, Path], *, guarded: bool = True
) -> FeatureStoreClient:
    """Build the configured backend, wrapped in the guard (deadline, fallback, breaker).

    Args:
        config: a loaded configuration, its ``feature_store`` section, or a file path.
        guarded: wrap the backend in :class:`~asahi_features.guard.GuardedClient`
            (the default; pass ``False`` only to talk to the raw backend).
    """
    if isinstance(config, (str, Path)):
        config = load_config(config)
    settings = config.feature_store if isinstance(config, AsahiConfig) else config
    backend = build_backend(settings)
    if not guarded:
        return backend
    from .guard import GuardedClient

    return GuardedClient.from_settings(backend, settings)


_BACKENDS = {
    "local": ("asahi_features.stores.local", "LocalFeatureStore"),
    "feast": ("asahi_features.stores.feast", "FeastClient"),
    "tecton": ("asahi_features.stores.tecton", "TectonClient"),
    "http": ("asahi_features.stores.http", "HttpFeatureStore"),
    "custom": ("asahi_features.stores.custom", "CustomBackend"),
}


def build_backend(settings: FeatureStoreSettings) -> FeatureStoreClient:
    """Build the raw (unguarded) backend named by ``settings.provider``.

    Each backend class offers ``from_settings(settings)``.
    """
    module_name, class_name = _BACKENDS[settings.provider]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("asahi_features"):
            raise ConfigError(
                f"feature_store.provider: {settings.provider!r} is not available yet "
                f"in this version; available: local",
                key_path="feature_store.provider",
            ) from None
        extra = {"feast": "feast", "tecton": "tecton", "http": "http"}.get(settings.provider)
        hint = f" (pip install 'asahi-features[{extra}]')" if extra else ""
        raise ConfigError(
            f"feature_store.provider: {settings.provider!r} needs the package "
            f"{exc.name!r}, which is not installed{hint}",
            key_path="feature_store.provider",
        ) from None
    factory = getattr(module, class_name)
    client: FeatureStoreClient = factory.from_settings(settings)
    return client


# -- build-time check of the task map against the store ------------------------------------

_CANNOT_LIST = (NotImplementedError, AttributeError, TypeError)
"""What a store that cannot list its features raises (the check is then skipped)."""


def _wanted(enricher: EnricherConfig) -> Dict[str, Dict[str, List[str]]]:
    """entity type -> feature name -> the enabled tasks that map it (in config order)."""
    wanted: Dict[str, Dict[str, List[str]]] = {}
    for task in dict.fromkeys(enricher.enabled_task_types):
        for entity_type, names in (enricher.task_features.get(task) or {}).items():
            for name in names:
                wanted.setdefault(entity_type, {}).setdefault(name, []).append(task)
    return wanted


def _is_reference(name: str) -> bool:
    """A full reference (``view:feature``, Tecton's ``view.feature``) rather than a name."""
    return ":" in name or "." in name


def _listed(name: str, listed: frozenset[str]) -> bool:
    if name in listed:
        return True
    # a reference is known when its plain part is (the store checks the view per request)
    return any(sep in name and name.rsplit(sep, 1)[1] in listed for sep in ":.")


def _list_within(
    lister: Callable[[str], Any], entity_types: List[str], seconds: float
) -> Optional[Dict[str, Tuple[bool, Any]]]:
    """``{entity type: (ok, listing or exception)}`` from a daemon thread, or ``None`` when
    the store did not answer within ``seconds`` (the thread is left to finish alone: a
    hung store never holds up the caller, nor the interpreter's exit)."""
    box: Dict[str, Dict[str, Tuple[bool, Any]]] = {}

    def run() -> None:
        out: Dict[str, Tuple[bool, Any]] = {}
        for entity_type in entity_types:
            try:
                listing = lister(entity_type)
                if inspect.isawaitable(listing):  # an async-only lister: cannot check here
                    getattr(listing, "close", lambda: None)()
                    raise NotImplementedError("list_features is asynchronous")
                out[entity_type] = (True, listing)
            except Exception as exc:
                out[entity_type] = (False, exc)
                if not isinstance(exc, (FeatureConfigError, ConfigError)):
                    break  # unreachable or cannot list: the other types would say the same
        box["out"] = out

    thread = threading.Thread(target=run, name="asahi-features-check", daemon=True)
    thread.start()
    thread.join(seconds)
    return box.get("out") if not thread.is_alive() else None


def _names_of(listing: Any, entity_type: str) -> Optional[frozenset[str]]:
    if not isinstance(listing, dict):
        return None
    names = listing.get(entity_type)
    if names is None and len(listing) == 1:  # e.g. a store serving every type from one list
        names = next(iter(listing.values()))
    if names is None:
        return None
    return frozenset(str(n) for n in names)


def _suggest(name: str, choices: Iterable[str]) -> str:
    plain = name.rsplit(":", 1)[-1].rsplit(".", 1)[-1] if _is_reference(name) else name
    close = difflib.get_close_matches(plain, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def _check_services(client: Any, enricher: EnricherConfig, seconds: float) -> None:
    """Every feature service an enabled task maps must exist (close matches otherwise).

    Raises:
        ConfigError: the backend cannot describe feature services.
        FeatureConfigError: unknown services, each named with its task.
    """
    from .task_map import service_entity_type

    tasks = [
        (task, enricher.task_feature_services[task])
        for task in dict.fromkeys(enricher.enabled_task_types)
        if task in enricher.task_feature_services
    ]
    if not tasks:
        return
    box: Dict[str, List[Tuple[str, str, Optional[BaseException]]]] = {}

    def run() -> None:
        out: List[Tuple[str, str, Optional[BaseException]]] = []
        for task, service in tasks:
            try:
                entity_type = service_entity_type(client, task, service)
            except (FeatureConfigError, ConfigError) as exc:
                out.append((task, service, exc))
                continue
            mapped = enricher.task_features.get(task) or {}
            if entity_type is not None and mapped.get(entity_type):
                out.append(
                    (
                        task,
                        service,
                        ConfigError(
                            f"enricher.task_feature_services.{_label(task)}: feature service "
                            f"{excerpt(service)} reads entity type {excerpt(entity_type)}, "
                            f"which enricher.task_features.{_label(task)} also maps: keep one",
                            key_path=f"enricher.task_feature_services.{task}",
                        ),
                    )
                )
                continue
            out.append((task, service, None))
        box["out"] = out

    thread = threading.Thread(target=run, name="asahi-features-check", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        logger.warning(
            "could not check enricher.task_feature_services against the feature store: it "
            "did not answer within %.1f s",
            seconds,
        )
        return
    problems: List[str] = []
    known: List[str] = []
    for task, service, exc in box.get("out", []):
        if isinstance(exc, ConfigError):
            raise exc
        if isinstance(exc, FeatureConfigError):
            close = exc.suggestions
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            problems.append(
                f"enricher.task_feature_services.{_label(task)}: {excerpt(service)} is not a "
                f"feature service of the store{hint}"
            )
            known = known or list(exc.available_features)
    if problems:
        raise FeatureConfigError(
            f"{'; '.join(problems[:5])}. Fix enricher.task_feature_services, or remove the "
            "task from enabled_task_types",
            sorted(known),
            kind="feature services",
        )


def check_task_features(
    client: Any, enricher: EnricherConfig, *, timeout_seconds: float = 1.0
) -> None:
    """Check the task map of the enabled task types against what the store serves.

    Every feature an enabled task maps (``enricher.task_features``) must be listed by
    ``client.list_features(entity_type)``; a reference ``view:feature`` counts when its
    feature is listed. Task types not in ``enabled_task_types`` are not checked.

    The check waits at most ``timeout_seconds``. A store that cannot list its features
    (no ``list_features``, or it raises NotImplementedError) is skipped silently; one
    that fails or does not answer in time is skipped with one WARNING: its problems are
    then found on the first request, as without the check.

    Raises:
        FeatureConfigError: a mapped feature or entity type does not exist in the store;
            the message names the task, entity type and feature, with close matches.
        ConfigError: the store reports a configuration mistake while listing.
    """
    _check_services(client, enricher, timeout_seconds)
    lister = getattr(client, "list_features", None)
    wanted = _wanted(enricher)
    if lister is None or not callable(lister) or not wanted:
        return
    results = _list_within(lister, list(wanted), timeout_seconds)
    if results is None:
        logger.warning(
            "could not check enricher.task_features against the feature store: it did not "
            "list its features within %.1f s (a mapped feature missing from the store "
            "will show up on the first request instead)",
            timeout_seconds,
        )
        return
    default_map = "task_features" not in enricher.model_fields_set
    problems: List[str] = []
    # the listing shown is the one of the first problem (entity types or feature names)
    listing: Optional[Tuple[str, List[str]]] = None
    for entity_type, by_name in wanted.items():
        if entity_type not in results:
            continue
        ok, value = results[entity_type]
        where = ", ".join(
            f"enricher.task_features.{_label(task)}.{_label(entity_type)}"
            for task in dict.fromkeys(t for tasks in by_name.values() for t in tasks)
        )
        if not ok:
            if isinstance(value, _CANNOT_LIST):
                return  # this store cannot list its features: nothing to check against
            if isinstance(value, FeatureConfigError):
                if all(_is_reference(name) for name in by_name):
                    continue  # full references only: the store validates them per request
                types = value.available_features if value.kind == "entity types" else ()
                problems.append(
                    f"{where}: entity type {excerpt(entity_type)} is not served by the "
                    f"store{_suggest(entity_type, types)} ({value.reason})"
                )
                listing = listing or (value.kind, value.available_features)
                continue
            if isinstance(value, ConfigError):
                raise value
            logger.warning(
                "could not check enricher.task_features against the feature store: "
                "listing the features of entity type %r failed (%s: %s)",
                entity_type,
                type(value).__name__,
                cap_message(str(value), 300),
            )
            return
        names = _names_of(value, entity_type)
        if names is None:
            continue
        unknown = [name for name in by_name if not _listed(name, names)]
        if not unknown:
            continue
        for name in unknown:
            tasks = by_name[name]
            also = f" (also in: {cap_message(', '.join(tasks[1:]), 200)})" if tasks[1:] else ""
            problems.append(
                f"enricher.task_features.{_label(tasks[0])}.{_label(entity_type)}: "
                f"{excerpt(name)} is not a feature of entity type {excerpt(entity_type)} in "
                f"the store{_suggest(name, names)}{also}"
            )
        listing = listing or (f"features of {excerpt(entity_type)}", sorted(names))
    if not problems:
        return
    hint = (
        "These come from the default task map (spec table 3.5): set enricher.task_features "
        "to the features your store has, or remove the task from enabled_task_types"
        if default_map
        else "Fix enricher.task_features, or remove the task from enabled_task_types"
    )
    shown = problems[:5]
    more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    kind, available = listing or ("features", [])
    raise FeatureConfigError(f"{'; '.join(shown)}{more}. {hint}", sorted(available), kind=kind)
