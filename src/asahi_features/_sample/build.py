"""Building the sample repository: ``feature_store.yaml``, Feast objects, Parquet, online rows.

:func:`build_sample_repo` writes the repository (``feature_store.yaml``, ``features.py``,
Parquet files under ``data/``), registers the entities and views and loads every row into
the online store, all in-process: Feast's CLI is not needed. :func:`apply_view` adds one
more view to a built repository. Feast and pyarrow are imported lazily, on use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional, Tuple

from .data import generate_organization_rows, generate_user_rows
from .definitions import (
    ENTITIES,
    PROJECT,
    SAMPLE_VIEWS,
    EntitySpec,
    FieldKind,
    ViewSpec,
    partial_user_ids,
    stale_organization_ids,
    stale_user_ids,
)

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = [
    "OnlineStore",
    "Progress",
    "apply_view",
    "build_sample_repo",
    "definitions_source",
    "feast_objects",
    "feature_store_yaml",
]

OnlineStore = Literal["sqlite", "redis"]
Progress = Callable[[str], None]

_MANIFEST = "asahi_sample.json"


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

    It imports the definitions from their single source of truth,
    :mod:`asahi_features.sample_repo`, so it needs asahi-features.
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
