"""FeatureMonitor export: JSON snapshot, persistence across restarts, Prometheus metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from asahi_features.errors import ConfigError
from asahi_features.models import EnrichmentReason
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import MonitorConfig

from .test_monitor import make_result


def _populated(config: MonitorConfig | None = None) -> FeatureMonitor:
    monitor = FeatureMonitor(config)
    for i in range(40):
        monitor.record_enrichment(
            make_result(latency_ms=1.0 + i, stale=["browsing"] if i % 10 == 0 else None),
            inference_quality=0.8,
        )
        monitor.record_enrichment(
            make_result(task="summarization", enriched=False, held_out=True),
            inference_quality=0.6,
        )
    monitor.record_enrichment(make_result(enriched=False, failed=True), inference_quality=0.1)
    return monitor


def test_snapshot_is_json_serialisable() -> None:
    monitor = _populated()
    snapshot = monitor.snapshot()
    assert set(snapshot) == {"schema", "stats", "state"}
    text = json.dumps(snapshot)
    assert json.loads(text)["stats"]["total_enrichments"] == 81


def test_persistence_round_trip_keeps_quality_history(tmp_path: Path) -> None:
    path = tmp_path / "state" / "monitor.json"
    config = MonitorConfig(persist_path=path)
    monitor = _populated(config)
    assert monitor.save() == path
    assert not list(path.parent.glob("*.tmp"))  # the temporary file was renamed away
    restored = FeatureMonitor.load(config=config)
    before, after = monitor.get_stats(), restored.get_stats()
    for volatile in (
        "pending_quality",
        "feature_store_availability_pct_recent",
        "feature_store_window_attempts",
    ):
        before.pop(volatile)
        after.pop(volatile)
    assert after == before
    # the restored monitor keeps counting on top of the history
    restored.record_enrichment(make_result(), inference_quality=1.0)
    stats = restored.get_stats()
    assert stats["total_enrichments"] == 82
    assert stats["quality"]["with_features"]["n"] == 41
    assert stats["reasons"]["enriched"] == 41  # reasons restored as the same keys


def test_a_quality_decision_survives_a_restart(tmp_path: Path) -> None:
    """Between the bounds the last decision stands, so it is part of the saved state."""
    config = MonitorConfig(min_samples=5, exploration_fraction=0.0)
    monitor = FeatureMonitor(config)
    for i in range(10):
        monitor.record_enrichment(make_result(), inference_quality=0.2 + i * 0.01)
        monitor.record_enrichment(
            make_result(enriched=False, held_out=True), inference_quality=0.9 - i * 0.01
        )
    assert not monitor.should_enrich("faq")
    for i in range(5):  # much better answers now: no longer shown worse, not shown better
        monitor.record_enrichment(make_result(), inference_quality=0.95 + i * 0.01)
    faq = monitor.get_stats()["task_types"]["faq"]
    assert faq["quality_gain_lower_bound"] < 0 < faq["quality_gain_upper_bound"]
    assert not monitor.should_enrich("faq")  # the last decision stands
    assert monitor.snapshot()["state"]["tasks"]["faq"]["quality_disabled"] is True
    restored = FeatureMonitor.load(monitor.save(tmp_path / "monitor.json"), config)
    assert not restored.should_enrich("faq")
    assert restored.get_stats()["task_types"] == monitor.get_stats()["task_types"]
    # a file written before the decision was saved loads as "enabled"
    state = monitor.snapshot()
    del state["state"]["tasks"]["faq"]["quality_disabled"]
    (tmp_path / "old.json").write_text(json.dumps(state), encoding="utf-8")
    assert FeatureMonitor.load(tmp_path / "old.json", config).should_enrich("faq")


def test_load_missing_file_starts_empty_and_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.json"
    assert FeatureMonitor.load(missing).get_stats()["total_enrichments"] == 0
    with pytest.raises(FileNotFoundError):
        FeatureMonitor().restore(missing, missing_ok=False)
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": 99}')
    with pytest.raises(ConfigError, match="not a saved FeatureMonitor state"):
        FeatureMonitor.load(bad)
    bad.write_text("not json")
    monitor = _populated()
    with pytest.raises(ConfigError, match="not a saved FeatureMonitor state"):
        monitor.restore(bad)
    assert monitor.get_stats()["total_enrichments"] == 0  # never half-restored


def test_save_without_a_path_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="persist_path"):
        FeatureMonitor().save()


def test_save_failure_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("asahi_features.monitor.persistence.os.replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        _populated().save(tmp_path / "m.json")
    assert list(tmp_path.iterdir()) == []


def test_prometheus_output_parses() -> None:
    class Breaker:
        state = "open"

    monitor = _populated(MonitorConfig(min_samples=5))
    monitor.watch(Breaker())
    registry = CollectorRegistry()
    collector = monitor.register_prometheus(registry)
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    assert (
        samples[
            ("asahi_features_enrichments_total", (("reason", "enriched"), ("task_type", "faq")))
        ]
        == 40
    )
    assert (
        samples[
            (
                "asahi_features_enrichments_total",
                (("reason", "held_out"), ("task_type", "summarization")),
            )
        ]
        == 40
    )
    assert samples[
        ("asahi_features_quality_mean", (("group", "with_features"), ("task_type", "faq")))
    ] == pytest.approx(0.8)
    assert samples[
        ("asahi_features_feature_store_availability_ratio", (("window", "overall"),))
    ] == pytest.approx(40 / 41)
    assert samples[("asahi_features_enrichment_latency_seconds_count", ())] == 81
    assert (
        "asahi_features_enrichment_latency_seconds",
        (("quantile", "0.99"),),
    ) in samples
    assert families["asahi_features_enrichment_latency_seconds"].type == "summary"
    assert samples[("asahi_features_stale_features_dropped_total", ())] == 4
    assert samples[("asahi_features_breaker_open", ())] == 1
    assert samples[("asahi_features_enrichment_enabled", (("task_type", "faq"),))] == 1
    with pytest.raises(ValueError, match="Duplicated"):
        FeatureMonitor().register_prometheus(registry)  # one monitor per registry
    registry.unregister(collector)
    assert "asahi_features" not in generate_latest(registry).decode()
    assert repr(monitor).startswith("FeatureMonitor(total_enrichments=81")


def test_prometheus_on_an_empty_monitor_parses() -> None:
    registry = CollectorRegistry()
    FeatureMonitor().register_prometheus(registry)
    text = generate_latest(registry).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "asahi_features_enrichment_latency_seconds" in names
    assert "asahi_features_breaker_open" not in names  # no breaker watched


def test_prometheus_reports_quality_disabled_tasks() -> None:
    monitor = FeatureMonitor(MonitorConfig(min_samples=5, exploration_fraction=0.0))
    for i in range(10):
        monitor.record_enrichment(make_result(), inference_quality=0.2 + i * 0.001)
        monitor.record_enrichment(
            make_result(enriched=False, held_out=True, reason=EnrichmentReason.HELD_OUT),
            inference_quality=0.9 - i * 0.001,
        )
    registry = CollectorRegistry()
    monitor.register_prometheus(registry)
    text = generate_latest(registry).decode()
    assert 'asahi_features_enrichment_enabled{task_type="faq"} 0.0' in text


def test_missing_prometheus_client_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"asahi-features\[prometheus\]"):
        FeatureMonitor().register_prometheus()
