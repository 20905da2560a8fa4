"""Building the configured client and checking the task map against the store.

:func:`client_from_config` builds the backend named by ``feature_store.provider`` (each
backend reads its settings section once, in its ``from_settings``) and wraps it in the
guard; :func:`build_backend` gives the raw backend. :func:`check_task_features` is the
build-time check that every feature (and feature service) an enabled task maps exists in
the store, with close matches in the message; it never holds up a caller for longer than
its timeout.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..errors import ConfigError, FeatureConfigError, cap_message, excerpt
from ..settings import AsahiConfig, EnricherConfig, FeatureStoreSettings
from ..stores.base import FeatureStoreClient
from .loading import _label, load_config

__all__ = ["build_backend", "check_task_features", "client_from_config"]

# the package's name: what the warnings of the check have always been logged under
logger = logging.getLogger("asahi_features.config")


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
    from ..guard import GuardedClient

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
    from ..task_map import service_entity_type

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
