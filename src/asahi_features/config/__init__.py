"""Loading the YAML configuration and building the configured client.

``loading`` reads and validates the file: a bounded YAML loader (alias bombs, deep
nesting and unrepresentable values are refused) and short error messages that name the
key path. ``clients`` builds the backend client a configuration describes and checks the
task map against what the store serves. Import from here: ``asahi_features.config``.
"""

from .clients import build_backend, check_task_features, client_from_config
from .loading import (
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    MAX_LISTED_ERRORS,
    load_config,
    parse_config,
)

__all__ = [
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "MAX_LISTED_ERRORS",
    "build_backend",
    "check_task_features",
    "client_from_config",
    "load_config",
    "parse_config",
]
