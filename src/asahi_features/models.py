"""Data models that cross the library's boundaries (spec sections 2.3 and 3.3)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Callable, Dict, Iterable, List, Optional, Type, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EnrichmentReason",
    "EnrichmentRequest",
    "EnrichmentResult",
    "FeatureStatus",
    "FeatureVector",
    "utc_now",
]


_Model = TypeVar("_Model", bound=BaseModel)


def trusted_constructor(
    cls: Type[_Model], fields_set: Optional[Iterable[str]] = None
) -> Callable[[Dict[str, Any]], _Model]:
    """A function that builds a ``cls`` from a dict holding every field, already typed,
    without validation: what ``cls.model_construct(**values)`` gives, several times
    faster (the dict itself becomes the instance's ``__dict__``). For the hot paths that
    make one object per request or per entity.

    ``fields_set`` is what ``model_fields_set`` reports (default: every field).
    """
    fields = set(cls.model_fields if fields_set is None else fields_set)
    new = object.__new__
    slots = BaseModel.__dict__
    set_dict = slots["__dict__"].__set__
    set_fields = slots["__pydantic_fields_set__"].__set__
    set_extra = slots["__pydantic_extra__"].__set__
    set_private = slots["__pydantic_private__"].__set__

    def construct(values: Dict[str, Any]) -> _Model:
        obj: _Model = new(cls)
        set_dict(obj, values)
        set_fields(obj, fields.copy())
        set_extra(obj, None)
        set_private(obj, None)
        return obj

    return construct


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (the library never uses naive times)."""
    return datetime.now(timezone.utc)


class FeatureStatus(str, Enum):
    """Why a :class:`FeatureVector` holds what it holds."""

    FOUND = "found"
    """The entity exists; ``features`` holds its non-null requested features."""
    MISSING = "missing"
    """The store answered but has no row for this entity."""
    UNAVAILABLE = "unavailable"
    """The store was down or too slow and the guard fell back (``features`` is empty)."""
    OVERLOADED = "overloaded"
    """This process was too busy to read the store in time and the guard fell back
    (``features`` is empty). Says nothing about the store's health."""
    INVALID_ID = "invalid_id"
    """The entity id is no value of the store's join key type (``"abc"`` for an integer
    key): nothing was read for it (``features`` is empty, ``error`` says why). A normal
    answer about this request, not a store failure; never cached."""


class FeatureVector(BaseModel):
    """The features of one entity, as returned by every backend.

    The first six fields are exactly those of the specification. ``freshness_seconds`` is
    the age of the *oldest* returned feature; ``feature_freshness`` keeps the age of each
    feature so that the enricher can drop only the stale ones.

    An empty vector (entity missing, or a fallback because the store was unavailable) has
    ``features == {}`` and ``freshness_seconds == 0.0``; ``status`` tells the cases apart.
    """

    model_config = ConfigDict(frozen=False)

    entity_id: str
    entity_type: str
    features: Dict[str, Any]
    retrieved_at: datetime
    freshness_seconds: float
    source: str
    status: FeatureStatus = FeatureStatus.FOUND
    feature_freshness: Dict[str, float] = Field(default_factory=dict)
    error: Optional[str] = None
    """For ``UNAVAILABLE`` vectors: a short, secret-free description of the failure."""
    freshness_limits: Dict[str, float] = Field(default_factory=dict)
    """Feature -> the store's own freshness limit in seconds (a Feast view's ``ttl``);
    the enricher caps it by ``freshness_threshold_seconds``. Shared between vectors:
    never modified."""

    @classmethod
    def empty(
        cls,
        entity_id: str,
        entity_type: str,
        source: str,
        status: FeatureStatus = FeatureStatus.MISSING,
        *,
        retrieved_at: Optional[datetime] = None,
        error: Optional[str] = None,
    ) -> FeatureVector:
        """An empty vector for a missing entity or an unavailable store."""
        return cls.model_construct(
            entity_id=entity_id,
            entity_type=entity_type,
            features={},
            retrieved_at=retrieved_at or utc_now(),
            freshness_seconds=0.0,
            source=source,
            status=status,
            feature_freshness={},
            error=error,
        )

    @classmethod
    def from_ages(
        cls,
        entity_id: str,
        entity_type: str,
        source: str,
        features: Dict[str, Any],
        feature_freshness: Dict[str, float],
        retrieved_at: datetime,
    ) -> FeatureVector:
        """A found vector; ``freshness_seconds`` is derived from the per-feature ages.

        Built without re-validation: backends call it on the hot path with values they
        have already typed.
        """
        if not features:
            return cls.empty(entity_id, entity_type, source, retrieved_at=retrieved_at)
        ages = [feature_freshness[name] for name in features if name in feature_freshness]
        return cls.model_construct(
            entity_id=entity_id,
            entity_type=entity_type,
            features=features,
            retrieved_at=retrieved_at,
            freshness_seconds=max(ages) if ages else 0.0,
            source=source,
            status=FeatureStatus.FOUND,
            feature_freshness=feature_freshness,
            error=None,
        )

    @property
    def is_empty(self) -> bool:
        """True when the vector carries no features (missing entity or fallback)."""
        return not self.features


class EnrichmentReason(str, Enum):
    """Machine-readable outcome of one enrichment."""

    ENRICHED = "enriched"
    """At least one feature line was added."""
    TASK_NOT_ENABLED = "task_not_enabled"
    NO_FEATURES_MAPPED = "no_features_mapped"
    NO_IDENTITY = "no_identity"
    ENTITY_MISSING = "entity_missing"
    STORE_UNAVAILABLE = "store_unavailable"
    ALL_STALE = "all_stale"
    POLICY_FILTERED = "policy_filtered"
    BUDGET_EXHAUSTED = "budget_exhausted"
    HELD_OUT = "held_out"
    """Deliberately not enriched: the request belongs to the monitor's control group."""
    DISABLED_BY_MONITOR = "disabled_by_monitor"
    """The monitor's ``should_enrich`` said no (store failing, or enrichment not helping)."""
    NO_FEATURE_VALUES = "no_feature_values"
    """The entity exists but every requested feature is null."""
    OVERLOADED = "overloaded"
    """The process was too busy to read the store in time (every guard worker busy with
    healthy calls, or the event loop running late): not a store failure."""
    INVALID_INPUT = "invalid_input"
    """Something this request brought cannot be used: an identity that cannot be encoded
    (a lone surrogate) or converted to text, a context that is not a mapping, or feature
    values none of which can be rendered (``Decimal('sNaN')`` aside, which is NaN: an int
    too long to print, an object whose ``str()`` fails). Only this request is affected;
    a value that cannot be rendered next to others only loses its own line."""
    INVALID_ENTITY_ID = "invalid_entity_id"
    """Every entity id of the request is invalid for the store's join key type (an
    ``INVALID_ID`` vector each, e.g. ``"abc"`` for an integer key): only this request
    is affected."""


class EnrichmentResult(BaseModel):
    """The outcome of :meth:`FeatureEnricher.enrich`.

    The first six fields are the specification's. The rest let the monitor and later
    quality scores refer to this enrichment (``enrichment_id``), explain why nothing was
    added (``reason``) and show what was left out and why.
    """

    original_prompt: str
    enriched_prompt: str
    features_used: List[str]
    feature_tokens_added: int
    enrichment_latency_ms: float
    features_available: bool

    enrichment_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    task_type: str = "general"
    reason: EnrichmentReason = EnrichmentReason.ENRICHED
    feature_context: str = ""
    """The text added before the original prompt (blocks and separator), alone."""
    entity_status: Dict[str, FeatureStatus] = Field(default_factory=dict)
    """Per entity type the task uses, what the store said."""
    missing_entities: List[str] = Field(default_factory=list)
    """Entity types the task uses for which no identity was given."""
    dropped_stale: List[str] = Field(default_factory=list)
    dropped_budget: List[str] = Field(default_factory=list)
    dropped_policy: List[str] = Field(default_factory=list)
    held_out: bool = False
    store_attempted: bool = False
    """True when the store was asked (held-out and disabled tasks never are)."""
    store_failed: bool = False
    """True when a fetch was attempted and failed by timeout or unavailability."""
    max_freshness_seconds: float = 0.0
    """Age of the oldest feature that made it into the prompt."""
    created_at: datetime = Field(default_factory=utc_now)
    stale_reasons: Dict[str, str] = Field(default_factory=dict)
    """Why each of ``dropped_stale`` was dropped: its age and the limit it passed, and
    where the limit comes from (``freshness_threshold_seconds``, the view's ``ttl``,
    ``freshness_overrides``), or that its age is unknown."""

    @property
    def succeeded(self) -> bool:
        """True when features reached the prompt."""
        return self.features_available


class EnrichmentRequest(BaseModel):
    """One request to enrich, as taken by the batch methods of the enricher."""

    prompt: str
    user_id: Optional[str] = None
    organization_id: Optional[str] = None
    task_type: str = "general"
    context: Optional[Dict[str, Any]] = None
    entity_ids: Optional[Dict[str, str]] = None
    """Ids of other entity types (``{"merchant": "m-1"}``); not user / organization."""
