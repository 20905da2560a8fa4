"""The bundled sample Feast repository: definitions, a seeded data generator and a builder.

One module on purpose (about 715 lines): the sample repository is one artefact (entity
and view definitions, the seeded generator that fills them, the builder); most of its
length is data.

The repository is a Feast project named ``asahi`` whose feature views cover the task
feature table of the specification (``DEFAULT_TASK_FEATURES`` in
:mod:`asahi_features.settings`) and a few more features that a richer, user-configured
task map uses (:data:`SAMPLE_TASK_FEATURES`, the map of ``examples/config.yaml``):

=================  ============  ===========================================================
view               entity        features
=================  ============  ===========================================================
user_purchases     user          purchase_history (list, most recent first), browsing,
                                 budget_level
user_profile       user          preferences, demographics, tier, reading_level,
                                 preferred_language
user_support       user          recent_tickets (list), product_owned (list)
user_dev           user          language_preferences (list), framework_history (list)
org_brand          organization  brand_voice, tone, style_guide
=================  ============  ===========================================================

Ids are ``u_0001`` ... and ``org_001`` .... Event timestamps are relative to the build
time, so freshness is meaningful right after a build. Deliberate oddities (also returned
by :func:`stale_user_ids`, :func:`partial_user_ids` and :func:`stale_organization_ids`):

* **stale users**: every user whose number ends in ``07`` within a hundred (``u_0007``,
  ``u_0107``, ...): every view's event timestamp is 3 to 10 days old.
* **partial users**: every user whose number ends in ``13`` within a hundred (``u_0013``,
  ``u_0113``, ...): ``browsing``, ``budget_level``, ``demographics``, ``recent_tickets``
  and ``framework_history`` are null, and the user has no ``user_dev`` row at all.
* **stale organisations**: ``org_007``, ``org_032``, ... (every 25th from 7): 5 days old.
* Ids past the generated range (``u_9999`` with the default 1,000 users) do not exist.

Build it with ``python -m asahi_features.sample_repo build DIR`` or
:func:`build_sample_repo`; Feast's CLI is not needed. Feast is imported lazily.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional, Tuple

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = [
    "ENTITIES",
    "PROJECT",
    "SAMPLE_TASK_FEATURES",
    "SAMPLE_VIEWS",
    "EntitySpec",
    "FieldSpec",
    "ViewSpec",
    "apply_view",
    "build_sample_repo",
    "feature_store_yaml",
    "generate_organization_rows",
    "generate_user_rows",
    "main",
    "organization_id",
    "partial_user_ids",
    "stale_organization_ids",
    "stale_user_ids",
    "user_id",
]

logger = logging.getLogger(__name__)

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
OnlineStore = Literal["sqlite", "redis"]
Progress = Callable[[str], None]

_MANIFEST = "asahi_sample.json"


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

# -- the data generator ------------------------------------------------------------------

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


# -- feature_store.yaml ------------------------------------------------------------------


def feature_store_yaml(
    online_store: OnlineStore = "sqlite",
    redis_connection: Optional[str] = None,
    *,
    project: str = PROJECT,
    registry_ttl_seconds: int = 60,
) -> str:
    """The text of ``feature_store.yaml`` for the SQLite or the Redis online store.

    Args:
        online_store: ``"sqlite"`` (a file in ``data/``) or ``"redis"``.
        redis_connection: ``host:port[,options]`` for Redis (default ``localhost:6379``).
        project: the Feast project name.
        registry_ttl_seconds: how long Feast caches the registry before re-reading it.
    """
    if online_store == "sqlite":
        online = "online_store:\n  type: sqlite\n  path: data/online_store.db\n"
    elif online_store == "redis":
        conn = redis_connection or "localhost:6379"
        online = f'online_store:\n  type: redis\n  connection_string: "{conn}"\n'
    else:
        raise ValueError(f"online_store must be 'sqlite' or 'redis', got {online_store!r}")
    return (
        f"project: {project}\n"
        "provider: local\n"
        "registry:\n"
        "  path: data/registry.db\n"
        f"  cache_ttl_seconds: {int(registry_ttl_seconds)}\n"
        f"{online}"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )


# -- building ----------------------------------------------------------------------------


def _feast_type(kind: FieldKind) -> Any:
    from feast import types

    return {
        "string": types.String,
        "string_list": types.Array(types.String),
        "int": types.Int64,
        "float": types.Float64,
    }[kind]


def feast_objects(
    views: Iterable[ViewSpec], data_dir: Path, entities: Iterable[EntitySpec] = ENTITIES
) -> List[Any]:
    """Feast ``Entity`` and ``FeatureView`` objects for ``views`` (sources in ``data_dir``).

    Each view reads ``data_dir / f"{view.name}.parquet"`` offline.
    """
    from feast import Entity, FeatureView, Field, FileSource, ValueType

    entity_specs = {e.name: e for e in entities}
    objects: List[Any] = []
    feast_entities: Dict[str, Any] = {}
    for view in views:
        spec = entity_specs[view.entity]
        if view.entity not in feast_entities:
            feast_entities[view.entity] = Entity(
                name=spec.name,
                join_keys=[spec.join_key],
                value_type=ValueType.STRING,
                description=spec.description,
            )
            objects.append(feast_entities[view.entity])
        source = FileSource(
            name=f"{view.name}_source",
            path=str((data_dir / f"{view.name}.parquet").resolve()),
            timestamp_field="event_timestamp",
        )
        objects.append(
            FeatureView(
                name=view.name,
                entities=[feast_entities[view.entity]],
                ttl=timedelta(days=30),
                schema=[Field(name=f.name, dtype=_feast_type(f.kind)) for f in view.fields],
                source=source,
                online=True,
                description=view.description,
                tags=dict(view.tags),
            )
        )
    return objects


def _write_parquet(path: Path, rows: Sequence[Mapping[str, Any]], view: ViewSpec) -> Any:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    join_key = next(e.join_key for e in ENTITIES if e.name == view.entity)
    arrow_types = {
        "string": pa.string(),
        "string_list": pa.list_(pa.string()),
        "int": pa.int64(),
        "float": pa.float64(),
    }
    schema = pa.schema(
        [
            pa.field(join_key, pa.string()),
            pa.field("event_timestamp", pa.timestamp("us", tz="UTC")),
            *[pa.field(f.name, arrow_types[f.kind]) for f in view.fields],
        ]
    )
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    table = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(table, path)
    return table.to_pandas()


def _entity_spec(name: str) -> EntitySpec:
    for spec in ENTITIES:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown entity {name!r}; known: {', '.join(e.name for e in ENTITIES)}")


def apply_view(
    repo_path: str | Path,
    view: ViewSpec,
    rows: Sequence[Mapping[str, Any]],
    *,
    store: Optional[FeatureStore] = None,
) -> None:
    """Add (or replace) one feature view in a built repository and load its rows online.

    Does what ``feast apply`` followed by a load would do for one view: writes the
    view's Parquet file under ``data/``, registers the entity and the view, and writes
    ``rows`` (each with the join key and ``event_timestamp``) to the online store.

    Args:
        repo_path: the repository directory (with ``feature_store.yaml``).
        view: the view to add.
        rows: its rows.
        store: an existing FeatureStore of that repository (default: a new one).
    """
    from feast import FeatureStore

    repo = Path(repo_path)
    data_dir = repo / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    _entity_spec(view.entity)
    store = store or FeatureStore(repo_path=str(repo))
    frame = _write_parquet(data_dir / f"{view.name}.parquet", rows, view)
    store.apply(feast_objects([view], data_dir))
    if len(frame):
        store.write_to_online_store(view.name, frame, allow_registry_cache=False)


def build_sample_repo(
    path: str | Path,
    *,
    users: int = 1000,
    organizations: int = 50,
    seed: int = 7,
    online_store: OnlineStore = "sqlite",
    redis_connection: Optional[str] = None,
    progress: Optional[Progress] = None,
    extra_views: Sequence[Tuple[ViewSpec, Sequence[Mapping[str, Any]]]] = (),
    now: Optional[datetime] = None,
) -> Path:
    """Build the sample Feast repository in ``path``: write, apply and load it online.

    Writes ``feature_store.yaml``, ``features.py`` (for ``feast apply`` by hand) and the
    Parquet files under ``data/``, registers the entities and views and loads every row
    into the online store, all in-process. Running it again on the same directory is
    safe: the registry is updated in place, the online rows are overwritten and the
    event timestamps are renewed relative to the new build time.

    Args:
        path: the directory (created if needed).
        users: number of users (at least 1).
        organizations: number of organisations (at least 1).
        seed: random seed of the data generator.
        online_store: ``"sqlite"`` (default, a file in ``data/``) or ``"redis"``.
        redis_connection: ``host:port`` of the Redis server when ``online_store="redis"``.
        progress: called with a short message after each step (e.g. ``print``).
        extra_views: more ``(view, rows)`` pairs to add (tests use this).
        now: reference time of the event timestamps (default: now).

    Returns:
        The repository directory.

    Raises:
        ValueError: an argument is out of range.

    Example:
        >>> repo = build_sample_repo("/tmp/asahi_repo", users=1000)  # doctest: +SKIP
        >>> client = FeastClient(str(repo), "asahi")  # doctest: +SKIP
    """
    if users < 1 or organizations < 1:
        raise ValueError(
            f"users and organizations must be at least 1, got {users} and {organizations}"
        )
    if online_store not in ("sqlite", "redis"):
        raise ValueError(f"online_store must be 'sqlite' or 'redis', got {online_store!r}")
    say: Progress = progress or (lambda _msg: None)
    from feast import FeatureStore

    repo = Path(path).expanduser().resolve()
    data_dir = repo / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    yaml_text = feature_store_yaml(online_store, redis_connection)
    yaml_path = repo / "feature_store.yaml"
    current = yaml_path.read_text(encoding="utf-8") if yaml_path.exists() else None
    if current is None or _strip_comments(current) != _strip_comments(yaml_text):
        if current is not None:
            # Another online store or registry: start from a fresh registry.
            (data_dir / "registry.db").unlink(missing_ok=True)
        yaml_path.write_text(yaml_text, encoding="utf-8")
    (repo / "features.py").write_text(definitions_source(), encoding="utf-8")
    say(f"wrote {yaml_path} ({online_store} online store)")

    now = now or datetime.now(timezone.utc)
    rows = generate_user_rows(users, seed=seed, now=now)
    rows.update(generate_organization_rows(organizations, seed=seed, now=now))
    views: List[Tuple[ViewSpec, Sequence[Mapping[str, Any]]]] = [
        (view, rows[view.name]) for view in SAMPLE_VIEWS
    ]
    views.extend(extra_views)
    frames = {
        view.name: _write_parquet(data_dir / f"{view.name}.parquet", r, view) for view, r in views
    }
    say(f"generated {users} users and {organizations} organisations (seed {seed})")

    store = FeatureStore(repo_path=str(repo))
    store.apply(feast_objects([view for view, _ in views], data_dir))
    say(f"applied {len(views)} feature views to project {PROJECT!r}")
    for view, _ in views:
        frame = frames[view.name]
        if len(frame):
            store.write_to_online_store(view.name, frame, allow_registry_cache=True)
    say(f"loaded the {online_store} online store")
    manifest = {
        "project": PROJECT,
        "built_at": now.isoformat(),
        "params": {
            "users": users,
            "organizations": organizations,
            "seed": seed,
            "online_store": online_store,
        },
        "stale_user_ids": stale_user_ids(users),
        "partial_user_ids": partial_user_ids(users),
        "stale_organization_ids": stale_organization_ids(organizations),
    }
    (repo / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return repo


def _strip_comments(text: str) -> str:
    lines = (line.split("#", 1)[0].rstrip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def definitions_source() -> str:
    """The text of ``features.py``: the sample definitions for ``feast apply`` by hand.

    It imports the single source of truth, this module, so it needs asahi-features.
    """
    return (
        '"""Feature definitions of the asahi sample repository (for `feast apply`).\n\n'
        "Generated by asahi_features.sample_repo; the definitions live in that module.\n"
        '"""\n\n'
        "from pathlib import Path\n\n"
        "from asahi_features.sample_repo import SAMPLE_VIEWS, feast_objects\n\n"
        '_objects = feast_objects(SAMPLE_VIEWS, Path(__file__).parent / "data")\n'
        "globals().update({obj.name: obj for obj in _objects})\n"
    )


# -- command line ------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m asahi_features.sample_repo build DIR [--redis HOST:PORT] [--users N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m asahi_features.sample_repo",
        description="Build the asahi sample Feast repository (apply + load the online store).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the repository into DIR")
    build.add_argument("directory", type=Path)
    build.add_argument("--users", type=int, default=1000)
    build.add_argument("--organizations", type=int, default=50)
    build.add_argument("--seed", type=int, default=7)
    build.add_argument(
        "--redis",
        metavar="HOST:PORT",
        default=None,
        help="use a Redis online store at HOST:PORT instead of SQLite",
    )
    args = parser.parse_args(argv)
    try:
        repo = build_sample_repo(
            args.directory,
            users=args.users,
            organizations=args.organizations,
            seed=args.seed,
            online_store="redis" if args.redis else "sqlite",
            redis_connection=args.redis,
            progress=print,
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"sample repository ready: {repo} (project {PROJECT!r})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
