"""Shared monitor state (issue 20 item 4): many replicas, one view, one decision.

The replicas here are monitors of one process sharing through the in-memory backend,
which implements the same contract as Redis (the Redis backend itself runs against a
real redis-server in tests/integration/test_monitor_redis.py).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List

import pytest
from pydantic import ValidationError

from asahi_features.errors import ConfigError
from asahi_features.monitor import DecisionReason, FeatureMonitor
from asahi_features.monitor.shared import SharedState, default_replica_id
from asahi_features.monitor.shared_memory import MemorySharedStore
from asahi_features.monitor.shared_merge import merge_latency
from asahi_features.monitor.shared_store import ReplicaRetired
from asahi_features.monitor.stats import LatencyReservoir
from asahi_features.settings import MonitorConfig, SharedStateConfig
from tests.support.clocks import ManualClock
from tests.support.monitor_shared_helpers import TASK, expected_totals, workload
from tests.support.servers import free_port, wait_until

CONFIG = MonitorConfig(min_samples=50, min_quality_gain=0.1, exploration_fraction=0.0)


def replicas(
    store: MemorySharedStore, n: int, config: MonitorConfig = CONFIG, first: int = 0
) -> List[FeatureMonitor]:
    monitors = []
    for i in range(first, first + n):
        monitor = FeatureMonitor(config)
        SharedState(monitor, store, replica_id=f"replica-{i}", start=False)
        monitors.append(monitor)
    return monitors


def record(monitor: FeatureMonitor, index: int, count: int, start: int = 0) -> None:
    for result, score in workload(index, count, start=start):
        monitor.record_enrichment(result, score)


def sync_all(monitors: List[FeatureMonitor]) -> None:
    """Two rounds: every replica writes, then every replica reads everyone's writes."""
    for _ in range(2):
        for monitor in monitors:
            assert monitor.shared is not None
            assert monitor.shared.sync()


def assert_totals(stats: Dict[str, Any], replicas_: int, count: int) -> None:
    for key, value in expected_totals(replicas_, count).items():
        assert stats[key] == value, key


def test_exact_totals_and_quality_across_replicas() -> None:
    store = MemorySharedStore()
    monitors = replicas(store, 4)
    for i, monitor in enumerate(monitors):
        record(monitor, i, 90)
    sync_all(monitors)
    single = FeatureMonitor(CONFIG)  # one monitor that saw everything
    for i in range(4):
        record(single, i, 90)
    expected = single.get_stats()
    for monitor in monitors:
        stats = monitor.get_stats()
        assert_totals(stats, 4, 90)
        assert stats["replica_total_enrichments"] == 90
        assert stats["shared_state"]["replicas"] == 4
        assert stats["shared_state"]["connected"] is True
        task = stats["task_types"][TASK]
        assert (
            task["quality_delta_samples"] == expected["task_types"][TASK]["quality_delta_samples"]
        )
        assert task["reasons"] == expected["task_types"][TASK]["reasons"]
        for key in ("quality_with_features", "quality_held_out", "quality_delta"):
            assert math.isclose(stats[key], expected[key], rel_tol=1e-12), key
        assert math.isclose(stats["avg_latency_ms"], expected["avg_latency_ms"], rel_tol=1e-12)
        assert stats["latency_ms"]["p50"] in {1.0, 2.0, 3.0, 4.0}


def test_one_decision_from_evidence_no_replica_has_alone() -> None:
    """40 scores per group and replica are below min_samples (50): alone, no replica can
    decide; merged (160 per group, no true gain, margin 0.1) every replica disables."""
    alone = FeatureMonitor(CONFIG)
    record(alone, 0, 80)
    assert alone.decision(TASK).reason == DecisionReason.ENABLED
    everything = FeatureMonitor(CONFIG)
    for i in range(4):
        record(everything, i, 80)
    assert everything.decision(TASK).reason == DecisionReason.QUALITY_NO_GAIN

    store = MemorySharedStore()
    monitors = replicas(store, 4)
    for i, monitor in enumerate(monitors):
        record(monitor, i, 80)
        assert monitor.decision(TASK).reason == DecisionReason.ENABLED  # before any sync
    sync_all(monitors)
    assert {monitor.decision(TASK) for monitor in monitors} == {
        (False, DecisionReason.QUALITY_NO_GAIN)
    }
    for monitor in monitors:
        task = monitor.get_stats()["task_types"][TASK]
        assert task["disabled_for_quality"] is True
        assert task["quality_gain_upper_bound"] < 0.1


def test_backend_down_counts_locally_and_catches_up_exactly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemorySharedStore()
    monitors = replicas(store, 3)
    for i, monitor in enumerate(monitors):
        record(monitor, i, 40)
    sync_all(monitors)
    before = [monitor.decision(TASK) for monitor in monitors]
    store.available = False
    with caplog.at_level(logging.WARNING, logger="asahi_features.monitor"):
        for i, monitor in enumerate(monitors):
            record(monitor, i, 30, start=40)
            assert monitor.shared is not None
            assert monitor.shared.sync() is False
            assert monitor.shared.sync() is False
            assert monitor.decision(TASK) in before
    assert sum("unavailable, counting locally" in r.getMessage() for r in caplog.records) == 3
    stats = monitors[0].get_stats()
    # the others as last read, this replica live
    assert stats["total_enrichments"] == 3 * 40 + 30
    assert stats["shared_state"]["connected"] is False
    assert stats["shared_state"]["errors"] == 2
    # back, but empty (a restarted Redis without persistence)
    store.clear()
    store.available = True
    sync_all(monitors)
    sync_all(monitors)
    for monitor in monitors:
        assert_totals(monitor.get_stats(), 3, 70)


def test_syncing_again_counts_nothing_twice() -> None:
    store = MemorySharedStore()
    monitors = replicas(store, 2)
    for i, monitor in enumerate(monitors):
        record(monitor, i, 20)
    for _ in range(3):
        sync_all(monitors)
    assert_totals(monitors[1].get_stats(), 2, 20)
    assert monitors[0].shared is not None
    flushes = monitors[0].shared.flushes
    monitors[0].shared.sync()  # nothing changed: nothing written
    assert monitors[0].shared.flushes == flushes


def test_verdict_changes_only_from_the_generation_it_was_decided_on() -> None:
    store = MemorySharedStore()
    assert store.sync_verdicts({}, {"faq": (0, True)}) == {"faq": (True, 1)}
    # a replica that decided on generation 0 is outdated: nothing changes
    assert store.sync_verdicts({}, {"faq": (0, False)}) == {"faq": (True, 1)}
    assert store.sync_verdicts({"faq": (False, 0), "qa": (True, 3)}, {}) == {
        "faq": (True, 1),
        "qa": (True, 3),
    }
    assert store.sync_verdicts({}, {"faq": (1, False)})["faq"] == (False, 2)


def test_verdict_survives_a_backend_that_lost_it() -> None:
    store = MemorySharedStore()
    monitors = replicas(store, 2)
    for i, monitor in enumerate(monitors):
        record(monitor, i, 200)
    sync_all(monitors)
    sync_all(monitors)
    assert not any(m.should_enrich(TASK) for m in monitors)
    store.clear()
    new = replicas(store, 1, first=2)[0]  # a replica that starts after the loss
    sync_all(monitors)
    assert new.shared is not None
    new.shared.sync()
    assert new.decision(TASK).reason == DecisionReason.QUALITY_NO_GAIN


def test_a_foreign_record_is_left_out_and_named(caplog: pytest.LogCaptureFixture) -> None:
    store = MemorySharedStore()
    monitors = replicas(store, 2)
    record(monitors[0], 0, 10)
    record(monitors[1], 1, 10)
    sync_all(monitors)
    store.write(
        "intruder", {"schema": "1", "counters": "{}", "quality": "[]", "latency": "{}"}, full=True
    )
    store.write("other-version", {"schema": "99"}, full=True)
    with caplog.at_level(logging.WARNING, logger="asahi_features.monitor"):
        sync_all(monitors)
        sync_all(monitors)
    stats = monitors[0].get_stats()
    assert_totals(stats, 2, 10)
    assert stats["shared_state"]["invalid_replicas"] == ["intruder", "other-version"]
    warned = [r.getMessage() for r in caplog.records if "left out of the view" in r.getMessage()]
    assert len(warned) == 4  # once per replica and record, not once per sync
    assert any("state.quality" in m for m in warned)
    assert any("schema: expected 1" in m for m in warned)


def test_restore_rewrites_the_whole_record(tmp_path: Path) -> None:
    store = MemorySharedStore()
    a, b = replicas(store, 2)
    record(a, 0, 10)
    a.record_enrichment(workload(0, 1, start=10)[0][0].model_copy(update={"task_type": "gone"}))
    sync_all([a, b])
    assert "gone" in b.get_stats()["task_types"]
    saved = FeatureMonitor(CONFIG)
    record(saved, 0, 30)
    saved.save(tmp_path / "m.json")
    a.restore(tmp_path / "m.json")
    sync_all([a, b])
    stats = b.get_stats()
    assert "gone" not in stats["task_types"]
    assert stats["total_enrichments"] == 30


def test_task_types_of_any_text_are_shared() -> None:
    store = MemorySharedStore()
    a, b = replicas(store, 2)
    odd = 'faq\udcff:t:"x"'
    result, score = workload(0, 1)[0]
    a.record_enrichment(result.model_copy(update={"task_type": odd}), score)
    sync_all([a, b])
    assert b.get_stats()["task_types"][odd]["total"] == 1
    assert json.dumps(b.get_stats())  # still serialisable


def test_background_thread_syncs_and_close_flushes_last_counts() -> None:
    store = MemorySharedStore()
    a, b = (FeatureMonitor(CONFIG), FeatureMonitor(CONFIG))
    SharedState(a, store, replica_id="a", interval_ms=10)
    SharedState(b, store, replica_id="b", interval_ms=10)
    try:
        record(a, 0, 10)
        record(b, 1, 10)
        assert wait_until(lambda: a.get_stats()["total_enrichments"] == 20, timeout=30)
        assert repr(a.shared).startswith("SharedState(backend='memory', replica_id='a'")
    finally:
        b.close()
    record(a, 0, 5, start=10)
    a.close()  # the last counts are written on close
    reader = replicas(store, 1, first=9)[0]
    assert reader.shared is not None
    reader.shared.sync()
    assert reader.get_stats()["total_enrichments"] == 25
    a.close()  # twice is harmless


def test_latency_is_merged_in_proportion_to_traffic() -> None:
    busy, quiet = LatencyReservoir(100), LatencyReservoir(100)
    for _ in range(9000):
        busy.add(1.0)
    for _ in range(1000):
        quiet.add(9.0)
    merged = merge_latency([busy, quiet], 100)
    assert merged.seen == 10000
    assert len(merged.values) == 100
    assert merged.values.count(9.0) == 10
    small_a, small_b = LatencyReservoir(10), LatencyReservoir(10)
    small_a.add(1.0)
    small_b.add(2.0)
    exact = merge_latency([small_a, small_b], 10)
    assert sorted(exact.values) == [1.0, 2.0]
    assert merge_latency([LatencyReservoir(10)], 10).seen == 0


def test_without_shared_state_nothing_changes() -> None:
    monitor = FeatureMonitor(CONFIG)
    assert monitor.shared is None
    record(monitor, 0, 10)
    assert "shared_state" not in monitor.get_stats()
    monitor.close()


# ---------------------------------------------------------------- configuration


def test_settings_key_and_its_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    config = MonitorConfig.model_validate({"shared_state": {"url": "redis://h:1/0"}})
    assert config.shared_state == SharedStateConfig(url="redis://h:1/0")
    assert config.shared_state.flush_interval_ms == 1000
    with pytest.raises(ValidationError, match="backend"):
        MonitorConfig.model_validate({"shared_state": {"backend": "memcached"}})
    with pytest.raises(ValidationError, match="NAME of an environment variable"):
        SharedStateConfig(url_env="redis://secret@host")
    with pytest.raises(ValidationError, match="flush_interval_ms"):
        SharedStateConfig(flush_interval_ms=0)
    monkeypatch.delenv("ASAHI_MONITOR_REDIS_URL", raising=False)
    with pytest.raises(ConfigError, match="ASAHI_MONITOR_REDIS_URL") as info:
        FeatureMonitor(MonitorConfig(shared_state={}))
    assert info.value.key_path == "monitor.shared_state.url"
    with pytest.raises(ConfigError, match="not a Redis URL") as bad:
        FeatureMonitor(MonitorConfig(shared_state={"url": "http://user:pw@host/"}))
    assert "pw" not in str(bad.value)


def test_redis_unreachable_from_the_start_never_fails_a_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No server listens on the port: the monitor counts and decides locally."""
    monkeypatch.setenv("MY_REDIS", f"redis://127.0.0.1:{free_port()}/0")
    config = CONFIG.model_copy(
        update={"shared_state": SharedStateConfig(url_env="MY_REDIS", flush_interval_ms=10)}
    )
    monitor = FeatureMonitor(config)
    try:
        record(monitor, 0, 100)
        assert monitor.shared is not None
        assert wait_until(lambda: monitor.get_stats()["shared_state"]["errors"] >= 2, timeout=30)
        stats = monitor.get_stats()
        assert stats["total_enrichments"] == 100
        assert stats["shared_state"]["backend"] == "redis"
        assert stats["shared_state"]["connected"] is False
        alone = FeatureMonitor(CONFIG)
        record(alone, 0, 100)
        assert monitor.decision(TASK) == alone.decision(TASK)
    finally:
        monitor.close()


def test_default_replica_ids_differ() -> None:
    assert default_replica_id() != default_replica_id()


def test_a_record_lost_between_syncs_is_written_whole_again() -> None:
    store = MemorySharedStore()
    a, b = replicas(store, 2)
    record(a, 0, 300)  # more latencies than a record carries (256)
    record(b, 1, 10)
    sync_all([a, b])
    store.clear()  # lost while every replica was connected: the next write is refused
    record(a, 0, 1, start=300)
    sync_all([a, b])
    stats = b.get_stats()
    assert stats["total_enrichments"] == 311
    assert stats["latency_ms"]["sample_size"] == 256 + 10  # what the replicas shared
    store.clear()  # again, and now neither has anything new to write
    assert b.shared is not None
    b.shared.sync()
    assert sorted(store.read_all()) == ["replica-1"]  # b noticed its record was gone
    sync_all([a, b])
    assert b.get_stats()["total_enrichments"] == 311


class _VerdictsDown(MemorySharedStore):
    """A backend that stores records but fails on the verdicts (a partial outage)."""

    def sync_verdicts(self, known: Any, flips: Any) -> Any:
        raise ConnectionError("verdicts unavailable")


def test_verdicts_unavailable_decide_locally_and_retry() -> None:
    store = _VerdictsDown()
    monitors = replicas(store, 2)
    for i, monitor in enumerate(monitors):
        record(monitor, i, 200)
    for monitor in monitors:
        assert monitor.shared is not None
        monitor.shared.sync()
    for monitor in monitors:
        assert monitor.shared is not None
        assert monitor.shared.sync() is True  # records written and read
        assert monitor.get_stats()["shared_state"]["connected"] is False
        assert monitor.decision(TASK).reason == DecisionReason.QUALITY_NO_GAIN


def test_records_missing_fields_or_with_odd_task_fields_are_refused() -> None:
    store = MemorySharedStore()
    (monitor,) = replicas(store, 1)
    good = FeatureMonitor(CONFIG)
    record(good, 0, 4)
    sharer = SharedState(good, store, replica_id="good", start=False)
    sharer.sync()
    fields = store.read_all()["good"]
    store.write("no-latency", {k: v for k, v in fields.items() if k != "latency"}, full=True)
    store.write("odd-task", {**fields, "t:1": fields['t:"faq"']}, full=True)
    assert monitor.shared is not None
    monitor.shared.sync()
    assert monitor.get_stats()["shared_state"]["invalid_replicas"] == ["no-latency", "odd-task"]
    assert monitor.get_stats()["total_enrichments"] == 4


# ---------------------------------------------------------------- retiring stopped replicas

RETIRE = 3600.0


def fleet(store: MemorySharedStore, clock: ManualClock, n: int) -> List[FeatureMonitor]:
    monitors = []
    for i in range(n):
        monitor = FeatureMonitor(CONFIG)
        SharedState(
            monitor,
            store,
            replica_id=f"replica-{i}",
            retire_after_seconds=RETIRE,
            wall_clock=clock,
            start=False,
        )
        monitors.append(monitor)
    return monitors


def test_stopped_replicas_are_folded_and_their_counts_stay() -> None:
    store, clock = MemorySharedStore(), ManualClock(start=1_700_000_000.0)
    a, b, c, d = fleet(store, clock, 4)
    for i, monitor in enumerate((a, b, c, d)):
        record(monitor, i, 20 + i)
    sync_all([a, b, c, d])
    c.close()  # c and d stop; a and b keep running (idle: nothing new to write)
    d.close()
    for _ in range(5):
        clock.advance(RETIRE / 4)
        sync_all([a, b])
    assert sorted(store.read_all()) == ["__retired__", "replica-0", "replica-1"]
    assert a.shared is not None and b.shared is not None
    assert a.shared.retired + b.shared.retired == 2
    for monitor in (a, b):
        stats = monitor.get_stats()
        assert stats["total_enrichments"] == 20 + 21 + 22 + 23
        assert (
            stats["task_types"][TASK]["quality_delta_samples"]["with_features"] == 10 + 11 + 11 + 12
        )
    # a second round folds into the same retired record
    b.close()
    for _ in range(5):
        clock.advance(RETIRE / 4)
        sync_all([a])
    assert sorted(store.read_all()) == ["__retired__", "replica-0"]
    assert store.read_all()["__retired__"]["seq"] == "2"
    assert a.get_stats()["total_enrichments"] == 86
    assert a.get_stats()["shared_state"]["replicas"] == 2
    # the backend loses everything: the live replica writes its record and the retired
    # record (from the copy it read last) again
    store.clear()
    sync_all([a])
    assert sorted(store.read_all()) == ["__retired__", "replica-0"]
    assert a.get_stats()["total_enrichments"] == 86
    store.available = False  # and once more, this time noticed as an outage
    assert a.shared.sync() is False
    store.clear()
    store.available = True
    sync_all([a])
    assert sorted(store.read_all()) == ["__retired__", "replica-0"]
    assert a.get_stats()["total_enrichments"] == 86


def test_a_configured_replica_back_after_its_fold_counts_from_zero(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = MemorySharedStore(), ManualClock(start=1_700_000_000.0)
    a, c = fleet(store, clock, 2)
    record(a, 0, 10)
    record(c, 1, 30)
    sync_all([a, c])
    clock.advance(2 * RETIRE)  # c is away (a keeps syncing alone)
    sync_all([a])
    assert "replica-1" not in store.read_all()
    record(c, 1, 5, start=30)  # c is back, with its 30 earlier counts still in memory
    assert c.shared is not None
    with caplog.at_level(logging.WARNING, logger="asahi_features.monitor"):
        sync_all([a, c])
    assert "was retired while it was away" in caplog.text
    assert c.shared.replica_id.startswith("replica-1:")
    assert sorted(store.read_all()) == ["__retired__", "replica-0", c.shared.replica_id]
    stats = a.get_stats()
    assert stats["total_enrichments"] == 10 + 30  # c's 5 after coming back are lost with
    # its memory, its 30 before are in the retired record, none is counted twice
    assert c.get_stats()["replica_total_enrichments"] == 0
    record(c, 1, 5, start=35)
    sync_all([a, c])
    assert a.get_stats()["total_enrichments"] == 45


def test_folds_are_compare_and_set() -> None:
    store = MemorySharedStore()
    store.write("r", {"written_at": "1.0"}, full=True)
    assert store.fold("__retired__", 1, {"x": "1"}, {"r": "1.0"}, []) is False  # seq
    assert store.fold("__retired__", 0, {"x": "1"}, {"r": "2.0"}, []) is False  # rewritten
    assert store.fold("__retired__", 0, {"x": "1"}, {"r": "1.0"}, ["r"]) is True
    assert store.read_all() == {"__retired__": {"x": "1", "seq": "1"}}
    with pytest.raises(ReplicaRetired):
        store.write("r", {"a": "1"}, full=True)
    assert store.write("r", {"a": "1"}, full=False) is False


def test_an_idle_replica_keeps_its_record_alive() -> None:
    store, clock = MemorySharedStore(), ManualClock(start=1_700_000_000.0)
    a, b = fleet(store, clock, 2)
    record(a, 0, 4)
    record(b, 1, 4)
    for _ in range(12):  # three retire periods, neither records anything new
        clock.advance(RETIRE / 4)
        sync_all([a, b])
    assert sorted(store.read_all()) == ["replica-0", "replica-1"]


def test_the_retired_id_is_reserved() -> None:
    with pytest.raises(ConfigError, match="reserved"):
        SharedState(FeatureMonitor(), MemorySharedStore(), replica_id="__retired__", start=False)


def test_an_enricher_built_from_config_shares_its_monitor(tmp_path: Path) -> None:
    """monitor.shared_state in the YAML file: the built enricher's monitor shares (here
    with a Redis that does not answer: every request still gets its answer)."""
    from asahi_features.enricher import build_enricher

    data = Path(__file__).resolve().parents[2] / "examples" / "sample_features.json"
    path = tmp_path / "asahi.yaml"
    path.write_text(
        "feature_store:\n  provider: local\n"
        f"  local: {{data_path: {json.dumps(str(data))}}}\n"
        "monitor:\n  shared_state:\n"
        f"    url: redis://127.0.0.1:{free_port()}/0\n"
        "    replica_id: api-0\n    flush_interval_ms: 10\n",
        encoding="utf-8",
    )
    enricher = build_enricher(path, monitor=True)
    monitor = enricher.monitor
    assert isinstance(monitor, FeatureMonitor)
    try:
        for _ in range(5):
            result = enricher.enrich("What plan am I on?", user_id="u_1001")
            assert result.enriched_prompt.endswith("What plan am I on?")
        stats = monitor.get_stats()
        assert stats["total_enrichments"] == 5
        assert stats["shared_state"]["replica_id"] == "api-0"
        assert wait_until(lambda: monitor.get_stats()["shared_state"]["errors"] > 0, timeout=30)
    finally:
        monitor.close()


class _GarbledVerdicts(MemorySharedStore):
    """A backend that answers the verdict update with something that is not verdicts."""

    def sync_verdicts(self, known: Any, flips: Any) -> Any:
        return ["not", "verdicts"]


def test_a_failure_while_deciding_is_logged_and_the_last_verdicts_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _GarbledVerdicts()
    (monitor,) = replicas(store, 1)
    record(monitor, 0, 10)
    assert monitor.shared is not None
    with caplog.at_level(logging.WARNING, logger="asahi_features.monitor"):
        assert monitor.shared.sync() is False
    assert "deciding failed" in caplog.text
    assert monitor.should_enrich(TASK) is True
    assert monitor.get_stats()["total_enrichments"] == 10


def test_the_stats_command_reads_a_snapshot_without_joining_the_replicas(
    tmp_path: Path,
) -> None:
    """A snapshot is one replica's: `asahi-features stats` must not register it as one
    more replica (its counts would be counted twice)."""
    from typer.testing import CliRunner

    from asahi_features.cli import app

    path = tmp_path / "asahi.yaml"
    path.write_text(
        "feature_store:\n  provider: local\n  local: {data_path: f.json}\n"
        "monitor:\n  persist_path: monitor.json\n  shared_state:\n"
        f"    url: redis://127.0.0.1:{free_port()}/0\n",
        encoding="utf-8",
    )
    saved = FeatureMonitor(CONFIG)
    record(saved, 0, 7)
    saved.save(tmp_path / "monitor.json")
    result = CliRunner().invoke(app, ["stats", "--config", str(path)])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["total_enrichments"] == 7
    assert "shared_state" not in stats


def _model_of(replica: int, k: int) -> str:
    # enriched requests go to the cheap model, held-out ones to the expensive one
    return "small" if k % 2 == 0 else f"big-{replica % 2}"


def test_per_model_scores_usage_and_comparison_cover_every_replica() -> None:
    config = CONFIG.model_copy(update={"min_samples": 5})
    store = MemorySharedStore()
    monitors = replicas(store, 3, config)
    single = FeatureMonitor(config)  # one monitor that saw everything
    for i, monitor in enumerate(monitors):
        for k, (result, score) in enumerate(workload(i, 40)):
            model = _model_of(i, k)
            for target in (monitor, single):
                target.record_enrichment(
                    result, score, model=model, input_tokens=100 + i, output_tokens=7
                )
    sync_all(monitors)
    expected_models = single.get_stats()["task_types"][TASK]["models"]
    assert sorted(expected_models) == ["big-0", "big-1", "small"]
    expected = single.compare(TASK, cheap="small", expensive="big-0")
    for monitor in monitors:
        models = monitor.get_stats()["task_types"][TASK]["models"]
        assert sorted(models) == sorted(expected_models)
        for name, entry in expected_models.items():
            got = models[name]
            for group, acc in entry["quality"].items():
                assert got["quality"][group]["n"] == acc["n"], (name, group)
                assert got["quality"][group]["mean"] == pytest.approx(acc["mean"]), (name, group)
            assert got["input_tokens_per_request"] == pytest.approx(
                entry["input_tokens_per_request"]
            ), name
        report = monitor.compare(TASK, cheap="small", expensive="big-0")
        assert report.cheap_quality == pytest.approx(expected.cheap_quality)
        assert report.expensive_quality == pytest.approx(expected.expensive_quality)
    small = models["small"]["quality"]["with_features"]
    assert small["n"] == 60  # 20 enriched requests scored on each of the 3 replicas


def test_models_past_max_models_are_pooled_across_replicas() -> None:
    config = CONFIG.model_copy(update={"max_models": 2})
    store = MemorySharedStore()
    monitors = replicas(store, 2, config)
    for i, monitor in enumerate(monitors):
        for k, (result, score) in enumerate(workload(i, 4)):
            monitor.record_enrichment(result, score, model=f"m{i}-{k % 2}")
    sync_all(monitors)
    models = monitors[0].get_stats()["task_types"][TASK]["models"]
    assert sorted(models) == ["__other__", "m0-0", "m0-1"]  # replicas merged by id
    assert monitors[1].get_stats()["task_types"][TASK]["models"].keys() == models.keys()
    scored = sum(
        entry["quality"][group]["n"]
        for entry in models.values()
        for group in ("with_features", "held_out", "fallback")
    )
    assert scored == 8  # nothing lost: the other replica's models are pooled
