"""Prometheus multi-process mode: several worker processes, one scrape with their sum.

Each worker is a real Python process with ``PROMETHEUS_MULTIPROC_DIR`` set before
prometheus-client is imported (as gunicorn/uvicorn workers run); the scrape is
prometheus-client's own ``MultiProcessCollector`` reading that directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple

import pytest

from asahi_features.monitor import FeatureMonitor
from tests.support.monitor_shared_helpers import SCORE_MEAN, TASK, expected_totals, workload
from tests.support.servers import wait_until

WORKERS = 3
COUNT = 40  # per worker, recorded in two halves with a copy after each

_WORKER = """
import json, os, sys
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import MonitorConfig
from tests.support.monitor_shared_helpers import workload

index, count = int(sys.argv[1]), int(sys.argv[2])
monitor = FeatureMonitor(MonitorConfig(exploration_fraction=0.0))
exporter = monitor.register_prometheus_multiprocess(interval_seconds=3600)
half = count // 2
for result, score in workload(index, half):
    monitor.record_enrichment(result, score)
assert exporter.sync()
for result, score in workload(index, count - half, start=half):
    monitor.record_enrichment(result, score)
monitor.close()  # the last copy
print(json.dumps({"pid": os.getpid()}))
"""


def _scrape(path: Path) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_workers_add_up_in_one_scrape(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root)])
    pids = []
    for index in range(WORKERS):
        done = subprocess.run(
            [sys.executable, "-c", _WORKER, str(index), str(COUNT)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        pids.append(json.loads(done.stdout.strip().splitlines()[-1])["pid"])

    samples = _scrape(tmp_path)
    totals = expected_totals(WORKERS, COUNT)
    p = "asahi_features_"
    task = (("task_type", TASK),)
    assert (
        samples[(p + "enrichments_total", (("reason", "enriched"), *task))]
        == totals["successful_enrichments"]
    )
    assert (
        samples[(p + "enrichments_total", (("reason", "held_out"), *task))]
        == totals["held_out_enrichments"]
    )
    assert samples[(p + "feature_tokens_added_total", task)] == totals["feature_tokens_added_total"]
    assert samples[(p + "feature_store_attempts_total", ())] == totals["feature_store_attempts"]
    assert samples[(p + "feature_store_failures_total", ())] == 0
    with_features = (("group", "with_features"), *task)
    n = samples[(p + "quality_samples_total", with_features)]
    assert n == totals["successful_enrichments"]
    # the mean over all workers, from the scrape alone, is the mean of every score
    scores = [s for i in range(WORKERS) for r, s in workload(i, COUNT) if r.features_available]
    mean = samples[(p + "quality_score_sum", with_features)] / n
    assert mean == pytest.approx(sum(scores) / len(scores), rel=1e-9)
    assert abs(mean - SCORE_MEAN) < 0.05
    latency = samples[(p + "enrichment_latency_seconds_total", ())]
    assert latency == pytest.approx(COUNT * (1.0 + 2.0 + 3.0) / 1000.0, rel=1e-9)
    assert samples[(p + "enrichment_enabled", task)] == 1.0

    # live gauges leave with their process; counters stay (the totals never go down)
    from prometheus_client import multiprocess

    for pid in pids:
        multiprocess.mark_process_dead(pid, str(tmp_path))  # type: ignore[no-untyped-call]
    after = _scrape(tmp_path)
    assert (p + "enrichment_enabled", task) not in after
    assert after[(p + "feature_store_attempts_total", ())] == totals["feature_store_attempts"]


def test_refused_outside_multiprocess_mode() -> None:
    from prometheus_client import values

    if values.ValueClass is not values.MutexValue:  # pragma: no cover - env set by the caller
        pytest.fail("run the unit tests without PROMETHEUS_MULTIPROC_DIR")
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        FeatureMonitor().register_prometheus_multiprocess()


def test_copies_increments_and_follows_the_shared_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In this process: prometheus-client switched to multi-process values for the test
    only (a fresh value class writing to ``tmp_path``)."""
    from prometheus_client import values

    from asahi_features.monitor.shared import SharedState
    from asahi_features.monitor.shared_memory import MemorySharedStore
    from asahi_features.settings import MonitorConfig

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: 4242))  # type: ignore[no-untyped-call]
    config = MonitorConfig(min_samples=50, min_quality_gain=0.1, exploration_fraction=0.0)
    store = MemorySharedStore()
    other = FeatureMonitor(config)
    SharedState(other, store, replica_id="other", start=False)
    for result, score in workload(1, 200):
        other.record_enrichment(result, score)
    monitor = FeatureMonitor(config)
    shared = SharedState(monitor, store, replica_id="this", start=False)
    exporter = monitor.register_prometheus_multiprocess(interval_seconds=0.01)
    for result, score in workload(0, 10):
        monitor.record_enrichment(result, score)
    assert exporter.sync()
    assert exporter.sync()  # nothing new: nothing added
    p = "asahi_features_"
    task = (("task_type", TASK),)
    samples = _scrape(tmp_path)
    assert samples[(p + "feature_tokens_added_total", task)] == 5 * 5
    assert samples[(p + "enrichment_enabled", task)] == 1.0
    # the shared verdict (from both replicas' scores) disables the task: exported as 0
    other.shared.sync()  # type: ignore[union-attr]
    shared.sync()
    assert monitor.should_enrich(TASK) is False
    saved = tmp_path / "small.json"
    FeatureMonitor(config).save(saved)
    monitor.restore(saved)  # smaller numbers: a new baseline, counters never go down
    for result, score in workload(0, 2):
        monitor.record_enrichment(result, score)
    monitor.close()  # stops the thread, copies one last time
    samples = _scrape(tmp_path)
    assert samples[(p + "enrichment_enabled", task)] == 0.0
    assert samples[(p + "feature_tokens_added_total", task)] == 5 * 5
    assert samples[(p + "enrichments_total", (("reason", "enriched"), *task))] == 5
    assert exporter.sync()


def test_a_failing_copy_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from prometheus_client import values

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: 4343))  # type: ignore[no-untyped-call]
    monitor = FeatureMonitor()
    with pytest.raises(ValueError, match="interval_seconds"):
        monitor.register_prometheus_multiprocess(interval_seconds=0)
    exporter = monitor.register_prometheus_multiprocess(interval_seconds=3600)
    # the directory is gone: the first labelled value cannot open its file
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing" / "dir"))
    for result, score in workload(0, 2):
        monitor.record_enrichment(result, score)
    with caplog.at_level("WARNING", logger="asahi_features.monitor"):
        assert exporter.sync() is False
    assert "copying the monitor into Prometheus metrics failed" in caplog.text


def test_a_forked_worker_exports_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pre-fork server: the monitor and its exporter are made before the fork; the
    forked worker's own thread copies its counts (the test waits for it, no close)."""
    import multiprocessing

    from prometheus_client import values

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())  # type: ignore[no-untyped-call]
    monitor = FeatureMonitor()
    monitor.register_prometheus_multiprocess(interval_seconds=0.02)
    key = ("asahi_features_feature_tokens_added_total", (("task_type", TASK),))
    ctx = multiprocessing.get_context("fork")
    seen = ctx.Queue()

    def worker() -> None:
        for result, score in workload(1, 10):
            monitor.record_enrichment(result, score)

        def copied() -> bool:
            try:  # the parent's thread may be extending a file this scrape reads
                return _scrape(tmp_path).get(key) == 25.0
            except Exception:
                return False

        ok = wait_until(copied, timeout=30)
        seen.put(ok)

    child = ctx.Process(target=worker)
    child.start()
    assert seen.get(timeout=60) is True
    child.join(timeout=30)
    assert child.exitcode == 0
    for result, score in workload(0, 4):
        monitor.record_enrichment(result, score)
    monitor.close()
    assert _scrape(tmp_path)[key] == 25.0 + 10.0


def test_single_process_export_counts_this_replica_and_shows_the_shared_decision() -> None:
    """With shared state, /metrics of each replica holds its own counts (Prometheus adds
    replicas up) and the decision all replicas share."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from asahi_features.monitor.shared import SharedState
    from asahi_features.monitor.shared_memory import MemorySharedStore
    from asahi_features.settings import MonitorConfig

    config = MonitorConfig(min_samples=50, min_quality_gain=0.1, exploration_fraction=0.0)
    store = MemorySharedStore()
    monitors = []
    for i in range(2):
        monitor = FeatureMonitor(config)
        SharedState(monitor, store, replica_id=f"r{i}", start=False)
        for result, score in workload(i, 80 + 40 * i):
            monitor.record_enrichment(result, score)
        monitors.append(monitor)
    for _ in range(2):
        for monitor in monitors:
            monitor.shared.sync()  # type: ignore[union-attr]
    registry = CollectorRegistry()
    monitors[0].register_prometheus(registry)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    task = (("task_type", TASK),)
    assert samples[("asahi_features_enrichments_total", (("reason", "enriched"), *task))] == 40
    assert monitors[0].get_stats()["total_enrichments"] == 80 + 120  # the merged view
    assert samples[("asahi_features_enrichment_enabled", task)] == 0.0  # the shared verdict
