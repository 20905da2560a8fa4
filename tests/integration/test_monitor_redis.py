"""Shared monitor state on a real redis-server (RUN_INTEGRATION_TESTS=1).

Four replica processes (multiprocessing, spawn) record known numbers into one
redis-server: every replica reads the exact totals and the same decision. Then Redis is
stopped by its own pid mid-run and restarted empty on the same port: no request fails,
and the totals catch up exactly (tests/support/monitor_shared_helpers.py holds the replica).
"""

from __future__ import annotations

import multiprocessing
import queue
import uuid
from collections.abc import Iterator
from typing import Any, Dict, List

import pytest

from asahi_features.monitor import DecisionReason, FeatureMonitor
from asahi_features.monitor.shared import SharedState
from asahi_features.monitor.shared_redis import RedisSharedStore
from asahi_features.monitor.shared_store import ReplicaRetired
from asahi_features.settings import MonitorConfig, SharedStateConfig
from tests.support.clocks import ManualClock
from tests.support.monitor_shared_helpers import TASK, expected_totals, redis_replica, workload
from tests.support.redis_server import RedisServer
from tests.support.servers import wait_until

REPLICAS = 4
PHASE1 = 100  # 50 scores per group and replica: min_samples (50) in no replica alone
PHASE2 = 400


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()  # raises when redis-server is not installed
    server.start()
    yield server
    server.close()
    assert not server.running


def _collect(results: Any, kind: str, count: int, timeout: float = 180.0) -> List[Any]:
    got: List[Any] = []
    while len(got) < count:
        try:
            message = results.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"waited {timeout}s for {count} {kind!r} messages") from None
        assert message[0] == kind, message
        got.append(message)
    return got


def _assert_totals(stats: Dict[str, Any], count: int) -> None:
    for key, value in expected_totals(REPLICAS, count).items():
        assert stats[key] == value, (key, stats[key], value)
    samples = stats["task_types"][TASK]["quality_delta_samples"]
    assert samples["with_features"] == REPLICAS * ((count + 1) // 2)
    assert samples["held_out"] == REPLICAS * (count // 2)


def test_four_processes_one_view_and_redis_restarted_mid_run(redis_server: RedisServer) -> None:
    url = f"redis://{redis_server.connection_string}/0"
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    config = MonitorConfig(min_samples=50, min_quality_gain=0.1, exploration_fraction=0.0)
    # the evidence exists only merged: one replica's 50 + 50 scores are not enough
    alone = FeatureMonitor(config)
    for result, score in workload(0, PHASE1 - 2):
        alone.record_enrichment(result, score)
    assert alone.decision(TASK).reason == DecisionReason.ENABLED

    ctx = multiprocessing.get_context("spawn")
    commands, results = ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(
            target=redis_replica,
            args=(i, url, prefix, PHASE1, PHASE2, REPLICAS, commands, results),
            daemon=True,
        )
        for i in range(REPLICAS)
    ]
    for proc in procs:
        proc.start()
    closing = False
    try:
        # phase 1: exact totals and one decision, in every replica
        phase1 = _collect(results, "phase1", REPLICAS)
        for _, _index, stats, _decision in phase1:
            _assert_totals(stats, PHASE1)
            assert stats["shared_state"]["replicas"] == REPLICAS
            assert stats["replica_total_enrichments"] == PHASE1
        decisions = {message[3] for message in phase1}
        assert decisions == {(False, DecisionReason.QUALITY_NO_GAIN)}, decisions

        # phase 2: Redis stopped by its pid while every replica records, then restarted
        for _ in procs:
            commands.put("phase2")
        _collect(results, "phase2-started", REPLICAS)
        redis_pid = redis_server.pid
        redis_server.stop()
        assert redis_pid is not None and not redis_server.running
        # every replica records half of phase 2 (200 requests) while Redis is down
        _collect(results, "phase2-late", REPLICAS)
        reader_store = RedisSharedStore(url, key_prefix=prefix, socket_timeout=0.5)
        redis_server.start()  # same port, empty
        assert redis_server.port == int(url.rsplit(":", 1)[1].split("/")[0])

        phase2 = _collect(results, "phase2", REPLICAS)
        total = PHASE1 + PHASE2
        for _, _index, failures, caught_up, stats, _decision in phase2:
            assert failures == 0
            assert caught_up, stats["total_enrichments"]
            _assert_totals(stats, total)
            assert stats["shared_state"]["errors"] >= 1  # it did see Redis down
            assert stats["shared_state"]["connected"] is True
        decisions = {message[5] for message in phase2}
        assert decisions == {(False, DecisionReason.QUALITY_NO_GAIN)}, decisions

        # what Redis holds after the restart: every replica's full record again
        records = reader_store.read_all()
        assert sorted(records) == [f"replica-{i}" for i in range(REPLICAS)]
        shared = SharedStateConfig(
            url=url, key_prefix=prefix, replica_id="reader", flush_interval_ms=50
        )
        reader = FeatureMonitor(config.model_copy(update={"shared_state": shared}))
        try:
            assert wait_until(
                lambda: reader.get_stats()["total_enrichments"] == REPLICAS * total, timeout=30
            )
            _assert_totals(reader.get_stats(), total)
            assert reader.decision(TASK).reason == DecisionReason.QUALITY_NO_GAIN
        finally:
            reader.close()
            reader_store.close()

        for _ in procs:
            commands.put("close")
        closing = True
        _collect(results, "closed", REPLICAS)
    finally:
        if not closing:  # a failed check: let the replicas end without waiting
            for _ in range(2 * REPLICAS):
                commands.put("close")
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():  # pragma: no cover - only when the test already failed
                proc.terminate()
                proc.join(timeout=10)
    assert all(proc.exitcode == 0 for proc in procs), [proc.exitcode for proc in procs]


def test_redis_store_contract(redis_server: RedisServer) -> None:
    """The Redis backend keeps the contract the in-memory one is unit-tested for."""
    url = f"redis://{redis_server.connection_string}/0"
    store = RedisSharedStore(url, key_prefix=f"test-{uuid.uuid4().hex[:8]}")
    try:
        assert store.read_all() == {}
        assert store.write("r1", {"a": "1"}, full=False) is False  # no record yet
        assert store.write("r1", {"a": "1", "b": "2"}, full=True) is True
        assert store.write("r1", {"b": "3"}, full=False) is True
        assert store.read_all() == {"r1": {"a": "1", "b": "3"}}
        assert store.write("r1", {"c": "4"}, full=True) is True  # replaced whole
        assert store.read_all() == {"r1": {"c": "4"}}
        odd = 'faq\udcff "x"'
        assert store.sync_verdicts({}, {odd: (0, True)}) == {odd: (True, 1)}
        assert store.sync_verdicts({}, {odd: (0, False)}) == {odd: (True, 1)}  # outdated
        assert store.sync_verdicts({odd: (False, 0), "qa": (True, 3)}, {}) == {
            odd: (True, 1),
            "qa": (True, 3),
        }
        assert store.sync_verdicts({}, {odd: (1, False)})[odd] == (False, 2)
        # folding retired replicas: a compare-and-set on seq and on each written_at
        assert store.write("r2", {"written_at": "1.0", "x": "1"}, full=True) is True
        assert store.fold("__retired__", 1, {"x": "9"}, {"r2": "1.0"}, ["r2"]) is False
        assert store.fold("__retired__", 0, {"x": "9"}, {"r2": "2.0"}, ["r2"]) is False
        assert store.fold("__retired__", 0, {"x": "9"}, {"r2": "1.0"}, ["r2"]) is True
        assert store.read_all() == {"r1": {"c": "4"}, "__retired__": {"x": "9", "seq": "1"}}
        with pytest.raises(ReplicaRetired):
            store.write("r2", {"x": "2"}, full=True)
        assert store.write("r2", {"x": "2"}, full=False) is False
        redis_server.restart()  # empty again
        assert store.write("r1", {"d": "5"}, full=False) is False
        assert store.sync_verdicts({"qa": (True, 3)}, {}) == {"qa": (True, 3)}
    finally:
        store.close()


def test_forked_workers_are_replicas_of_their_own(redis_server: RedisServer) -> None:
    """A pre-fork server: the monitor is made (and its thread started) before the fork;
    each forked worker writes under its own replica id from its own thread."""
    url = f"redis://{redis_server.connection_string}/0"
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    shared = SharedStateConfig(url=url, key_prefix=prefix, replica_id="app", flush_interval_ms=20)
    monitor = FeatureMonitor(MonitorConfig(shared_state=shared))
    ctx = multiprocessing.get_context("fork")
    done = ctx.Queue()

    def worker(index: int) -> None:
        for result, score in workload(index, 30):
            monitor.record_enrichment(result, score)
        assert monitor.shared is not None
        # no close(): the worker's own thread must write its counts
        ok = wait_until(
            lambda: (
                monitor.get_stats()["replica_total_enrichments"] == 30
                and f"app:{multiprocessing.current_process().pid}" in store.read_all()
            ),
            timeout=30,
        )
        done.put((ok, monitor.shared.replica_id))

    store = RedisSharedStore(url, key_prefix=prefix)
    workers = [ctx.Process(target=worker, args=(i,)) for i in (1, 2)]
    for proc in workers:
        proc.start()
    try:
        reports = [done.get(timeout=60) for _ in workers]
    finally:
        for proc in workers:
            proc.join(timeout=30)
    assert all(ok for ok, _ in reports), reports
    assert sorted(rid for _, rid in reports) == sorted(f"app:{p.pid}" for p in workers)
    for result, score in workload(0, 10):
        monitor.record_enrichment(result, score)
    try:
        assert wait_until(lambda: monitor.get_stats()["total_enrichments"] == 70, timeout=30)
        assert sorted(store.read_all()) == sorted(["app", *(f"app:{p.pid}" for p in workers)])
    finally:
        monitor.close()
        store.close()


def test_stopped_replicas_are_folded_in_redis(redis_server: RedisServer) -> None:
    url = f"redis://{redis_server.connection_string}/0"
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    clock = ManualClock(start=1_700_000_000.0)
    config = MonitorConfig(min_samples=50, min_quality_gain=0.1, exploration_fraction=0.0)
    monitors = []
    for i in range(3):
        monitor = FeatureMonitor(config)
        SharedState(
            monitor,
            RedisSharedStore(url, key_prefix=prefix),
            replica_id=f"replica-{i}",
            retire_after_seconds=60.0,
            wall_clock=clock,
            start=False,
        )
        for result, score in workload(i, 10 + i):
            monitor.record_enrichment(result, score)
        monitors.append(monitor)
    a, b, c = monitors
    for _ in range(2):
        for monitor in monitors:
            assert monitor.shared is not None and monitor.shared.sync()
    c.close()
    for _ in range(5):
        clock.advance(15.0)
        for monitor in (a, b):
            assert monitor.shared is not None and monitor.shared.sync()
    store = RedisSharedStore(url, key_prefix=prefix)
    try:
        assert sorted(store.read_all()) == ["__retired__", "replica-0", "replica-1"]
        for monitor in (a, b):
            assert monitor.get_stats()["total_enrichments"] == 10 + 11 + 12
    finally:
        store.close()
        a.close()
        b.close()


def test_idle_replicas_write_again_when_redis_lost_their_records_silently(
    redis_server: RedisServer,
) -> None:
    """Records can vanish without any error reaching the replicas (FLUSHDB, eviction
    under maxmemory, a failover to an empty replica, a restart between two syncs that
    redis-py's retry hides): replicas with nothing new to write must still notice."""
    import redis

    url = f"redis://{redis_server.connection_string}/0"
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    monitors = []
    for i in range(2):
        shared = SharedStateConfig(
            url=url, key_prefix=prefix, replica_id=f"idle-{i}", flush_interval_ms=20
        )
        monitor = FeatureMonitor(MonitorConfig(shared_state=shared))
        for result, score in workload(i, 10):
            monitor.record_enrichment(result, score)
        monitors.append(monitor)
    store = RedisSharedStore(url, key_prefix=prefix)
    client = redis.Redis.from_url(url)
    try:
        assert wait_until(lambda: monitors[0].get_stats()["total_enrichments"] == 20, timeout=30)
        client.flushdb()
        assert wait_until(lambda: sorted(store.read_all()) == ["idle-0", "idle-1"], timeout=30)
        assert wait_until(
            lambda: all(m.get_stats()["total_enrichments"] == 20 for m in monitors), timeout=30
        )
        assert all(m.get_stats()["shared_state"]["errors"] == 0 for m in monitors)
    finally:
        client.close()
        store.close()
        for monitor in monitors:
            monitor.close()
