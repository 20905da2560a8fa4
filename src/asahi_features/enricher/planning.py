"""Planning: turning requests into plans (:class:`EnrichmentTuple` -> :class:`_Plan`).

The task type must be enabled and mapped (:class:`_TaskFeatures`, resolved once per
task), the monitor may hold the request out or pause enrichment, and each entity type
needs an identity. No store reads (only a task's first request may ask the backend
about its feature service and on-demand views); shared by the sync and async paths.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from ..errors import ConfigError, FeatureConfigError
from ..identities import check_entity_ids, identity_of
from ..models import EnrichmentReason, EnrichmentRequest, FeatureVector
from ..settings import EnricherConfig
from ..stores.base import FeatureStoreClient
from ..stores.entity_keys import FEATURE_SERVICE_PREFIX
from ..task_map import request_fields_of, service_entity_type
from .gate import EnrichmentGate
from .policy import _PolicyMatcher

logger = logging.getLogger("asahi_features.enricher")
"""Every part logs as ``asahi_features.enricher`` (the name the module had before it was
split: log configuration and filters keep working)."""

_INVALID = EnrichmentReason.INVALID_INPUT

_Group = Tuple[str, Tuple[str, ...], List[str]]
"""(entity type, feature names, entity ids): one backend read of a request or batch."""


class EnrichmentTuple(NamedTuple):
    """One request as a plain tuple (what :meth:`FeatureEnricher.enrich_requests` takes)."""

    prompt: str
    user_id: Optional[str]
    organization_id: Optional[str]
    task_type: str
    context: Optional[Dict[str, Any]]
    entity_ids: Optional[Mapping[str, str]] = None

    @classmethod
    def of(cls, request: Union[EnrichmentRequest, Mapping[str, Any]]) -> EnrichmentTuple:
        if isinstance(request, Mapping):
            request = EnrichmentRequest(**request)
        return cls(
            request.prompt,
            request.user_id,
            request.organization_id,
            request.task_type,
            request.context,
            request.entity_ids,
        )


_tuple_new = tuple.__new__


def _make_tuple(cls: Any, iterable: Any) -> EnrichmentTuple:
    """``EnrichmentTuple._make`` that also takes the five fields before ``entity_ids``."""
    result: EnrichmentTuple = _tuple_new(cls, iterable)
    if len(result) == 6:
        return result
    if len(result) == 5:
        return _tuple_new(cls, (*result, None))  # type: ignore[no-any-return]
    raise TypeError(f"Expected 5 or 6 arguments, got {len(result)}")


EnrichmentTuple._make = classmethod(_make_tuple)  # type: ignore[assignment,method-assign]


class _TaskFeatures:
    """A task's features, resolved once and shared (never mutated) by its requests.

    Built whole, then published with one assignment, so that a request on another
    thread sees all of it or nothing.
    """

    __slots__ = ("fields", "keys", "mapping", "recipes", "services")

    def __init__(
        self,
        mapping: Dict[str, List[str]],
        decide: Callable[[str], Optional[str]],
        fields: Optional[Dict[str, Tuple[str, ...]]] = None,
    ) -> None:
        self.mapping = mapping
        """Entity type -> its feature names, in priority order."""
        self.keys = {et: tuple(names) for et, names in mapping.items()}
        """Entity type -> its feature names as a tuple (the batch grouping key)."""
        self.recipes = {
            et: tuple((name, decide(name)) for name in names) for et, names in mapping.items()
        }
        """Entity type -> (feature name, policy decision) in priority order."""
        self.fields = fields or {}
        """Entity type -> the request-data fields its read needs (most need none)."""
        self.services = frozenset(
            et
            for et, names in mapping.items()
            if len(names) == 1 and names[0].startswith(FEATURE_SERVICE_PREFIX)
        )
        """Entity types read through a feature service (``@name``): their features are
        those the answer holds."""


_NO_TASK = _TaskFeatures({}, lambda name: None)
"""A plan's task features until it goes to the store."""


class _Plan:
    """One request between the decision to fetch and the rendering."""

    __slots__ = (
        "done",
        "failed",
        "features",
        "identities",
        "missing_entities",
        "overloaded",
        "request",
        "stale_reasons",
        "started",
        "vectors",
    )

    def __init__(self, request: EnrichmentTuple, started: float) -> None:
        self.request = request
        self.started = started
        self.features = _NO_TASK
        self.identities: Dict[str, str] = {}
        self.missing_entities: List[str] = []
        self.done: Optional[Dict[str, Any]] = None
        self.vectors: Dict[str, FeatureVector] = {}
        self.failed = False
        self.overloaded = False  # a read never left this process (not the store's fault)
        self.stale_reasons: Optional[Dict[str, str]] = None


class _Planning:
    """The planning part of :class:`~asahi_features.enricher.FeatureEnricher`."""

    config: EnricherConfig
    client: FeatureStoreClient
    monitor: Optional[EnrichmentGate]
    _clock: Callable[[], float]
    _enabled: frozenset[str]
    _tasks: Dict[str, _TaskFeatures]
    _policy: _PolicyMatcher

    if TYPE_CHECKING:  # defined by the other parts of FeatureEnricher

        def _empty(
            self, plan: _Plan, reason: EnrichmentReason, *, held_out: bool = False
        ) -> Dict[str, Any]: ...

        def _invalid(self, exc: BaseException, what: str) -> None: ...

    def _plans(self, requests: Sequence[EnrichmentTuple], started: float) -> List[_Plan]:
        """:meth:`_plan` of each request; a failure of one request (an identity that
        cannot be encoded or converted, a context that is not a mapping, ...) makes an
        un-enriched plan with reason ``invalid_input`` instead of an exception, so that
        the other requests of a batch are untouched."""
        plans: List[_Plan] = []
        append = plans.append
        for request in requests:
            try:
                append(self._plan(request, started))
            except (FeatureConfigError, ConfigError):
                raise
            except Exception as exc:
                append(self._unusable(request, started, exc))
        return plans

    def _unusable(self, request: EnrichmentTuple, started: float, exc: Exception) -> _Plan:
        self._invalid(exc, "request")
        plan = _Plan(request, started)
        plan.done = self._empty(plan, _INVALID)
        return plan

    def _plan(self, request: EnrichmentTuple, started: float) -> _Plan:
        plan = _Plan(request, started)
        task = request.task_type
        if task not in self._enabled:
            plan.done = self._empty(plan, EnrichmentReason.TASK_NOT_ENABLED)
            return plan
        features = self._tasks.get(task)
        if features is None:
            features = self._task_features(task)
        mapping = features.mapping
        if not mapping:
            reason = EnrichmentReason.NO_FEATURES_MAPPED
            if task in self.config.task_feature_services:  # the store did not answer
                reason = EnrichmentReason.STORE_UNAVAILABLE
            plan.done = self._empty(plan, reason)
            return plan
        monitor = self.monitor
        if monitor is not None:
            # A failing monitor never fails the request: not held out, enrich.
            unit = request.user_id or request.organization_id
            try:
                held_out = bool(monitor.is_held_out(task, unit))
            except Exception:
                held_out = False
                self._monitor_failed("is_held_out")
            if held_out:
                plan.done = self._empty(plan, EnrichmentReason.HELD_OUT, held_out=True)
                return plan
            try:
                enrich = bool(monitor.should_enrich(task))
            except Exception:
                enrich = True
                self._monitor_failed("should_enrich")
            if not enrich:
                plan.done = self._empty(plan, EnrichmentReason.DISABLED_BY_MONITOR)
                return plan
        context = request.context or {}
        if request.entity_ids is not None:
            check_entity_ids(request.entity_ids)
        fields = features.fields
        for entity_type in mapping:
            identity = identity_of(entity_type, request, context, fields.get(entity_type, ()))
            if identity is None:
                plan.missing_entities.append(entity_type)
            else:
                plan.identities[entity_type] = identity
        plan.features = features
        if not plan.identities:
            plan.done = self._empty(plan, EnrichmentReason.NO_IDENTITY)
        return plan

    def _task_features(self, task: str) -> _TaskFeatures:
        """The task's features: ``task_features``, its feature service (the backend says
        which entity type it reads) and the request fields of on-demand views. Kept for
        the next requests once the backend has answered everything."""
        mapping = {
            et: list(names)
            for et, names in self.config.task_features.get(task, {}).items()
            if names
        }
        complete = True
        service = self.config.task_feature_services.get(task)
        if service is not None:
            entity_type = service_entity_type(self.client, task, service)
            if entity_type is None:
                complete = False
            else:
                mapping[entity_type] = [FEATURE_SERVICE_PREFIX + service]
        fields, answered = request_fields_of(self.client, mapping)
        features = _TaskFeatures(mapping, self._policy.decide, fields)
        if complete and answered:
            self._tasks[task] = features
        return features

    def _monitor_failed(self, call: str, what: str = "monitor") -> None:
        """Log a failed monitor (or observer) call: the first of each call at WARNING,
        later ones at DEBUG (a broken monitor must not flood the log either). Call
        inside ``except``."""
        warned: set[str] = self.__dict__.setdefault("_monitor_warned", set())
        if call in warned:
            logger.debug("%s.%s failed again", what, call, exc_info=True)
            return
        warned.add(call)
        logger.warning(
            "%s.%s failed; the request goes on as if the %s had no say "
            "(later failures of this call are logged at DEBUG)",
            what,
            call,
            what,
            exc_info=True,
        )

    def _plan_one(self, request: EnrichmentTuple) -> _Plan:
        """The plan of one ``enrich`` / ``aenrich`` request (a bad input degrades it)."""
        started = self._clock()
        try:
            return self._plan(request, started)
        except (FeatureConfigError, ConfigError):
            raise
        except Exception as exc:  # this request only (see _plans)
            return self._unusable(request, started, exc)
