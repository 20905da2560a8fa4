"""The ``feast init`` repository behind real servers (RUN_INTEGRATION_TESTS=1): ``feast
serve`` read by HttpFeatureStore (feature service and request data in the body), the
remote online store (``online_store: type: remote`` pointing at that server) read by
FeastClient, and a Redis online store. Servers run on free loopback ports and are stopped
by their own pids; a missing binary fails, never skips."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Dict, List

import pytest

from asahi_features import EnricherConfig, FeatureEnricher
from asahi_features.guard import GuardedClient
from asahi_features.models import EnrichmentReason, FeatureStatus
from asahi_features.stores.base import UNKNOWN_AGE
from asahi_features.stores.entity_keys import compose_key
from asahi_features.stores.feast import FeastClient
from asahi_features.stores.http import HttpFeatureStore
from tests.support.feast_init_repo import PROJECT, make_feast_init_repo
from tests.support.feast_server import FeastServe
from tests.support.redis_server import RedisServer

SERVICE_FEATURES = [
    "driver_hourly_stats:conv_rate",
    "transformed_conv_rate:conv_rate_plus_val1",
    "transformed_conv_rate:conv_rate_plus_val2",
]
REQUEST = {"val_to_add": 1, "val_to_add_2": 2}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_feast_init_repo(tmp_path_factory.mktemp("init_serve"))


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeastServe]:
    with FeastServe(repo, log=tmp_path_factory.mktemp("logs") / "feast.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def embedded(repo: Path) -> FeastClient:
    return FeastClient(str(repo), PROJECT)


@pytest.fixture(scope="module")
def remote(repo: Path, server: FeastServe, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository whose online store is the running ``feast serve`` (same registry)."""
    path = tmp_path_factory.mktemp("remote")
    (path / "feature_store.yaml").write_text(
        f"project: {PROJECT}\n"
        f"registry: {repo / 'data' / 'registry.db'}\n"
        "provider: local\n"
        "online_store:\n"
        "    type: remote\n"
        f"    path: {server.url}\n"
        "entity_key_serialization_version: 3\n"
        "auth:\n"
        "    type: no_auth\n"
    )
    return path


def enricher_config(**overrides: Any) -> EnricherConfig:
    values: Dict[str, Any] = {
        "enabled_task_types": ["driver_report"],
        "task_features": {"driver_report": {"driver": ["@driver_activity_v1"]}},
        "freshness_threshold_seconds": 2 * 86400,
        "max_feature_tokens": 400,
    }
    values.update(overrides)
    return EnricherConfig(**values)


def test_http_feature_service_and_request_data_match_embedded(
    server: FeastServe, embedded: FeastClient
) -> None:
    store = HttpFeatureStore(server.url, request_data={"driver": list(REQUEST)}, timeout_ms=10_000)
    try:
        keys = [compose_key({"driver": d}, REQUEST) for d in ("1001", "1002", "1003")]
        over_http = store.get_batch_features(keys, "driver", ["@driver_activity_v1"])
        local = embedded.get_batch_features(keys, "driver", ["@driver_activity_v1"])
        for got, want in zip(over_http, local, strict=True):
            assert got.entity_id == want.entity_id
            assert list(got.features) == SERVICE_FEATURES
            assert got.features == pytest.approx(want.features)
        enricher = FeatureEnricher(store, enricher_config(unknown_age="keep"))
        result = asyncio.run(
            enricher.aenrich(
                "Report",
                task_type="driver_report",
                entity_ids={"driver": "1004"},
                context={**REQUEST, "page": "home"},
            )
        )
        assert result.reason is EnrichmentReason.ENRICHED
        assert result.features_used == SERVICE_FEATURES
        # a read that needs no request data still takes plain ids
        plain = store.get_features("1001", "driver", ["driver_hourly_stats:acc_rate"])
        assert plain.status is FeatureStatus.FOUND and plain.features
    finally:
        store.close()


def test_remote_online_store_gives_unknown_ages_never_an_exception(
    remote: Path, embedded: FeastClient
) -> None:
    client = FeastClient(str(remote), PROJECT)
    assert client.health_check() is True
    ids = ["1001", "1002", "1003", "1004", "1005", "9999"]
    read = client.get_batch_features(ids, "driver", ["driver_hourly_stats:conv_rate"])
    local = embedded.get_batch_features(ids, "driver", ["driver_hourly_stats:conv_rate"])
    assert [v.features for v in read] == [v.features for v in local]
    assert read[-1].status is FeatureStatus.MISSING
    assert all(
        v.feature_freshness["driver_hourly_stats:conv_rate"] == UNKNOWN_AGE for v in read[:5]
    )
    one = client.get_features(
        compose_key({"driver": "1001"}, REQUEST), "driver", ["@driver_activity_v1"]
    )
    assert one.features == pytest.approx(
        embedded.get_features(
            compose_key({"driver": "1001"}, REQUEST), "driver", ["@driver_activity_v1"]
        ).features
    )
    guard = GuardedClient(client, timeout_ms=10_000)
    try:
        dropped = FeatureEnricher(guard, enricher_config())
        kept = FeatureEnricher(guard, enricher_config(unknown_age="keep"))
        for _ in range(20):  # a healthy remote store: no fallback, the breaker stays closed
            stale = dropped.enrich(
                "q", task_type="driver_report", entity_ids={"driver": "1002"}, context=REQUEST
            )
            assert stale.reason is EnrichmentReason.ALL_STALE
            assert all("unknown age" in why for why in stale.stale_reasons.values())
            fresh = kept.enrich(
                "q", task_type="driver_report", entity_ids={"driver": "1002"}, context=REQUEST
            )
            assert fresh.reason is EnrichmentReason.ENRICHED
        assert guard.breaker.snapshot()["state"] == "closed"
        assert guard.stats()["fallbacks"] == 0
    finally:
        guard.close()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()  # raises when redis-server is not installed
    server.start()
    yield server
    server.close()


def test_redis_online_store_feature_service_request_data_async(
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = make_feast_init_repo(
        tmp_path_factory.mktemp("init_redis"),
        online_store_yaml=(
            "online_store:\n"
            "    type: redis\n"
            f"    connection_string: {redis_server.connection_string}\n"
        ),
    )
    client = FeastClient(str(repo), PROJECT)
    assert client.health_check() is True
    enricher = FeatureEnricher(client, enricher_config())
    drivers = ["1001", "1002", "1003", "1004", "1005"]
    requests: List[Dict[str, Any]] = [
        {
            "prompt": "Report",
            "task_type": "driver_report",
            "entity_ids": {"driver": d},
            "context": {"val_to_add": 100 * i, "val_to_add_2": 0},
        }
        for i, d in enumerate(drivers, start=1)
    ]

    def no_thread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Redis reads must use Feast's native async path")

    with monkeypatch.context() as patched:  # Redis reads natively async: no worker thread
        patched.setattr(asyncio, "to_thread", no_thread)
        results = asyncio.run(enricher.aenrich_batch(requests))
    sync = enricher.enrich_batch(requests)
    for i, (result, again) in enumerate(zip(results, sync, strict=True), start=1):
        assert result.reason is EnrichmentReason.ENRICHED
        assert result.features_used == SERVICE_FEATURES
        assert result.enriched_prompt == again.enriched_prompt
        key = compose_key({"driver": drivers[i - 1]}, {"val_to_add": 100 * i, "val_to_add_2": 0})
        vector = client.get_features(key, "driver", ["@driver_activity_v1"])
        plus = vector.features["transformed_conv_rate:conv_rate_plus_val1"]
        assert plus == pytest.approx(100 * i + vector.features["driver_hourly_stats:conv_rate"])
