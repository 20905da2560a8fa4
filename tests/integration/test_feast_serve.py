"""HttpFeatureStore against a real ``feast serve`` (gated by RUN_INTEGRATION_TESTS=1).

The repository is built in the test (tests/support/feast_helpers.py, no CLI), the server
runs on a free loopback port from the venv's ``feast`` binary
(tests/support/feast_server.py) and is stopped by its own process id.
A missing binary is a failure, never a skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Dict, List

import pytest

from asahi_features.errors import FeatureConfigError
from asahi_features.models import FeatureStatus
from asahi_features.sample_repo import SAMPLE_VIEWS
from asahi_features.stores.http import HttpFeatureStore
from tests.support.feast_helpers import (
    AMBIGUOUS_FEATURE,
    FRESH_USER,
    MISSING_USER,
    PARTIAL_USER,
    STALE_USER,
    TEST_VIEWS,
    build_test_repo,
)
from tests.support.feast_server import FeastServe


def feature_views() -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for view in (*SAMPLE_VIEWS, *TEST_VIEWS):
        out.setdefault(view.entity, []).extend(f"{view.name}:{f}" for f in view.feature_names)
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_test_repo(tmp_path_factory.mktemp("feast_serve"), users=120, organizations=20)


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeastServe]:
    log = tmp_path_factory.mktemp("logs") / "feast.log"
    with FeastServe(repo, log=log) as srv:  # raises (fails) when feast is missing
        yield srv


@pytest.fixture
def store(server: FeastServe) -> Iterator[HttpFeatureStore]:
    s = HttpFeatureStore(server.url, feature_views=feature_views(), timeout_ms=10_000)
    yield s
    s.close()


def test_health(store: HttpFeatureStore) -> None:
    assert store.health_check() is True


def test_found_plain_and_full_names(store: HttpFeatureStore) -> None:
    vec = store.get_features(FRESH_USER, "user", ["tier", "user_profile:preferences"])
    assert vec.status is FeatureStatus.FOUND
    assert set(vec.features) == {"tier", "user_profile:preferences"}
    assert all(isinstance(v, str) and v for v in vec.features.values())
    assert 0 < vec.freshness_seconds < 86400
    lists = store.get_features(FRESH_USER, "user", ["purchase_history"])
    assert isinstance(lists.features["purchase_history"], list)


def test_missing_stale_and_partial(store: HttpFeatureStore) -> None:
    missing = store.get_features(MISSING_USER, "user", ["tier", "browsing"])
    assert missing.status is FeatureStatus.MISSING and missing.features == {}
    stale = store.get_features(STALE_USER, "user", ["tier"])
    assert stale.freshness_seconds >= 3 * 86400
    partial = store.get_features(PARTIAL_USER, "user", ["tier", "browsing", "framework_history"])
    assert set(partial.features) == {"tier"}


def test_organization_entity(store: HttpFeatureStore) -> None:
    vec = store.get_features("org_001", "organization", ["tone", "org_brand:brand_voice"])
    assert set(vec.features) == {"tone", "org_brand:brand_voice"}


def test_name_errors(server: FeastServe, store: HttpFeatureStore) -> None:
    with pytest.raises(FeatureConfigError) as info:
        store.get_features(FRESH_USER, "user", ["no_such_feature"])
    assert "tier" in info.value.available_features
    with pytest.raises(FeatureConfigError, match="served by 2 views"):
        store.get_features(FRESH_USER, "user", [AMBIGUOUS_FEATURE])
    bare = HttpFeatureStore(server.url, timeout_ms=10_000)
    with pytest.raises(FeatureConfigError, match="not found in projection"):
        bare.get_features(FRESH_USER, "user", ["user_profile:bogus"])
    with pytest.raises(FeatureConfigError, match="FeatureViewNotFoundException"):
        bare.get_features(FRESH_USER, "user", ["nope_view:tier"])
    with pytest.raises(FeatureConfigError, match="Missing join key"):
        bare.get_features(FRESH_USER, "customer", ["user_profile:tier"])
    assert bare.health_check() is True
    bare.close()


def test_batch_one_post_in_order(store: HttpFeatureStore) -> None:
    ids = [FRESH_USER, MISSING_USER, STALE_USER, FRESH_USER]
    out = store.get_batch_features(ids, "user", ["tier", "user_purchases:budget_level"])
    assert [v.entity_id for v in out] == ids
    assert [v.status for v in out] == [
        FeatureStatus.FOUND,
        FeatureStatus.MISSING,
        FeatureStatus.FOUND,
        FeatureStatus.FOUND,
    ]
    assert out[0].features == out[3].features


async def test_async(store: HttpFeatureStore) -> None:
    vec = await store.aget_features(FRESH_USER, "user", ["tier"])
    assert vec.features
    out = await store.aget_batch_features([MISSING_USER, FRESH_USER], "user", ["tier"])
    assert [v.status for v in out] == [FeatureStatus.MISSING, FeatureStatus.FOUND]
    await store.aclose()


@pytest.mark.parametrize("weird", ["../health", "u_0001/../u_0002", "u_0001?x=1#y", "%2e%2e"])
def test_url_metacharacters_in_ids(store: HttpFeatureStore, weird: str) -> None:
    vec = store.get_features(weird, "user", ["tier"])
    assert vec.entity_id == weird and vec.status is FeatureStatus.MISSING


def test_survives_worker_recycling(repo: Path, tmp_path: Path) -> None:
    recycling = ("--max-requests", "20", "--max-requests-jitter", "0")
    with FeastServe(repo, log=tmp_path / "recycling.log", extra_args=recycling) as srv:
        store = HttpFeatureStore(srv.url, feature_views=feature_views(), timeout_ms=30_000)
        results: List[Any] = [
            store.get_features(FRESH_USER, "user", ["tier"]).features for _ in range(50)
        ]
        assert all(r == results[0] and r for r in results)
        store.close()
