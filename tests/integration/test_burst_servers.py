"""Healthy bursts against real servers (RUN_INTEGRATION_TESTS=1): Feast on a real
redis-server, and ``feast serve`` read over HTTP by :class:`HttpFeatureStore`.

1,000 concurrent ``aenrich`` for 1,000 distinct users, each with a unique marker, through
the guard with a roomy deadline (2 s) and default settings otherwise: at least 99.9%
enriched, zero crossings (every row checked), un-enriched prompts exactly the original,
breaker closed afterwards. The servers run on free 127.0.0.1 ports and are stopped by
their own pids; a missing binary fails the fixture, it never skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from asahi_features import FeastClient, FeatureEnricher, HttpFeatureStore
from tests.support.burst_helpers import (
    USERS,
    async_burst,
    build_marker_repo,
    burst_config,
    check_burst,
    healthy_guard,
    http_feature_views,
)
from tests.support.feast_server import FeastServe
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:  # raises when redis-server is not installed
        yield server


@pytest.fixture(scope="module")
def feast_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeastServe]:
    repo = build_marker_repo(tmp_path_factory.mktemp("burst_serve"), USERS)
    log = tmp_path_factory.mktemp("burst_serve_logs") / "feast.log"
    with FeastServe(repo, log=log) as server:  # raises (fails) when feast is missing
        yield server


async def test_feast_redis_thousand_concurrent_aenrich(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    repo = build_marker_repo(
        tmp_path / "repo",
        USERS,
        online_store="redis",
        redis_connection=redis_server.connection_string,
    )
    guarded = healthy_guard(FeastClient(str(repo), "asahi"))
    try:
        burst = await async_burst(FeatureEnricher(guarded, burst_config()), range(1, USERS + 1))
        assert len(burst.rows) == USERS
        check_burst(burst, guarded)
    finally:
        guarded.close()


async def test_feast_serve_over_http_thousand_concurrent_aenrich(
    feast_serve: FeastServe,
) -> None:
    store = HttpFeatureStore(feast_serve.url, feature_views=http_feature_views(), timeout_ms=10_000)
    guarded = healthy_guard(store)
    try:
        burst = await async_burst(FeatureEnricher(guarded, burst_config()), range(1, USERS + 1))
        assert len(burst.rows) == USERS
        check_burst(burst, guarded)
    finally:
        await store.aclose()
        guarded.close()
