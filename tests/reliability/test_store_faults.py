"""Store faults with real parts: the enricher degrades, never fails, and recovers by itself.

* Tecton test server that hangs, answers 503, answers malformed JSON (unit level: the
  server is an in-process HTTP server on 127.0.0.1, the client the real tecton-client);
* a local JSON feature file rewritten non-atomically while readers enrich;
* Redis killed mid-run and restarted on the same port, and ``feast serve`` restarted
  mid-run (integration: real redis-server / feast serve, RUN_INTEGRATION_TESTS=1).
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, TypeVar

import pytest

from asahi_features.enricher import FeatureEnricher
from asahi_features.guard import BreakerState, GuardedClient
from asahi_features.models import (
    EnrichmentReason,
    EnrichmentResult,
    FeatureStatus,
    FeatureVector,
)
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import EnricherConfig
from asahi_features.stores.base import FeatureStoreClient
from asahi_features.stores.local import LocalFeatureStore
from tests.support.servers import wait_for, wait_until

DEGRADED = {
    EnrichmentReason.STORE_UNAVAILABLE,
    EnrichmentReason.DISABLED_BY_MONITOR,
}
LIVENESS_S = 30.0
"""Bound of a call that must return at its 2 s deadline while the store hangs for two
minutes: reached only when the deadline is not kept."""

T = TypeVar("T")


def _returns(fn: Callable[[], T], what: str) -> T:
    """``fn()`` on a daemon thread; fails unless it returned within LIVENESS_S."""
    out: List[T] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    thread.join(LIVENESS_S)
    assert out, f"{what} did not return within {LIVENESS_S:g} s: the hung store held it"
    return out[0]


def _enricher(
    client: FeatureStoreClient, features: List[str], monitor: Optional[FeatureMonitor] = None
) -> FeatureEnricher:
    config = EnricherConfig(
        freshness_threshold_seconds=10**9,
        max_feature_tokens=400,
        enabled_task_types=["t"],
        task_features={"t": {"user": features}},
    )
    return FeatureEnricher(client, config, monitor=monitor)


class LoadLoop:
    """Threads that enrich continuously and record every outcome (or escaped exception)."""

    def __init__(
        self,
        enricher: FeatureEnricher,
        users: List[str],
        threads: int = 4,
        pause: float = 0.002,
    ) -> None:
        self.enricher = enricher
        self.users = users
        self.records: List[Tuple[float, str, str, EnrichmentResult]] = []
        """(start time, user, prompt, result) of every request."""
        self.errors: List[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pause = pause
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def _run(self, t: int) -> None:
        i = 0
        while not self._stop.is_set():
            user = self.users[(t * 17 + i) % len(self.users)]
            prompt = f"thread {t} request {i} for {user}"
            began = time.monotonic()
            try:
                result = self.enricher.enrich(prompt, user_id=user, task_type="t")
            except BaseException as exc:  # recorded: the test fails on any
                with self._lock:
                    self.errors.append(exc)
            else:
                with self._lock:
                    self.records.append((began, user, prompt, result))
            i += 1
            time.sleep(self._pause)

    def start(self) -> LoadLoop:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in self._threads)

    def since(self, t0: float) -> List[EnrichmentResult]:
        with self._lock:
            return [r for began, _, _, r in self.records if began >= t0]

    def wait_enriched_after(self, t0: float, timeout: float) -> None:
        wait_for(lambda: any(r.features_available for r in self.since(t0)), timeout=timeout)


def _check_records(loop: LoadLoop) -> None:
    """No request raised; every prompt is kept, and left as it was when not enriched.
    (No elapsed-time bound: LoadLoop.stop() fails should a request hang.)"""
    assert loop.errors == [], f"{len(loop.errors)} requests failed: {loop.errors[:3]!r}"
    for _, _, prompt, result in loop.records:
        assert result.enriched_prompt.endswith(prompt)
        if not result.features_available:
            assert result.enriched_prompt == prompt


# --------------------------------------------------------------------------- Tecton

TECTON_KEY_ENV = "ASAHI_FAULTS_TECTON_KEY"


@pytest.fixture
def tecton(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from tests.support.tecton_server import TectonTestServer

    monkeypatch.setenv(TECTON_KEY_ENV, "faults-key")
    with TectonTestServer(api_key="faults-key") as server:
        server.add_service(
            "user_fs",
            join_keys=["user_id"],
            features={"profile.tier": "string", "profile.preferences": "string"},
        )
        for n in range(20):
            server.put(
                "user_fs",
                {"user_id": f"u{n}"},
                {"profile.tier": f"tier-of-u{n}", "profile.preferences": f"pref-of-u{n}"},
                age_seconds=30,
            )
        yield server


def _tecton_guard(server: Any, *, client_timeout_ms: float = 120_000) -> GuardedClient:
    """A roomy 2 s guard around a TectonClient whose own timeout is far longer (inside a
    guarded read its I/O follows the guard's deadline; a hung request outlives both)."""
    from asahi_features.stores.tecton import TectonClient

    client = TectonClient(
        TECTON_KEY_ENV,
        "prod",
        url=server.url,
        feature_service="user_fs",
        timeout_ms=client_timeout_ms,
    )
    return GuardedClient(
        client,
        timeout_ms=2_000,
        # after the healthy read, the third failed read makes 3 of 4 (>= 50 %): open
        breaker_window=4,
        breaker_minimum_calls=4,
        breaker_reset_seconds=0.5,
        breaker_half_open_calls=1,
        max_workers=8,
        warning_interval_seconds=0,
    )


def _get_features_requests(server: Any) -> int:
    from tests.support.tecton_server import GET_FEATURES

    return sum(1 for r in server.requests if r["path"] == GET_FEATURES)


@pytest.mark.parametrize(
    ("mode", "status"),
    [("hang", 0), ("status", 503), ("malformed_json", 0), ("status", 500), ("reset", 0)],
)
def test_tecton_fault_degrades_opens_breaker_and_recovers(
    tecton: Any, mode: str, status: int
) -> None:
    guarded = _tecton_guard(tecton)
    enricher = _enricher(guarded, ["tier", "preferences"])
    try:
        healthy = enricher.enrich("hello", user_id="u1", task_type="t")
        assert healthy.features_available and "tier-of-u1" in healthy.feature_context

        tecton.faults.mode, tecton.faults.hang_seconds = mode, 120.0
        if status:
            tecton.faults.status = status
        for i in range(3):
            prompt = f"during fault {i}"
            request = functools.partial(enricher.enrich, prompt, user_id="u2", task_type="t")
            result = _returns(request, "a request")
            assert result.enriched_prompt == f"during fault {i}"
            assert result.reason is EnrichmentReason.STORE_UNAVAILABLE
            assert result.entity_status == {"user": FeatureStatus.UNAVAILABLE}
            if i < 2:
                assert guarded.breaker.state is BreakerState.CLOSED  # under minimum_calls
        assert guarded.breaker.state is BreakerState.OPEN
        snap = guarded.breaker.snapshot()
        assert (snap["window_calls"], snap["window_failures"]) == (4, 3)

        # While open: fail fast, the server is not asked at all.
        before = _get_features_requests(tecton)
        for _ in range(20):
            assert not enricher.enrich("open", user_id="u3", task_type="t").features_available
        assert _get_features_requests(tecton) == before
        assert guarded.stats()["rejected_open"] >= 20

        # The store comes back: after the cool-down one probe closes the breaker.
        tecton.faults.mode = "ok"
        wait_for(lambda: guarded.breaker.state is BreakerState.HALF_OPEN, timeout=5)
        wait_for(
            lambda: enricher.enrich("after", user_id="u4", task_type="t").features_available,
            timeout=10,
            interval=0.1,
        )
        closed: BreakerState = guarded.breaker.state
        assert closed is BreakerState.CLOSED
        result = enricher.enrich("after", user_id="u5", task_type="t")
        assert "tier-of-u5" in result.feature_context
    finally:
        tecton.release()
        guarded.close()


def test_tecton_fault_async_path(tecton: Any) -> None:
    import asyncio

    guarded = _tecton_guard(tecton)
    enricher = _enricher(guarded, ["tier"])

    async def burst(n: int) -> List[EnrichmentResult]:
        return await asyncio.gather(
            *(enricher.aenrich(f"p{i}", user_id=f"u{i % 20}", task_type="t") for i in range(n))
        )

    try:
        assert all(r.features_available for r in asyncio.run(burst(5)))
        tecton.faults.mode, tecton.faults.hang_seconds = "hang", 120.0
        results = _returns(lambda: asyncio.run(burst(30)), "a burst")
        assert not any(r.features_available for r in results)
        assert all(r.enriched_prompt == f"p{i}" for i, r in enumerate(results))
        tecton.faults.mode = "ok"
        tecton.release()
        time.sleep(0.6)
        wait_for(lambda: all(r.features_available for r in asyncio.run(burst(3))), timeout=10)
    finally:
        tecton.release()
        guarded.close()


# --------------------------------------------------------------------------- local file

FILE_USERS = 30
VALUE = re.compile(r"(A|B)-gen-u(\d+)-(tier|pref)")


def _feature_doc(version: str) -> str:
    doc = {
        "user": {
            f"u{n}": {
                "updated_at": "2026-01-01T00:00:00Z",
                "features": {
                    "tier": f"{version}-gen-u{n}-tier",
                    "preferences": f"{version}-gen-u{n}-pref",
                },
            }
            for n in range(FILE_USERS)
        }
    }
    return json.dumps(doc, indent=1)


class CountingStore(LocalFeatureStore):
    """Counts the vectors with features it returned (reads that found a whole file;
    for the bare store, one read per request)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.answered = 0
        self._count_lock = threading.Lock()

    def _count(self, vectors: List[FeatureVector]) -> None:
        with self._count_lock:
            self.answered += sum(1 for v in vectors if v.status is FeatureStatus.FOUND)

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        vector = super().get_features(entity_id, entity_type, feature_names)
        self._count([vector])
        return vector

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        vectors = super().get_batch_features(entity_ids, entity_type, feature_names)
        self._count(vectors)
        return vectors


@pytest.mark.parametrize("guard", [True, False], ids=["guarded", "bare"])
def test_local_file_rewritten_half_way(tmp_path: Path, guard: bool) -> None:
    """Readers enrich while a writer rewrites the file non-atomically. Every request the
    store answered (it read a whole file) is enriched, from one version of the file and
    for its own user; every other one degrades with its prompt untouched. Once the file
    is whole again, every request is enriched (from the last version written)."""
    path = tmp_path / "features.json"
    path.write_text(_feature_doc("A"), encoding="utf-8")
    store = CountingStore(path)
    guarded = (
        GuardedClient(store, timeout_ms=2_000, breaker_reset_seconds=0.05, max_workers=8)
        if guard
        else None
    )
    client: FeatureStoreClient = guarded or store
    enricher = _enricher(client, ["tier", "preferences"])
    stop = threading.Event()
    rewrites = 0
    last = "A"

    def writer() -> None:
        nonlocal rewrites, last
        version = "B"
        while not stop.is_set():
            text = _feature_doc(version)
            half = len(text) // 2
            with open(path, "w", encoding="utf-8") as handle:  # deliberately not atomic
                handle.write(text[:half])
                handle.flush()
                os.fsync(handle.fileno())
                time.sleep(0.002)
                handle.write(text[half:])
            rewrites += 1
            last = version
            version = "A" if version == "B" else "B"
            time.sleep(0.001)

    loop = LoadLoop(enricher, [f"u{n}" for n in range(FILE_USERS)], threads=4, pause=0)
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    loop.start()
    try:
        time.sleep(2.0)
    finally:
        loop.stop()
        stop.set()
        thread.join(timeout=10)
    try:
        assert not thread.is_alive()
        _check_records(loop)
        assert rewrites > 20
        enriched = degraded = 0
        for _, user, _, result in loop.records:
            if result.features_available:
                enriched += 1
                found = VALUE.findall(result.feature_context)
                # both lines present, from ONE version of the file, for this very user
                assert len(found) == 2, result.feature_context
                assert {(v, f"u{n}") for v, n, _ in found} in ({("A", user)}, {("B", user)})
            else:
                degraded += 1
                assert result.reason is EnrichmentReason.STORE_UNAVAILABLE, result.reason
        assert degraded > 0, "the half-written file was never observed; the test proved nothing"
        # every request the store answered was enriched, and no other: bare, one read per
        # request; guarded, a read may answer several requests (coalesced), so the guard's
        # own count of requests it could not answer (its fallbacks) is the measure
        if guarded is None:
            assert enriched == store.answered, (enriched, store.answered, degraded)
        else:
            stats = guarded.stats()
            assert stats["requests"] == len(loop.records)
            assert stats["fallbacks"] == degraded, (stats, degraded)
            assert stats["timeouts"] == stats["overloaded"] == 0

        # The file is whole again: every request is enriched, from the last version.
        if guarded is not None:  # past the breaker's 50 ms cool-down, probes close it
            assert wait_until(lambda: guarded.breaker.state is not BreakerState.OPEN, 10)
        for n in range(FILE_USERS):
            result = enricher.enrich(f"after {n}", user_id=f"u{n}", task_type="t")
            assert result.reason is EnrichmentReason.ENRICHED, (n, result.reason)
            assert set(VALUE.findall(result.feature_context)) == {
                (last, str(n), "tier"),
                (last, str(n), "pref"),
            }
        if guarded is not None:
            assert guarded.breaker.state is BreakerState.CLOSED
    finally:
        if guarded is not None:
            guarded.close()


# --------------------------------------------------------------------------- Redis


@pytest.mark.integration
def test_redis_killed_mid_run_and_restarted(tmp_path: Path) -> None:
    from asahi_features.sample_repo import user_id
    from asahi_features.stores.feast_store import FeastClient
    from tests.support.feast_helpers import build_test_repo
    from tests.support.redis_server import RedisServer

    redis = RedisServer()  # raises (fails) when redis-server is missing
    redis.start()
    guarded: Optional[GuardedClient] = None
    loop: Optional[LoadLoop] = None
    try:
        repo = build_test_repo(
            tmp_path / "repo",
            users=60,
            online_store="redis",
            redis_connection=redis.connection_string,
            with_test_views=False,
        )
        baseline_threads = threading.active_count()
        guarded = GuardedClient(
            FeastClient(str(repo), "asahi"),
            timeout_ms=300,
            breaker_window=10,
            breaker_minimum_calls=3,
            breaker_reset_seconds=0.5,
            max_workers=8,
            warning_interval_seconds=1,
        )
        monitor = FeatureMonitor(breaker=guarded)
        enricher = _enricher(guarded, ["tier", "preferences"], monitor)
        users = [user_id(n) for n in range(1, 41)]
        loop = LoadLoop(enricher, users, threads=6, pause=0.005).start()

        t_healthy = time.monotonic()
        loop.wait_enriched_after(t_healthy, timeout=30)

        redis.stop()
        t_down = time.monotonic()
        wait_for(lambda: guarded.breaker.times_opened >= 1, timeout=20)
        time.sleep(1.0)  # stay down through several cool-downs and failed probes
        outage = loop.since(t_down + 0.5)
        assert outage and not any(r.features_available for r in outage)
        assert {r.reason for r in outage} <= DEGRADED

        redis.start()  # same port, empty: load the rows again
        build_test_repo(
            tmp_path / "repo",
            users=60,
            online_store="redis",
            redis_connection=redis.connection_string,
            with_test_views=False,
        )
        t_up = time.monotonic()
        loop.wait_enriched_after(t_up, timeout=30)  # recovers by itself, no reset call
        wait_for(lambda: guarded.breaker.state is BreakerState.CLOSED, timeout=10)
        loop.stop()
        _check_records(loop)
        stats = monitor.get_stats()
        assert stats["total_enrichments"] == len(loop.records)
        assert guarded.stats()["workers"] <= 8
        assert threading.active_count() <= baseline_threads + 8 + 2
    finally:
        if loop is not None:
            loop.stop()
        if guarded is not None:
            guarded.close()
        redis.close()


# --------------------------------------------------------------------------- feast serve


@pytest.mark.integration
def test_feast_serve_restarted_mid_run(tmp_path: Path) -> None:
    from asahi_features.sample_repo import user_id
    from asahi_features.stores.http import HttpFeatureStore
    from tests.support.feast_helpers import build_test_repo
    from tests.support.feast_server import FeastServe

    repo = build_test_repo(tmp_path / "repo", users=60, with_test_views=False)
    # a fixed port: the restart must come back on the same one
    feast = FeastServe(repo, log=tmp_path / "feast.log").start()  # raises when feast is missing
    guarded: Optional[GuardedClient] = None
    loop: Optional[LoadLoop] = None
    try:
        store = HttpFeatureStore(
            feast.url,
            feature_views={"user": ["user_profile:tier", "user_profile:preferences"]},
            timeout_ms=2_000,
        )
        guarded = GuardedClient(
            store,
            timeout_ms=2_000,
            breaker_window=10,
            breaker_minimum_calls=3,
            breaker_reset_seconds=0.5,
            max_workers=8,
        )
        enricher = _enricher(guarded, ["tier", "preferences"])
        loop = LoadLoop(enricher, [user_id(n) for n in range(1, 41)], threads=4, pause=0.01)
        loop.start()
        loop.wait_enriched_after(time.monotonic(), timeout=30)

        feast.stop()
        t_down = time.monotonic()
        wait_for(lambda: guarded.breaker.times_opened >= 1, timeout=20)
        time.sleep(1.0)
        outage = loop.since(t_down + 0.5)
        assert outage and not any(r.features_available for r in outage)

        feast.start()
        loop.wait_enriched_after(time.monotonic(), timeout=60)
        wait_for(lambda: guarded.breaker.state is BreakerState.CLOSED, timeout=10)
        loop.stop()
        _check_records(loop)
    finally:
        if loop is not None:
            loop.stop()
        if guarded is not None:
            guarded.close()
        feast.close()
