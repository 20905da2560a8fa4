"""LangChain integration: an enrichment ``Runnable`` and a monitor callback handler.

Needs the ``[langchain]`` extra (``langchain-core`` and, for evaluation, ``langsmith``).

* :class:`FeatureEnrichmentRunnable` puts a :class:`~asahi_features.enricher.FeatureEnricher`
  into any chain: ``runnable | llm`` or ``runnable | ChatPromptTemplate | llm``.
  ``batch`` / ``abatch`` of N inputs cost one backend batch fetch per entity type while
  every input keeps its own callback run.
* :class:`FeatureMonitorCallbackHandler` (a ``BaseTracer``) records every enrichment of a
  chain in a :class:`~asahi_features.monitor.FeatureMonitor` and ties it to the chain's
  root run, so that a quality score for that run lands on the enrichment. It can run
  evaluators on every finished root run.
* :func:`evaluate_runs`, :func:`record_langsmith_results` and :func:`evaluate_offline`
  score finished runs with LangSmith ``RunEvaluator`` objects or plain functions and
  record the scores, without any network access or LangSmith account.
"""

from __future__ import annotations

import inspect
import logging
import threading
import uuid
import warnings
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Deque,
    Dict,
    List,
    Literal,
    Optional,
    Tuple,
    Union,
)

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompt_values import (
    ChatPromptValue,
    ChatPromptValueConcrete,
    StringPromptValue,
)
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import (
    ensure_config,
    get_callback_manager_for_config,
    get_config_list,
)
from langchain_core.runnables.utils import ConfigurableFieldSpec
from langchain_core.tracers.base import BaseTracer
from pydantic import BaseModel, ConfigDict, PrivateAttr, create_model

from .enricher import EnrichmentTuple, FeatureEnricher
from .models import EnrichmentReason, EnrichmentRequest, EnrichmentResult

if TYPE_CHECKING:
    from langchain_core.tracers.schemas import Run

__all__ = [
    "ENRICHMENT_KEY",
    "IDENTITY_PREFIX",
    "EnrichedChatPromptValue",
    "EnrichedMessages",
    "EnrichedPrompt",
    "EnrichedStringPromptValue",
    "Evaluator",
    "FeatureEnrichmentRunnable",
    "FeatureMonitorCallbackHandler",
    "RunQuality",
    "evaluate_offline",
    "evaluate_runs",
    "find_enrichments",
    "offline_langsmith_client",
    "record_langsmith_results",
]

logger = logging.getLogger(__name__)

ENRICHMENT_KEY = "enrichment"
"""Reserved output key (``output="dict"``) holding the :class:`EnrichmentResult`."""

Evaluator = Union[Any, Callable[..., Any]]
"""A LangSmith ``RunEvaluator`` (anything with ``evaluate_run(run, example)``) or a plain
function of ``run`` (and optionally ``example``), or of the LangSmith argument names
``inputs`` / ``outputs`` / ``reference_outputs`` / ``run`` / ``example``."""

_NOTHING: Mapping[str, Any] = MappingProxyType({})
_ABSENT: Any = object()
_make_request = EnrichmentTuple._make
_PARAM_ENTITY_TYPES = frozenset({"user", "organization"})
"""Entity types whose id is an enricher parameter (``user_id``, ``organization_id``);
every other entity type's id is ``context["<entity_type>_id"]``."""


_PRODUCED: weakref.WeakValueDictionary[str, EnrichmentResult] = weakref.WeakValueDictionary()
"""Every result a :class:`FeatureEnrichmentRunnable` returned in an observed run, by
``enrichment_id``, for as long as the result object lives. The monitor handler and the
evaluation helpers record only these: an output of another step that merely looks like
an enrichment result (a dict, a copy, a hand-made ``EnrichmentResult``) is ignored."""


def _mark_produced(result: Any) -> None:
    try:  # noqa: SIM105 - try/except is cheaper than contextlib.suppress per result
        _PRODUCED[result.enrichment_id] = result
    except (AttributeError, TypeError):  # not a result object: nothing to vouch for
        pass


def _produced(candidate: Any) -> Optional[EnrichmentResult]:
    """The result a FeatureEnrichmentRunnable produced that ``candidate`` is (or is an
    exact copy of, e.g. a serialised output read back), else ``None``.

    What is returned is always the runnable's own object, never ``candidate``: a
    look-alike can at most point at a real result, never put its content in a monitor.
    """
    eid = getattr(candidate, "enrichment_id", None)
    if type(eid) is not str:
        return None
    genuine = _PRODUCED.get(eid)
    if genuine is None:
        return None
    if candidate is not genuine:
        try:
            same = type(candidate) is type(genuine) and bool(candidate == genuine)
        except Exception:
            same = False
        if not same:
            return None
    return genuine


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


class EnrichedPrompt(str):
    """The enriched prompt (a ``str``) that also carries its :class:`EnrichmentResult`.

    Returned by :class:`FeatureEnrichmentRunnable` with ``output="prompt"``: it is the
    prompt string every LLM accepts, and the monitor handler reads ``.enrichment`` from
    the step's output.
    """

    enrichment: EnrichmentResult

    def __new__(cls, text: str, enrichment: EnrichmentResult) -> EnrichedPrompt:
        obj = str.__new__(cls, text)
        obj.enrichment = enrichment
        return obj

    def __reduce__(self) -> Any:
        return (EnrichedPrompt, (str(self), self.enrichment))


class EnrichedMessages(List[BaseMessage]):
    """The enriched messages (a ``list``) that also carry their :class:`EnrichmentResult`.

    Returned for a message list or a single message input (``output="prompt"``), and as
    ``state["messages"]`` for a ``{"messages": [...]}`` input: any chat model accepts it,
    and the monitor handler reads ``.enrichment`` from the step's output.
    """

    enrichment: EnrichmentResult

    def __init__(self, messages: Iterable[BaseMessage], enrichment: EnrichmentResult) -> None:
        super().__init__(messages)
        self.enrichment = enrichment

    def __reduce__(self) -> Any:
        return (EnrichedMessages, (list(self), self.enrichment))


class EnrichedChatPromptValue(ChatPromptValue):
    """A ``ChatPromptValue`` with the block added, carrying its :class:`EnrichmentResult`
    (``.enrichment``); returned for a ``ChatPromptValue`` input."""

    _enrichment: Optional[EnrichmentResult] = PrivateAttr(default=None)

    @property
    def enrichment(self) -> Optional[EnrichmentResult]:
        """The result of the enrichment that produced this value."""
        return self._enrichment


class EnrichedStringPromptValue(StringPromptValue):
    """A ``StringPromptValue`` holding the enriched prompt, carrying its
    :class:`EnrichmentResult` (``.enrichment``); returned for a ``StringPromptValue``."""

    _enrichment: Optional[EnrichmentResult] = PrivateAttr(default=None)

    @property
    def enrichment(self) -> Optional[EnrichmentResult]:
        """The result of the enrichment that produced this value."""
        return self._enrichment


def _messages_of(input: Any, prompt_key: str) -> Optional[Sequence[Any]]:
    """The messages of a message-shaped input (chat prompt value, message list, single
    message, ``{"messages": [...]}`` state without ``prompt_key``), else ``None``."""
    if isinstance(input, ChatPromptValue):
        return input.messages
    if isinstance(input, BaseMessage):
        return [input]
    if isinstance(input, (list, tuple)) and all(isinstance(m, BaseMessage) for m in input):
        return input
    if isinstance(input, Mapping) and prompt_key not in input:
        messages = input.get("messages")
        if isinstance(messages, (list, tuple)) and all(
            isinstance(m, BaseMessage) for m in messages
        ):
            return messages
    return None


def _last_human_text(messages: Sequence[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.text
    return ""


def _with_block(content: Any, block: str, before: bool) -> Any:
    """``content`` (a str or a list of content blocks) with ``block`` added before or
    after it; a new object, the original is not touched."""
    if isinstance(content, str):
        if not content:
            return block
        return f"{block}\n\n{content}" if before else f"{content}\n\n{block}"
    part = {"type": "text", "text": block}
    items = list(content or [])
    return [part, *items] if before else [*items, part]


def _place(messages: Sequence[BaseMessage], block: str, placement: str) -> List[BaseMessage]:
    """A new message list with ``block`` in the leading system message (merged into an
    existing one, else a new one) or, with ``placement="human"``, in front of the last
    human message's text. The caller's messages are copied, never changed."""
    out = list(messages)
    if not block:
        return out
    if placement == "human":
        for i in range(len(out) - 1, -1, -1):
            message = out[i]
            if isinstance(message, HumanMessage):
                out[i] = message.model_copy(
                    update={"content": _with_block(message.content, block, before=True)}
                )
                return out
        # no human message: fall back to the system message
    if out and isinstance(out[0], SystemMessage):
        first = out[0]
        out[0] = first.model_copy(
            update={"content": _with_block(first.content, block, before=False)}
        )
    else:
        out.insert(0, SystemMessage(content=block))
    return out


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

_WARN_REASONS: Dict[Any, str] = {
    EnrichmentReason.NO_IDENTITY: (
        "FeatureEnrichmentRunnable %r: no identity for task type %r, the prompt goes out "
        "without features. Pass one in config['configurable'] (asahi_user_id, "
        "asahi_organization_id, asahi_<entity_type>_id, or the plain keys) or in the input "
        "(later occurrences are logged at DEBUG)"
    ),
    EnrichmentReason.TASK_NOT_ENABLED: (
        "FeatureEnrichmentRunnable %r: task type %r is not in the enricher's "
        "enabled_task_types, the prompt goes out without features (later occurrences are "
        "logged at DEBUG)"
    ),
    EnrichmentReason.NO_FEATURES_MAPPED: (
        "FeatureEnrichmentRunnable %r: task type %r maps no features in the enricher's "
        "task_features, the prompt goes out without features (later occurrences are "
        "logged at DEBUG)"
    ),
}
"""Outcomes that usually mean a wiring mistake: WARNING once per (outcome, task type) and
runnable, DEBUG after that."""
_NO_IDENTITY = EnrichmentReason.NO_IDENTITY
_NOT_ENABLED = EnrichmentReason.TASK_NOT_ENABLED
_NOT_MAPPED = EnrichmentReason.NO_FEATURES_MAPPED
_MAX_WARNED = 64
"""Distinct causes a runnable warns about (task types can come from clients: bounded)."""


class _WarnOnce:
    """The causes a runnable already warned about (bounded by ``_MAX_WARNED``)."""

    __slots__ = ("lock", "warned")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.warned: set[Tuple[Any, str]] = set()

    def claim(self, cause: Tuple[Any, str]) -> bool:
        """True for the first caller with a new cause (while fewer than the bound)."""
        with self.lock:
            if cause in self.warned or len(self.warned) >= _MAX_WARNED:
                return False
            self.warned.add(cause)
            return True


class MessagesInput(BaseModel):
    """A ``{"messages": [...]}`` state (e.g. LangGraph's ``MessagesState``)."""

    messages: List[AnyMessage]


class FeatureEnrichmentRunnable(RunnableSerializable[Any, Any]):
    """A LangChain step that enriches the prompt with feature-store context.

    Input: the prompt as a ``str``, or a ``dict`` holding it under ``prompt_key`` with
    optional ``user_id``, ``organization_id``, ``task_type`` and ``context`` (whose
    ``<entity_type>_id`` keys identify the task's other entity types).

    Identity (servers put the authenticated identity in ``config["configurable"]``): an
    identity key present in ``configurable`` is final, whatever the input says;
    ``None`` there means "no identity", never "take the input's". The keys are
    ``user_id``, ``organization_id`` and ``<entity_type>_id`` for every other entity type
    of the enricher's task map (e.g. ``merchant_id``); they are advertised through
    :attr:`config_specs` with the prefix ``asahi_`` (``asahi_user_id``, ...) so that they
    never collide with other steps' specs (``RunnableWithMessageHistory``'s
    ``user_id``). Both spellings are read; when both are present the ``asahi_`` one wins.
    ``task_type`` (or ``asahi_task_type``) in ``configurable`` wins unless it is ``None``.
    A request that ends without features because no identity was given, or because its
    task type is not enabled or maps no features, logs one WARNING per cause (outcome and
    task type) per runnable, DEBUG after that.
    With ``identity_from_input=False`` the input's identities (``user_id``,
    ``organization_id``, the task's ``context["<entity_type>_id"]``) are ignored
    altogether: only ``configurable`` counts.

    Messages: the input may also be a ``PromptValue`` (``ChatPromptTemplate`` or
    ``PromptTemplate`` output), a list of messages, a single message or a
    ``{"messages": [...]}`` state (a dict without ``prompt_key``). The enricher is asked
    with the text of the last human message; only the block is used: it goes into the
    leading system message (appended to an existing one, else a new one first) or, with
    ``placement="human"``, in front of the last human message's text. The caller's
    messages are never changed (copies).

    Output: with ``output="prompt"`` (default) the input's shape, enriched: a ``str`` or
    a prompt dict gives an :class:`EnrichedPrompt` string (so ``runnable | llm`` works),
    a ``StringPromptValue`` an :class:`EnrichedStringPromptValue`, a ``ChatPromptValue``
    an :class:`EnrichedChatPromptValue`, a message list or a single message an
    :class:`EnrichedMessages` list, a ``{"messages": [...]}`` state a copy of the dict
    with ``messages`` replaced by an :class:`EnrichedMessages` list. With
    ``output="dict"`` the input dict (``{}`` for a non-dict message input) plus
    ``enriched_prompt``, ``feature_context`` (the added block alone, for a
    ``{feature_context}`` template slot), ``enrichment`` (the result) and, for message
    inputs, ``messages`` (enriched). With ``output="context"`` the block alone (a
    ``str``, empty when nothing was added), whatever the input shape: for
    ``RunnablePassthrough.assign(feature_context=runnable)``.

    ``invoke`` / ``ainvoke`` / ``batch`` / ``abatch`` each give every input its own
    callback run; a batch of N inputs is one ``enrich_batch`` call, i.e. one backend
    batch fetch per entity type. A store that is down degrades to the original prompt
    (the enricher's fallback); a malformed input fails only that input
    (``return_exceptions=True`` returns the error in its place).

    Args:
        enricher: the :class:`~asahi_features.enricher.FeatureEnricher` to use.
        monitor: optional :class:`~asahi_features.monitor.FeatureMonitor` to record every
            result in (skipped when it is the enricher's own monitor, which records).
        prompt_key: the dict key of the prompt (default ``"prompt"``).
        output: ``"prompt"``, ``"dict"`` or ``"context"``.
        placement: where the block goes for message inputs: ``"system"`` (default) or
            ``"human"`` (in front of the last human message's text).
        task_type: the task type when neither the config nor the input gives one.
        identity_from_input: read identities from the input when ``configurable`` does
            not have them (default). ``False`` for servers whose input comes from
            clients: identities then come from ``configurable`` only.

    Raises:
        TypeError: (per input) the input is none of the shapes above.

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> runnable = FeatureEnrichmentRunnable(enricher)  # doctest: +SKIP
        >>> chain = runnable | FakeListChatModel(responses=["ok"])  # doctest: +SKIP
        >>> chain.invoke("Recommend a product",  # doctest: +SKIP
        ...              config={"configurable": {"user_id": "u_0001"}})
    """

    enricher: Any
    monitor: Any = None
    prompt_key: str = "prompt"
    output: Literal["prompt", "dict", "context"] = "prompt"
    placement: Literal["system", "human"] = "system"
    task_type: str = "general"
    identity_from_input: bool = True
    name: Optional[str] = "FeatureEnrichment"

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _context_keys: Optional[Dict[str, Tuple[str, ...]]] = PrivateAttr(default=None)
    _specs: List[ConfigurableFieldSpec] = PrivateAttr(default_factory=list)
    _warn_once: ClassVar[_WarnOnce]  # per instance, in __dict__ (see __init__)

    def __init__(self, enricher: Any = None, **kwargs: Any) -> None:
        if enricher is None:
            raise TypeError("FeatureEnrichmentRunnable needs an enricher (a FeatureEnricher)")
        super().__init__(enricher=enricher, **kwargs)
        self._context_keys = _context_id_keys(enricher)
        every = sorted({key for keys in (self._context_keys or {}).values() for key in keys})
        self._specs = _config_specs(every) if every else _CONFIG_SPECS
        # A plain instance attribute, not a pydantic private one (those cost microseconds
        # per read, and _note runs on every request that ends without features).
        object.__setattr__(self, "_warn_once", _WarnOnce())

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """Not serializable: it holds a live enricher and store client."""
        return False

    @property
    def config_specs(self) -> List[ConfigurableFieldSpec]:
        """``asahi_user_id``, ``asahi_organization_id``, ``asahi_task_type`` and
        ``asahi_<entity_type>_id`` for every other entity type of the enricher's task
        map, in ``configurable`` (the plain keys are read too, not advertised)."""
        return list(self._specs)

    @property
    def InputType(self) -> Any:
        """Every accepted input shape (so that a playground can render a form)."""
        optional: Any = (Optional[str], None)
        fields: Dict[str, Any] = {
            self.prompt_key: (str, ...),
            "user_id": optional,
            "organization_id": optional,
            "task_type": optional,
            "context": (Optional[Dict[str, Any]], None),
        }
        prompt_dict = create_model("FeatureEnrichmentInput", **fields)
        return Union[
            str,
            prompt_dict,
            StringPromptValue,
            ChatPromptValueConcrete,
            List[AnyMessage],
            AnyMessage,
            MessagesInput,
        ]

    @property
    def OutputType(self) -> Any:
        """``dict`` for ``output="dict"``, else ``str`` (the output of ``output="context"``,
        and of ``output="prompt"`` for str and dict inputs; message inputs keep their
        shape, see the class docs)."""
        return dict if self.output == "dict" else str

    def _note(self, result: EnrichmentResult) -> None:
        """WARNING once per (outcome, task type), DEBUG after that (see the class docs)."""
        reason = result.reason
        task = str(result.task_type)[:80]
        cause = (reason, task)
        state = self._warn_once
        if cause in state.warned or not state.claim(cause):
            logger.debug(_WARN_REASONS[reason], self.name, task)
            return
        logger.warning(_WARN_REASONS[reason], self.name, task)

    # -- input and output -------------------------------------------------------------

    def _request(self, input: Any, config: Optional[RunnableConfig]) -> EnrichmentTuple:
        return self._request_with(input, _configurable(config), self._context_keys)

    def _request_with(
        self,
        input: Any,
        configurable: Mapping[str, Any],
        by_task: Optional[Dict[str, Tuple[str, ...]]],
    ) -> EnrichmentTuple:
        """The request of one input, identity from ``configurable`` first.

        ``by_task`` is ``self._context_keys``, read once by the caller (a pydantic
        private attribute costs microseconds per read).
        """
        if type(input) is dict or (not isinstance(input, str) and isinstance(input, Mapping)):
            prompt: Any = input.get(self.prompt_key)
            if not isinstance(prompt, str):
                messages = _messages_of(input, self.prompt_key) if prompt is None else None
                if messages is None:
                    what = "missing" if prompt is None else f"a {type(prompt).__name__}"
                    raise TypeError(
                        f"FeatureEnrichmentRunnable: the prompt under key {self.prompt_key!r} "
                        f"is {what}; expected a str, or a 'messages' list of messages "
                        f"(input keys: {sorted(map(str, input))})"
                    )
                prompt = _last_human_text(messages)
            given: Mapping[str, Any] = input
        elif isinstance(input, str):
            prompt = input
            given = _NOTHING
        else:
            if isinstance(input, StringPromptValue):
                prompt = input.text
            else:
                messages = _messages_of(input, self.prompt_key)
                if messages is None:
                    raise TypeError(
                        "FeatureEnrichmentRunnable expects a str prompt or a dict with the "
                        f"prompt under {self.prompt_key!r}, a PromptValue, a list of messages, "
                        "a message or a {'messages': [...]} dict, got "
                        f"{type(input).__name__}"
                    )
                prompt = _last_human_text(messages)
            given = _NOTHING
        ids = given if self.identity_from_input else _NOTHING
        user_id = _pick(configurable, ids, "user_id")
        organization_id = _pick(configurable, ids, "organization_id")
        task_type = _pick_task(configurable, given) or self.task_type
        context = given.get("context")
        if context is not None:
            if not isinstance(context, Mapping):
                raise TypeError(
                    "FeatureEnrichmentRunnable: 'context' must be a dict, got "
                    f"{type(context).__name__}"
                )
            context = dict(context)
        if by_task is None:  # an enricher without a task map: any *_id may be an identity
            if context and not self.identity_from_input:
                for key in [k for k in context if isinstance(k, str) and k.endswith("_id")]:
                    del context[key]
        else:
            keys = by_task.get(task_type)
            if keys:
                context = self._pin(context, configurable, keys)
        return _make_request((prompt, user_id, organization_id, task_type, context))

    def _pin(
        self,
        context: Optional[Dict[str, Any]],
        configurable: Mapping[str, Any],
        keys: Tuple[str, ...],
    ) -> Optional[Dict[str, Any]]:
        """The context (a private copy) with the task's other identities settled:
        ``configurable`` is final where it has the key, the input counts otherwise
        (unless ``identity_from_input`` is off)."""
        from_input = self.identity_from_input
        for key in keys:
            value = _configured(configurable, key)
            if value is _ABSENT:
                if from_input:
                    continue
                value = None
            if value is None:
                if context:
                    context.pop(key, None)
            else:
                if context is None:
                    context = {}
                context[key] = _as_id(value)
        return context

    def _output(self, input: Any, result: EnrichmentResult) -> Any:
        if self._records_itself():
            try:
                self.monitor.record_enrichment(result)
            except Exception:  # a monitor bug must never fail the chain
                logger.exception("monitor.record_enrichment failed")
        output = self.output
        if output == "context":
            return result.feature_context
        if isinstance(input, StringPromptValue):
            if output == "prompt":
                value = EnrichedStringPromptValue(text=result.enriched_prompt)
                value._enrichment = result
                return value
            input = input.text
        messages = None if isinstance(input, str) else _messages_of(input, self.prompt_key)
        if messages is not None:
            placed = EnrichedMessages(
                _place(messages, result.feature_context.strip(), self.placement), result
            )
            if output == "prompt":
                if isinstance(input, ChatPromptValue):
                    chat = EnrichedChatPromptValue(messages=list(placed))
                    chat._enrichment = result
                    return chat
                if isinstance(input, Mapping):
                    state = dict(input)
                    state["messages"] = placed
                    return state
                return placed
        elif output == "prompt":
            return EnrichedPrompt(result.enriched_prompt, result)
        out: Dict[str, Any]
        if isinstance(input, Mapping):
            out = dict(input)
        elif messages is not None:
            out = {}
        else:
            out = {self.prompt_key: input}
        if messages is not None:
            out["messages"] = placed
        out["enriched_prompt"] = result.enriched_prompt
        out["feature_context"] = result.feature_context
        out[ENRICHMENT_KEY] = result
        return out

    # -- single input ------------------------------------------------------------------

    def _invoke(
        self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        r = self._request(input, config)
        result = self.enricher.enrich(
            r.prompt,
            user_id=r.user_id,
            organization_id=r.organization_id,
            task_type=r.task_type,
            context=r.context,
        )
        reason = result.reason
        if reason is _NO_IDENTITY or reason is _NOT_ENABLED or reason is _NOT_MAPPED:
            self._note(result)
        if run_manager.handlers:
            _mark_produced(result)
        return self._output(input, result)

    async def _ainvoke(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        r = self._request(input, config)
        result = await self.enricher.aenrich(
            r.prompt,
            user_id=r.user_id,
            organization_id=r.organization_id,
            task_type=r.task_type,
            context=r.context,
        )
        reason = result.reason
        if reason is _NO_IDENTITY or reason is _NOT_ENABLED or reason is _NOT_MAPPED:
            self._note(result)
        if run_manager.handlers:
            _mark_produced(result)
        return self._output(input, result)

    def invoke(self, input: Any, config: Optional[RunnableConfig] = None, **kwargs: Any) -> Any:
        """Enrich one input (one callback run). See the class docs for input and output."""
        return self._call_with_config(self._invoke, input, config)

    async def ainvoke(
        self, input: Any, config: Optional[RunnableConfig] = None, **kwargs: Any
    ) -> Any:
        """Async :meth:`invoke`."""
        return await self._acall_with_config(self._ainvoke, input, config)

    # -- batches -----------------------------------------------------------------------

    def _prepare(
        self, inputs: List[Any], configs: List[RunnableConfig]
    ) -> tuple[List[Any], List[EnrichmentTuple], List[int]]:
        outputs: List[Any] = [None] * len(inputs)
        requests: List[EnrichmentTuple] = []
        positions: List[int] = []
        add_request = requests.append
        add_position = positions.append
        last_config: Any = None
        configurable: Mapping[str, Any] = _NOTHING
        by_task = self._context_keys
        for i, (input, config) in enumerate(zip(inputs, configs, strict=True)):
            if config is not last_config:  # one shared config in the common case
                last_config = config
                configurable = _configurable(config)
            try:
                add_request(self._request_with(input, configurable, by_task))
            except Exception as exc:
                outputs[i] = exc
            else:
                add_position(i)
        return outputs, requests, positions

    def _assemble(
        self,
        inputs: List[Any],
        outputs: List[Any],
        positions: List[int],
        results: Sequence[EnrichmentResult],
        observed: bool,
    ) -> List[Any]:
        if observed:  # runs that callback handlers see: vouch for these results
            for result in results:
                _mark_produced(result)
        if self.output == "prompt" and not self._records_itself():
            key = self.prompt_key
            for i, result in zip(positions, results, strict=True):
                reason = result.reason
                if reason is _NO_IDENTITY or reason is _NOT_ENABLED or reason is _NOT_MAPPED:
                    self._note(result)
                input = inputs[i]
                if type(input) is str or (type(input) is dict and key in input):
                    outputs[i] = EnrichedPrompt(result.enriched_prompt, result)
                else:
                    outputs[i] = self._output(input, result)
            return outputs
        for i, result in zip(positions, results, strict=True):
            if result.reason in _WARN_REASONS:
                self._note(result)
            outputs[i] = self._output(inputs[i], result)
        return outputs

    def _records_itself(self) -> bool:
        """True when this runnable records results in its own monitor (one the enricher
        does not already record in)."""
        monitor = self.monitor
        return monitor is not None and monitor is not getattr(self.enricher, "monitor", None)

    def _batch(
        self,
        inputs: List[Any],
        run_manager: List[CallbackManagerForChainRun],
        config: List[RunnableConfig],
    ) -> List[Any]:
        outputs, requests, positions = self._prepare(inputs, config)
        enricher = self.enricher
        results: Sequence[EnrichmentResult] = []
        if not requests:
            pass
        elif isinstance(enricher, FeatureEnricher):
            results = enricher.enrich_requests(requests)
        else:  # any object with the enricher's batch method
            results = enricher.enrich_batch([_as_request(r) for r in requests])
        return self._assemble(inputs, outputs, positions, results, bool(run_manager))

    async def _abatch(
        self,
        inputs: List[Any],
        run_manager: List[AsyncCallbackManagerForChainRun],
        config: List[RunnableConfig],
    ) -> List[Any]:
        outputs, requests, positions = self._prepare(inputs, config)
        enricher = self.enricher
        results: Sequence[EnrichmentResult] = []
        if not requests:
            pass
        elif isinstance(enricher, FeatureEnricher):
            results = await enricher.aenrich_requests(requests)
        else:
            results = await enricher.aenrich_batch([_as_request(r) for r in requests])
        return self._assemble(inputs, outputs, positions, results, bool(run_manager))

    def batch(
        self,
        inputs: List[Any],
        config: Optional[Union[RunnableConfig, List[RunnableConfig]]] = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> List[Any]:
        """Enrich many inputs with one ``enrich_batch`` call; one callback run per input.

        Args:
            inputs: prompts or dicts (see the class docs).
            config: one config for all inputs or one per input (identity per input).
            return_exceptions: return an input's error in its place instead of raising.
        """
        inputs = list(inputs)
        if inputs and not _observed(config, len(inputs)):
            return _unobserved(self._batch_direct(inputs, config), return_exceptions)
        return self._batch_with_config(
            self._batch, inputs, config, return_exceptions=return_exceptions
        )

    async def abatch(
        self,
        inputs: List[Any],
        config: Optional[Union[RunnableConfig, List[RunnableConfig]]] = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> List[Any]:
        """Async :meth:`batch` (one ``aenrich_batch`` call)."""
        inputs = list(inputs)
        if inputs and not _observed(config, len(inputs)):
            configs = get_config_list(config, len(inputs))
            try:
                outputs = await self._abatch(inputs, [], configs)
            except Exception as exc:
                outputs = [exc] * len(inputs)
            return _unobserved(outputs, return_exceptions)
        return await self._abatch_with_config(
            self._abatch, inputs, config, return_exceptions=return_exceptions
        )

    def _batch_direct(
        self, inputs: List[Any], config: Optional[Union[RunnableConfig, List[RunnableConfig]]]
    ) -> List[Any]:
        # Only ``configurable`` is read from the configs here (no runs are created), so
        # one shared config needs no per-input copies.
        configs: List[RunnableConfig] = (
            get_config_list(config, len(inputs))
            if isinstance(config, list)
            else [ensure_config(config)] * len(inputs)
        )
        try:
            return self._batch(inputs, [], configs)
        except Exception as exc:
            return [exc] * len(inputs)


def _as_request(request: EnrichmentTuple) -> EnrichmentRequest:
    return EnrichmentRequest.model_construct(**request._asdict())


def _no_handlers(callbacks: Any) -> bool:
    if callbacks is None:
        return True
    if isinstance(callbacks, list):
        return not callbacks
    return not getattr(callbacks, "handlers", True)


def _observed(config: Optional[Union[RunnableConfig, List[RunnableConfig]]], n: int) -> bool:
    """Would any callback handler see the per-input runs of a batch?

    No handler in any config and none added globally (tracing, debug, context hooks):
    the runs would be invisible, so the batch skips creating them.
    """
    configs = config if isinstance(config, list) else [config or {}]
    if not all(_no_handlers(c.get("callbacks")) for c in configs):
        return True
    return bool(get_callback_manager_for_config(ensure_config(configs[0])).handlers)


def _unobserved(outputs: List[Any], return_exceptions: bool) -> List[Any]:
    if not return_exceptions:
        for out in outputs:
            if isinstance(out, Exception):
                raise out
    return outputs


# -- finding enrichments in runs --------------------------------------------------------


def _enrichment_in(value: Any) -> Optional[EnrichmentResult]:
    if isinstance(
        value,
        (EnrichedPrompt, EnrichedMessages, EnrichedChatPromptValue, EnrichedStringPromptValue),
    ):
        return value.enrichment
    if isinstance(value, EnrichmentResult):
        return value
    if isinstance(value, Mapping) and "enrichment_id" in value and "enriched_prompt" in value:
        try:  # a tracer that serialised the output
            return EnrichmentResult.model_validate(value)
        except Exception:
            return None
    return None


def _enrichment_of_outputs(outputs: Any) -> Optional[EnrichmentResult]:
    if not isinstance(outputs, Mapping):
        return _enrichment_in(outputs)
    found = _enrichment_in(outputs.get(ENRICHMENT_KEY))
    if found is None:
        found = _enrichment_in(outputs.get("output"))
    if found is None:  # a {"messages": [...]} state
        found = _enrichment_in(outputs.get("messages"))
    return found


def find_enrichments(run: Any) -> List[EnrichmentResult]:
    """Every enrichment-like output in a finished run tree (the run and its
    ``child_runs``).

    Works on LangChain tracer runs and on the runs returned by ``langsmith.evaluate``.
    Each enrichment appears once (by ``enrichment_id``), in the order found. This reads
    what the outputs *say*: any step can return something that looks like a result.
    The recording helpers of this module (the handler, :func:`evaluate_runs`,
    :func:`record_langsmith_results`, :func:`evaluate_offline`) record only results a
    :class:`FeatureEnrichmentRunnable` of this process produced.
    """
    found: Dict[str, EnrichmentResult] = {}
    for result in _outputs_in_tree(run):
        found.setdefault(result.enrichment_id, result)
    return list(found.values())


def _outputs_in_tree(run: Any) -> Iterable[EnrichmentResult]:
    """Every enrichment-like output of a run tree, depth first, repeats included."""
    stack = [run]
    while stack:
        node = stack.pop()
        result = _enrichment_of_outputs(getattr(node, "outputs", None))
        if result is not None:
            yield result
        stack.extend(reversed(list(getattr(node, "child_runs", None) or [])))


# -- scores -----------------------------------------------------------------------------


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _scores_of(outcome: Any, default_key: str) -> List[tuple[str, float]]:
    """(key, score) pairs from what an evaluator returned (numbers, dicts, results)."""
    if outcome is None:
        return []
    number = _number(outcome)
    if number is not None:
        return [(default_key, number)]
    if isinstance(outcome, Mapping):
        if "results" in outcome and "score" not in outcome:
            return _scores_of(list(outcome["results"]), default_key)
        score = _number(outcome.get("score"))
        return [(str(outcome.get("key") or default_key), score)] if score is not None else []
    if isinstance(outcome, (list, tuple)):
        pairs: List[tuple[str, float]] = []
        for item in outcome:
            pairs.extend(_scores_of(item, default_key))
        return pairs
    if hasattr(outcome, "score"):  # langsmith EvaluationResult and alike
        score = _number(outcome.score)
        key = getattr(outcome, "key", None) or default_key
        return [(str(key), score)] if score is not None else []
    return []


_NAMED_ARGS = frozenset({"run", "example", "inputs", "outputs", "reference_outputs"})


class _Scorer:
    """Calls one evaluator the way LangSmith would and returns (key, score) pairs."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator: Any = evaluator
        self.native = callable(getattr(evaluator, "evaluate_run", None))
        if not self.native and not callable(evaluator):
            raise TypeError(
                f"an evaluator must be a langsmith RunEvaluator or a callable, "
                f"got {type(evaluator).__name__}"
            )
        self.key = str(getattr(evaluator, "__name__", None) or type(evaluator).__name__)
        self.named: Optional[List[str]] = None
        self.arity = 1
        if not self.native:
            params = [
                p
                for p in inspect.signature(evaluator).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            ]
            names = [p.name for p in params]
            if names and set(names) <= _NAMED_ARGS and names not in (["run"], ["run", "example"]):
                self.named = names
            self.arity = 2 if len(params) >= 2 else 1

    def __call__(self, run: Any, example: Any) -> List[tuple[str, float]]:
        if self.native:
            outcome = self.evaluator.evaluate_run(run, example)
        elif self.named is not None:
            values = {
                "run": run,
                "example": example,
                "inputs": getattr(run, "inputs", None),
                "outputs": getattr(run, "outputs", None),
                "reference_outputs": getattr(example, "outputs", None),
            }
            outcome = self.evaluator(**{name: values[name] for name in self.named})
        elif self.arity == 2:
            outcome = self.evaluator(run, example)
        else:
            outcome = self.evaluator(run)
        return _scores_of(outcome, self.key)


def _quality(pairs: Sequence[tuple[str, float]], key: Optional[str]) -> Optional[float]:
    values = [score for k, score in pairs if key is None or k == key]
    return sum(values) / len(values) if values else None


@dataclass
class RunQuality:
    """The quality recorded for one run."""

    run_id: str
    """Id of the (root) run that was scored."""
    score: Optional[float]
    """The recorded quality (mean of the selected scores); ``None`` when none applied."""
    enrichment_ids: List[str] = field(default_factory=list)
    """Enrichments of the run that the score was given to."""
    scores: Dict[str, float] = field(default_factory=dict)
    """Every score the evaluators gave, by key (the last one of a repeated key)."""
    recorded: int = 0
    """How many enrichments accepted the score (``FeatureMonitor.record_quality``)."""


def _record(monitor: Any, enrichments: Sequence[EnrichmentResult], score: Optional[float]) -> int:
    if score is None:
        return 0
    recorded = 0
    for result in enrichments:
        try:
            monitor.record_enrichment(result)  # idempotent: makes the id known
            if monitor.record_quality(result.enrichment_id, score):
                recorded += 1
        except Exception:
            logger.exception("recording quality for enrichment %s failed", result.enrichment_id)
    return recorded


def _produced_only(found: Iterable[EnrichmentResult], run_id: str) -> List[EnrichmentResult]:
    """The runnable's own results among ``found``, once each (look-alikes are dropped
    and logged before deduplication, so a look-alike reusing a real id hides nothing)."""
    kept: Dict[str, EnrichmentResult] = {}
    for candidate in found:
        result = _produced(candidate)
        if result is None:
            logger.debug(
                "run %s: an output looks like enrichment %s but no "
                "FeatureEnrichmentRunnable produced it; not recorded",
                run_id,
                _describe_id(candidate),
            )
        else:
            kept.setdefault(result.enrichment_id, result)
    return list(kept.values())


def _describe_id(candidate: Any) -> str:
    eid = getattr(candidate, "enrichment_id", None)
    return repr(eid[:40]) if isinstance(eid, str) else "(no id)"


def _merge(*groups: Iterable[EnrichmentResult]) -> List[EnrichmentResult]:
    merged: Dict[str, EnrichmentResult] = {}
    for group in groups:
        for result in group:
            merged.setdefault(result.enrichment_id, result)
    return list(merged.values())


# -- the tracer -------------------------------------------------------------------------


class FeatureMonitorCallbackHandler(BaseTracer):
    """Records every enrichment of a chain in a monitor, tied to the chain's root run.

    Attach it to any chain that contains a :class:`FeatureEnrichmentRunnable` (as a
    callback in the config). Each enrichment step that ends is recorded in ``monitor``
    and remembered under the id of its root run (and its own run id), so that
    :meth:`record_run_quality` (or an evaluator) attaches a quality score to it. With
    ``evaluators``, every finished root run is scored right away.

    Only results that a :class:`FeatureEnrichmentRunnable` produced (the very object it
    returned, found by identity in a weak registry) are recorded. Another step's output
    that merely looks like a result (a dict with the same keys, an ``EnrichmentResult``
    built or copied by hand, an :class:`EnrichedPrompt` wrapping one) is ignored and
    logged at DEBUG, so no step can feed the monitor forged outcomes (e.g. store
    failures that would pause enrichment).

    Runs inline (also in async chains), so evaluators should be quick; slow scoring
    belongs in :func:`evaluate_runs` over :attr:`finished_runs` later. Nothing here
    touches the network.

    Args:
        monitor: the :class:`~asahi_features.monitor.FeatureMonitor` to record into.
        evaluators: LangSmith ``RunEvaluator`` objects or plain functions (see
            :data:`Evaluator`) run on every finished root run.
        key: which evaluator score is the quality (default: the mean of all).
        max_tracked_runs: how many run ids are remembered for late scores (oldest first
            out).
        keep_finished_runs: how many finished root runs :attr:`finished_runs` keeps.

    Example:
        >>> handler = FeatureMonitorCallbackHandler(monitor)  # doctest: +SKIP
        >>> chain.invoke("Hi", config={"callbacks": [handler], "run_id": run_id})  # doctest: +SKIP
        >>> handler.record_run_quality(run_id, 0.9)  # doctest: +SKIP
        1
    """

    name: str = "asahi_features_monitor"
    run_inline: bool = True

    def __init__(
        self,
        monitor: Any,
        *,
        evaluators: Sequence[Evaluator] = (),
        key: Optional[str] = None,
        max_tracked_runs: int = 100_000,
        keep_finished_runs: int = 1_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if max_tracked_runs < 1:
            raise ValueError(f"max_tracked_runs must be at least 1, got {max_tracked_runs}")
        self.monitor = monitor
        self.key = key
        self._scorers = [_Scorer(e) for e in evaluators]
        self._max_tracked = max_tracked_runs
        self._lock = threading.Lock()
        self._by_run: OrderedDict[str, Dict[str, EnrichmentResult]] = OrderedDict()
        self.finished_runs: Deque[Run] = deque(maxlen=max(0, keep_finished_runs))
        """The most recent finished root runs (for :func:`evaluate_runs`)."""
        self.evaluations: Deque[RunQuality] = deque(maxlen=max(0, keep_finished_runs))
        """What the evaluators recorded for the most recent root runs."""
        self.latest_root_run_id: Optional[str] = None
        """Id of the most recently finished root run."""

    # -- tracer hooks ------------------------------------------------------------------

    def _collect(self, run: Run) -> None:
        candidate = _enrichment_of_outputs(run.outputs)
        if candidate is None:
            return
        result = _produced(candidate)
        if result is None:
            logger.debug(
                "run %s (%s): its output looks like an enrichment result but no "
                "FeatureEnrichmentRunnable produced it; not recorded",
                run.id,
                run.name,
            )
            return
        root = str(run.trace_id or run.id)
        eid = result.enrichment_id
        with self._lock:
            new = False
            for run_id in (root, str(run.id)):
                known = self._by_run.get(run_id)
                if known is None:
                    known = self._by_run[run_id] = {}
                    while len(self._by_run) > self._max_tracked:
                        self._by_run.popitem(last=False)
                if eid not in known:
                    known[eid] = result
                    new = True
        if new:
            try:
                self.monitor.record_enrichment(result)
            except Exception:
                logger.exception("monitor.record_enrichment failed")

    def _on_chain_end(self, run: Run) -> None:
        self._collect(run)

    def _persist_run(self, run: Run) -> None:
        # Called when a root run ends, before _on_chain_end of that same run.
        self._collect(run)
        self.latest_root_run_id = str(run.id)
        self.finished_runs.append(run)
        if self._scorers:
            self.evaluations.append(self.evaluate_run(run))

    # -- quality -----------------------------------------------------------------------

    def enrichments_for_run(self, run_id: Any) -> List[EnrichmentResult]:
        """The enrichments recorded under a root run id (or an enrichment step's id)."""
        with self._lock:
            return list(self._by_run.get(str(run_id), {}).values())

    def record_run_quality(self, run_id: Any, score: Any) -> int:
        """Attach a quality score for a run to every enrichment of that run.

        Args:
            run_id: the root run id (e.g. the ``run_id`` you passed in the config), or the
                id of the enrichment step's own run.
            score: a number (higher is better), a bool, or an object with ``.score``.

        Returns:
            How many enrichments accepted the score (0 when the run had none).
        """
        enrichments = self.enrichments_for_run(run_id)
        if not enrichments:
            logger.debug("no enrichment known for run %s", run_id)
        recorded = 0
        for result in enrichments:
            try:
                if self.monitor.record_quality(result.enrichment_id, score):
                    recorded += 1
            except Exception:
                logger.exception("monitor.record_quality failed")
        return recorded

    def evaluate_run(self, run: Any, example: Any = None) -> RunQuality:
        """Score one finished run with this handler's evaluators and record the quality."""
        return _evaluate_one(run, example, self._scorers, self.monitor, self.key, self)


def _evaluate_one(
    run: Any,
    example: Any,
    scorers: Sequence[_Scorer],
    monitor: Any,
    key: Optional[str],
    handler: Optional[FeatureMonitorCallbackHandler],
) -> RunQuality:
    pairs: List[tuple[str, float]] = []
    for scorer in scorers:
        try:
            pairs.extend(scorer(run, example))
        except Exception:
            logger.exception("evaluator %s failed on run %s", scorer.key, getattr(run, "id", "?"))
    return _record_pairs(run, pairs, monitor, key, handler)


def _record_pairs(
    run: Any,
    pairs: Sequence[tuple[str, float]],
    monitor: Any,
    key: Optional[str],
    handler: Optional[FeatureMonitorCallbackHandler],
) -> RunQuality:
    run_id = str(getattr(run, "id", ""))
    known = handler.enrichments_for_run(run_id) if handler is not None else []
    enrichments = _merge(_produced_only(_outputs_in_tree(run), run_id), known)
    score = _quality(pairs, key)
    recorded = _record(monitor, enrichments, score)
    return RunQuality(
        run_id=run_id,
        score=score,
        enrichment_ids=[e.enrichment_id for e in enrichments],
        scores=dict(pairs),
        recorded=recorded,
    )


# -- offline evaluation -----------------------------------------------------------------


def evaluate_runs(
    runs: Iterable[Any],
    evaluators: Sequence[Evaluator],
    monitor: Any,
    *,
    examples: Optional[Sequence[Any]] = None,
    key: Optional[str] = None,
    handler: Optional[FeatureMonitorCallbackHandler] = None,
) -> List[RunQuality]:
    """Score finished runs and record the quality of each run's enrichments. Offline.

    Args:
        runs: finished run trees (e.g. ``handler.finished_runs``, or runs from
            ``langchain_core.tracers.context.collect_runs``).
        evaluators: LangSmith ``RunEvaluator`` objects or plain functions returning a
            score (number, bool, ``{"key", "score"}`` dict or ``EvaluationResult``).
        monitor: the :class:`~asahi_features.monitor.FeatureMonitor`.
        examples: reference examples aligned with ``runs`` (passed to evaluators).
        key: which score is the quality (default: the mean of all scores).
        handler: a handler that saw the runs (adds the enrichments it recorded).

    Returns:
        One :class:`RunQuality` per run.

    Raises:
        TypeError: an evaluator is neither a RunEvaluator nor callable.
        ValueError: ``examples`` is not as long as ``runs``.
    """
    scorers = [_Scorer(e) for e in evaluators]
    run_list = list(runs)
    example_list = list(examples) if examples is not None else [None] * len(run_list)
    if len(example_list) != len(run_list):
        raise ValueError(f"got {len(run_list)} runs but {len(example_list)} examples")
    return [
        _evaluate_one(run, example, scorers, monitor, key, handler)
        for run, example in zip(run_list, example_list, strict=True)
    ]


def record_langsmith_results(
    results: Iterable[Any],
    monitor: Any,
    *,
    key: Optional[str] = None,
    handler: Optional[FeatureMonitorCallbackHandler] = None,
) -> List[RunQuality]:
    """Record the scores of ``langsmith.evaluate(..., upload_results=False)`` in a monitor.

    Each result row (``{"run", "example", "evaluation_results"}``) gives a quality: the
    score named ``key``, or the mean of all numeric scores. It is attached to every
    enrichment found in the row's run tree (and, with ``handler``, those it recorded).

    Args:
        results: the ``ExperimentResults`` (or any iterable of its rows).
        monitor: the :class:`~asahi_features.monitor.FeatureMonitor`.
        key: the evaluator key to use as quality (default: the mean of all).
        handler: a handler attached to the evaluated chain, if any.

    Returns:
        One :class:`RunQuality` per row.
    """
    recorded: List[RunQuality] = []
    for row in results:
        get = row.get if isinstance(row, Mapping) else (lambda k, r=row: getattr(r, k, None))
        run = get("run")
        evaluation = get("evaluation_results")
        pairs = _scores_of(evaluation, "score")
        recorded.append(_record_pairs(run, pairs, monitor, key, handler))
    return recorded


def offline_langsmith_client() -> Any:
    """A ``langsmith.Client`` that never sends anything (for ``langsmith.evaluate``).

    It points at a closed loopback port and samples no run for tracing, so an
    evaluation with ``upload_results=False`` needs no account and opens no connection.
    """
    from langsmith import Client

    return Client(
        api_url="http://127.0.0.1:9",
        api_key="offline",
        auto_batch_tracing=False,
        tracing_sampling_rate=0.0,
    )


def _as_example(item: Any) -> Any:
    if not isinstance(item, Mapping):
        return item
    from langsmith.schemas import Example

    if "inputs" not in item:
        raise ValueError(
            f"an evaluation example dict needs 'inputs' (and optionally 'outputs'), "
            f"got keys {sorted(map(str, item))}"
        )
    return Example(
        id=item.get("id") or uuid.uuid4(),
        dataset_id=item.get("dataset_id") or uuid.uuid4(),
        inputs=dict(item["inputs"]),
        outputs=dict(item["outputs"]) if item.get("outputs") is not None else None,
    )


def evaluate_offline(
    target: Any,
    data: Sequence[Any],
    evaluators: Sequence[Any],
    monitor: Any,
    *,
    key: Optional[str] = None,
    handler: Optional[FeatureMonitorCallbackHandler] = None,
    **kwargs: Any,
) -> List[RunQuality]:
    """Run ``langsmith.evaluate`` fully offline and record the scores in ``monitor``.

    Args:
        target: the chain (or a function of the example inputs) to evaluate.
        data: ``langsmith.schemas.Example`` objects, or dicts with ``inputs`` and
            optional ``outputs`` (reference outputs); no dataset is fetched.
        evaluators: LangSmith evaluators (see ``langsmith.evaluate``).
        monitor: the :class:`~asahi_features.monitor.FeatureMonitor`.
        key: the evaluator key to use as quality (default: the mean of all).
        handler: a handler attached to ``target``, if any.
        **kwargs: passed on to ``langsmith.evaluate`` (default ``max_concurrency=0``).

    Returns:
        One :class:`RunQuality` per example.
    """
    import langsmith

    examples = [_as_example(item) for item in data]
    kwargs.setdefault("max_concurrency", 0)
    kwargs.setdefault("client", offline_langsmith_client())
    with langsmith.tracing_context(enabled=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*upload_results.*")
        results = langsmith.evaluate(
            target, data=examples, evaluators=list(evaluators), upload_results=False, **kwargs
        )
        rows = list(results)
    return record_langsmith_results(rows, monitor, key=key, handler=handler)
