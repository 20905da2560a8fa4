"""Loading the YAML configuration and building the configured client."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Union, get_args

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError
from .settings import AsahiConfig, FeatureStoreSettings, nested_model
from .stores.base import FeatureStoreClient

__all__ = ["client_from_config", "load_config", "parse_config"]


def load_config(path: Union[str, Path]) -> AsahiConfig:
    """Read and validate a YAML configuration file.

    Relative paths inside it resolve against the file's directory.

    Raises:
        ConfigError: the file is missing, is not YAML, or a key is invalid; the message
            names the key path and what is allowed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    config = parse_config(data, base_dir=path.parent.resolve(), source=str(path))
    config.source_path = path
    return config


def parse_config(
    data: Any, *, base_dir: Union[str, Path, None] = None, source: str = "config"
) -> AsahiConfig:
    """Validate an already-parsed mapping (relative paths resolve against ``base_dir``)."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source} must be a mapping with a 'feature_store:' section, got {type(data).__name__}"
        )
    try:
        return AsahiConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise _config_error(exc, source) from None


def _config_error(exc: ValidationError, source: str) -> ConfigError:
    messages = []
    first_path = None
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        key_path = ".".join(loc) or "(top level)"
        first_path = first_path or key_path
        messages.append(f"{key_path}: {_describe(err, loc)}")
    return ConfigError(f"invalid {source}: " + "; ".join(messages), key_path=first_path)


def _describe(err: Any, loc: list[str]) -> str:
    kind = err["type"]
    value = err.get("input")
    if kind == "literal_error":
        allowed = _literal_choices(loc)
        return f"{value!r} is not one of {allowed}"
    if kind == "extra_forbidden":
        allowed_keys = _allowed_keys(loc[:-1])
        return f"unknown key; allowed keys here: {allowed_keys}"
    if kind == "missing":
        return "is required"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
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
    "feast": ("asahi_features.stores.feast_store", "FeastClient"),
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
