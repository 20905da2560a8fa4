"""The sample repository's definitions: entities, feature views, the sample task map, ids.

Described without importing Feast (:class:`EntitySpec`, :class:`FieldSpec`,
:class:`ViewSpec`); :mod:`asahi_features._sample.build` turns them into Feast objects.
The id helpers say which ids the generator makes deliberately odd: stale users
(``n % 100 == 7``), partial users (``n % 100 == 13``, :data:`PARTIAL_NULL_FEATURES` null,
no ``user_dev`` row) and stale organisations (``n % 25 == 7``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Tuple

__all__ = [
    "ENTITIES",
    "PARTIAL_NULL_FEATURES",
    "PROJECT",
    "SAMPLE_TASK_FEATURES",
    "SAMPLE_VIEWS",
    "EntitySpec",
    "FieldKind",
    "FieldSpec",
    "ViewSpec",
    "organization_id",
    "partial_user_ids",
    "stale_organization_ids",
    "stale_user_ids",
    "user_id",
]

PROJECT = "asahi"
"""The Feast project name of the sample repository."""

SAMPLE_TASK_FEATURES: Dict[str, Dict[str, List[str]]] = {
    "general": {"user": ["tier", "preferences", "preferred_language"]},
    "summarization": {"user": ["reading_level", "preferred_language"]},
    "faq": {"user": ["tier", "product_owned", "preferred_language"]},
    "product_recommendation": {
        "user": ["purchase_history", "browsing", "preferences", "budget_level", "demographics"]
    },
    "customer_support": {"user": ["tier", "recent_tickets", "product_owned"]},
    "content_generation": {"organization": ["brand_voice", "tone", "style_guide"]},
    "code_generation": {"user": ["language_preferences", "framework_history"]},
}
"""A richer task map than the defaults (which are exactly spec table 3.5), using every
feature the sample repository serves: set it as ``enricher.task_features`` (as
``examples/config.yaml`` does) to show budget, demographics, reading level and language
(their labels are among ``DEFAULT_FEATURE_LABELS``)."""

FieldKind = Literal["string", "string_list", "int", "float"]


@dataclass(frozen=True)
class EntitySpec:
    """A Feast entity: its name (the library's entity type) and join key."""

    name: str
    join_key: str
    description: str = ""


@dataclass(frozen=True)
class FieldSpec:
    """One feature of a view: name and kind (``string``, ``string_list``, ``int``, ``float``)."""

    name: str
    kind: FieldKind = "string"


@dataclass(frozen=True)
class ViewSpec:
    """A feature view of one entity, described without importing Feast."""

    name: str
    entity: str
    fields: Tuple[FieldSpec, ...]
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def feature_names(self) -> List[str]:
        """The plain feature names of the view, in definition order."""
        return [f.name for f in self.fields]


ENTITIES: Tuple[EntitySpec, ...] = (
    EntitySpec("user", "user_id", "An end user of the application"),
    EntitySpec("organization", "organization_id", "A customer organisation (a tenant)"),
)

_L: FieldKind = "string_list"

SAMPLE_VIEWS: Tuple[ViewSpec, ...] = (
    ViewSpec(
        "user_purchases",
        "user",
        (FieldSpec("purchase_history", _L), FieldSpec("browsing"), FieldSpec("budget_level")),
        "Recent purchases (most recent first), current browsing and budget",
    ),
    ViewSpec(
        "user_profile",
        "user",
        (
            FieldSpec("preferences"),
            FieldSpec("demographics"),
            FieldSpec("tier"),
            FieldSpec("reading_level"),
            FieldSpec("preferred_language"),
        ),
        "Profile and preferences",
    ),
    ViewSpec(
        "user_support",
        "user",
        (FieldSpec("recent_tickets", _L), FieldSpec("product_owned", _L)),
        "Support history and owned products",
    ),
    ViewSpec(
        "user_dev",
        "user",
        (FieldSpec("language_preferences", _L), FieldSpec("framework_history", _L)),
        "Programming languages and frameworks the user works with",
    ),
    ViewSpec(
        "org_brand",
        "organization",
        (FieldSpec("brand_voice"), FieldSpec("tone"), FieldSpec("style_guide")),
        "Brand voice, tone and style guide of an organisation",
    ),
)

# -- ids and deliberate oddities ---------------------------------------------------------


def user_id(number: int) -> str:
    """The id of user ``number`` (1-based): ``u_0001``."""
    return f"u_{number:04d}"


def organization_id(number: int) -> str:
    """The id of organisation ``number`` (1-based): ``org_001``."""
    return f"org_{number:03d}"


def _is_stale_user(number: int) -> bool:
    return number % 100 == 7


def _is_partial_user(number: int) -> bool:
    return number % 100 == 13


def _is_stale_org(number: int) -> bool:
    return number % 25 == 7


def stale_user_ids(users: int = 1000) -> List[str]:
    """Users whose data is days old (``u_0007``, ``u_0107``, ...)."""
    return [user_id(n) for n in range(1, users + 1) if _is_stale_user(n)]


def partial_user_ids(users: int = 1000) -> List[str]:
    """Users with some null features and no ``user_dev`` row (``u_0013``, ...)."""
    return [user_id(n) for n in range(1, users + 1) if _is_partial_user(n)]


def stale_organization_ids(organizations: int = 50) -> List[str]:
    """Organisations whose data is days old (``org_007``, ``org_032``, ...)."""
    return [organization_id(n) for n in range(1, organizations + 1) if _is_stale_org(n)]


PARTIAL_NULL_FEATURES: Tuple[str, ...] = (
    "browsing",
    "budget_level",
    "demographics",
    "recent_tickets",
    "framework_history",
)
"""Features that are null for the partial users."""
