"""FeastClient on a real redis-server online store (RUN_INTEGRATION_TESTS=1).

The server is started by the fixture on a free 127.0.0.1 port and stopped by its own pid.
A missing ``redis-server`` binary fails the fixture (it never skips).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from asahi_features.errors import FeatureConfigError, FeatureStoreUnavailableError
from asahi_features.models import FeatureStatus
from asahi_features.stores.feast_store import FeastClient
from tests.support.feast_helpers import (
    AMBIGUOUS_FEATURE,
    FRESH_USER,
    MISSING_USER,
    PARTIAL_USER,
    PRODUCT,
    STALE_USER,
    CallCounter,
    add_feature_view,
    build_test_repo,
)
from tests.support.redis_server import RedisServer

USERS = 1000


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()  # raises when redis-server is not installed
    server.start()
    yield server
    pid = server._proc.pid if server._proc else None
    server.close()
    assert pid is not None and not server.running


@pytest.fixture(scope="module")
def repo(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_test_repo(
        tmp_path_factory.mktemp("feast_redis"),
        users=USERS,
        online_store="redis",
        redis_connection=redis_server.connection_string,
    )


@pytest.fixture(scope="module")
def client(repo: Path) -> FeastClient:
    return FeastClient(str(repo), "asahi")


def test_repo_uses_redis(client: FeastClient, redis_server: RedisServer) -> None:
    assert client.feature_store.config.online_store.type == "redis"
    assert str(redis_server.port) in client.feature_store.config.online_store.connection_string
    assert client.health_check() is True


def test_single_read(client: FeastClient) -> None:
    vec = client.get_features(FRESH_USER, "user", PRODUCT)
    assert vec.status is FeatureStatus.FOUND
    assert set(vec.features) == set(PRODUCT)
    assert isinstance(vec.features["purchase_history"], list)
    assert 0 <= vec.freshness_seconds < 3 * 3600


def test_missing_entity_none_with_zero_timestamp_is_missing(
    client: FeastClient, caplog: pytest.LogCaptureFixture
) -> None:
    raw = client.feature_store.get_online_features(
        features=["user_profile:tier"], entity_rows=[{"user_id": MISSING_USER}]
    ).proto
    assert raw.results[1].event_timestamps[0].seconds == 0
    with caplog.at_level(logging.INFO, logger="asahi_features.stores.feast"):
        vec = client.get_features(MISSING_USER, "user", ["tier", "browsing"])
    assert vec.status is FeatureStatus.MISSING and vec.features == {}
    assert any(MISSING_USER in r.getMessage() for r in caplog.records)


def test_stale_and_null_features(client: FeastClient) -> None:
    stale = client.get_features(STALE_USER, "user", ["tier"])
    assert stale.freshness_seconds >= 3 * 86400
    partial = client.get_features(PARTIAL_USER, "user", ["browsing", "tier", "framework_history"])
    assert set(partial.features) == {"tier"}
    assert (
        client.get_features(PARTIAL_USER, "user", ["language_preferences"]).status
        is FeatureStatus.MISSING
    )


def test_batch_of_1000_one_call_order_duplicates_missing(
    client: FeastClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = CallCounter(monkeypatch, client.feature_store, "get_online_features")
    ids = [f"u_{n:04d}" for n in range(USERS, 0, -1)]
    vectors = client.get_batch_features(ids, "user", ["tier", "purchase_history"])
    assert len(counter.calls) == 1
    assert [v.entity_id for v in vectors] == ids
    assert all(v.status is FeatureStatus.FOUND for v in vectors)
    mixed = client.get_batch_features([FRESH_USER, MISSING_USER, FRESH_USER], "user", ["tier"])
    assert [v.status for v in mixed] == [
        FeatureStatus.FOUND,
        FeatureStatus.MISSING,
        FeatureStatus.FOUND,
    ]
    assert mixed[0].features == mixed[2].features


def test_names_and_errors(client: FeastClient) -> None:
    full = client.get_features(FRESH_USER, "user", ["user_profile:tier"])
    assert (
        full.features["user_profile:tier"]
        == client.get_features(FRESH_USER, "user", ["tier"]).features["tier"]
    )
    with pytest.raises(FeatureConfigError) as ambiguous:
        client.get_features(FRESH_USER, "user", [AMBIGUOUS_FEATURE])
    assert len(ambiguous.value.available_features) == 2
    with pytest.raises(FeatureConfigError, match="shoe_size"):
        client.get_features(FRESH_USER, "user", ["shoe_size"])
    with pytest.raises(FeatureConfigError) as entity:
        client.get_features("x", "product", ["tier"])
    assert entity.value.available_features == ["organization", "user"]
    assert set(client.list_features()) == {"user", "organization"}


async def test_native_async(client: FeastClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_thread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Redis reads must use Feast's native async path")

    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    vec = await client.aget_features(FRESH_USER, "user", PRODUCT)
    assert set(vec.features) == set(PRODUCT)
    batch = await client.aget_batch_features(
        [FRESH_USER, MISSING_USER, STALE_USER], "user", ["tier"]
    )
    assert [v.status for v in batch] == [
        FeatureStatus.FOUND,
        FeatureStatus.MISSING,
        FeatureStatus.FOUND,
    ]
    assert batch[2].freshness_seconds >= 3 * 86400
    many = await asyncio.gather(
        *(client.aget_features(f"u_{n:04d}", "user", ["tier"]) for n in range(1, 51))
    )
    assert all(v.status is FeatureStatus.FOUND for v in many)


def test_registry_refresh_on_redis(repo: Path) -> None:
    client = FeastClient(str(repo), "asahi", registry_ttl_seconds=3600)
    assert client.get_features(FRESH_USER, "user", ["tier"]).features
    add_feature_view(
        repo,
        "user_survey",
        {"nps_score": "int"},
        [{"user_id": FRESH_USER, "event_timestamp": datetime.now(timezone.utc), "nps_score": 7}],
    )
    assert client.get_features(FRESH_USER, "user", ["nps_score"]).features == {"nps_score": 7}


def test_redis_down_is_unavailable_then_recovers(
    repo: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Last test of the module: stops and restarts the server (same port, empty)."""
    client = FeastClient(str(repo), "asahi")
    assert client.health_check() is True
    redis_server.stop()
    try:
        assert client.health_check() is False
        with pytest.raises(FeatureStoreUnavailableError, match="online read failed"):
            client.get_features(FRESH_USER, "user", ["tier"])
    finally:
        redis_server.start()
    assert client.health_check() is True
    # the restarted server is empty: every entity is missing until reloaded
    assert client.get_features(FRESH_USER, "user", ["tier"]).status is FeatureStatus.MISSING


def test_sample_repo_command_builds_a_readable_redis_repo(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """``python -m asahi_features.sample_repo build DIR --redis HOST:PORT`` end to end (in
    its own redis database, so the module's repository is untouched)."""
    from asahi_features import sample_repo

    connection = f"{redis_server.connection_string},db=3"
    assert sample_repo.main(["build", str(tmp_path), "--users", "20", "--redis", connection]) == 0
    assert "type: redis" in (tmp_path / "feature_store.yaml").read_text()
    client = FeastClient(str(tmp_path), "asahi")
    assert client.feature_store.config.online_store.type == "redis"
    vector = client.get_features(FRESH_USER, "user", ["tier", "preferences"])
    assert vector.status is FeatureStatus.FOUND and vector.features["tier"]
    assert client.get_features("u_0021", "user", ["tier"]).status is FeatureStatus.MISSING
