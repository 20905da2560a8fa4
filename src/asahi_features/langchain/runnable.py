"""``FeatureEnrichmentRunnable``: the enrichment step of a chain (single inputs and batches).

One module on purpose (about 570 lines): it is the Runnable protocol of one class
(invoke, ainvoke, batch, abatch, schemas, config specs); input shapes live in
``messages``, batching in ``batching``, identity in ``identity``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import (
    Any,
    ClassVar,
    Dict,
    List,
    Literal,
    Optional,
    Tuple,
    Union,
)

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import AnyMessage
from langchain_core.prompt_values import (
    ChatPromptValue,
    ChatPromptValueConcrete,
    StringPromptValue,
)
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import (
    ensure_config,
    get_config_list,
)
from langchain_core.runnables.utils import ConfigurableFieldSpec
from pydantic import ConfigDict, PrivateAttr, create_model

from ..enricher import EnrichmentTuple, FeatureEnricher
from ..models import EnrichmentResult
from ..warn_once import WarnOnce
from .batching import _as_request, _observed, _unobserved
from .identity import (
    _ABSENT,
    _CONFIG_SPECS,
    _NOTHING,
    _as_id,
    _config_specs,
    _configurable,
    _configured,
    _context_id_keys,
    _pick,
    _pick_task,
)
from .messages import (
    ENRICHMENT_KEY,
    EnrichedChatPromptValue,
    EnrichedMessages,
    EnrichedPrompt,
    EnrichedStringPromptValue,
    MessagesInput,
    _last_human_text,
    _messages_of,
    _place,
)
from .notes import _NO_IDENTITY, _NOT_ENABLED, _NOT_MAPPED, _WARN_REASONS
from .provenance import _mark_produced
from .tracing import report_without_values

logger = logging.getLogger("asahi_features.langchain")

_make_request = EnrichmentTuple._make


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
        trace_values: ``False`` (default): callback handlers and tracers see this step's
            output as a :class:`~asahi_features.langchain.tracing.TracedEnrichment`
            (feature names, outcome, counts; no value, no prompt) while the chain gets
            the real output. ``True``: they see the real output. (Later steps' inputs
            carry the block: mask it with
            :func:`~asahi_features.langchain.tracing.feature_anonymizer`.)

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
    trace_values: bool = False
    name: Optional[str] = "FeatureEnrichment"

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _context_keys: Optional[Dict[str, Tuple[str, ...]]] = PrivateAttr(default=None)
    _specs: List[ConfigurableFieldSpec] = PrivateAttr(default_factory=list)
    _warn_once: ClassVar[WarnOnce]  # per instance, in __dict__ (see __init__)

    def __init__(self, enricher: Any = None, **kwargs: Any) -> None:
        if enricher is None:
            raise TypeError("FeatureEnrichmentRunnable needs an enricher (a FeatureEnricher)")
        super().__init__(enricher=enricher, **kwargs)
        self._context_keys = _context_id_keys(enricher)
        every = sorted({key for keys in (self._context_keys or {}).values() for key in keys})
        self._specs = _config_specs(every) if every else _CONFIG_SPECS
        # A plain instance attribute, not a pydantic private one (those cost microseconds
        # per read, and _note runs on every request that ends without features).
        object.__setattr__(self, "_warn_once", WarnOnce())

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
        return self._finish(input, result, run_manager)

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
        return self._finish(input, result, run_manager)

    def _finish(self, input: Any, result: EnrichmentResult, run_manager: Any) -> Any:
        """What follows the fetch, sync and async alike: warn once per cause, vouch for
        the result to the callback handlers (without values unless traced), build the
        output."""
        reason = result.reason
        if reason is _NO_IDENTITY or reason is _NOT_ENABLED or reason is _NOT_MAPPED:
            self._note(result)
        if run_manager.handlers:
            _mark_produced(result)
            if not self.trace_values:
                report_without_values(run_manager, result)
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
        run_managers: Sequence[Any],
    ) -> List[Any]:
        if run_managers:  # runs that callback handlers see: vouch for these results
            hide = not self.trace_values
            for i, result in zip(positions, results, strict=True):
                _mark_produced(result)
                if hide:
                    report_without_values(run_managers[i], result)
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
        return self._assemble(inputs, outputs, positions, results, run_manager)

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
        return self._assemble(inputs, outputs, positions, results, run_manager)

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
