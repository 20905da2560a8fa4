"""FeatureEnricher: task -> features -> a context block within a token budget (spec section 3).

One request flows like this:

1. the task type must be in ``enabled_task_types`` and have a feature mapping;
2. the monitor (if any) may hold the request out (control group) or pause enrichment;
3. each entity type the task uses needs an identity (``user_id``, ``organization_id``,
   ``entity_ids["<entity_type>"]`` or ``context["<entity_type>_id"]``; a compound type
   such as ``merchant+user`` needs each of its entities', see :mod:`.identities`); the
   features of each entity are fetched with one call per entity type;
4. stale features (older than ``freshness_threshold_seconds``, or their view's ttl when
   shorter, or their ``freshness_overrides`` limit) are left out one by one, with the
   reason in ``stale_reasons``, then the feature policy (allow / deny / redact) is applied;
5. the values are rendered as inert single lines and the blocks are fitted into
   ``max_feature_tokens`` (see :mod:`asahi_features.budget`).

Whatever happens, the original prompt is the exact suffix of ``enriched_prompt``; when
nothing is added they are equal and :attr:`EnrichmentResult.reason` says why.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import types
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    List,
    NamedTuple,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
    runtime_checkable,
)

from .budget import LAST_BLOCK_END, Block, Line, Seam, fit_blocks, segments
from .errors import (
    ConfigError,
    FeatureConfigError,
    FeatureStoreUnavailableError,
    RegistryDriftError,
)
from .identities import check_entity_ids, identity_of
from .models import (
    EnrichmentReason,
    EnrichmentRequest,
    EnrichmentResult,
    FeatureStatus,
    FeatureVector,
    trusted_constructor,
    utc_now,
)
from .observers import (
    OBSERVED_METHODS,
    EnrichmentObserver,
    EnrichmentTrace,
    FailedCall,
    observed,
)
from .rendering import RenderedValue, humanize, prepare, render_value, sanitize, value_key
from .settings import AsahiConfig, EnricherConfig, FeaturePolicy
from .stores.base import UNKNOWN_AGE, FeatureStoreClient, aget_batch_features, aget_features
from .stores.entity_keys import FEATURE_SERVICE_PREFIX
from .task_map import request_fields_of, service_entity_type
from .tokens import TokenCounter

__all__ = [
    "EnricherConfig",
    "EnrichmentGate",
    "EnrichmentObserver",
    "EnrichmentTrace",
    "FailedCall",
    "FeatureEnricher",
    "build_enricher",
]

logger = logging.getLogger(__name__)

CONTEXT_HEADER = "[Context from request]"
CONTEXT_PREFIX = "context."
"""Names of request-context lines start with this; such lines are never feature lines."""
_SEGMENT_CACHE_SIZE = 65_536
_LINE_CACHE_SIZE = 16_384
# Policy decisions and line prefixes are cached per name; request-context keys come
# from callers, so these caches are cleared when full instead of growing without bound.
_NAME_CACHE_SIZE = 4_096
_NO_LINE = Line("", "", RenderedValue((), "", ""))
"""Cached answer for a value that renders as nothing (an empty string or list)."""
_BAD_LINE = Line("", "", RenderedValue((), "", ""))
"""Answer for a value that cannot be rendered (the line is left out; never cached)."""
_INVALID = EnrichmentReason.INVALID_INPUT
_FOUND = FeatureStatus.FOUND
_UNAVAILABLE = FeatureStatus.UNAVAILABLE
_OVERLOADED = FeatureStatus.OVERLOADED
_INVALID_ID = FeatureStatus.INVALID_ID
_ENRICHED = EnrichmentReason.ENRICHED
_NO_VECTORS: Dict[str, FeatureVector] = {}
_NO_LIMITS: Dict[str, float] = {}
_STALE_NOTE = "left_out_as_stale"
"""The name of the ``stale_note`` line of a block (never a feature line)."""

_Group = Tuple[str, Tuple[str, ...], List[str]]
"""(entity type, feature names, entity ids): one backend read of a request or batch."""
"""A finished plan's vectors (released); shared, never written to."""


@runtime_checkable
class EnrichmentGate(Protocol):
    """What the enricher needs from a monitor (:class:`~asahi_features.monitor.FeatureMonitor`
    implements it)."""

    def is_held_out(self, task_type: str, unit_id: Optional[str]) -> bool:
        """True when this request belongs to the control group (never enriched)."""
        ...

    def should_enrich(self, task_type: str) -> bool:
        """False when enrichment is paused for this task type."""
        ...

    def record_enrichment(
        self, result: EnrichmentResult, inference_quality: Optional[float] = None
    ) -> None:
        """Called with every result the enricher produces."""
        ...


_value_key = value_key
"""The line cache's value key (:func:`asahi_features.rendering.value_key`): equal only
for values of identical types that render identically; a plain ``str`` is its own key."""


def _plain(name: str) -> str:
    return name.rsplit(":", 1)[-1]


_SEPARATORS = (":", ".", "__")
"""How backends join a view and a feature: Feast ``view:feature`` (``view__feature`` in
its full feature names), Tecton ``view.feature``."""


def _readings(name: str) -> List[Tuple[str, str]]:
    """Every ``(view, feature)`` that ``name`` may stand for: ``("", name)`` (a plain name,
    view unknown) and one reading per separator in it (views written with ``.``)."""
    out = [("", name)]
    for sep in _SEPARATORS:
        at = name.find(sep)
        while at >= 0:
            feature = name[at + len(sep) :]
            if feature:
                view = name[:at].replace("__", ".").replace(":", ".")
                out.append((view, feature))
            at = name.find(sep, at + 1)
    return out


def _same_name(name: str) -> str:
    return name


class _PolicyEntries:
    """One policy list, indexed by every feature part its entries may stand for."""

    __slots__ = ("_fold", "_views")

    def __init__(self, names: Sequence[str], fold: Callable[[str], str]) -> None:
        self._fold = fold
        self._views: Dict[str, set[str]] = {}
        """feature part -> the views named with it (``""``: any view)."""
        for entry in names:
            for view, feature in _readings(fold(entry)):
                self._views.setdefault(feature, set()).add(view)

    def matches(self, name: str, *, lenient: bool) -> bool:
        """Does ``name`` stand for a feature of this list?

        ``lenient`` (deny, redact): yes when it *may* (an unknown view, or one view a
        part of the other, as ``project.profile`` and ``profile``). Otherwise (allow):
        only when it surely does (the entry names no view, or the same one).
        """
        for view, feature in _readings(self._fold(name)):
            views = self._views.get(feature)
            if not views:
                continue
            if "" in views or view in views:
                return True
            if not lenient:
                continue
            if not view:
                return True
            for other in views:
                if view.endswith("." + other) or other.endswith("." + view):
                    return True
        return False


class _PolicyMatcher:
    """Answers allow / deny / redact for a feature name, whatever the backend's naming
    scheme: plain ``email``, Feast ``profile:email`` (``profile__email``), Tecton
    ``profile.email``; policy entries may be written in any of these forms.

    A plain entry (``email``) matches the feature ``email`` of every view. An entry with
    a view (``profile:email``) matches that view's ``email`` in every spelling. When it is
    not sure, the policy denies: ``deny`` and ``redact`` also match a name whose view is
    unknown (plain ``email``) or may be the same (``project.profile.email``), compare
    case-insensitively, and consider every way a name can be split; ``allow`` admits a
    name only when an entry surely names it (so the plain ``email`` is not admitted by
    ``allow: [profile:email]``).
    """

    def __init__(self, policy: FeaturePolicy) -> None:
        self.policy = policy
        self._allow = _PolicyEntries(policy.allow, _same_name)
        self._deny = _PolicyEntries(policy.deny, str.casefold)
        self._redact = _PolicyEntries(policy.redact, str.casefold)
        self._cache: Dict[str, Optional[str]] = {}

    def decide(self, name: str) -> Optional[str]:
        """``None`` (keep), ``"drop"`` or ``"redact"``."""
        try:
            return self._cache[name]
        except KeyError:
            pass
        decision: Optional[str] = None
        if (
            self.policy.allow and not self._allow.matches(name, lenient=False)
        ) or self._deny.matches(name, lenient=True):
            decision = "drop"
        elif self._redact.matches(name, lenient=True):
            decision = "redact"
        cache = self._cache
        if len(cache) >= _NAME_CACHE_SIZE:
            cache.clear()
        cache[name] = decision
        return decision


_new_result = trusted_constructor(EnrichmentResult)
"""An EnrichmentResult from the complete field dict that ``_result`` / ``_empty`` give."""


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


def _by_entity_id(
    vectors: Sequence[FeatureVector], entity_type: str, ids: List[str]
) -> Dict[str, FeatureVector]:
    """A backend's answer indexed by ``entity_id``, never by position: a vector of another
    entity type, or two for one id, give nobody anything (that entity degrades)."""
    by_id: Dict[str, FeatureVector] = {}
    repeated: List[str] = []
    try:
        for vector in vectors:
            eid = vector.entity_id
            if vector.entity_type != entity_type:
                continue
            if eid in by_id:
                repeated.append(eid)
            else:
                by_id[eid] = vector
    except (AttributeError, TypeError):  # not vectors at all: nobody gets anything
        by_id.clear()
    for eid in repeated:
        by_id.pop(eid, None)
    if repeated or len(by_id) < len(ids):
        missing = sum(1 for eid in ids if eid not in by_id)
        if missing:
            logger.warning(
                "feature fetch for %r answered %d of %d ids unusably (missing, repeated or "
                "of another entity type); those requests proceed without them",
                entity_type,
                missing,
                len(ids),
            )
    return by_id


class FeatureEnricher:
    """Enriches prompts with features from a feature store (spec section 3.3).

    Args:
        client: any :class:`~asahi_features.stores.base.FeatureStoreClient` (normally the
            :class:`~asahi_features.guard.GuardedClient` from the config).
        config: the enricher settings (defaults: spec 3.3 and the task map of spec 3.5).
        monitor: optional :class:`EnrichmentGate` consulted before fetching and told about
            every result.
        clock: monotonic clock in seconds, for ``enrichment_latency_ms``.

    The configuration is read when the enricher is built (labels, task map and the
    policy are cached): build a new enricher to change it.

    Raises:
        TokenizerUnavailableError: the configured encoding cannot be loaded offline.

    Only :class:`~asahi_features.errors.FeatureConfigError` and
    :class:`~asahi_features.errors.ConfigError` propagate from the enrich methods, plus
    :class:`~asahi_features.errors.FeatureStoreUnavailableError` when the client is a guard
    configured with ``fallback_on_timeout: false`` (the caller asked for the failure).
    Everything else degrades to the un-enriched prompt with a reason.

    Example:
        >>> from pathlib import Path
        >>> from asahi_features import LocalFeatureStore, EnricherConfig
        >>> store = LocalFeatureStore(Path("examples/sample_features.json"))
        >>> enricher = FeatureEnricher(store, EnricherConfig(
        ...     enabled_task_types=["product_recommendation"], freshness_threshold_seconds=10**9))
        >>> result = enricher.enrich("Recommend a product", user_id="u_1001",
        ...                          task_type="product_recommendation")
        >>> result.enriched_prompt.splitlines()[0]
        '[Context from user profile]'
    """

    def __init__(
        self,
        client: FeatureStoreClient,
        config: Optional[EnricherConfig] = None,
        *,
        monitor: Optional[EnrichmentGate] = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.client = client
        self.config = config if config is not None else EnricherConfig()
        self.monitor = monitor
        self.observers: List[EnrichmentObserver] = []
        """Told about every finished request (see :class:`EnrichmentObserver`); use
        :meth:`add_observer` to be told about calls that raise as well."""
        self._clock = clock
        self._tokens = TokenCounter(self.config.encoding)
        self._tokens.encoding  # noqa: B018 - load the encoding now: fail early
        self._count_tokens: Callable[[str], int] = self._tokens.count
        # A guard reads every group of a request concurrently under one deadline.
        self._read_groups: Optional[Callable[[List[_Group]], Any]] = getattr(
            client, "get_groups", None
        )
        self._aread_groups: Optional[Callable[[List[_Group]], Any]] = getattr(
            client, "aget_groups", None
        )
        self._policy = _PolicyMatcher(self.config.policy)
        self._prefixes: Dict[str, str] = {}
        self._headers: Dict[str, str] = {}
        self._header_tokens: Dict[str, Tuple[str, Optional[int]]] = {}
        self._enabled = frozenset(self.config.enabled_task_types)
        self._tasks: Dict[str, _TaskFeatures] = {}
        self._segment_cache: Dict[str, int] = {}
        # (feature or context key, value key) -> the rendered line with its token count:
        # a pure function of the value and this enricher's labels and limits.
        self._line_cache: Dict[Tuple[str, Any], Line] = {}
        self._seam = Seam(self._tokens.encoding)
        """Tokens that joining the added text to a prompt costs or saves."""
        prepare()  # the sanitiser's character tables, built once per process
        self._invalid_warned: set[str] = set()
        self._segments_exact = self._check_segments()
        self._end_tokens = self._segment_tokens(LAST_BLOCK_END) if self._segments_exact else None
        redaction = sanitize(self.config.policy.redaction_text, keep_brackets=True)
        redaction = redaction or "[redacted]"
        self._redacted = RenderedValue((redaction,), " ", "")

    def __repr__(self) -> str:
        return f"FeatureEnricher(client={self.client!r}, monitor={self.monitor!r})"

    # -- public API ------------------------------------------------------------------

    def add_observer(self, observer: EnrichmentObserver) -> None:
        """Tell ``observer`` about every finished request and, when it has an
        ``enrichment_failed(error, call)`` method, about every enrich call that raises
        to its caller (see :class:`FailedCall`)."""
        self.observers.append(observer)
        if callable(getattr(observer, "enrichment_failed", None)):
            for name in OBSERVED_METHODS:
                if name not in self.__dict__:
                    wrapped = observed(getattr(type(self), name))
                    setattr(self, name, types.MethodType(wrapped, self))

    def remove_observer(self, observer: EnrichmentObserver) -> None:
        """Stop telling ``observer`` (an observer not added is ignored)."""
        # a new list: a request iterating the old one on another thread is undisturbed
        self.observers = [o for o in self.observers if o is not observer]
        if not any(callable(getattr(o, "enrichment_failed", None)) for o in self.observers):
            for name in OBSERVED_METHODS:
                self.__dict__.pop(name, None)

    def get_relevant_features(self, task_type: str, entity_type: str) -> List[str]:
        """Feature names the task uses for the entity type, in priority order.

        An unmapped task or entity type gives an empty list (not an error).
        """
        return list(self.config.task_features.get(task_type, {}).get(entity_type, []))

    def enrich(
        self,
        prompt: str,
        user_id: Optional[str] = None,
        organization_id: Optional[str] = None,
        task_type: str = "general",
        context: Optional[Dict[str, Any]] = None,
        *,
        entity_ids: Optional[Mapping[str, str]] = None,
    ) -> EnrichmentResult:
        """Prepend the task's features to ``prompt`` (spec 3.4 format).

        Args:
            prompt: the original prompt (kept verbatim as the suffix).
            user_id: identity for ``user`` features.
            organization_id: identity for ``organization`` features.
            task_type: selects the features (``task_features``); must be enabled.
            context: request-time values rendered in a ``[Context from request]`` block;
                ``<entity_type>_id`` keys give identities for other entity types, and
                the fields a Feast on-demand view declares are its request data.
            entity_ids: ids of other entity types (``{"merchant": "m-1"}``), e.g. for a
                view keyed on user and merchant; not ``user`` / ``organization`` (a
                request naming them is not enriched, reason ``invalid_input``).

        Raises:
            FeatureConfigError: a mapped feature or entity type does not exist in the store.
        """
        plan = self._plan_one(
            EnrichmentTuple(prompt, user_id, organization_id, task_type, context, entity_ids)
        )
        store_ms: Optional[float] = None
        if plan.done is None:
            # the store's share is timed only for observers (no clock read otherwise)
            fetch_started = self._clock() if self.observers else None
            one = self._lone_read(plan)
            if one is None:
                self._fetch([plan], single=True)
            else:
                entity_type, entity_id, names = one
                try:
                    vector: Optional[FeatureVector] = self.client.get_features(
                        entity_id, entity_type, names
                    )
                except Exception as exc:
                    self._on_fetch_error(exc, entity_type)
                    vector = None
                self._take(plan, entity_type, entity_id, vector)
            if fetch_started is not None:
                store_ms = (self._clock() - fetch_started) * 1000.0
        return self._finish(plan, store_ms=store_ms)

    async def aenrich(
        self,
        prompt: str,
        user_id: Optional[str] = None,
        organization_id: Optional[str] = None,
        task_type: str = "general",
        context: Optional[Dict[str, Any]] = None,
        *,
        entity_ids: Optional[Mapping[str, str]] = None,
    ) -> EnrichmentResult:
        """Async :meth:`enrich`: entity types are fetched concurrently, never blocking the
        loop (a client with only sync methods runs in a worker thread)."""
        plan = self._plan_one(
            EnrichmentTuple(prompt, user_id, organization_id, task_type, context, entity_ids)
        )
        store_ms: Optional[float] = None
        if plan.done is None:
            # the store's share is timed only for observers (no clock read otherwise)
            fetch_started = self._clock() if self.observers else None
            one = self._lone_read(plan)
            if one is None:
                await self._afetch([plan], single=True)
            else:
                entity_type, entity_id, names = one
                try:
                    vector: Optional[FeatureVector] = await aget_features(
                        self.client, entity_id, entity_type, names
                    )
                except Exception as exc:
                    self._on_fetch_error(exc, entity_type)
                    vector = None
                self._take(plan, entity_type, entity_id, vector)
            if fetch_started is not None:
                store_ms = (self._clock() - fetch_started) * 1000.0
        return self._finish(plan, store_ms=store_ms)

    def enrich_batch(
        self, requests: Sequence[Union[EnrichmentRequest, Mapping[str, Any]]]
    ) -> List[EnrichmentResult]:
        """Enrich many requests with one backend batch call per (entity type, feature set).

        Each request is an :class:`EnrichmentRequest` or a mapping of its fields.

        Results come back in input order, each with its own ``enrichment_id``; the
        latency of each is the time of the whole batch up to its completion.
        """
        return self.enrich_requests([EnrichmentTuple.of(r) for r in requests])

    def enrich_requests(self, requests: Sequence[EnrichmentTuple]) -> List[EnrichmentResult]:
        """:meth:`enrich_batch` for already-checked ``(prompt, user_id, organization_id,
        task_type, context)`` tuples (the framework adapters' fast path)."""
        started = self._clock()
        plans = self._plans(requests, started)
        fetch_started = self._clock() if self.observers else None
        self._fetch(plans)
        store_ms = None if fetch_started is None else (self._clock() - fetch_started) * 1e3
        return self._finish_all(plans, store_ms)

    def _finish_all(
        self, plans: List[_Plan], store_ms: Optional[float] = None
    ) -> List[EnrichmentResult]:
        """Finish the plans in order, releasing each plan's vectors once it is rendered
        (fewer live objects for the garbage collector to promote and scan). ``store_ms``:
        how long the batch's store read took (timed only when there are observers)."""
        results: List[EnrichmentResult] = []
        append = results.append
        ids = os.urandom(16 * len(plans)).hex()  # one system call for the batch's ids
        size = len(plans)
        for k, plan in enumerate(plans):
            append(self._finish(plan, ids[32 * k : 32 * k + 32], store_ms, size))
            plan.vectors = _NO_VECTORS
        plans.clear()
        return results

    async def aenrich_batch(
        self, requests: Sequence[Union[EnrichmentRequest, Mapping[str, Any]]]
    ) -> List[EnrichmentResult]:
        """Async :meth:`enrich_batch` (the groups are fetched concurrently)."""
        return await self.aenrich_requests([EnrichmentTuple.of(r) for r in requests])

    async def aenrich_requests(self, requests: Sequence[EnrichmentTuple]) -> List[EnrichmentResult]:
        """Async :meth:`enrich_requests`."""
        started = self._clock()
        plans = self._plans(requests, started)
        fetch_started = self._clock() if self.observers else None
        await self._afetch(plans)
        store_ms = None if fetch_started is None else (self._clock() - fetch_started) * 1e3
        return self._finish_all(plans, store_ms)

    # -- planning --------------------------------------------------------------------

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

    # -- fetching --------------------------------------------------------------------

    def _raise_unavailable(self) -> bool:
        """True when the client is a guard told not to fall back (errors then propagate)."""
        settings = getattr(self.client, "settings", None)
        fallback = getattr(self.client, "fallback_on_timeout", None)
        if fallback is None and settings is not None:
            fallback = getattr(settings, "fallback_on_timeout", None)
        return fallback is False

    def _on_fetch_error(self, exc: Exception, entity_type: str) -> None:
        if isinstance(exc, RegistryDriftError):  # the backend warned once; this read degrades
            logger.debug("features of %r gone from the registry: %s", entity_type, exc)
            return
        if isinstance(exc, (FeatureConfigError, ConfigError)):
            raise exc
        if isinstance(exc, FeatureStoreUnavailableError) and self._raise_unavailable():
            raise exc
        from .guard.failures import describe  # light; only on this rare path

        # The library's own errors are secret-free; anything else is named by type only
        # (a transport error's text can quote a header, and so a key).
        logger.warning(
            "feature fetch for entity type %r failed (%s); continuing without it",
            entity_type,
            describe(exc),
        )

    def _fetch(self, plans: List[_Plan], single: bool = False) -> None:
        """Read every (entity type, feature list) group of ``plans`` and hand the vectors
        to the plans. A guard reads all groups concurrently under one deadline."""
        groups = self._groups(plans)
        if not groups:
            return
        reader = self._read_groups
        if reader is not None:
            try:
                results: List[Optional[Sequence[FeatureVector]]] = list(reader(groups))
            except Exception as exc:
                self._on_fetch_error(exc, groups[0][0])
                results = [None] * len(groups)
        else:
            results = [self._read_one_group(group, single) for group in groups]
        self._assign_all(plans, groups, results)

    def _read_one_group(self, group: _Group, single: bool) -> Optional[Sequence[FeatureVector]]:
        entity_type, names, ids = group
        client = self.client
        try:
            if single and len(ids) == 1:
                return [client.get_features(ids[0], entity_type, list(names))]
            return client.get_batch_features(ids, entity_type, list(names))
        except Exception as exc:
            self._on_fetch_error(exc, entity_type)
            return None

    async def _afetch(self, plans: List[_Plan], single: bool = False) -> None:
        """Async :meth:`_fetch`: groups are read concurrently, never blocking the loop."""
        groups = self._groups(plans)
        if not groups:
            return
        reader = self._aread_groups
        if reader is not None:
            try:
                results: List[Optional[Sequence[FeatureVector]]] = list(await reader(groups))
            except Exception as exc:
                self._on_fetch_error(exc, groups[0][0])
                results = [None] * len(groups)
        else:
            results = list(
                await asyncio.gather(*(self._aread_one_group(g, single) for g in groups))
            )
        self._assign_all(plans, groups, results)

    async def _aread_one_group(
        self, group: _Group, single: bool
    ) -> Optional[Sequence[FeatureVector]]:
        entity_type, names, ids = group
        client = self.client
        try:
            if single and len(ids) == 1:
                return [await aget_features(client, ids[0], entity_type, list(names))]
            return await aget_batch_features(client, ids, entity_type, list(names))
        except Exception as exc:
            self._on_fetch_error(exc, entity_type)
            return None

    def _plan_one(self, request: EnrichmentTuple) -> _Plan:
        """The plan of one ``enrich`` / ``aenrich`` request (a bad input degrades it)."""
        started = self._clock()
        try:
            return self._plan(request, started)
        except (FeatureConfigError, ConfigError):
            raise
        except Exception as exc:  # this request only (see _plans)
            return self._unusable(request, started, exc)

    @staticmethod
    def _lone_read(plan: _Plan) -> Optional[Tuple[str, str, List[str]]]:
        """(entity type, id, features) when the request reads one entity (the common case:
        one read, nothing to group), else ``None``."""
        if len(plan.identities) != 1:
            return None
        ((entity_type, entity_id),) = plan.identities.items()
        return entity_type, entity_id, list(plan.features.mapping[entity_type])

    @staticmethod
    def _take(
        plan: _Plan, entity_type: str, entity_id: str, vector: Optional[FeatureVector]
    ) -> None:
        """Give one request its one vector, if it is the answer for its entity."""
        if (
            vector is not None
            and getattr(vector, "entity_id", None) == entity_id
            and getattr(vector, "entity_type", None) == entity_type
        ):
            plan.vectors[entity_type] = vector
            return
        if vector is not None:
            logger.warning(
                "feature fetch for %r answered for another entity; proceeding without it",
                entity_type,
            )
        plan.failed = True

    def _assign_all(
        self,
        plans: List[_Plan],
        groups: List[_Group],
        results: List[Optional[Sequence[FeatureVector]]],
    ) -> None:
        for (entity_type, names, ids), vectors in zip(groups, results, strict=True):
            self._assign(plans, entity_type, names, ids, vectors)

    @staticmethod
    def _groups(plans: Sequence[_Plan]) -> List[_Group]:
        """The (entity type, feature list, ids) groups of the plans, each id once."""
        # dicts as ordered sets: each id once, in first-seen order
        groups: Dict[Tuple[str, Tuple[str, ...]], Dict[str, None]] = {}
        for plan in plans:
            if plan.done is not None:
                continue
            keys = plan.features.keys
            for entity_type, entity_id in plan.identities.items():
                group_key = (entity_type, keys[entity_type])
                ids = groups.get(group_key)
                if ids is None:
                    ids = groups[group_key] = {}
                ids[entity_id] = None
        return [(et, names, list(ids)) for (et, names), ids in groups.items()]

    @staticmethod
    def _assign(
        plans: Sequence[_Plan],
        entity_type: str,
        names: Tuple[str, ...],
        ids: List[str],
        vectors: Optional[Sequence[FeatureVector]],
    ) -> None:
        by_id = {} if vectors is None else _by_entity_id(vectors, entity_type, ids)
        for plan in plans:
            if plan.done is not None or entity_type not in plan.identities:
                continue
            if plan.features.keys[entity_type] != names:
                continue
            vector = by_id.get(plan.identities[entity_type])
            if vector is None:
                plan.failed = True
            else:
                plan.vectors[entity_type] = vector

    # -- rendering -------------------------------------------------------------------

    def _prefix(self, name: str) -> str:
        prefix = self._prefixes.get(name)
        if prefix is None:
            label = self.config.feature_labels.get(name) or self.config.feature_labels.get(
                _plain(name)
            )
            text = sanitize(label) if label else humanize(name)
            prefix = f"- {text or humanize(name)}: "
            if len(self._prefixes) >= _NAME_CACHE_SIZE:
                self._prefixes.clear()
            self._prefixes[name] = prefix
        return prefix

    def _header(self, entity_type: str) -> str:
        header = self._headers.get(entity_type)
        if header is None:
            kind = sanitize(entity_type.replace("_", " ")) or "entity"
            header = f"[Context from {kind} profile]"
            self._headers[entity_type] = header
        return header

    def _header_counted(self, entity_type: str) -> Tuple[str, Optional[int]]:
        """The header and, when segment counts are exact, the tokens of its line."""
        known = self._header_tokens.get(entity_type)
        if known is None:
            header = self._header(entity_type)
            tokens = self._segment_tokens(header + "\n") if self._segments_exact else None
            known = self._header_tokens[entity_type] = (header, tokens)
        return known

    def _line(self, name: str, value: Any, decision: Optional[str]) -> Line:
        """The context line of ``name`` showing ``value``; :data:`_NO_LINE` when there is
        nothing to show, :data:`_BAD_LINE` when the value cannot be rendered.

        Lines of plain values are cached per (name, value key), with their token count
        when segment counting is exact: the same value renders the same for every
        request. The key (:func:`~asahi_features.rendering.value_key`) tells values of
        different types or renderings apart and is never large.
        """
        if decision == "redact":
            return Line(name, self._prefix(name), self._redacted)
        key = _value_key(value)
        cache = self._line_cache
        if key is not None:
            line = cache.get((name, key))
            if line is not None:
                return line
        config = self.config
        try:
            rendered = render_value(
                value,
                max_list_items=config.max_list_items,
                max_value_chars=config.max_value_chars,
                key=key,
            )
        except Exception as exc:  # this value cannot be shown: its line is left out
            self._invalid(exc, "feature value")
            return _BAD_LINE
        if rendered is None:
            line = _NO_LINE
        else:
            prefix = self._prefix(name)
            tokens = None
            if self._segments_exact:
                count = self._segment_tokens
                tokens = count(prefix[:-1]) + count(" " + rendered.text + "\n")
            line = Line(name, prefix, rendered, tokens)
        if key is not None:
            if len(cache) >= _LINE_CACHE_SIZE:
                cache.clear()
            cache[(name, key)] = line
        return line

    def _render(self, value: Any) -> Optional[RenderedValue]:
        """The rendered value (raises when it cannot be rendered)."""
        config = self.config
        return render_value(
            value, max_list_items=config.max_list_items, max_value_chars=config.max_value_chars
        )

    def _invalid(self, exc: BaseException, what: str) -> None:
        """Log an input that could not be used: the first of each kind at WARNING, later
        ones at DEBUG. Never the value itself (it may be personal, or huge)."""
        kind = f"{what}/{type(exc).__name__}"
        if kind in self._invalid_warned:
            logger.debug("unusable %s left out (%s)", what, type(exc).__name__, exc_info=True)
            return
        self._invalid_warned.add(kind)
        logger.warning(
            "unusable %s left out (%s); the rest of the request goes on "
            "(later ones of this kind are logged at DEBUG)",
            what,
            type(exc).__name__,
        )

    def _finish(
        self,
        plan: _Plan,
        enrichment_id: Optional[str] = None,
        store_ms: Optional[float] = None,
        batch_size: int = 1,
    ) -> EnrichmentResult:
        values = plan.done
        if values is not None:
            store_ms = None  # decided before any read: the store was not asked
        else:
            try:
                values = self._build(plan)
            except (FeatureConfigError, ConfigError):
                raise
            except Exception as exc:  # this request only: un-enriched, with a reason
                self._invalid(exc, "request")
                values = self._empty(plan, _INVALID)
                values["store_attempted"] = True
                values["store_failed"] = plan.failed
        values["enrichment_latency_ms"] = (self._clock() - plan.started) * 1000.0
        values["enrichment_id"] = enrichment_id or os.urandom(16).hex()
        result = _new_result(values)
        if self.monitor is not None:
            try:
                self.monitor.record_enrichment(result)
            except Exception:  # a monitor bug must never fail the request
                self._monitor_failed("record_enrichment")
        if self.observers:
            latency = values["enrichment_latency_ms"]
            trace = EnrichmentTrace(plan.request, latency, store_ms, batch_size)
            for observer in self.observers:
                try:
                    observer.enrichment_finished(result, trace)
                except Exception:  # an observer bug must never fail the request
                    self._monitor_failed("enrichment_finished", "observer")
        return result

    def _build(self, plan: _Plan) -> Dict[str, Any]:
        # The hot path of every request: locals, constants and cached lines on purpose.
        threshold = self.config.freshness_threshold_seconds
        overridden = bool(self.config.freshness_overrides)
        stale_note = self.config.stale_note
        noted = False  # a stale note line was added (it is no feature line)
        keep_unknown = self.config.unknown_age == "keep"
        line_cache = self._line_cache
        blocks: List[Block] = []
        status: Dict[str, FeatureStatus] = {}
        dropped_stale: List[str] = []
        dropped_policy: List[str] = []
        block_ages: List[List[float]] = []  # per feature block, the age of each line
        # the sum of the known token counts of the blocks (None once one is unknown)
        known_tokens: Optional[int] = self._end_tokens
        found = with_values = fresh = allowed = invalid = 0
        failed = plan.failed
        vectors = plan.vectors
        for entity_type in plan.identities:
            vector = vectors.get(entity_type)
            if vector is None:
                status[entity_type] = _UNAVAILABLE
                failed = True
                continue
            vector_status = vector.status
            status[entity_type] = vector_status
            if vector_status is not _FOUND:
                if vector_status is _UNAVAILABLE:
                    failed = True
                elif vector_status is _OVERLOADED:
                    plan.overloaded = True
                continue
            found += 1
            lines: List[Line] = []
            line_ages: List[float] = []
            stale_before = len(dropped_stale)
            features = vector.features
            freshness = vector.feature_freshness
            default_age = vector.freshness_seconds
            # a Feast view's ttl, or a configured override, may tighten the threshold
            limits = getattr(vector, "freshness_limits", None) or _NO_LIMITS
            limited = bool(limits) or overridden
            recipe = plan.features.recipes[entity_type]
            if entity_type in plan.features.services:
                # a feature service: its features in the store's order, each under policy
                decide = self._policy.decide
                recipe = tuple((name, decide(name)) for name in features)
            for name, decision in recipe:
                value = features.get(name)
                if value is None:
                    continue
                kind = type(value)
                if kind is not str and isinstance(value, float) and math.isnan(value):
                    continue
                with_values += 1
                age = freshness.get(name, default_age)
                limit: float = threshold
                if limited:  # inline: the common case is one dict lookup
                    if overridden:
                        limit = self._limit(name, limits, threshold)[0]
                    else:
                        ttl = limits.get(name)
                        if ttl is not None and ttl < threshold:
                            limit = ttl
                if age > limit and not (keep_unknown and age >= UNKNOWN_AGE):
                    dropped_stale.append(name)
                    self._note_stale(plan, name, age, limits, threshold)
                    continue
                fresh += 1
                if decision == "drop":
                    dropped_policy.append(name)
                    continue
                allowed += 1
                if kind is str and decision is None and len(value) <= 256:
                    # the key _value_key gives a str is the str
                    line = line_cache.get((name, value)) or self._line(name, value, None)
                else:
                    line = self._line(name, value, decision)
                if line is _NO_LINE:
                    continue
                if line is _BAD_LINE:
                    invalid += 1
                    continue
                lines.append(line)
                line_ages.append(age)
                if known_tokens is not None:
                    counted = line.tokens
                    known_tokens = None if counted is None else known_tokens + counted
            if stale_note and len(dropped_stale) > stale_before and lines:
                note = self._stale_line(plan, dropped_stale[stale_before:])
                if note is not None:
                    noted = True
                    lines.append(note)
                    line_ages.append(0.0)
                    if known_tokens is not None:
                        counted = note.tokens
                        known_tokens = None if counted is None else known_tokens + counted
            if lines:
                header, head_tokens = self._header_counted(entity_type)
                blocks.append(Block(header, lines, head_tokens))
                block_ages.append(line_ages)
                if known_tokens is not None:
                    known_tokens = None if head_tokens is None else known_tokens + head_tokens
        counts = (found, with_values, fresh, allowed, invalid)
        if not blocks:
            return self._result(
                plan, "", 0, [], [], status, dropped_stale, dropped_policy, 0.0, counts, failed
            )
        # what the added text costs at its seam with this prompt (see budget.Seam)
        seam = self._seam.delta(plan.request.prompt)
        if (
            len(blocks) == 1
            and known_tokens is not None
            and known_tokens + seam <= self.config.max_feature_tokens
            and not plan.request.context
        ):
            # The common case, joined here: exactly what fit_blocks gives for one block
            # that fits (segment counts are exact, so the sum is the count).
            lines = blocks[0].lines
            text = blocks[0].head + "".join([line.text_nl for line in lines]) + LAST_BLOCK_END
            return self._result(
                plan,
                text,
                known_tokens + seam,
                [line.name for line in lines if not noted or line.name != _STALE_NOTE],
                [],
                status,
                dropped_stale,
                dropped_policy,
                max(block_ages[0]),
                counts,
                failed,
            )
        try:
            context_block = self._context_block(plan, dropped_policy)
        except Exception as exc:  # a context that cannot be read: left out, not the features
            self._invalid(exc, "request context")
            context_block = None
        if context_block is not None:
            blocks.append(context_block)
        fitted = fit_blocks(
            blocks,
            self._count_tokens,
            self.config.max_feature_tokens - seam,
            count_segment=self._segment_tokens if self._segments_exact else None,
        )
        # feature lines are those of the feature blocks (the context block comes last)
        used: List[str] = []
        kept_ages: List[float] = []
        for line, (index, position) in zip(fitted.kept, fitted.kept_at, strict=True):
            if index < len(block_ages) and not (noted and line.name == _STALE_NOTE):
                used.append(line.name)
                kept_ages.append(block_ages[index][position])
        return self._result(
            plan,
            fitted.text,
            fitted.tokens + seam,
            used,
            fitted.dropped,
            status,
            dropped_stale,
            dropped_policy,
            max(kept_ages, default=0.0),
            counts,
            failed,
        )

    def _limit(self, name: str, limits: Mapping[str, float], threshold: float) -> Tuple[float, str]:
        """A feature's freshness limit and where it comes from: its override, else its
        view's ttl when shorter than the threshold, else the threshold."""
        overrides = self.config.freshness_overrides
        if overrides:
            override = overrides.get(name)
            if override is None and ":" in name:
                override = overrides.get(_plain(name))
            if override is not None:
                return float(override), "freshness_overrides"
        ttl = limits.get(name)
        if ttl is not None and ttl < threshold:
            return ttl, "view ttl"
        return float(threshold), "freshness_threshold_seconds"

    def _stale_line(self, plan: _Plan, names: Sequence[str]) -> Optional[Line]:
        """The ``- Left out as stale: ...`` line of an entity block (``stale_note``)."""
        reasons = plan.stale_reasons or {}
        text = "; ".join(
            f"{self._prefix(name)[2:-2]} ({reasons.get(name, 'stale')})" for name in names
        )
        line = self._line(_STALE_NOTE, text, None)
        return None if line is _NO_LINE or line is _BAD_LINE else line

    def _note_stale(
        self, plan: _Plan, name: str, age: float, limits: Mapping[str, float], threshold: float
    ) -> None:
        """Say in the result why ``name`` was dropped as stale."""
        limit, source = self._limit(name, limits, threshold)
        if age >= UNKNOWN_AGE:
            why = "unknown age (no usable event timestamp)"
        else:
            why = f"age {age:.0f} s > limit {limit:g} s ({source})"
        if plan.stale_reasons is None:
            plan.stale_reasons = {}
        plan.stale_reasons[name] = why

    def _segment_tokens(self, text: str) -> int:
        cache = self._segment_cache
        tokens = cache.get(text)
        if tokens is None:
            tokens = self._count_tokens(text)
            if len(text) <= 512:
                if len(cache) >= _SEGMENT_CACHE_SIZE:
                    cache.clear()
                cache[text] = tokens
        return tokens

    def _check_segments(self) -> bool:
        """True when summing segment counts is exact for this encoding (see
        :func:`asahi_features.budget.segments`); checked once on awkward samples."""
        samples = {
            "user": [
                "shoes, jacket",
                "25-34, urban",
                "x\u2019s (y)\u2026",
                "日本語 テキスト",
                "3.5",
            ],
            "organization": ["!!", "a-b", "\u00e9lan", "4 \U0001f600", "http://x.y/z?q=1"],
        }
        blocks = [
            Block(
                self._header(entity_type),
                [
                    Line(
                        f"f{i}", self._prefix(f"feature_{i}_{v[:2]}"), RenderedValue((v,), " ", "")
                    )
                    for i, v in enumerate(values)
                ],
            )
            for entity_type, values in samples.items()
        ]
        text = "".join(segments(blocks))
        count = self._count_tokens
        return count(text) == sum(count(p) for p in segments(blocks))

    def _context_block(self, plan: _Plan, dropped_policy: List[str]) -> Optional[Block]:
        context = plan.request.context
        if not context or not isinstance(context, Mapping):
            return None
        # Identity keys of the task's entity types are identities, not context.
        consumed = {f"{et}_id" for et in plan.features.mapping}
        block = Block(CONTEXT_HEADER)
        for key, value in context.items():
            try:
                key = key if type(key) is str else str(key)
                if key in consumed:
                    continue
                name = CONTEXT_PREFIX + key
                decision = self._policy.decide(key)
                if decision == "drop":
                    dropped_policy.append(name)
                    continue
                rendered = self._redacted if decision == "redact" else self._render(value)
                if rendered is None:
                    continue
                block.lines.append(Line(name, self._prefix(key), rendered))
            except Exception as exc:  # this entry cannot be shown: left out
                self._invalid(exc, "context entry")
        return block if block.lines else None

    def _result(
        self,
        plan: _Plan,
        text: str,
        tokens: int,
        used: List[str],
        dropped_budget: List[str],
        status: Dict[str, FeatureStatus],
        dropped_stale: List[str],
        dropped_policy: List[str],
        max_age: float,
        counts: Tuple[int, int, int, int, int],
        failed: bool,
    ) -> Dict[str, Any]:
        """The result's field values. ``text`` and ``tokens`` are what fitting gave,
        ``used`` the feature lines that made it in and ``max_age`` the oldest of them."""
        request = plan.request
        if used:
            reason = _ENRICHED
        else:
            text = ""  # context lines alone never make an enrichment
            reason = self._reason_not_enriched(
                counts,
                failed,
                bool(dropped_budget),
                plan.overloaded,
                bool(status) and all(s is _INVALID_ID for s in status.values()),
            )
        # A read that never left this process tells nothing about the store: a request
        # whose every read was refused that way did not attempt the store at all.
        attempted = not plan.overloaded or any(s is not _OVERLOADED for s in status.values())
        return {  # in the model's field order (model_dump follows this dict)
            "original_prompt": request.prompt,
            "enriched_prompt": text + request.prompt if text else request.prompt,
            "features_used": used,
            "feature_tokens_added": tokens if text else 0,
            "enrichment_latency_ms": 0.0,  # set by _finish
            "features_available": bool(used),
            "enrichment_id": "",  # set by _finish
            "task_type": request.task_type,
            "reason": reason,
            "feature_context": text,
            "entity_status": status,
            "missing_entities": plan.missing_entities,
            "dropped_stale": dropped_stale,
            "dropped_budget": dropped_budget,
            "dropped_policy": dropped_policy,
            "held_out": False,
            "store_attempted": attempted,
            "store_failed": failed,
            "max_freshness_seconds": max_age if used else 0.0,
            "created_at": datetime.now(timezone.utc),
            "stale_reasons": plan.stale_reasons or {},
        }

    @staticmethod
    def _reason_not_enriched(
        counts: Tuple[int, int, int, int, int],
        failed: bool,
        budget_dropped: bool,
        overloaded: bool = False,
        invalid_ids: bool = False,
    ) -> EnrichmentReason:
        found, with_values, fresh, allowed, invalid = counts
        if failed and found == 0:
            return EnrichmentReason.STORE_UNAVAILABLE
        if overloaded and found == 0:
            return EnrichmentReason.OVERLOADED
        if invalid_ids and found == 0:  # every entity's id was invalid: nothing else failed
            return EnrichmentReason.INVALID_ENTITY_ID
        if found == 0:
            return EnrichmentReason.ENTITY_MISSING
        if with_values == 0:
            return EnrichmentReason.NO_FEATURE_VALUES
        if fresh == 0:
            return EnrichmentReason.ALL_STALE
        if allowed == 0:
            return EnrichmentReason.POLICY_FILTERED
        if budget_dropped:
            return EnrichmentReason.BUDGET_EXHAUSTED
        if invalid:
            return EnrichmentReason.INVALID_INPUT
        return EnrichmentReason.NO_FEATURE_VALUES

    def _empty(
        self, plan: _Plan, reason: EnrichmentReason, *, held_out: bool = False
    ) -> Dict[str, Any]:
        request = plan.request
        return {  # in the model's field order, like _result
            "original_prompt": request.prompt,
            "enriched_prompt": request.prompt,
            "features_used": [],
            "feature_tokens_added": 0,
            "enrichment_latency_ms": 0.0,
            "features_available": False,
            "enrichment_id": "",
            "task_type": request.task_type,
            "reason": reason,
            "feature_context": "",
            "entity_status": {},
            "missing_entities": list(plan.missing_entities),
            "dropped_stale": [],
            "dropped_budget": [],
            "dropped_policy": [],
            "held_out": held_out,
            "store_attempted": False,
            "store_failed": False,
            "max_freshness_seconds": 0.0,
            "created_at": utc_now(),
            "stale_reasons": {},
        }


def build_enricher(
    config: Union[str, Path, AsahiConfig],
    *,
    monitor: Union[bool, EnrichmentGate, None] = None,
    check_features: bool = True,
) -> FeatureEnricher:
    """An enricher over the guarded client described by a configuration.

    Configuration mistakes are found here, not on the first request: when the store can
    list its features, every feature that an enabled task type maps must exist in it
    (see :func:`~asahi_features.config.check_task_features`). The check waits at most
    ``max(timeout_ms, 1 s)``; a store that is down or slow is skipped with one WARNING,
    one that cannot list its features (no ``list_features``) silently.

    Args:
        config: a configuration file path or a loaded
            :class:`~asahi_features.settings.AsahiConfig`.
        monitor: ``True`` builds a :class:`~asahi_features.monitor.FeatureMonitor` from the
            ``monitor:`` section, watching the guard's circuit breaker; an object
            implementing :class:`EnrichmentGate` is used as is; ``None`` / ``False``: none.
        check_features: check the task map against the store (default ``True``).

    With ``telemetry.opentelemetry: true`` the enricher (and its monitor) is traced with
    OpenTelemetry (see :func:`~asahi_features.telemetry.enable_opentelemetry`).

    Raises:
        ConfigError: the file or a key is invalid, the backend is not available, or
            ``telemetry.opentelemetry`` is true without the ``otel`` extra.
        FeatureConfigError: an enabled task maps a feature or entity type the store does
            not have; the message names the task and suggests close matches.
        TokenizerUnavailableError: the configured encoding cannot be loaded offline.

    Example:
        >>> enricher = build_enricher("examples/config.yaml")  # doctest: +SKIP
        >>> enricher.enrich("Recommend a product", user_id="u_1001",
        ...                 task_type="product_recommendation").features_available  # doctest: +SKIP
        True
    """
    from .config import check_task_features, client_from_config, load_config

    if not isinstance(config, AsahiConfig):
        config = load_config(config)
    telemetry = config.telemetry
    if telemetry.opentelemetry:  # before anything is opened: a missing extra fails first
        from .telemetry import require_opentelemetry

        require_opentelemetry("telemetry.opentelemetry")
    client = client_from_config(config)
    if check_features:
        seconds = max(config.feature_store.timeout_ms / 1000.0, 1.0)
        try:
            check_task_features(client, config.enricher, timeout_seconds=seconds)
        except BaseException:
            closer = getattr(client, "close", None)
            if callable(closer):
                closer()
            raise
    gate: Optional[EnrichmentGate]
    if monitor is True:
        from .monitor import FeatureMonitor

        # The monitor follows the guard's circuit breaker, so should_enrich agrees with it.
        watched = client if getattr(client, "breaker", None) is not None else None
        gate = FeatureMonitor(config.monitor, breaker=watched)
    elif monitor is None or monitor is False:
        gate = None
    else:
        gate = monitor
    enricher = FeatureEnricher(client, config.enricher, monitor=gate)
    if telemetry.opentelemetry:
        from .telemetry import enable_opentelemetry

        enable_opentelemetry(
            enricher, record_ids=telemetry.record_ids, evaluation_name=telemetry.evaluation_name
        )
    return enricher
