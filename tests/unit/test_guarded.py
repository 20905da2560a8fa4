"""GuardedClient: deadline, fallback, pass-through of config errors, garbage, async paths."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from asahi_features.config import client_from_config, parse_config
from asahi_features.errors import (
    ConfigError,
    FeatureConfigError,
    FeatureStoreTimeoutError,
    FeatureStoreUnavailableError,
)
from asahi_features.guard import GuardedClient
from asahi_features.models import FeatureStatus, FeatureVector
from asahi_features.settings import FeatureStoreSettings
from asahi_features.stores.base import BaseFeatureStore
from asahi_features.stores.local import LocalFeatureStore
from tests.faults import AsyncFaultyBackend, FaultyBackend, ManualClock

NAMES = ["tier", "preferences"]
BOUND = 2.0
"""Generous functional bound for a call whose deadline is 50 ms."""


@pytest.fixture
def make(backends: list[FaultyBackend]) -> Any:
    def factory(
        mode: str = "ok", *, native: bool = False, **guard: Any
    ) -> tuple[FaultyBackend, GuardedClient]:
        cls = AsyncFaultyBackend if native else FaultyBackend
        backend = cls(mode, delay=guard.pop("delay", 0.5), error=guard.pop("error", None))  # type: ignore[arg-type]
        backends.append(backend)
        guard.setdefault("timeout_ms", 50)
        guard.setdefault("batch_timeout_ms", guard["timeout_ms"])
        return backend, GuardedClient(backend, **guard)

    return factory


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - start


async def atimed(coro: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = await coro
    return result, time.monotonic() - start


# -- healthy path -------------------------------------------------------------------


def test_ok_single_and_batch(make: Any) -> None:
    backend, guard = make("ok")
    vector = guard.get_features("u1", "user", NAMES)
    assert vector.status is FeatureStatus.FOUND
    assert vector.features == {"tier": "gold", "preferences": "casual athletic"}
    batch = guard.get_batch_features(["u1", "u2", "u1"], "user", ["tier"])
    assert [v.entity_id for v in batch] == ["u1", "u2", "u1"]
    assert backend.calls_by_method == {"get_features": 1, "get_batch_features": 1}
    assert guard.get_batch_features([], "user", NAMES) == []
    stats = guard.stats()
    assert stats["calls"] == 2 and stats["successes"] == 2 and stats["fallbacks"] == 0
    assert stats["breaker"]["state"] == "closed"
    json.dumps(stats)


def test_source_and_repr(make: Any) -> None:
    _, guard = make("ok")
    assert guard.source == "faulty"
    assert "timeout_ms=50" in repr(guard)

    class Bare:
        def get_features(self, *a: Any) -> Any: ...
        def get_batch_features(self, *a: Any) -> Any: ...
        def health_check(self) -> bool:
            return True

    assert GuardedClient(Bare()).source == "custom"


def test_rejects_non_clients_and_bad_arguments() -> None:
    with pytest.raises(TypeError, match="missing get_batch_features, health_check"):
        GuardedClient(type("X", (), {"get_features": lambda self: None})())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_ms"):
        GuardedClient(FaultyBackend(), timeout_ms=0)
    with pytest.raises(ValueError, match="cache_ttl_seconds"):
        GuardedClient(FaultyBackend(), cache_ttl_seconds=-1)
    with pytest.raises(ValueError, match="warning_interval_seconds"):
        GuardedClient(FaultyBackend(), warning_interval_seconds=-1)
    with pytest.raises(ValueError, match="max_workers"):
        GuardedClient(FaultyBackend(), max_workers=0)


# -- deadline and fallback, sync ----------------------------------------------------


@pytest.mark.parametrize("mode", ["hang", "slow"])
def test_sync_single_deadline_falls_back(make: Any, mode: str) -> None:
    _, guard = make(mode)
    vector, elapsed = timed(guard.get_features, "u1", "user", NAMES)
    assert elapsed < BOUND
    assert vector.status is FeatureStatus.UNAVAILABLE
    assert vector.entity_id == "u1" and vector.entity_type == "user" and vector.features == {}
    assert vector.source == "faulty"
    assert vector.error == "no answer within 50 ms"
    stats = guard.stats()
    assert stats["timeouts"] == 1 and stats["fallbacks"] == 1 and stats["unavailable"] == 1


@pytest.mark.parametrize("mode", ["hang", "slow"])
def test_sync_batch_deadline_falls_back_per_id(make: Any, mode: str) -> None:
    _, guard = make(mode)
    vectors, elapsed = timed(guard.get_batch_features, ["a", "b", "c"], "user", NAMES)
    assert elapsed < BOUND
    assert [v.entity_id for v in vectors] == ["a", "b", "c"]
    assert all(v.status is FeatureStatus.UNAVAILABLE for v in vectors)


def test_sync_deadline_without_fallback_raises(make: Any) -> None:
    _, guard = make("hang", fallback_on_timeout=False)
    start = time.monotonic()
    with pytest.raises(FeatureStoreTimeoutError, match="50 ms"):
        guard.get_features("u1", "user", NAMES)
    with pytest.raises(FeatureStoreTimeoutError):
        guard.get_batch_features(["u1"], "user", NAMES)
    assert time.monotonic() - start < 2 * BOUND


def test_backend_unavailable_error_propagates_unchanged_without_fallback(make: Any) -> None:
    error = FeatureStoreUnavailableError("connection refused to 127.0.0.1:1")
    _, guard = make("raise", error=error, fallback_on_timeout=False)
    with pytest.raises(FeatureStoreUnavailableError) as info:
        guard.get_features("u1", "user", NAMES)
    assert info.value is error


def test_backend_timeout_error_stays_a_timeout(make: Any) -> None:
    _, guard = make(
        "raise", error=lambda: FeatureStoreTimeoutError("read timed out"), fallback_on_timeout=False
    )
    with pytest.raises(FeatureStoreTimeoutError, match="read timed out"):
        guard.get_features("u1", "user", NAMES)


def test_foreign_exception_is_unavailability_without_leaking_its_message(make: Any) -> None:
    _, guard = make("raise", error=lambda: RuntimeError("password=hunter2"))
    vector = guard.get_features("u1", "user", NAMES)
    assert vector.status is FeatureStatus.UNAVAILABLE
    assert vector.error == "backend raised RuntimeError"
    _, strict = make(
        "raise", error=lambda: RuntimeError("password=hunter2"), fallback_on_timeout=False
    )
    with pytest.raises(FeatureStoreUnavailableError) as info:
        strict.get_features("u1", "user", NAMES)
    assert "hunter2" not in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_long_library_error_text_is_shortened(make: Any) -> None:
    _, guard = make("raise", error=lambda: FeatureStoreUnavailableError("x" * 500))
    vector = guard.get_features("u1", "user", NAMES)
    assert vector.error is not None and len(vector.error) == 200 and vector.error.endswith("...")


@pytest.mark.parametrize(
    "error",
    [
        lambda: FeatureConfigError("unknown feature 'nope'", ["tier"]),
        lambda: ConfigError("bad config", key_path="feature_store.x"),
    ],
)
def test_config_errors_pass_through_and_do_not_trip_the_breaker(make: Any, error: Any) -> None:
    _, guard = make("raise", error=error, breaker_failure_threshold=1)
    for _ in range(3):
        with pytest.raises((FeatureConfigError, ConfigError)):
            guard.get_features("u1", "user", ["nope"])
        with pytest.raises((FeatureConfigError, ConfigError)):
            guard.get_batch_features(["u1"], "user", ["nope"])
    stats = guard.stats()
    assert stats["breaker"]["state"] == "closed" and stats["breaker"]["consecutive_failures"] == 0
    assert stats["config_errors"] == 6 and stats["fallbacks"] == 0


def test_garbage_counts_as_unavailability(make: Any) -> None:
    _, guard = make("garbage", breaker_failure_threshold=2)
    vector = guard.get_features("u1", "user", NAMES)
    assert vector.status is FeatureStatus.UNAVAILABLE
    assert "expected a FeatureVector" in (vector.error or "")
    vectors = guard.get_batch_features(["a", "b"], "user", NAMES)
    assert [v.status for v in vectors] == [FeatureStatus.UNAVAILABLE] * 2
    assert "1 vectors for a batch of 2" in (vectors[0].error or "")
    assert guard.breaker.state.value == "open"


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ("nope", "expected a list"),
        ([1, 2], "a int in a batch"),
    ],
)
def test_batch_result_is_validated(result: Any, message: str) -> None:
    class Odd(FaultyBackend):
        def get_batch_features(self, *args: Any) -> Any:
            return result

    guard = GuardedClient(Odd(), timeout_ms=50, fallback_on_timeout=False)
    with pytest.raises(FeatureStoreUnavailableError, match=message):
        guard.get_batch_features(["a", "b"], "user", NAMES)


def test_batch_tuple_is_accepted() -> None:
    class Tupled(FaultyBackend):
        def get_batch_features(self, ids: Any, etype: str, names: Any) -> Any:
            return tuple(self.vector(i, etype, names) for i in ids)

    guard = GuardedClient(Tupled(), timeout_ms=500)
    assert [v.entity_id for v in guard.get_batch_features(["a", "b"], "user", NAMES)] == [
        "a",
        "b",
    ]


# -- async paths --------------------------------------------------------------------


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("mode", ["hang", "slow"])
async def test_async_single_and_batch_deadline(make: Any, native: bool, mode: str) -> None:
    _, guard = make(mode, native=native)
    vector, elapsed = await atimed(guard.aget_features("u1", "user", NAMES))
    assert elapsed < BOUND and vector.status is FeatureStatus.UNAVAILABLE
    vectors, elapsed = await atimed(guard.aget_batch_features(["a", "b"], "user", NAMES))
    assert elapsed < BOUND
    assert [(v.entity_id, v.status) for v in vectors] == [
        ("a", FeatureStatus.UNAVAILABLE),
        ("b", FeatureStatus.UNAVAILABLE),
    ]
    assert guard.stats()["timeouts"] == 2


async def test_native_async_backend_is_cancelled_without_threads(make: Any) -> None:
    backend, guard = make("hang", native=True)
    await guard.aget_features("u1", "user", NAMES)
    await guard.aget_batch_features(["u1"], "user", NAMES)
    assert backend.cancelled == 2 and backend.in_flight == 0
    assert guard.stats()["workers"] == 0


@pytest.mark.parametrize("native", [False, True])
async def test_async_without_fallback_raises(make: Any, native: bool) -> None:
    _, guard = make("hang", native=native, fallback_on_timeout=False)
    with pytest.raises(FeatureStoreTimeoutError):
        await guard.aget_features("u1", "user", NAMES)
    with pytest.raises(FeatureStoreTimeoutError):
        await guard.aget_batch_features(["u1"], "user", NAMES)


@pytest.mark.parametrize("native", [False, True])
async def test_async_ok_errors_and_garbage(make: Any, native: bool) -> None:
    backend, guard = make("ok", native=native)
    assert (await guard.aget_features("u1", "user", NAMES)).status is FeatureStatus.FOUND
    batch = await guard.aget_batch_features(["a", "b"], "user", NAMES)
    assert [v.entity_id for v in batch] == ["a", "b"]
    assert (await guard.aget_batch_features([], "user", NAMES)) == []
    backend.set_mode("garbage")
    assert (await guard.aget_features("u1", "user", NAMES)).status is FeatureStatus.UNAVAILABLE
    assert all(
        v.status is FeatureStatus.UNAVAILABLE
        for v in await guard.aget_batch_features(["a", "b"], "user", NAMES)
    )
    backend.set_mode("raise")
    assert (await guard.aget_features("u1", "user", NAMES)).status is FeatureStatus.UNAVAILABLE
    backend.error = lambda: FeatureConfigError("unknown feature", ["tier"])
    with pytest.raises(FeatureConfigError):
        await guard.aget_features("u1", "user", ["x"])
    with pytest.raises(FeatureConfigError):
        await guard.aget_batch_features(["u1"], "user", ["x"])
    method = "aget_features" if native else "get_features"
    assert backend.calls_by_method[method] == 4


async def test_sync_only_client_works_on_the_async_path(make: Any) -> None:
    backend, guard = make("ok")
    assert not hasattr(backend, "aget_features")
    vector = await guard.aget_features("u1", "user", NAMES)
    assert vector.features["tier"] == "gold"
    assert backend.calls_by_method == {"get_features": 1}
    assert guard.stats()["workers"] == 1


def test_base_store_default_async_is_not_treated_as_native(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    LocalFeatureStore.write(path, {"user": {"u1": {"updated_at": "2026-01-01T00:00:00Z"}}})
    guard = GuardedClient(LocalFeatureStore(path))
    assert not guard._native_single and not guard._native_batch

    class Native(BaseFeatureStore):
        def get_features(self, *a: Any) -> FeatureVector:
            raise AssertionError

        def health_check(self) -> bool:
            return True

        async def aget_features(self, *a: Any) -> FeatureVector:
            raise AssertionError

    native = GuardedClient(Native())
    assert native._native_single and not native._native_batch


async def test_async_bridge_survives_a_closed_loop(make: Any) -> None:
    """A worker finishing after its caller's loop closed must not die."""
    backend, guard = make("slow", delay=0.15, max_workers=1)

    def run_in_new_loop() -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(guard.aget_features("u1", "user", NAMES))
        finally:
            loop.close()

    thread = threading.Thread(target=run_in_new_loop)
    thread.start()
    thread.join()
    deadline = time.monotonic() + 5
    while guard.stats()["busy_workers"] and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    backend.set_mode("ok")
    assert (await guard.aget_features("u1", "user", NAMES)).status is FeatureStatus.FOUND
    assert guard.stats()["workers"] == 1


# -- logging ------------------------------------------------------------------------


def test_fallback_warning_is_rate_limited(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    _, guard = make(
        "raise", clock=clock, warning_interval_seconds=60, breaker_failure_threshold=10**6
    )
    caplog.set_level(logging.WARNING, logger="asahi_features.guard")
    for _ in range(5):
        guard.get_features("u1", "user", NAMES)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unavailable" in warnings[0].getMessage()
    assert guard.stats()["suppressed_warnings"] == 4
    clock.advance(59)
    guard.get_features("u1", "user", NAMES)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    clock.advance(2)
    guard.get_features("u1", "user", NAMES)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "5 similar warnings suppressed" in warnings[1].getMessage()
    assert guard.stats()["suppressed_warnings"] == 0


def test_no_warning_without_fallback(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    _, guard = make("raise", fallback_on_timeout=False)
    caplog.set_level(logging.WARNING)
    with pytest.raises(FeatureStoreUnavailableError):
        guard.get_features("u1", "user", NAMES)
    assert not caplog.records


# -- health, listing, close, configuration ---------------------------------------------


def test_health_check_is_guarded(make: Any) -> None:
    backend, guard = make("ok")
    assert guard.health_check() is True
    backend.healthy = False
    assert guard.health_check() is False
    backend.set_mode("raise")
    assert guard.health_check() is False
    backend.set_mode("hang")
    result, elapsed = timed(guard.health_check)
    assert result is False and elapsed < BOUND
    assert guard.breaker.consecutive_failures == 0


def test_health_check_false_when_saturated(make: Any) -> None:
    _, guard = make("hang", max_workers=1)
    guard.get_features("u1", "user", NAMES)
    result, elapsed = timed(guard.health_check)
    assert result is False and elapsed < BOUND


def test_list_features_delegates(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "f.json"
    LocalFeatureStore.write(
        path, {"user": {"u1": {"updated_at": "2026-01-01T00:00:00Z", "features": {"tier": "a"}}}}
    )
    assert GuardedClient(LocalFeatureStore(path)).list_features() == {"user": ["tier"]}
    _, guard = make("ok")
    with pytest.raises(NotImplementedError, match="FaultyBackend cannot list"):
        guard.list_features()


def test_close_stops_workers_closes_inner_and_never_hangs(make: Any) -> None:
    backend, guard = make("ok", max_workers=2)
    closed: list[bool] = []
    backend.close = lambda: closed.append(True)  # type: ignore[attr-defined]
    guard.get_features("u1", "user", NAMES)
    backend.set_mode("hang")
    guard.get_features("u1", "user", NAMES)  # one worker now stuck
    _, elapsed = timed(guard.close)
    assert elapsed < BOUND and closed == [True]
    vector = guard.get_features("u1", "user", NAMES)
    assert (
        vector.status is FeatureStatus.UNAVAILABLE
        and vector.error == "the guarded client is closed"
    )
    backend.release()
    deadline = time.monotonic() + 5
    while guard.stats()["workers"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert guard.stats()["workers"] == 0


def test_close_survives_a_hanging_or_failing_inner_close(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    backend, guard = make("ok")
    never = threading.Event()
    backend.close = never.wait  # type: ignore[attr-defined]
    _, elapsed = timed(guard.close)
    assert elapsed < 3 * BOUND
    never.set()
    assert "did not finish in time" in caplog.text

    backend2, guard2 = make("ok")

    def boom() -> None:
        raise OSError("disk on fire")

    backend2.close = boom  # type: ignore[attr-defined]
    guard2.close()
    assert "closing the feature store failed: backend raised OSError" in caplog.text


def test_from_settings_maps_every_guard_key(tmp_path: Path) -> None:
    settings = FeatureStoreSettings.model_validate(
        {
            "provider": "local",
            "local": {"data_path": str(tmp_path / "f.json")},
            "timeout_ms": 75,
            "fallback_on_timeout": False,
            "breaker_failure_threshold": 3,
            "breaker_reset_seconds": 7,
            "max_workers": 4,
            "cache_ttl_seconds": 30,
            "cache_max_entries": 99,
            "warning_interval_seconds": 5,
        }
    )
    guard = GuardedClient.from_settings(FaultyBackend(), settings)
    assert guard.timeout_ms == 75 and guard.fallback_on_timeout is False
    assert guard.breaker.failure_threshold == 3 and guard.breaker.reset_seconds == 7
    assert guard.stats()["max_workers"] == 4
    assert guard.cache is not None and guard.cache.ttl_seconds == 30
    assert guard.cache.max_entries == 99 and guard.warning_interval_seconds == 5


def test_client_from_config_returns_a_guarded_local_store(tmp_path: Path) -> None:
    path = tmp_path / "features.json"
    LocalFeatureStore.write(
        path,
        {"user": {"u1": {"updated_at": "2026-01-01T00:00:00Z", "features": {"tier": "gold"}}}},
    )
    config = parse_config(
        {
            "feature_store": {
                "provider": "local",
                "local": {"data_path": str(path)},
                "timeout_ms": 150,
            }
        }
    )
    client = client_from_config(config)
    assert isinstance(client, GuardedClient)
    assert isinstance(client.inner, LocalFeatureStore) and client.source == "local"
    assert client.get_features("u1", "user", ["tier"]).features == {"tier": "gold"}
    with pytest.raises(FeatureConfigError):
        client.get_features("u1", "user", ["nope"])
    assert asyncio.run(client.aget_features("u2", "user", ["tier"])).status is FeatureStatus.MISSING
    assert client.health_check() is True
    client.close()
