"""The :class:`FeatureEnricher` class: its state and its public methods.

Every step is a method of one of its parts (planning, fetching, rendering, results),
moved as is: the public methods call them exactly as before, with no extra layer.
"""

from __future__ import annotations

import time
import types
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ..budget import LAST_BLOCK_END, Line, Seam
from ..models import EnrichmentRequest, EnrichmentResult, FeatureVector
from ..observers import OBSERVED_METHODS, EnrichmentObserver, observed
from ..rendering import RenderedValue
from ..sanitizing import prepare, sanitize
from ..settings import EnricherConfig
from ..stores.base import FeatureStoreClient, aget_features
from ..tokens import TokenCounter
from .fetching import _Fetching
from .gate import EnrichmentGate
from .planning import EnrichmentTuple, _Group, _Planning, _TaskFeatures
from .policy import _PolicyMatcher
from .results import _Results

__all__ = ["FeatureEnricher"]


class FeatureEnricher(_Planning, _Fetching, _Results):
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
