"""The sample repository's data: deterministic, seeded rows for every sample view.

:func:`generate_user_rows` and :func:`generate_organization_rows` give the rows per view
name, with event timestamps relative to a reference time (so that freshness is
meaningful right after a build). The same seed, size and time always give the same rows;
the deliberately odd ids of :mod:`asahi_features._sample.definitions` get old or partial
rows. Most of this module is data: categories, products, languages, brand voices.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

from .definitions import (
    SAMPLE_VIEWS,
    _is_partial_user,
    _is_stale_org,
    _is_stale_user,
    organization_id,
    user_id,
)

__all__ = ["generate_organization_rows", "generate_user_rows"]

_CATEGORIES: Dict[str, List[str]] = {
    "athletic wear": ["running shoes", "sneakers", "track jacket", "sports socks", "t-shirt"],
    "outdoor gear": ["hiking boots", "rain jacket", "backpack", "water bottle", "headlamp"],
    "home office": ["laptop stand", "usb-c hub", "desk lamp", "ergonomic chair", "webcam"],
    "kitchen": ["chef's knife", "cast iron pan", "coffee grinder", "french press", "apron"],
    "menswear": ["leather belt", "oxford shirt", "chinos", "wool jacket", "loafers"],
    "womenswear": ["linen dress", "denim jacket", "ankle boots", "silk scarf", "tote bag"],
    "electronics": ["wireless earbuds", "phone case", "smartwatch", "power bank", "e-reader"],
    "books": ["sci-fi novel", "cookbook", "travel guide", "biography", "poetry collection"],
}
_STYLES = {
    "athletic wear": "casual athletic",
    "outdoor gear": "rugged outdoor",
    "home office": "minimalist office gear",
    "kitchen": "home cooking enthusiast",
    "menswear": "smart casual",
    "womenswear": "modern classic",
    "electronics": "early adopter tech",
    "books": "avid reader",
}
_BUDGETS = ["budget-conscious", "medium", "premium"]
_AGE_BANDS = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
_AREAS = ["urban", "suburban", "rural"]
_TIERS = ["free", "silver", "gold", "platinum"]
_TIER_WEIGHTS = [40, 30, 20, 10]
_TICKETS = [
    "late delivery",
    "refund request",
    "password reset",
    "damaged item",
    "billing question",
    "size exchange",
    "warranty claim",
    "app login issue",
]
_PRODUCTS = ["Asahi Basic", "Asahi Pro", "Desk Pro", "Hub X", "Cloud Backup", "Support Plus"]
_LANGS = ["python", "typescript", "go", "rust", "java", "kotlin", "c#", "sql", "ruby"]
_FRAMEWORKS = {
    "python": ["fastapi", "django", "pytest", "pandas"],
    "typescript": ["react", "next.js", "express", "vitest"],
    "go": ["gin", "cobra", "sqlc"],
    "rust": ["tokio", "axum", "serde"],
    "java": ["spring boot", "junit", "hibernate"],
    "kotlin": ["ktor", "spring boot", "compose"],
    "c#": ["asp.net core", "xunit", "entity framework"],
    "sql": ["dbt", "airflow"],
    "ruby": ["rails", "rspec", "sidekiq"],
}
_READING = ["basic", "intermediate", "expert"]
_SPOKEN = ["en", "en", "en", "es", "de", "fr", "ja", "pt"]
_VOICES = ["friendly", "authoritative", "playful", "warm", "technical", "bold", "calm"]
_TONES = ["formal", "casual", "upbeat", "reassuring", "concise", "conversational"]
_GUIDES = [
    "Use sentence case; avoid jargon; one idea per sentence",
    "Active voice; short paragraphs; no exclamation marks",
    "British spelling; Oxford comma; numbers under ten in words",
    "Lead with the benefit; second person; end with a clear next step",
    "Plain language at grade 8; define acronyms on first use",
    "Emoji allowed sparingly; keep sentences under 20 words",
]


def _fresh_ts(rng: random.Random, now: datetime) -> datetime:
    return now - timedelta(seconds=rng.randint(5, 45 * 60))


def _stale_ts(rng: random.Random, now: datetime) -> datetime:
    return now - timedelta(days=rng.randint(3, 10), seconds=rng.randint(0, 3600))


def generate_user_rows(
    users: int = 1000, *, seed: int = 7, now: Optional[datetime] = None
) -> Dict[str, List[Dict[str, Any]]]:
    """Deterministic user rows per view name (``{"user_purchases": [row, ...], ...}``).

    Every row has ``user_id`` and ``event_timestamp`` (aware UTC). The same ``seed``,
    ``users`` and ``now`` always give the same rows.

    Args:
        users: how many users (``u_0001`` ... ``u_{users:04d}``).
        seed: the random seed.
        now: the reference time (default: the current time).
    """
    now = now or datetime.now(timezone.utc)
    rng = random.Random(seed)
    out: Dict[str, List[Dict[str, Any]]] = {v.name: [] for v in SAMPLE_VIEWS if v.entity == "user"}
    categories = sorted(_CATEGORIES)
    for n in range(1, users + 1):
        uid = user_id(n)
        stale = _is_stale_user(n)
        partial = _is_partial_user(n)

        def ts() -> datetime:
            return _stale_ts(rng, now) if stale else _fresh_ts(rng, now)  # noqa: B023

        main, second = rng.sample(categories, 2)
        pool = _CATEGORIES[main] + _CATEGORIES[second][:2]
        history = rng.sample(pool, rng.randint(2, 6))
        out["user_purchases"].append(
            {
                "user_id": uid,
                "event_timestamp": ts(),
                "purchase_history": history,
                "browsing": None if partial else f"currently viewing {main}",
                "budget_level": None if partial else rng.choice(_BUDGETS),
            }
        )
        out["user_profile"].append(
            {
                "user_id": uid,
                "event_timestamp": ts(),
                "preferences": f"{_STYLES[main]}, {rng.choice(_BUDGETS)}",
                "demographics": None
                if partial
                else f"{rng.choice(_AGE_BANDS)}, {rng.choice(_AREAS)}",
                "tier": rng.choices(_TIERS, _TIER_WEIGHTS)[0],
                "reading_level": rng.choice(_READING),
                "preferred_language": rng.choice(_SPOKEN),
            }
        )
        tickets = [
            f"T-{rng.randint(1000, 9999)}: {rng.choice(_TICKETS)}" for _ in range(rng.randint(0, 3))
        ]
        out["user_support"].append(
            {
                "user_id": uid,
                "event_timestamp": ts(),
                "recent_tickets": None if partial else tickets,
                "product_owned": sorted(rng.sample(_PRODUCTS, rng.randint(1, 3))),
            }
        )
        langs = rng.sample(_LANGS, rng.randint(1, 3))
        frameworks = [fw for lang in langs for fw in _FRAMEWORKS[lang][: rng.randint(1, 3)]]
        if not partial:
            out["user_dev"].append(
                {
                    "user_id": uid,
                    "event_timestamp": ts(),
                    "language_preferences": langs,
                    "framework_history": frameworks,
                }
            )
    return out


def generate_organization_rows(
    organizations: int = 50, *, seed: int = 7, now: Optional[datetime] = None
) -> Dict[str, List[Dict[str, Any]]]:
    """Deterministic organisation rows per view name (``{"org_brand": [...]}``)."""
    now = now or datetime.now(timezone.utc)
    rng = random.Random(seed * 7919 + 1)
    rows = []
    for n in range(1, organizations + 1):
        stale = _is_stale_org(n)
        rows.append(
            {
                "organization_id": organization_id(n),
                "event_timestamp": now - timedelta(days=5) if stale else _fresh_ts(rng, now),
                "brand_voice": rng.choice(_VOICES),
                "tone": rng.choice(_TONES),
                "style_guide": rng.choice(_GUIDES),
            }
        )
    return {"org_brand": rows}
