"""Shared helpers to build small real Feast repositories for tests (no CLI, no mocks).

``build_test_repo(tmp_path)`` builds the sample repository (the same views and features
as ``python -m asahi_features.sample_repo build``) plus two test-only views that make one
feature name ambiguous:

* ``user_scores:loyalty_score`` (float) and ``user_marketing:loyalty_score`` (float),
  ``user_marketing:campaign`` (string). ``loyalty_score`` asked by its plain name is
  therefore ambiguous; every sample feature name stays unambiguous.

The ids follow the sample generator: ``u_0001``..., ``org_001``...; ``STALE_USER``
(``u_0007``) is days old, ``PARTIAL_USER`` (``u_0013``) has null features and no
``user_dev`` row, ``MISSING_USER`` does not exist.

Typical use, once per test module::

    @pytest.fixture(scope="module")
    def feast_repo(tmp_path_factory):
        return build_test_repo(tmp_path_factory.mktemp("feast"), users=200)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple

from asahi_features.sample_repo import (
    FieldSpec,
    ViewSpec,
    apply_view,
    build_sample_repo,
    user_id,
)

if TYPE_CHECKING:
    import pytest

__all__ = [
    "AMBIGUOUS_FEATURE",
    "FRESH_USER",
    "MISSING_USER",
    "PARTIAL_USER",
    "PRODUCT",
    "STALE_ORG",
    "STALE_USER",
    "TEST_VIEWS",
    "CallCounter",
    "add_feature_view",
    "build_test_repo",
    "claim_native_async_reads",
    "scoring_view_rows",
]

FRESH_USER = "u_0001"
STALE_USER = "u_0007"
PARTIAL_USER = "u_0013"
MISSING_USER = "u_9999"
STALE_ORG = "org_007"
AMBIGUOUS_FEATURE = "loyalty_score"
PRODUCT = ["purchase_history", "browsing", "budget_level", "preferences", "demographics"]
"""The product_recommendation user features of the sample task map
(``SAMPLE_TASK_FEATURES``: the spec's headline example with budget and demographics; the
default map, spec table 3.5, has only the first, second and fourth). Pass it explicitly
as ``task_features`` where an enricher should fetch all five."""

TEST_VIEWS: Tuple[ViewSpec, ...] = (
    ViewSpec("user_scores", "user", (FieldSpec("loyalty_score", "float"),)),
    ViewSpec(
        "user_marketing",
        "user",
        (FieldSpec("loyalty_score", "float"), FieldSpec("campaign")),
    ),
)


def scoring_view_rows(users: int, now: Any = None) -> Dict[str, List[Dict[str, Any]]]:
    """Rows of the test-only views (every user; loyalty differs between the two views)."""
    from datetime import datetime, timedelta, timezone

    now = now or datetime.now(timezone.utc)
    scores = []
    marketing = []
    for n in range(1, users + 1):
        ts = now - timedelta(seconds=60 + n % 600)
        scores.append(
            {"user_id": user_id(n), "event_timestamp": ts, "loyalty_score": round(n % 97 / 97, 3)}
        )
        marketing.append(
            {
                "user_id": user_id(n),
                "event_timestamp": ts,
                "loyalty_score": round(n % 89 / 89, 3),
                "campaign": f"spring-{n % 5}",
            }
        )
    return {"user_scores": scores, "user_marketing": marketing}


def build_test_repo(
    path: Path | str,
    *,
    users: int = 200,
    organizations: int = 50,
    online_store: Literal["sqlite", "redis"] = "sqlite",
    redis_connection: Optional[str] = None,
    with_test_views: bool = True,
    seed: int = 7,
) -> Path:
    """Build a small real Feast repository (project ``asahi``) in ``path``.

    Args:
        path: the directory (e.g. ``tmp_path_factory.mktemp("feast")``).
        users: number of users; 200 builds in about a second after ``import feast``.
        organizations: number of organisations.
        online_store: ``"sqlite"`` or ``"redis"`` (then pass ``redis_connection``).
        redis_connection: ``host:port`` of a running redis-server.
        with_test_views: add the ``user_scores`` / ``user_marketing`` views
            (the ambiguous ``loyalty_score``).
        seed: the generator seed.

    Returns:
        The repository directory, ready for ``FeastClient(str(path), "asahi")``.
    """
    extra: List[Tuple[ViewSpec, Sequence[Mapping[str, Any]]]] = []
    if with_test_views:
        rows = scoring_view_rows(users)
        extra = [(view, rows[view.name]) for view in TEST_VIEWS]
    return build_sample_repo(
        path,
        users=users,
        organizations=organizations,
        seed=seed,
        online_store=online_store,
        redis_connection=redis_connection,
        extra_views=extra,
    )


def add_feature_view(
    repo: Path | str,
    name: str,
    fields: Mapping[str, Literal["string", "string_list", "int", "float"]],
    rows: Sequence[Mapping[str, Any]],
    *,
    entity: str = "user",
) -> ViewSpec:
    """Apply one more feature view to a built repository and load ``rows`` online
    (what ``feast apply`` plus a load would do). Returns the view's spec."""
    view = ViewSpec(name, entity, tuple(FieldSpec(k, v) for k, v in fields.items()))
    apply_view(repo, view, rows)
    return view


class CallCounter:
    """Wraps a FeatureStore method on the instance and records the entity rows of each call.

    Args:
        monkeypatch: pytest's fixture (the original method is restored at teardown).
        store: the object whose method is wrapped (e.g. ``client.feature_store``).
        name: the method name (e.g. ``"get_online_features"``).

    Example::

        counter = CallCounter(monkeypatch, client.feature_store, "get_online_features")
        client.get_batch_features(ids, "user", ["tier"])
        assert len(counter.calls) == 1
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: Any, name: str) -> None:
        self.calls: List[Any] = []
        original = getattr(store, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(kwargs.get("entity_rows", args[1] if len(args) > 1 else None))
            return original(*args, **kwargs)

        monkeypatch.setattr(store, name, wrapper)


def claim_native_async_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make Feast's SQLite online store advertise native async reads, as Redis's does
    (``OnlineStore.async_supported``), for the test's duration.

    A FeastClient built afterwards takes Feast's async read path
    (``get_online_features_async``), where SQLite then raises NotImplementedError: the
    native path runs here without a Redis server (the Redis integration tests run it for
    real).
    """
    from feast.infra.online_stores.sqlite import SqliteOnlineStore
    from feast.infra.supported_async_methods import SupportedAsyncMethods

    claimed = property(lambda self: SupportedAsyncMethods(read=True))
    monkeypatch.setattr(SqliteOnlineStore, "async_supported", claimed)
