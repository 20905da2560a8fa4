"""Who a request is for: identity and task type from ``configurable`` and the input, and the
``configurable`` keys the LangChain adapters advertise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import (
    Any,
    Dict,
    List,
    NamedTuple,
    Optional,
    Tuple,
)

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.utils import ConfigurableFieldSpec

_NOTHING: Mapping[str, Any] = MappingProxyType({})
_ABSENT: Any = object()
_PARAM_ENTITY_TYPES = frozenset({"user", "organization"})
"""Entity types whose id is an enricher parameter (``user_id``, ``organization_id``);
every other entity type's id is ``context["<entity_type>_id"]``."""


def _configurable(config: Optional[RunnableConfig]) -> Mapping[str, Any]:
    return (config or {}).get("configurable") or _NOTHING


def _as_id(value: Any) -> Optional[str]:
    if value is None:
        return None
    return value if type(value) is str else str(value)


IDENTITY_PREFIX = "asahi_"
"""Prefix of the ``configurable`` keys the runnable advertises (``asahi_user_id``, ...), so
that they never collide with other components' config specs (``RunnableWithMessageHistory``
commonly declares its own ``user_id``). The plain keys are still read."""


def _configured(configurable: Mapping[str, Any], key: str) -> Any:
    """``configurable["asahi_<key>"]`` when present, else ``configurable[key]`` when
    present, else ``_ABSENT``. Presence is what counts: a ``None`` there is final."""
    if not configurable:
        return _ABSENT
    value = configurable.get(IDENTITY_PREFIX + key, _ABSENT)
    if value is _ABSENT:
        value = configurable.get(key, _ABSENT)
    return value


def _pick(configurable: Mapping[str, Any], given: Mapping[str, Any], key: str) -> Optional[str]:
    """An identity: ``configurable["asahi_<key>"]`` or ``configurable[key]`` when the key
    is there at all (``None`` there means "no identity", never "ask the input"), else the
    input's ``key``."""
    value = _configured(configurable, key)
    if value is _ABSENT:
        value = given.get(key)
    return _as_id(value)


def _pick_task(configurable: Mapping[str, Any], given: Mapping[str, Any]) -> Optional[str]:
    """The task type: ``configurable``'s (``asahi_task_type``, then ``task_type``) unless
    missing or ``None``, else the input's."""
    value = None
    if configurable:
        value = configurable.get(IDENTITY_PREFIX + "task_type")
        if value is None:
            value = configurable.get("task_type")
    if value is None:
        value = given.get("task_type")
    return _as_id(value)


def _context_id_keys(enricher: Any) -> Optional[Dict[str, Tuple[str, ...]]]:
    """Per task type of the enricher's task map, the ``<entity_type>_id`` keys the
    enricher reads from the request context (entity types other than user and
    organization that have features); ``None`` when the enricher has no task map."""
    task_features = getattr(getattr(enricher, "config", None), "task_features", None)
    if not isinstance(task_features, Mapping):
        return None
    return {
        str(task): tuple(
            f"{entity_type}_id"
            for entity_type, names in mapping.items()
            if names and entity_type not in _PARAM_ENTITY_TYPES
        )
        for task, mapping in task_features.items()
        if isinstance(mapping, Mapping)
    }


_IDENTITY_SPECS = (
    (
        "user_id",
        "User ID",
        "Identity for user features. When present it is final (None: no user), the "
        "input's user_id is not read. The plain key user_id is read too (this one wins).",
    ),
    (
        "organization_id",
        "Organization ID",
        "Identity for organization features. When present it is final (None: no "
        "organization), the input's organization_id is not read. The plain key "
        "organization_id is read too (this one wins).",
    ),
    (
        "task_type",
        "Task type",
        "Task type that selects the features (wins over the input; the plain key "
        "task_type is read too).",
    ),
)


def _spec(key: str, name: str, description: str) -> ConfigurableFieldSpec:
    return ConfigurableFieldSpec(
        id=IDENTITY_PREFIX + key,
        annotation=Optional[str],
        name=name,
        description=description,
        default=None,
        is_shared=True,
    )


def _config_specs(entity_keys: Sequence[str] = ()) -> List[ConfigurableFieldSpec]:
    specs = [_spec(key, name, description) for key, name, description in _IDENTITY_SPECS]
    for key in entity_keys:
        entity_type = key[: -len("_id")]
        specs.append(
            _spec(
                key,
                f"{entity_type.replace('_', ' ').capitalize()} ID",
                f"Identity for {entity_type} features. When present it is final (None: "
                f"no {entity_type}), the input's context['{key}'] is not read. The plain "
                f"key {key} is read too (this one wins).",
            )
        )
    return specs


_CONFIG_SPECS = _config_specs()


class AgentIdentity(NamedTuple):
    """Who an agent request is for (see :func:`agent_identity`)."""

    user_id: Optional[str]
    organization_id: Optional[str]
    task_type: str
    context: Optional[Dict[str, Any]]
    """``{"<entity_type>_id": id}`` for the task's other entity types (the enricher reads
    them from its ``context``), ``None`` when there are none."""

    @property
    def missing(self) -> bool:
        """No identity at all: nothing to fetch features for."""
        return self.user_id is None and self.organization_id is None and not self.context

    @property
    def entity_ids(self) -> Dict[str, str]:
        """The other entity types' ids by entity type (``{"merchant": "m-1"}``)."""
        return {key[: -len("_id")]: value for key, value in (self.context or {}).items()}

    def enrich_kwargs(self, prompt: str) -> Dict[str, Any]:
        """The arguments of ``enricher.enrich`` / ``aenrich`` for this identity: the one
        place the agent adapters (middleware, tool) turn an identity into a request."""
        return {
            "prompt": prompt,
            "user_id": self.user_id,
            "organization_id": self.organization_id,
            "task_type": self.task_type,
            "context": self.context,
        }


def _reader(runtime_context: Any) -> Optional[Callable[[str], Any]]:
    """How identities are read from ``runtime.context``: ``get`` of a mapping (the context
    itself when it is one, else its instance fields, ``__dict__``: dataclasses, pydantic
    models, plain objects), else ``getattr`` on the object (slotted classes); ``None``
    without a context. Chosen once per request: every key is then one call."""
    if runtime_context is None:
        return None
    if type(runtime_context) is dict or isinstance(runtime_context, Mapping):
        return runtime_context.get
    fields = getattr(runtime_context, "__dict__", None)
    if type(fields) is dict:
        return fields.get
    return lambda key: getattr(runtime_context, key, None)


_RUNTIME_KEYS: Dict[str, Tuple[str, str]] = {
    key: (IDENTITY_PREFIX + key, key) for key in ("task_type", "user_id", "organization_id")
}


def _from_runtime(read: Optional[Callable[[str], Any]], key: str) -> Any:
    """``asahi_<key>`` or ``key`` of the runtime context (see :func:`_reader`); ``_ABSENT``
    when neither is there or the value is ``None`` (dataclass contexts carry every field,
    ``None`` meaning "not given")."""
    if read is None:
        return _ABSENT
    prefixed, plain = _RUNTIME_KEYS.get(key) or (IDENTITY_PREFIX + key, key)
    value = read(prefixed)
    if value is None:
        value = read(plain)
    return _ABSENT if value is None else value


def agent_identity(
    runtime_context: Any,
    configurable: Mapping[str, Any],
    default_task: str,
    by_task: Optional[Dict[str, Tuple[str, ...]]],
) -> AgentIdentity:
    """The identity of an agent request: ``runtime.context`` first (field or key
    ``user_id``, ``organization_id``, ``<entity_type>_id``, each also as ``asahi_<key>``),
    then ``config["configurable"]`` (``asahi_<key>``, then ``<key>``).

    Nothing a model produces is read: this is the only place an agent's identity comes
    from. ``by_task`` is :func:`_context_id_keys` of the enricher (the other entity types
    of each task).
    """
    read = _reader(runtime_context)
    task = _from_runtime(read, "task_type")
    if task is _ABSENT:
        task = _pick_task(configurable, _NOTHING)
    task_type = _as_id(task) or default_task

    user_id = _identity(read, configurable, "user_id")
    organization_id = _identity(read, configurable, "organization_id")
    context: Optional[Dict[str, Any]] = None
    for key in by_task.get(task_type, ()) if by_task else ():
        value = _identity(read, configurable, key)
        if value is not None:
            if context is None:
                context = {}
            context[key] = value
    return AgentIdentity(user_id, organization_id, task_type, context)


def _identity(
    read: Optional[Callable[[str], Any]], configurable: Mapping[str, Any], key: str
) -> Optional[str]:
    """One id: the runtime context's, else ``configurable``'s, else ``None``."""
    value = _from_runtime(read, key)
    if value is _ABSENT:
        value = _configured(configurable, key)
    return None if value is _ABSENT else _as_id(value)
