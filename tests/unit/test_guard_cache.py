"""The guard's opt-in cache: hits, copies, freshness ageing, expiry, batch partial hits."""

from __future__ import annotations

from typing import Any

import pytest

from asahi_features.guard import GuardedClient
from asahi_features.guard.cache import FeatureCache, cache_key
from asahi_features.models import FeatureStatus, FeatureVector, utc_now
from tests.support.faults import AsyncFaultyBackend, FaultyBackend, ManualClock
from tests.support.servers import wait_until

NAMES = ["tier", "preferences"]


def cached_guard(
    backend: FaultyBackend | None = None, **kw: Any
) -> tuple[FaultyBackend, GuardedClient, ManualClock]:
    backend = backend or FaultyBackend(ages={"tier": 10.0, "preferences": 20.0})
    clock = ManualClock()
    kw.setdefault("cache_ttl_seconds", 60)
    kw.setdefault("timeout_ms", 2000)  # roomy: these reads must be answered
    return backend, GuardedClient(backend, clock=clock, **kw), clock


def test_cache_is_off_by_default() -> None:
    backend = FaultyBackend()
    guard = GuardedClient(backend, timeout_ms=2000)
    guard.get_features("u1", "user", NAMES)
    guard.get_features("u1", "user", NAMES)
    assert guard.cache is None and backend.calls == 2
    assert guard.stats()["cache_hits"] == 0 and guard.stats()["cache_entries"] == 0


def test_hit_skips_the_backend_and_returns_a_copy() -> None:
    backend, guard, _ = cached_guard()
    first = guard.get_features("u1", "user", NAMES)
    first.features["tier"] = "mutated by caller"
    second = guard.get_features("u1", "user", NAMES)
    third = guard.get_features("u1", "user", NAMES)
    assert backend.calls == 1
    assert second.features == {"tier": "gold", "preferences": "casual athletic"}
    assert second is not third and second.features is not third.features
    second.features.clear()
    assert guard.get_features("u1", "user", NAMES).features["tier"] == "gold"
    stats = guard.stats()
    assert stats["cache_hits"] == 3 and stats["cache_misses"] == 1
    assert stats["cache_entries"] == 1


def test_freshness_keeps_ageing() -> None:
    _, guard, clock = cached_guard()
    fetched = guard.get_features("u1", "user", NAMES)
    assert fetched.freshness_seconds == pytest.approx(20.0)
    clock.advance(7.5)
    aged = guard.get_features("u1", "user", NAMES)
    assert aged.freshness_seconds == pytest.approx(27.5)
    assert aged.feature_freshness == pytest.approx({"tier": 17.5, "preferences": 27.5})
    assert aged.retrieved_at == fetched.retrieved_at
    assert aged.status is FeatureStatus.FOUND and aged.source == "faulty"


def test_entries_expire_after_the_ttl() -> None:
    backend, guard, clock = cached_guard(cache_ttl_seconds=30)
    guard.get_features("u1", "user", NAMES)
    clock.advance(29)
    guard.get_features("u1", "user", NAMES)
    assert backend.calls == 1
    clock.advance(2)
    refetched = guard.get_features("u1", "user", NAMES)
    assert backend.calls == 2 and refetched.freshness_seconds == pytest.approx(20.0)


def test_feature_list_and_entity_are_part_of_the_key() -> None:
    backend, guard, _ = cached_guard()
    guard.get_features("u1", "user", ["tier"])
    guard.get_features("u1", "user", ["tier", "preferences"])
    guard.get_features("u1", "org", ["tier"])
    guard.get_features("u2", "user", ["tier"])
    assert backend.calls == 4
    assert cache_key("user", "u1", ["a", "b"]) == ("user", "u1", ("a", "b"))


def test_missing_entities_are_cached_but_fallbacks_are_not() -> None:
    backend, guard, _ = cached_guard()
    missing = guard.get_features("u1", "user", ["unknown_feature"])
    assert missing.status is FeatureStatus.MISSING
    guard.get_features("u1", "user", ["unknown_feature"])
    assert backend.calls == 1
    backend.set_mode("raise")
    assert guard.get_features("u2", "user", NAMES).status is FeatureStatus.UNAVAILABLE
    backend.set_mode("ok")
    assert guard.get_features("u2", "user", NAMES).status is FeatureStatus.FOUND
    assert backend.calls == 3


def test_batch_fetches_only_misses_in_one_call() -> None:
    backend, guard, clock = cached_guard()
    guard.get_batch_features(["u1", "u2"], "user", NAMES)
    assert backend.batch_sizes == [2]
    clock.advance(3)
    vectors = guard.get_batch_features(["u1", "u3", "u2", "u4", "u3"], "user", NAMES)
    assert backend.batch_sizes == [2, 2]  # u3 and u4, once each, in one call
    assert [v.entity_id for v in vectors] == ["u1", "u3", "u2", "u4", "u3"]
    assert vectors[0].freshness_seconds == pytest.approx(23.0)  # cached, aged
    assert vectors[1].freshness_seconds == pytest.approx(20.0)  # fresh from the backend
    assert vectors[1] is vectors[4]
    stats = guard.stats()
    assert stats["cache_hits"] == 2 and stats["cache_misses"] == 5
    # Everything cached now: no backend call at all.
    again = guard.get_batch_features(["u4", "u1"], "user", NAMES)
    assert [v.entity_id for v in again] == ["u4", "u1"] and backend.calls == 2


def test_batch_partial_hits_survive_a_failing_backend() -> None:
    backend, guard, _ = cached_guard()
    guard.get_batch_features(["u1"], "user", NAMES)
    backend.set_mode("raise")
    vectors = guard.get_batch_features(["u1", "u2"], "user", NAMES)
    assert [v.status for v in vectors] == [FeatureStatus.FOUND, FeatureStatus.UNAVAILABLE]


def test_only_vectors_matched_to_asked_ids_are_cached() -> None:
    class Stray(FaultyBackend):
        def get_batch_features(self, ids: Any, etype: str, names: Any) -> Any:
            self.calls += 1
            # u1 answered, u2 twice (unusable), plus an entity nobody asked for
            return [self.vector(i, etype, names) for i in ("u1", "u2", "u2", "stray")]

    backend, guard, _ = cached_guard(Stray())
    vectors = guard.get_batch_features(["u1", "u2"], "user", NAMES)
    assert [v.status for v in vectors] == [FeatureStatus.FOUND, FeatureStatus.UNAVAILABLE]
    assert guard.stats()["cache_entries"] == 1
    assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.FOUND
    assert backend.calls == 1  # u1 from the cache
    guard.get_features("stray", "user", NAMES)
    guard.get_features("u2", "user", NAMES)
    assert backend.calls == 3  # neither the stray nor the duplicated vector was kept


def test_a_late_answer_nobody_waited_for_is_not_cached() -> None:
    # one id: 20 ms, the answer comes at 0.5 s; a batch (below): a roomy 2 s
    backend, guard, _ = cached_guard(
        FaultyBackend("slow", delay=0.5), timeout_ms=20, batch_timeout_ms=2000
    )
    assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.UNAVAILABLE
    assert wait_until(
        lambda: backend.completed == 1 and guard.stats()["busy_workers"] == 0, timeout=10
    )
    assert guard.stats()["cache_entries"] == 0
    backend.set_mode("ok")
    fresh = guard.get_batch_features(["u1", "u2"], "user", NAMES)
    assert [v.status for v in fresh] == [FeatureStatus.FOUND] * 2
    assert backend.calls == 2 and guard.stats()["cache_entries"] == 2
    assert guard.stats()["cache_hits"] == 0  # u1 was read again, not served from the cache


def test_cache_hits_are_served_while_the_breaker_is_open() -> None:
    backend, guard, _ = cached_guard(breaker_window=1, breaker_minimum_calls=1)
    guard.get_features("u1", "user", NAMES)
    backend.set_mode("raise")
    assert guard.get_features("u2", "user", NAMES).status is FeatureStatus.UNAVAILABLE
    assert guard.breaker.state.value == "open"
    assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.FOUND
    both = guard.get_batch_features(["u1", "u2"], "user", NAMES)
    assert [v.status for v in both] == [FeatureStatus.FOUND, FeatureStatus.UNAVAILABLE]
    assert "circuit breaker open" in (both[1].error or "")
    assert backend.calls == 2 and guard.stats()["rejected_open"] == 1


def test_single_and_batch_share_entries() -> None:
    backend, guard, _ = cached_guard()
    guard.get_batch_features(["u1", "u2"], "user", NAMES)
    guard.get_features("u2", "user", NAMES)
    assert backend.calls == 1


async def test_async_paths_use_the_cache() -> None:
    backend = AsyncFaultyBackend()
    _, guard, clock = cached_guard(backend)
    await guard.aget_features("u1", "user", NAMES)
    clock.advance(1)
    hit = await guard.aget_features("u1", "user", NAMES)
    assert backend.calls == 1 and hit.freshness_seconds == pytest.approx(11.0)
    vectors = await guard.aget_batch_features(["u1", "u2", "u3"], "user", NAMES)
    assert backend.batch_sizes == [2] and [v.entity_id for v in vectors] == ["u1", "u2", "u3"]
    assert len(await guard.aget_batch_features(["u2", "u3"], "user", NAMES)) == 2
    assert backend.calls == 2
    backend.set_mode("raise")
    vectors = await guard.aget_batch_features(["u1", "u9"], "user", NAMES)
    assert [v.status for v in vectors] == [FeatureStatus.FOUND, FeatureStatus.UNAVAILABLE]


def test_cache_is_bounded() -> None:
    backend, guard, _ = cached_guard(cache_max_entries=3)
    for i in range(10):
        guard.get_features(f"u{i}", "user", NAMES)
    assert guard.stats()["cache_entries"] == 3
    guard.get_features("u9", "user", NAMES)
    assert backend.calls == 10


def test_feature_cache_directly() -> None:
    clock = ManualClock()
    cache = FeatureCache(10, 100, clock=clock)
    vector = FeatureVector.from_ages("u1", "user", "x", {"a": 1}, {"a": 2.0}, utc_now())
    cache.put("user", "u1", ["a"], vector)
    unavailable = FeatureVector.empty("u2", "user", "x", FeatureStatus.UNAVAILABLE)
    cache.put("user", "u2", ["a"], unavailable)
    cache.put_many("user", ["u3"], ["a"], [unavailable])
    assert len(cache) == 1
    got = cache.get_many("user", ["u1", "u2"], ["a"])
    assert got[0] is not None and got[0].features == {"a": 1} and got[1] is None
    cache.clear()
    assert cache.get("user", "u1", ["a"]) is None
    with pytest.raises(ValueError, match="ttl_seconds"):
        FeatureCache(0)
    with pytest.raises(ValueError, match="max_entries"):
        FeatureCache(1, 0)


def test_a_hit_at_the_instant_of_the_read_is_the_vector_as_read() -> None:
    """No age is added before any time passed, and nothing of the vector is lost on the
    way through the cache: status, error and the store's freshness limits included."""
    backend, guard, _ = cached_guard()
    read = guard.get_features("u1", "user", NAMES)
    hit = guard.get_features("u1", "user", NAMES)
    assert backend.calls == 1
    assert hit.model_dump() == read.model_dump()
    backend.features = {}  # an entity the store does not have: MISSING is cached as such
    missing = guard.get_features("u2", "user", NAMES)
    assert missing.status is FeatureStatus.MISSING
    assert guard.get_features("u2", "user", NAMES).model_dump() == missing.model_dump()
    assert backend.calls == 2


def test_feature_cache_put_and_get_keep_the_vector_and_age_it() -> None:
    clock = ManualClock()
    cache = FeatureCache(60, clock=clock)
    vector = FeatureVector(
        entity_id="u1",
        entity_type="user",
        features={"tier": "gold"},
        retrieved_at=utc_now(),
        freshness_seconds=5.0,
        source="s",
        feature_freshness={"tier": 5.0},
        freshness_limits={"tier": 600.0},
    )
    cache.put("user", "u1", ["tier"], vector)
    assert cache.get("user", "u1", ["tier"]) == vector  # same instant: unchanged
    assert cache.get("user", "u2", ["tier"]) is None
    assert cache.get("org", "u1", ["tier"]) is None
    clock.advance(2.5)
    aged = cache.get("user", "u1", ["tier"])
    assert aged is not None and aged is not vector
    assert aged.freshness_seconds == pytest.approx(7.5)
    assert aged.feature_freshness == pytest.approx({"tier": 7.5})
    assert aged.freshness_limits == {"tier": 600.0} and aged.status is FeatureStatus.FOUND
    assert aged.features == {"tier": "gold"} and aged.entity_id == "u1"
    assert vector.freshness_seconds == 5.0  # the caller's vector is not touched
    clock.advance(60)
    assert cache.get("user", "u1", ["tier"]) is None  # expired


def test_feature_cache_needs_room_for_one_entry() -> None:
    assert len(FeatureCache(60, max_entries=1)) == 0
    with pytest.raises(ValueError):
        FeatureCache(60, max_entries=0)
