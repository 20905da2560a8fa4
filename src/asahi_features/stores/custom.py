"""Custom backends: any class implementing the FeatureStoreClient protocol (provider ``custom``).

Configuration::

    feature_store:
      provider: custom
      custom:
        class: "mycompany.features:WarehouseStore"
        options: {dsn: "postgresql://...", pool_size: 4}

The class is imported and built with ``**options``. The instance must offer
``get_features``, ``get_batch_features`` and ``health_check`` (see
:class:`~asahi_features.stores.base.FeatureStoreClient`); one that does not is rejected
at load time with the list of missing methods. The instance itself is returned (no
wrapper), so its own extra methods stay reachable; the guard wraps it like any backend.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

from ..errors import ConfigError
from .base import FeatureStoreClient, missing_protocol_methods

if TYPE_CHECKING:
    from ..settings import FeatureStoreSettings

__all__ = ["CustomBackend", "load_class"]

_KEY = "feature_store.custom.class"


def load_class(class_path: str) -> type:
    """Import ``package.module:ClassName`` (the class may be nested: ``mod:Outer.Inner``).

    Raises:
        ConfigError: the path is malformed, the module cannot be imported, or the
            attribute does not exist or is not a class.
    """
    module_name, sep, qualname = class_path.partition(":")
    if not sep or not module_name or not qualname:
        raise ConfigError(
            f"{_KEY}: {class_path!r} must look like 'package.module:ClassName'", key_path=_KEY
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{_KEY}: cannot import module {module_name!r} for {class_path!r}: {exc}",
            key_path=_KEY,
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"{_KEY}: importing module {module_name!r} failed with {type(exc).__name__}: {exc}",
            key_path=_KEY,
        ) from None
    obj: Any = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"{_KEY}: module {module_name!r} has no attribute {qualname!r}", key_path=_KEY
            ) from None
    if not inspect.isclass(obj):
        raise ConfigError(
            f"{_KEY}: {class_path!r} is a {type(obj).__name__}, not a class", key_path=_KEY
        )
    return obj


class CustomBackend:
    """Loader of user-written backends (the ``custom`` provider).

    Example:
        >>> store = CustomBackend.build("mypkg.stores:MyStore", {"url": "..."})
        >>> store.health_check()
        True
    """

    @staticmethod
    def build(class_path: str, options: Optional[Mapping[str, Any]] = None) -> FeatureStoreClient:
        """Import the class, build it with ``**options`` and check the protocol.

        Returns:
            The instance of the user's class.

        Raises:
            ConfigError: import problems, constructor errors (bad options), or a class
                that lacks protocol methods (the message lists them).
        """
        cls = load_class(class_path)
        missing = missing_protocol_methods(cls)
        if missing:
            raise ConfigError(
                f"{_KEY}: {class_path!r} does not implement the FeatureStoreClient protocol; "
                f"missing method(s): {', '.join(missing)} (required: get_features, "
                f"get_batch_features, health_check)",
                key_path=_KEY,
            )
        kwargs: Dict[str, Any] = dict(options or {})
        try:
            instance = cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(
                f"feature_store.custom.options do not fit {class_path!r}: {exc} "
                f"(given: {', '.join(sorted(kwargs)) or 'none'})",
                key_path="feature_store.custom.options",
            ) from None
        missing = missing_protocol_methods(instance)
        if missing:
            raise ConfigError(
                f"{_KEY}: instances of {class_path!r} lack method(s): {', '.join(missing)}",
                key_path=_KEY,
            )
        built: FeatureStoreClient = instance
        return built

    @classmethod
    def from_settings(cls, settings: FeatureStoreSettings) -> FeatureStoreClient:
        """Build the class named by ``feature_store.custom`` (the instance, not a wrapper)."""
        section = settings.custom
        assert section is not None
        return cls.build(section.class_path, section.options)
