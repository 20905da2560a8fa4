"""What a task reads, as far as the backend must say: the entity type of a Feast
feature service (``enricher.task_feature_services``) and the request-data fields of
on-demand views. Asked once per task (the backend answers from its registry cache)."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from .errors import ConfigError, FeatureConfigError, RegistryDriftError
from .stores.entity_keys import FEATURE_SERVICE_PREFIX

__all__ = ["backend_method", "request_fields_of", "service_entity_type"]

logger = logging.getLogger(__name__)


def backend_method(client: Any, name: str) -> Optional[Callable[..., Any]]:
    """``name`` of the client or of the backend it guards (``GuardedClient.inner``)."""
    seen = 0
    while client is not None and seen < 4:
        method = getattr(type(client), name, None)
        if callable(method):
            bound: Callable[..., Any] = getattr(client, name)
            return bound
        client = getattr(client, "inner", None)
        seen += 1
    return None


def service_entity_type(client: Any, task: str, service: str) -> Optional[str]:
    """The entity type feature service ``service`` reads; ``None`` while the store cannot
    say (unavailable: asked again on the task's next request).

    Raises:
        ConfigError: the backend knows no feature services.
        FeatureConfigError: no such service (with close matches).
    """
    describe = backend_method(client, "feature_service_entity_type")
    if describe is None:
        raise ConfigError(
            f"enricher.task_feature_services.{task}: the backend "
            f"({type(getattr(client, 'inner', client)).__name__}) cannot describe feature "
            "services; map the task in enricher.task_features as "
            f"{{<entity type>: ['{FEATURE_SERVICE_PREFIX}{service}']}} instead",
            key_path=f"enricher.task_feature_services.{task}",
        )
    try:
        return str(describe(service))
    except RegistryDriftError:
        return None  # gone from the registry for now: the backend has warned
    except (FeatureConfigError, ConfigError):
        raise
    except Exception as exc:
        logger.warning(
            "could not look up feature service %r of task %r (%s); the task is not "
            "enriched until the store answers",
            service,
            task,
            type(exc).__name__,
        )
        return None


def request_fields_of(
    client: Any, mapping: Mapping[str, Sequence[str]]
) -> Tuple[Dict[str, Tuple[str, ...]], bool]:
    """Entity type -> the request-data fields its read needs (only types that need
    some), and whether the backend answered for every type (a backend without
    ``request_fields`` needs none: True)."""
    ask = backend_method(client, "request_fields")
    if ask is None:
        return {}, True
    out: Dict[str, Tuple[str, ...]] = {}
    complete = True
    for entity_type, names in mapping.items():
        try:
            fields = tuple(ask(entity_type, list(names)))
        except RegistryDriftError:
            complete = False  # gone from the registry for now: the read will degrade
            continue
        except (FeatureConfigError, ConfigError):
            raise
        except Exception:  # unavailable now: the read itself will say so
            complete = False
            continue
        if fields:
            out[entity_type] = fields
    return out, complete
