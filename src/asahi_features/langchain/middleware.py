"""``FeatureContextMiddleware``: feature-store context for ``langchain.agents.create_agent``.

The block goes into the system message of each model request (``request.override``), so
it reaches the model but never the agent's message state: checkpoints and history hold no
copy of it. Features are fetched once per agent run (the first model call) and reused by
the following tool-loop turns, unless ``refresh="model_call"``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Dict, Literal, Optional, Tuple

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest
from langchain.agents.middleware.types import ModelCallResult, PrivateStateAttr
from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.messages import SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from typing_extensions import NotRequired

from ..errors import AsahiFeaturesError
from ..models import EnrichmentReason, EnrichmentResult
from ..warn_once import WarnOnce
from .identity import _NOTHING, AgentIdentity, _context_id_keys, agent_identity
from .messages import _last_human_text, _with_block
from .notes import note
from .provenance import _mark_produced
from .tracing import ENRICHMENT_EVENT, TracedEnrichment

logger = logging.getLogger("asahi_features.langchain")

RUN_KEY = "asahi_enrichment_run"
"""Private state key holding an opaque per-run id (a random hex string, never a feature
value): what ties the model calls of one agent run to the one fetch they share."""

Refresh = Literal["run", "model_call"]

_MESSAGES: Dict[Any, str] = {
    EnrichmentReason.NO_IDENTITY: (
        "%s: no identity for task type %r, the agent runs without features. Pass one in "
        "the agent's context (context=Ctx(user_id=...): user_id, organization_id, "
        "<entity_type>_id) or in config['configurable'] (asahi_user_id, ... or the plain "
        "keys) (later occurrences are logged at DEBUG)"
    ),
    EnrichmentReason.TASK_NOT_ENABLED: (
        "%s: task type %r is not in the enricher's enabled_task_types, the agent runs "
        "without features (later occurrences are logged at DEBUG)"
    ),
    EnrichmentReason.NO_FEATURES_MAPPED: (
        "%s: task type %r maps no features in the enricher's task_features, the agent "
        "runs without features (later occurrences are logged at DEBUG)"
    ),
}


class MissingIdentityError(AsahiFeaturesError, LookupError):
    """Raised by :class:`FeatureContextMiddleware` (``require_identity=True``) and the
    features tool when a request names nobody to fetch features for."""


class FeatureContextState(AgentState[Any]):
    """The agent state the middleware adds to: one private key (never in the agent's
    input or output schema) holding an opaque id of the current run."""

    asahi_enrichment_run: NotRequired[Annotated[Optional[str], PrivateStateAttr]]


def _observed_config() -> Optional[RunnableConfig]:
    """The running node's config when callback handlers listen (they get the result as
    an ``asahi_features.enrichment`` event), else ``None`` (nothing to announce)."""
    config = var_child_runnable_config.get()
    if not config:
        return None
    callbacks = config.get("callbacks")
    if callbacks is None or (isinstance(callbacks, list) and not callbacks):
        return None
    if not isinstance(callbacks, list) and not getattr(callbacks, "handlers", None):
        return None
    return config


def _configurable_now() -> Mapping[str, Any]:
    """``configurable`` of the running graph node (empty outside one): what
    ``langgraph.config.get_config()`` reads, without its exception outside a run."""
    config = var_child_runnable_config.get()
    return (config.get("configurable") if config else None) or _NOTHING


class FeatureContextMiddleware(AgentMiddleware[FeatureContextState, Any, Any]):
    """Adds the user's feature context to the system prompt of an agent's model calls.

    Use with ``langchain.agents.create_agent(model, tools, middleware=[...],
    context_schema=...)``. Identity comes from ``runtime.context`` (the ``context=`` of
    ``agent.invoke``: attribute or key ``user_id``, ``organization_id`` and
    ``<entity_type>_id`` for the task's other entity types, each also as
    ``asahi_<key>``), then from ``config["configurable"]`` (``asahi_user_id``, then
    ``user_id``, ...). Nothing the model says is ever read as an identity.

    The block is merged into the agent's own system prompt (after it) for the model
    request only (``request.override(system_message=...)``): the agent's messages, and
    so its checkpoints and history, never hold a copy. ``wrap_model_call`` calls
    ``enricher.enrich``; ``awrap_model_call`` awaits ``enricher.aenrich`` (the event loop
    is never blocked). Features are fetched once per agent run and reused by its later
    model calls (``refresh="model_call"`` fetches for every call). A store that fails
    degrades to no block; the agent still runs.

    A run without identity raises :class:`MissingIdentityError` with
    ``require_identity=True``; otherwise it runs without features and logs a WARNING once
    per cause (as do unknown or unmapped task types), DEBUG after that. Every result is
    recorded in the enricher's monitor (by the enricher) and in ``monitor`` when that is
    another one. When callback handlers listen, each fetch is announced as the custom
    event ``asahi_features.enrichment`` (a :class:`~.tracing.TracedEnrichment`: names,
    outcome, counts, no values), so that a
    :class:`~asahi_features.langchain.FeatureMonitorCallbackHandler` ties it to the
    agent's root run and ``record_run_quality(run_id, score)`` scores it.

    Args:
        enricher: the :class:`~asahi_features.enricher.FeatureEnricher`.
        task_type: the task type unless ``runtime.context`` or ``configurable`` gives one
            (``task_type`` / ``asahi_task_type``).
        refresh: ``"run"`` (default: one fetch per agent run) or ``"model_call"``.
        require_identity: raise instead of running without features.
        monitor: an extra :class:`~asahi_features.monitor.FeatureMonitor` to record in.
        max_cached_runs: how many in-flight runs keep their result in memory (oldest out;
            a run whose result was dropped fetches again).

    Raises:
        TypeError: no enricher.
        ValueError: a bad ``refresh`` or ``max_cached_runs``.
    """

    state_schema = FeatureContextState

    def __init__(
        self,
        enricher: Any,
        *,
        task_type: str = "general",
        refresh: Refresh = "run",
        require_identity: bool = False,
        monitor: Any = None,
        max_cached_runs: int = 10_000,
    ) -> None:
        super().__init__()
        if enricher is None or not callable(getattr(enricher, "aenrich", None)):
            raise TypeError(
                "FeatureContextMiddleware needs an enricher (a FeatureEnricher, with enrich "
                f"and aenrich), got {type(enricher).__name__}"
            )
        if refresh not in ("run", "model_call"):
            raise ValueError(f"refresh must be 'run' or 'model_call', got {refresh!r}")
        if not isinstance(max_cached_runs, int) or max_cached_runs < 1:
            raise ValueError(f"max_cached_runs must be an int >= 1, got {max_cached_runs!r}")
        self.enricher = enricher
        self.task_type = task_type
        self.refresh = refresh
        self.require_identity = require_identity
        self.monitor = monitor
        self.max_cached_runs = max_cached_runs
        self._by_task = _context_id_keys(enricher)
        self._results: OrderedDict[str, EnrichmentResult] = OrderedDict()
        self._lock = threading.Lock()
        self._warned = WarnOnce()

    @property
    def cached_runs(self) -> int:
        """How many runs' results are held in memory now (at most ``max_cached_runs``;
        a run's entry goes when the run ends)."""
        with self._lock:
            return len(self._results)

    # -- run boundaries (no I/O: sync and async share them) ---------------------------

    def before_agent(self, state: Any, runtime: Any) -> Optional[Dict[str, Any]]:
        """Give the run a fresh opaque id (so its model calls share one fetch)."""
        if self.refresh == "model_call":
            return None
        return {RUN_KEY: uuid.uuid4().hex}

    async def abefore_agent(self, state: Any, runtime: Any) -> Optional[Dict[str, Any]]:
        """Async :meth:`before_agent`."""
        return self.before_agent(state, runtime)

    def after_agent(self, state: Any, runtime: Any) -> Optional[Dict[str, Any]]:
        """Forget the run's result (memory stays bounded by in-flight runs)."""
        key = state.get(RUN_KEY) if isinstance(state, Mapping) else None
        if key is not None:
            with self._lock:
                self._results.pop(key, None)
        return None

    async def aafter_agent(self, state: Any, runtime: Any) -> Optional[Dict[str, Any]]:
        """Async :meth:`after_agent`."""
        return self.after_agent(state, runtime)

    # -- model calls ------------------------------------------------------------------

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelCallResult[Any]],
    ) -> ModelCallResult[Any]:
        """Add the block to the system message, fetching with ``enricher.enrich``."""
        key, result = self._known(request)
        if result is None:
            who = self._who(request)
            result = self.enricher.enrich(**who.enrich_kwargs(_last_human_text(request.messages)))
            config = self._keep(key, result)
            if config is not None:
                try:
                    dispatch_custom_event(
                        ENRICHMENT_EVENT, TracedEnrichment.of(result), config=config
                    )
                except RuntimeError:  # no parent run to tie it to: nothing to announce
                    logger.debug("enrichment %s not announced (no run)", result.enrichment_id)
        return handler(_with_context(request, result))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelCallResult[Any]]],
    ) -> ModelCallResult[Any]:
        """Async :meth:`wrap_model_call` (awaits ``enricher.aenrich``)."""
        key, result = self._known(request)
        if result is None:
            who = self._who(request)
            kwargs = who.enrich_kwargs(_last_human_text(request.messages))
            result = await self.enricher.aenrich(**kwargs)
            config = self._keep(key, result)
            if config is not None:
                try:
                    await adispatch_custom_event(
                        ENRICHMENT_EVENT, TracedEnrichment.of(result), config=config
                    )
                except RuntimeError:  # no parent run to tie it to: nothing to announce
                    logger.debug("enrichment %s not announced (no run)", result.enrichment_id)
        return await handler(_with_context(request, result))

    # -- shared steps -----------------------------------------------------------------

    def _known(
        self, request: ModelRequest[Any]
    ) -> Tuple[Optional[str], Optional[EnrichmentResult]]:
        """The run's id and its result when this run already fetched."""
        if self.refresh == "model_call":
            return None, None
        state = request.state
        key = state.get(RUN_KEY) if isinstance(state, Mapping) else None
        if not isinstance(key, str):
            return None, None
        with self._lock:
            return key, self._results.get(key)

    def _who(self, request: ModelRequest[Any]) -> AgentIdentity:
        runtime = request.runtime
        who = agent_identity(
            getattr(runtime, "context", None),
            _configurable_now(),
            self.task_type,
            self._by_task,
        )
        if who.missing and self.require_identity:
            raise MissingIdentityError(
                f"{self.name}: no identity for task type {who.task_type!r} and "
                "require_identity=True. Pass user_id, organization_id or <entity_type>_id "
                "in the agent's context (agent.invoke(..., context=...)) or in "
                "config['configurable'] (asahi_user_id, asahi_organization_id, ...)"
            )
        return who

    def _keep(self, key: Optional[str], result: EnrichmentResult) -> Optional[RunnableConfig]:
        """Log, record and cache a fresh result; the config to announce it with when
        callback handlers listen (the result is then vouched for), else ``None``."""
        note(self._warned, _MESSAGES, self.name, result)
        monitor = self.monitor
        if monitor is not None and monitor is not getattr(self.enricher, "monitor", None):
            try:
                monitor.record_enrichment(result)
            except Exception:  # a monitor bug must never fail the agent
                logger.exception("monitor.record_enrichment failed")
        if key is not None:
            with self._lock:
                self._results[key] = result
                while len(self._results) > self.max_cached_runs:
                    self._results.popitem(last=False)
        config = _observed_config()
        if config is not None:
            _mark_produced(result)
        return config


def _with_context(request: ModelRequest[Any], result: EnrichmentResult) -> ModelRequest[Any]:
    """The request with the block after the agent's own system prompt (a new request;
    the agent's state is not touched)."""
    block = result.feature_context.strip()
    if not block:
        return request
    system = request.system_message
    if system is None:
        merged = SystemMessage(content=block)
    else:
        merged = system.model_copy(update={"content": _with_block(system.content, block, False)})
    return request.override(system_message=merged)
