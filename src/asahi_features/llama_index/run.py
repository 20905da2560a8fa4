"""One enrichment as every LlamaIndex component makes it.

The postprocessor, the memory block, the tool and the chat helpers share these steps:
resolve the identity (workflow ``Context`` store, then :func:`feature_context`, then a
component's fixed ids, never mixed), apply the missing-identity policy, apply the holdout
of a monitor the enricher does not consult itself (one attached only through
:class:`FeatureMonitorEventHandler`, or given to the component), call the enricher, then
record, dispatch the event and publish the block for prompt templates. Only the enricher
call differs between the sync and async paths.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Dict, List, Literal, NamedTuple, Optional, Tuple

from ..errors import AsahiFeaturesError
from ..models import EnrichmentReason, EnrichmentResult
from ..warn_once import WarnOnce
from .events import _dispatch, _listeners
from .identity import _CURRENT_REQUEST, FeatureRequest

if TYPE_CHECKING:
    from ..enricher import FeatureEnricher
    from ..monitor import FeatureMonitor
    from .log import EnrichmentLog

logger = logging.getLogger(__name__)

MissingIdentityPolicy = Literal["ignore", "warn", "raise"]
"""What a component does when a request reaches it with no identity at all."""
MISSING_IDENTITY_POLICIES: Tuple[str, ...] = ("ignore", "warn", "raise")
"""Distinct causes a component warns about (task types can come from clients: bounded)."""

_HINT_IN_WORKFLOW = (
    "inside a workflow step: a handler created by agent.run(...) before `with "
    "feature_context(...)` was entered keeps the context it was created in, so the block "
    "cannot reach it. Enter feature_context(...) before calling run(), bind it to the run "
    "with `await request.bind(handler)`, or put the identity in the workflow Context with "
    "`await set_workflow_identity(ctx, user_id=...)`"
)
_HINT_OUTSIDE = (
    "wrap the call in `with feature_context(user_id=...)`, put the identity in the "
    "workflow Context with set_workflow_identity(ctx, ...), or give the component its own "
    "identity"
)


_WIRING: Dict[Any, str] = {
    EnrichmentReason.TASK_NOT_ENABLED: "is not in the enricher's enabled_task_types",
    EnrichmentReason.NO_FEATURES_MAPPED: "maps no features in the enricher's task_features",
}


class MissingIdentityError(AsahiFeaturesError, LookupError):
    """A request reached a component with ``on_missing_identity="raise"`` without any
    identity (no workflow Context identity, no :func:`feature_context`, no fixed ids)."""


class Identity(NamedTuple):
    """The identity one enrichment uses, and where it came from (a tuple: cheap to
    build on the request path)."""

    user_id: Optional[str]
    organization_id: Optional[str]
    task_type: str
    context: Optional[Dict[str, Any]]
    source: str
    """``"workflow"``, ``"request"``, ``"fixed"``, ``"component"``, ``"call"`` or ``"none"``."""

    @property
    def missing(self) -> bool:
        """True when the request brought no identity at all."""
        return self.source == "none"

    def args(self) -> Tuple[Optional[str], Optional[str], str, Optional[Dict[str, Any]]]:
        """The enricher's positional arguments after the prompt."""
        return self[:4]  # type: ignore[return-value]


def _has_identity(request: Optional[FeatureRequest]) -> bool:
    return request is not None and bool(
        request.user_id or request.organization_id or request.context
    )


def resolve_identity(
    workflow: Optional[FeatureRequest],
    request: Optional[FeatureRequest],
    *,
    task_type: str,
    user_id: Optional[str] = None,
    organization_id: Optional[str] = None,
    fixed_source: str = "fixed",
) -> Identity:
    """The identity of one request: the workflow ``Context`` store's, else the
    :func:`feature_context` block's, else the fixed ``user_id`` / ``organization_id``.

    Sources are never mixed: a request that sets only an organisation gets no user,
    whatever fixed ``user_id`` the shared component carries. The task type is the first
    one set among the same sources, else ``task_type``.
    """
    task = (
        (workflow.task_type if workflow is not None else None)
        or (request.task_type if request is not None else None)
        or task_type
    )
    for source, given in (("workflow", workflow), ("request", request)):
        if given is not None and _has_identity(given):
            return Identity(given.user_id, given.organization_id, task, given.context, source)
    if user_id or organization_id:
        return Identity(user_id, organization_id, task, None, fixed_source)
    return Identity(None, None, task, None, "none")


_CURRENT_BLOCK: ContextVar[Tuple[Optional[FeatureRequest], str]] = ContextVar(
    "asahi_features_llama_index_block", default=(None, "")
)
"""The block of the latest enrichment in this context, for prompt templates, with the
feature_context request it was made in."""


def current_block() -> str:
    """The feature block published by the latest enrichment in this context ("" if none).

    Only a block made inside the current :func:`feature_context` block counts (or, outside
    any, one made outside any): a block never outlives the request it was made for.
    """
    request, block = _CURRENT_BLOCK.get()
    if block and request is not _CURRENT_REQUEST.get():
        return ""
    return block


def check_policy(value: str) -> str:
    """``value`` if it is a missing-identity policy, else a ValueError naming the choices."""
    if value not in MISSING_IDENTITY_POLICIES:
        raise ValueError(
            f"on_missing_identity must be one of {', '.join(MISSING_IDENTITY_POLICIES)}, "
            f"got {value!r}"
        )
    return value


def warn_unknown_task(enricher: Any, task_type: str, owner: str) -> None:
    """WARNING at construction when ``task_type`` cannot enrich with this enricher."""
    config = getattr(enricher, "config", None)
    enabled = getattr(config, "enabled_task_types", None)
    if enabled is None:
        return
    if task_type not in enabled:
        logger.warning(
            "%s: task_type %r is not in the enricher's enabled_task_types (%s): requests "
            "with this task type get no features",
            owner,
            task_type,
            ", ".join(sorted(map(str, enabled))) or "none",
        )
    elif not any(getattr(config, "task_features", {}).get(task_type, {}).values()):
        logger.warning(
            "%s: task_type %r maps no features in the enricher's task_features: requests "
            "with this task type get no features",
            owner,
            task_type,
        )


class Enrichment:
    """The steps around one enricher call, shared by every component (see module docs).

    Args:
        enricher: the :class:`~asahi_features.enricher.FeatureEnricher`.
        owner: the component's class name (logs and events).
        monitor: a monitor given to the component (recorded in unless it is the
            enricher's own, and its holdout applied when the enricher has none).
        on_missing_identity: ``"ignore"``, ``"warn"`` (default) or ``"raise"``.
        event_texts: put the query and the block in the instrumentation events.
        log: where to remember the enrichment by query (optional).
    """

    __slots__ = ("enricher", "event_texts", "log", "monitor", "on_missing", "owner", "warned")

    def __init__(
        self,
        enricher: FeatureEnricher,
        owner: str,
        *,
        monitor: Optional[FeatureMonitor] = None,
        on_missing_identity: str = "warn",
        event_texts: bool = False,
        log: Optional[EnrichmentLog] = None,
    ) -> None:
        if not (hasattr(enricher, "enrich") and hasattr(enricher, "aenrich")):
            raise TypeError(
                "enricher must be a FeatureEnricher (an object with enrich() and aenrich()), "
                f"got {type(enricher).__name__}"
            )
        self.enricher = enricher
        self.owner = owner
        self.monitor = monitor
        self.on_missing = check_policy(on_missing_identity)
        self.event_texts = event_texts
        self.log = log
        self.warned = WarnOnce()

    # -- steps without I/O, shared by both paths --------------------------------------

    def before(
        self, query: str, identity: Identity, monitors: List[FeatureMonitor]
    ) -> Optional[EnrichmentResult]:
        """The missing-identity policy and the holdout of a monitor the enricher does not
        consult (``monitors``: those attached through event handlers). Returns a finished
        result when the enricher must not be asked."""
        if identity[4] == "none":  # identity.missing, without the property call
            self._missing(identity)
        if getattr(self.enricher, "monitor", None) is not None:
            return None  # the enricher applies its own monitor's holdout
        gate = self.monitor
        if gate is None:
            gate = monitors[0] if monitors else None
        if gate is None:
            return None
        unit = identity.user_id or identity.organization_id
        try:
            if gate.is_held_out(identity.task_type, unit):
                return _skipped(query, identity, EnrichmentReason.HELD_OUT)
            if not gate.should_enrich(identity.task_type):
                return _skipped(query, identity, EnrichmentReason.DISABLED_BY_MONITOR)
        except Exception:  # a failing monitor never fails the request
            logger.warning("%s: the monitor's holdout check failed", self.owner, exc_info=True)
        return None

    def after(
        self,
        query: str,
        identity: Identity,
        result: EnrichmentResult,
        request: Optional[FeatureRequest],
        listening: Optional[bool] = None,
    ) -> str:
        """Record, remember, dispatch and publish; returns the block ("" if none)."""
        if request is not None:
            request.results.append(result)
        if self.log is not None:
            self.log.add(query, result)
        monitor = self.monitor
        if monitor is not None and monitor is not getattr(self.enricher, "monitor", None):
            try:
                monitor.record_enrichment(result)
            except Exception:
                logger.warning("%s: recording the enrichment failed", self.owner, exc_info=True)
        if listening is not False:
            _dispatch(
                result,
                query,
                texts=self.event_texts,
                identity_source=identity.source,
                component=self.owner,
                listening=listening,
            )
        block = result.feature_context.strip() if result.features_available else ""
        _CURRENT_BLOCK.set((_CURRENT_REQUEST.get(), block))
        if not block:
            self._note(result)
        return block

    def _note(self, result: EnrichmentResult) -> None:
        """Why no block: a task type that cannot enrich (a wiring mistake, e.g. a typo in
        a request's task type) is a WARNING once per (reason, task type), DEBUG after."""
        reason = getattr(result.reason, "value", str(result.reason))
        task = str(result.task_type)[:80]
        if result.reason in _WIRING and self.warned.claim((reason, task)):
            logger.warning(
                "%s: task type %r %s, the request goes out without features (later "
                "occurrences are logged at DEBUG)",
                self.owner,
                task,
                _WIRING[result.reason],
            )
            return
        logger.debug("%s: no feature block for task %r: %s", self.owner, task, reason)

    def _missing(self, identity: Identity) -> None:
        from .workflow import current_step_context

        in_step = current_step_context() is not None
        hint = _HINT_IN_WORKFLOW if in_step else _HINT_OUTSIDE
        message = (
            f"{self.owner}: no identity for task type {identity.task_type!r}, the request "
            f"goes out without features ({hint})"
        )
        if self.on_missing == "raise":
            raise MissingIdentityError(message)
        cause = ("workflow" if in_step else "plain", str(identity.task_type)[:80])
        if self.on_missing == "warn" and self.warned.claim(cause):
            logger.warning("%s (later occurrences are logged at DEBUG)", message)
        else:
            logger.debug(message)

    # -- the enricher call -------------------------------------------------------------

    def run(
        self, query: str, identity: Identity, request: Optional[FeatureRequest]
    ) -> Tuple[EnrichmentResult, str]:
        """Enrich ``query`` (sync); returns the result and its block."""
        listening, monitors = _listeners()
        result = self.before(query, identity, monitors)
        if result is None:
            result = self.enricher.enrich(query, *identity.args())
        return result, self.after(query, identity, result, request, listening)

    async def arun(
        self, query: str, identity: Identity, request: Optional[FeatureRequest]
    ) -> Tuple[EnrichmentResult, str]:
        """Enrich ``query`` (async, awaiting :meth:`FeatureEnricher.aenrich`)."""
        listening, monitors = _listeners()
        result = self.before(query, identity, monitors)
        if result is None:
            result = await self.enricher.aenrich(query, *identity.args())
        return result, self.after(query, identity, result, request, listening)


def _skipped(query: str, identity: Identity, reason: EnrichmentReason) -> EnrichmentResult:
    missing: List[str] = []
    return EnrichmentResult(
        original_prompt=query,
        enriched_prompt=query,
        features_used=[],
        feature_tokens_added=0,
        enrichment_latency_ms=0.0,
        features_available=False,
        task_type=identity.task_type,
        reason=reason,
        missing_entities=missing,
        held_out=reason is EnrichmentReason.HELD_OUT,
    )
