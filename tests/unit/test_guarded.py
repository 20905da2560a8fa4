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
from tests.support.faults import AsyncFaultyBackend, FaultyBackend, ManualClock
from tests.support.servers import wait_until

NAMES = ["tier", "preferences"]
ROOMY_MS = 2000
"""The deadline of every read that must get the backend's answer (healthy, error or
garbage): roomy, so a loaded machine cannot turn it into a timeout."""
SHORT_MS = 50
"""The deadline of reads meant to time out (a hung store, or one ten deadlines late)."""
SETTLE = 10.0
"""Bound of every wait for something that must end (seconds); reached only when a rule
is broken."""


@pytest.fixture
def make(backends: list[FaultyBackend]) -> Any:
    def factory(
        mode: str = "ok", *, native: bool = False, **guard: Any
    ) -> tuple[FaultyBackend, GuardedClient]:
        cls = AsyncFaultyBackend if native else FaultyBackend
        backend = cls(mode, delay=guard.pop("delay", 0.5), error=guard.pop("error", None))  # type: ignore[arg-type]
        backends.append(backend)
        guard.setdefault("timeout_ms", ROOMY_MS)
        guard.setdefault("batch_timeout_ms", guard["timeout_ms"])
        return backend, GuardedClient(backend, **guard)

    return factory


def in_daemon_thread(fn: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    """``fn(*args)`` on a daemon thread (a call that never returns cannot hold up the
    interpreter's exit); its result lands in the list."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    thread.start()
    return thread, out


# -- healthy path -------------------------------------------------------------------


def test_ok_single_and_batch(make: Any) -> None:
    backend, guard = make("ok")
    vector = guard.get_features("u1", "user", NAMES)
    assert vector.status is FeatureStatus.FOUND
    assert vector.features == {"tier": "gold", "preferences": "casual athletic"}
    batch = guard.get_batch_features(["u1", "u2", "u1"], "user", ["tier"])
    assert [v.entity_id for v in batch] == ["u1", "u2", "u1"]
    assert backend.calls_by_method == {"get_features": 1, "get_batch_features": 1}
    assert batch[0] == batch[2] and batch[1].entity_id == "u2"
    assert backend.batch_sizes == [2]  # a repeated id is read once
    assert guard.get_batch_features([], "user", NAMES) == []
    stats = guard.stats()
    assert stats["requests"] == 2 and stats["reads"] == 2 and stats["lookups_coalesced"] == 0
    assert stats["fallbacks"] == 0 and stats["timeouts"] == 0 and stats["unavailable"] == 0
    assert stats["bad_vectors"] == 0 and stats["overloaded"] == 0
    assert stats["breaker"]["state"] == "closed"
    assert (stats["breaker"]["window_calls"], stats["breaker"]["window_failures"]) == (2, 0)
    json.dumps(stats)


def test_source_and_repr(make: Any) -> None:
    _, guard = make("ok")
    assert guard.source == "faulty"
    assert "timeout_ms=2000" in repr(guard)

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
    # "slow" answers at 0.5 s, ten deadlines late: the fallback shows the cut
    _, guard = make(mode, timeout_ms=SHORT_MS)
    vector = guard.get_features("u1", "user", NAMES)
    assert vector.status is FeatureStatus.UNAVAILABLE
    assert vector.entity_id == "u1" and vector.entity_type == "user" and vector.features == {}
    assert vector.source == "faulty"
    assert vector.error == "no answer within 50 ms"
    stats = guard.stats()
    assert stats["timeouts"] == 1 and stats["fallbacks"] == 1
    assert stats["unavailable"] == 0  # no error came back from the backend: a timeout
    assert stats["breaker"]["window_failures"] == 1


@pytest.mark.parametrize("mode", ["hang", "slow"])
def test_sync_batch_deadline_falls_back_per_id(make: Any, mode: str) -> None:
    _, guard = make(mode, timeout_ms=SHORT_MS)
    vectors = guard.get_batch_features(["a", "b", "c"], "user", NAMES)
    assert [v.entity_id for v in vectors] == ["a", "b", "c"]
    assert all(v.status is FeatureStatus.UNAVAILABLE for v in vectors)
    stats = guard.stats()
    assert stats["reads"] == 1 and stats["timeouts"] == 1  # one read, one lookup
    assert stats["fallbacks"] == 3  # one per fallback vector


def test_request_deadline_scales_with_its_ids(make: Any) -> None:
    _, scaled = make("ok", timeout_ms=100, batch_timeout_ms=None, batch_entity_timeout_ms=2)
    assert scaled.deadline_seconds(1) == pytest.approx(0.1)
    assert scaled.deadline_seconds(0) == pytest.approx(0.1)
    assert scaled.deadline_seconds(1000) == pytest.approx(0.1 + 999 * 0.002)
    _, fixed = make("ok", timeout_ms=100, batch_timeout_ms=500)
    assert fixed.deadline_seconds(1) == pytest.approx(0.1)
    assert fixed.deadline_seconds(2) == fixed.deadline_seconds(1000) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="batch_entity_timeout_ms"):
        make("ok", batch_entity_timeout_ms=-1)
    with pytest.raises(ValueError, match="batch_timeout_ms"):
        make("ok", batch_timeout_ms=0)
    with pytest.raises(ValueError, match="max_batch_size"):
        make("ok", max_batch_size=0)


def test_batch_gets_the_deadline_of_its_size(make: Any) -> None:
    # 0.2 s answers: too slow for one id (50 ms), in time for 100 ids (50 + 99 x 20 ms)
    backend, guard = make(
        "slow", delay=0.2, timeout_ms=SHORT_MS, batch_timeout_ms=None, batch_entity_timeout_ms=20
    )
    assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.UNAVAILABLE
    ids = [f"u{i}" for i in range(100)]
    vectors = guard.get_batch_features(ids, "user", NAMES)
    assert {v.status for v in vectors} == {FeatureStatus.FOUND}
    assert guard.stats()["timeouts"] == 1 and 100 in backend.batch_sizes


def test_sync_deadline_without_fallback_raises(make: Any) -> None:
    _, guard = make("hang", timeout_ms=SHORT_MS, fallback_on_timeout=False)
    with pytest.raises(FeatureStoreTimeoutError, match="50 ms"):
        guard.get_features("u1", "user", NAMES)
    with pytest.raises(FeatureStoreTimeoutError):
        guard.get_batch_features(["u1"], "user", NAMES)


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
    _, guard = make("raise", error=error, breaker_window=1, breaker_minimum_calls=1)
    for _ in range(3):
        with pytest.raises((FeatureConfigError, ConfigError)):
            guard.get_features("u1", "user", ["nope"])
        with pytest.raises((FeatureConfigError, ConfigError)):
            guard.get_batch_features(["u1"], "user", ["nope"])
    stats = guard.stats()
    assert stats["breaker"]["state"] == "closed" and stats["breaker"]["window_calls"] == 0
    assert stats["config_errors"] == 6 and stats["fallbacks"] == 0 and stats["unavailable"] == 0


def test_garbage_counts_as_unavailability(make: Any) -> None:
    _, guard = make("garbage", breaker_window=2, breaker_minimum_calls=2)
    vector = guard.get_features("u1", "user", NAMES)
    assert vector.status is FeatureStatus.UNAVAILABLE
    assert vector.error == "backend returned a str in a read, expected FeatureVectors"
    assert guard.stats()["unavailable"] == 1 and guard.breaker.state.value == "closed"
    assert guard.get_features("u2", "user", NAMES).status is FeatureStatus.UNAVAILABLE
    assert guard.breaker.state.value == "open"  # 2 failed reads of 2


def test_batch_answer_short_of_a_vector_fails_only_that_entity(make: Any) -> None:
    backend, guard = make("garbage")
    vectors = guard.get_batch_features(["a", "b"], "user", NAMES)  # answer: only "a"
    assert [(v.entity_id, v.status) for v in vectors] == [
        ("a", FeatureStatus.FOUND),
        ("b", FeatureStatus.UNAVAILABLE),
    ]
    assert "no usable vector for this entity" in (vectors[1].error or "")
    stats = guard.stats()
    assert stats["bad_vectors"] == 1 and stats["fallbacks"] == 1
    assert backend.batch_sizes == [2]


@pytest.mark.parametrize(
    ("answer", "good", "bad_vectors"),
    [
        (["b", "a", "c"], {"a", "b", "c"}, 0),  # any order: matched by entity_id
        (["a", "b", "zz"], {"a", "b"}, 2),  # an id not asked, and "c" missing
        (["a", "b", "b", "c"], {"a", "c"}, 1),  # "b" twice: trust neither
    ],
)
def test_batch_answers_are_matched_by_entity_id(
    answer: list[str], good: set[str], bad_vectors: int
) -> None:
    class Shuffled(FaultyBackend):
        def get_batch_features(self, ids: Any, etype: str, names: Any) -> Any:
            return [self.vector(i, etype, names) for i in answer]

    guard = GuardedClient(Shuffled(), timeout_ms=ROOMY_MS)
    vectors = guard.get_batch_features(["a", "b", "c"], "user", NAMES)
    assert [v.entity_id for v in vectors] == ["a", "b", "c"]
    found = {v.entity_id for v in vectors if v.status is FeatureStatus.FOUND}
    assert found == good
    bad = {v.entity_id for v in vectors if v.status is FeatureStatus.UNAVAILABLE}
    assert bad == {"a", "b", "c"} - good
    assert guard.stats()["bad_vectors"] == bad_vectors


def test_vector_of_another_entity_type_is_bad_data() -> None:
    class Confused(FaultyBackend):
        def get_batch_features(self, ids: Any, etype: str, names: Any) -> Any:
            return [self.vector(ids[0], etype, names), self.vector(ids[1], "org", names)]

    guard = GuardedClient(Confused(), timeout_ms=ROOMY_MS)
    first, second = guard.get_batch_features(["a", "b"], "user", NAMES)
    assert first.status is FeatureStatus.FOUND and second.status is FeatureStatus.UNAVAILABLE
    assert guard.stats()["bad_vectors"] == 1  # one asked id left without a usable answer


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ("nope", "expected a list"),
        ([1, 2], "a int in a read"),
    ],
)
def test_batch_result_is_validated(result: Any, message: str) -> None:
    class Odd(FaultyBackend):
        def get_batch_features(self, *args: Any) -> Any:
            return result

    guard = GuardedClient(Odd(), timeout_ms=ROOMY_MS, fallback_on_timeout=False)
    with pytest.raises(FeatureStoreUnavailableError, match=message):
        guard.get_batch_features(["a", "b"], "user", NAMES)


def test_batch_tuple_is_accepted() -> None:
    class Tupled(FaultyBackend):
        def get_batch_features(self, ids: Any, etype: str, names: Any) -> Any:
            return tuple(self.vector(i, etype, names) for i in ids)

    guard = GuardedClient(Tupled(), timeout_ms=ROOMY_MS)
    assert [v.entity_id for v in guard.get_batch_features(["a", "b"], "user", NAMES)] == [
        "a",
        "b",
    ]


# -- async paths --------------------------------------------------------------------


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("mode", ["hang", "slow"])
async def test_async_single_and_batch_deadline(make: Any, native: bool, mode: str) -> None:
    _, guard = make(mode, native=native, timeout_ms=SHORT_MS)
    vector = await guard.aget_features("u1", "user", NAMES)
    assert vector.status is FeatureStatus.UNAVAILABLE
    vectors = await guard.aget_batch_features(["a", "b"], "user", NAMES)
    assert [(v.entity_id, v.status) for v in vectors] == [
        ("a", FeatureStatus.UNAVAILABLE),
        ("b", FeatureStatus.UNAVAILABLE),
    ]
    assert guard.stats()["timeouts"] == 2


async def test_native_async_backend_is_cancelled_without_threads(make: Any) -> None:
    backend, guard = make("hang", native=True, timeout_ms=SHORT_MS)
    vector = await guard.aget_features("u1", "user", NAMES)
    assert vector.status is FeatureStatus.UNAVAILABLE
    (vector,) = await guard.aget_batch_features(["u1"], "user", NAMES)
    assert vector.status is FeatureStatus.UNAVAILABLE
    # The caller returned at the deadline; the backend's task is cancelled behind it.
    deadline = time.monotonic() + SETTLE
    while backend.cancelled < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert backend.cancelled == 2 and backend.in_flight == 0 and backend.completed == 0
    assert backend.calls_by_method == {"aget_features": 2}  # one id: the single method
    assert guard.stats()["workers"] == 0


@pytest.mark.parametrize("native", [False, True])
async def test_async_without_fallback_raises(make: Any, native: bool) -> None:
    _, guard = make("hang", native=native, timeout_ms=SHORT_MS, fallback_on_timeout=False)
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
    assert [v.status for v in await guard.aget_batch_features(["a", "b"], "user", NAMES)] == [
        FeatureStatus.FOUND,  # the answer had "a"
        FeatureStatus.UNAVAILABLE,  # and not "b"
    ]
    assert guard.stats()["bad_vectors"] == 1
    backend.set_mode("raise")
    assert (await guard.aget_features("u1", "user", NAMES)).status is FeatureStatus.UNAVAILABLE
    backend.error = lambda: FeatureConfigError("unknown feature", ["tier"])
    with pytest.raises(FeatureConfigError):
        await guard.aget_features("u1", "user", ["x"])
    with pytest.raises(FeatureConfigError):
        await guard.aget_batch_features(["u1"], "user", ["x"])
    method = "aget_features" if native else "get_features"
    assert backend.calls_by_method[method] == 5  # a batch of one id reads it singly


async def test_sync_only_client_works_on_the_async_path(make: Any) -> None:
    backend, guard = make("ok")
    assert not hasattr(backend, "aget_features")
    vector = await guard.aget_features("u1", "user", NAMES)
    assert vector.features["tier"] == "gold"
    assert backend.calls_by_method == {"get_features": 1}
    assert guard.stats()["workers"] == 1


async def test_base_store_default_async_is_not_treated_as_native(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    LocalFeatureStore.write(
        path,
        {"user": {"u1": {"updated_at": "2026-01-01T00:00:00Z", "features": {"tier": "a"}}}},
    )
    guard = GuardedClient(LocalFeatureStore(path), timeout_ms=ROOMY_MS)
    # BaseFeatureStore's aget_* run asyncio.to_thread: the guard's own bounded workers
    # run the sync method instead.
    assert (await guard.aget_features("u1", "user", ["tier"])).features == {"tier": "a"}
    assert guard.stats()["workers"] == 1

    class SingleNative(BaseFeatureStore):
        """A native single read but BaseFeatureStore's batch: the sync path is used."""

        def __init__(self) -> None:
            self.called: list[str] = []

        def get_features(self, entity_id: str, entity_type: str, names: Any) -> FeatureVector:
            self.called.append("get_features")
            return FeatureVector.empty(entity_id, entity_type, "x")

        def health_check(self) -> bool:
            return True

        async def aget_features(
            self, entity_id: str, entity_type: str, names: Any
        ) -> FeatureVector:
            self.called.append("aget_features")
            return FeatureVector.empty(entity_id, entity_type, "x")

    class FullNative(SingleNative):
        async def aget_batch_features(
            self, entity_ids: Any, entity_type: str, names: Any
        ) -> list[FeatureVector]:
            self.called.append("aget_batch_features")
            return [FeatureVector.empty(e, entity_type, "x") for e in entity_ids]

    single = SingleNative()
    guarded = GuardedClient(single, timeout_ms=ROOMY_MS)
    await guarded.aget_features("u1", "user", ["tier"])
    assert single.called == ["get_features"] and guarded.stats()["workers"] == 1

    full = FullNative()
    guarded = GuardedClient(full, timeout_ms=ROOMY_MS)
    await guarded.aget_features("u1", "user", ["tier"])
    await guarded.aget_batch_features(["a", "b"], "user", ["tier"])
    assert full.called == ["aget_features", "aget_batch_features"]
    assert guarded.stats()["workers"] == 0


async def test_async_bridge_survives_a_closed_loop(make: Any) -> None:
    """A worker finishing after its caller's loop closed must not die."""
    backend, guard = make(
        "slow", delay=0.5, timeout_ms=SHORT_MS, batch_timeout_ms=ROOMY_MS, max_workers=1
    )

    def run_in_new_loop() -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(guard.aget_features("u1", "user", NAMES))
        finally:
            loop.close()

    thread = threading.Thread(target=run_in_new_loop)
    thread.start()
    thread.join()
    deadline = time.monotonic() + SETTLE
    while guard.stats()["busy_workers"] and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert backend.completed == 1  # the late call returned into the closed loop
    backend.set_mode("ok")
    # the worker still serves reads (a batch: under the roomy batch deadline)
    vectors = await guard.aget_batch_features(["u1", "u2"], "user", NAMES)
    assert [v.status for v in vectors] == [FeatureStatus.FOUND] * 2
    assert guard.stats()["workers"] == 1


# -- logging ------------------------------------------------------------------------


def test_fallback_warning_is_rate_limited(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    _, guard = make(  # a breaker that never judges these few reads
        "raise", clock=clock, warning_interval_seconds=60, breaker_minimum_calls=20
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
    # a hung store: False at the deadline (how soon: the just-over test below)
    _, hung = make("hang", timeout_ms=SHORT_MS)
    assert hung.health_check() is False
    for checked in (guard, hung):
        assert checked.breaker.snapshot()["window_calls"] == 0  # health checks are not judged
        assert checked.stats()["requests"] == 0


def test_health_check_waits_timeout_ms_and_no_longer(make: Any) -> None:
    """A backend that answers "healthy" just over the deadline (at twice ``timeout_ms``,
    well under a second) is unhealthy: health_check stops waiting at ``timeout_ms``, not
    at a second or any floor of its own. The same backend under a roomy ``timeout_ms`` is
    healthy, so the False is the deadline's doing. Outcomes only, no elapsed-time bound."""
    backend, guard = make("slow", timeout_ms=200, delay=0.4)
    assert guard.health_check() is False
    # the late answer arrives with nobody waiting for it
    assert wait_until(lambda: guard.stats()["busy_workers"] == 0, timeout=10)
    assert backend.completed == 1
    roomy = GuardedClient(backend, timeout_ms=3000)
    assert roomy.health_check() is True
    assert backend.calls_by_method == {"health_check": 2}


def test_health_check_false_when_saturated(make: Any) -> None:
    """Every worker stuck in a call past its deadline: the health check says False at
    once, without queueing for a worker until its own deadline of two minutes (it must
    return within SETTLE, which only the fast answer does)."""
    backend, guard = make("hang", max_workers=1, timeout_ms=120_000, batch_timeout_ms=SHORT_MS)
    vectors = guard.get_batch_features(["u1", "u2"], "user", NAMES)  # the worker is stuck
    assert [v.status for v in vectors] == [FeatureStatus.UNAVAILABLE] * 2
    thread, out = in_daemon_thread(guard.health_check)
    thread.join(SETTLE)
    assert out == [False], "the health check queued for a worker instead of failing at once"
    assert backend.calls_by_method == {"get_batch_features": 1}  # it never reached the store


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
    backend, guard = make("ok", max_workers=2, timeout_ms=SHORT_MS, batch_timeout_ms=ROOMY_MS)
    closed: list[bool] = []
    backend.close = lambda: closed.append(True)  # type: ignore[attr-defined]
    healthy = guard.get_batch_features(["u1", "u2"], "user", NAMES)  # roomy batch deadline
    assert [v.status for v in healthy] == [FeatureStatus.FOUND] * 2
    backend.set_mode("hang")
    guard.get_features("u1", "user", NAMES)  # one worker now stuck (until the release below)
    thread, _ = in_daemon_thread(guard.close)
    thread.join(SETTLE)
    assert not thread.is_alive(), "close() waited for the stuck worker"
    assert closed == [True]
    vector = guard.get_features("u1", "user", NAMES)
    assert (
        vector.status is FeatureStatus.UNAVAILABLE
        and vector.error == "the guarded client is closed"
    )
    backend.release()
    assert wait_until(lambda: guard.stats()["workers"] == 0, timeout=SETTLE)


def test_close_survives_a_hanging_or_failing_inner_close(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    backend, guard = make("ok", timeout_ms=SHORT_MS)  # close() waits max(timeout, 1 s)
    never = threading.Event()
    backend.close = never.wait  # type: ignore[attr-defined]
    thread, _ = in_daemon_thread(guard.close)
    thread.join(SETTLE)
    returned = not thread.is_alive()
    never.set()  # the inner close ends only now
    assert returned, "close() waited for the backend's hanging close"
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
            "batch_timeout_ms": 400,
            "batch_entity_timeout_ms": 2.5,
            "fallback_on_timeout": False,
            "breaker_failure_rate": 0.3,
            "breaker_slow_call_rate": 0.6,
            "breaker_window": 40,
            "breaker_minimum_calls": 10,
            "breaker_reset_seconds": 7,
            "breaker_half_open_calls": 4,
            "max_workers": 4,
            "max_batch_size": 250,
            "cache_ttl_seconds": 30,
            "cache_max_entries": 99,
            "warning_interval_seconds": 5,
        }
    )
    guard = GuardedClient.from_settings(FaultyBackend(), settings)
    assert guard.timeout_ms == 75 and guard.fallback_on_timeout is False
    assert guard.batch_timeout_ms == 400 and guard.batch_entity_timeout_ms == 2.5
    breaker = guard.breaker
    assert (breaker.failure_rate, breaker.slow_call_rate) == (0.3, 0.6)
    assert (breaker.window, breaker.minimum_calls) == (40, 10)
    assert (breaker.reset_seconds, breaker.half_open_calls) == (7, 4)
    assert guard.stats()["max_workers"] == 4 and guard.max_batch_size == 250
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
                "timeout_ms": ROOMY_MS,
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
