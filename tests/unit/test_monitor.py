"""FeatureMonitor: recording, late quality, holdout comparison and the should-enrich decision."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from typing import Any, List

import pytest

from asahi_features.errors import ConfigError
from asahi_features.guard import BreakerState, CircuitBreaker
from asahi_features.models import EnrichmentReason, EnrichmentResult
from asahi_features.monitor import Decision, DecisionReason, FeatureMonitor
from asahi_features.settings import MonitorConfig
from tests.support.clocks import ManualClock


def make_result(
    *,
    task: str = "faq",
    enriched: bool = True,
    held_out: bool = False,
    attempted: bool = True,
    failed: bool = False,
    reason: EnrichmentReason | None = None,
    features: List[str] | None = None,
    tokens: int = 10,
    latency_ms: float = 1.0,
    stale: List[str] | None = None,
    freshness: float = 0.0,
) -> EnrichmentResult:
    if reason is None:
        if enriched:
            reason = EnrichmentReason.ENRICHED
        elif held_out:
            reason = EnrichmentReason.HELD_OUT
        elif failed:
            reason = EnrichmentReason.STORE_UNAVAILABLE
        else:
            reason = EnrichmentReason.ENTITY_MISSING
    if features is None:
        features = ["tier", "product_owned"] if enriched else []
    return EnrichmentResult(
        original_prompt="What plan am I on?",
        enriched_prompt="[ctx]\nWhat plan am I on?" if enriched else "What plan am I on?",
        features_used=features,
        feature_tokens_added=tokens if enriched else 0,
        enrichment_latency_ms=latency_ms,
        features_available=enriched,
        task_type=task,
        reason=reason,
        held_out=held_out,
        store_attempted=attempted and not held_out,
        store_failed=failed,
        dropped_stale=stale or [],
        max_freshness_seconds=freshness,
    )


class ScriptedRng:
    """A random source whose draws the test chooses."""

    def __init__(self, values: List[float]) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


# ---------------------------------------------------------------- spec interface


def test_constructs_without_arguments_and_reports_spec_keys() -> None:
    stats = FeatureMonitor().get_stats()
    for key in (
        "total_enrichments",
        "successful_enrichments",
        "avg_features_used",
        "avg_latency_ms",
        "quality_with_features",
        "quality_without_features",
        "feature_store_availability_pct",
    ):
        assert key in stats
    assert stats["total_enrichments"] == 0
    assert stats["quality_with_features"] is None
    assert stats["feature_store_availability_pct"] is None
    assert stats["latency_ms"] == {"p50": None, "p95": None, "p99": None, "sample_size": 0}
    json.dumps(stats)


def test_stat_recording() -> None:
    monitor = FeatureMonitor()
    monitor.record_enrichment(
        make_result(latency_ms=2.0, tokens=30, stale=["browsing"], freshness=120.0)
    )
    monitor.record_enrichment(make_result(latency_ms=4.0, tokens=10, freshness=60.0))
    monitor.record_enrichment(make_result(enriched=False, failed=True, latency_ms=6.0))
    monitor.record_enrichment(
        make_result(
            task="summarization",
            enriched=False,
            attempted=False,
            latency_ms=0.0,
            reason=EnrichmentReason.TASK_NOT_ENABLED,
        )
    )
    stats = monitor.get_stats()
    assert stats["total_enrichments"] == 4
    assert stats["successful_enrichments"] == 2
    assert stats["fallback_enrichments"] == 2
    assert stats["avg_features_used"] == pytest.approx(4 / 4)
    assert stats["avg_features_used_when_enriched"] == pytest.approx(2.0)
    assert stats["avg_latency_ms"] == pytest.approx(3.0)
    assert stats["feature_tokens_added_total"] == 40
    assert stats["avg_feature_tokens_added"] == pytest.approx(10.0)
    assert stats["avg_feature_tokens_added_when_enriched"] == pytest.approx(20.0)
    assert stats["stale_features_dropped"] == 1
    assert stats["enrichments_with_stale_drops"] == 1
    assert stats["avg_freshness_seconds"] == pytest.approx(90.0)
    assert stats["max_freshness_seconds"] == pytest.approx(120.0)
    # three attempts (the disabled task never reached the store), one failed
    assert stats["feature_store_attempts"] == 3
    assert stats["feature_store_failures"] == 1
    assert stats["feature_store_availability_pct"] == pytest.approx(200 / 3)
    assert stats["feature_store_availability_pct_recent"] == pytest.approx(200 / 3)
    assert stats["reasons"] == {"enriched": 2, "store_unavailable": 1, "task_not_enabled": 1}
    assert stats["fallbacks_by_reason"] == {"store_unavailable": 1, "task_not_enabled": 1}
    assert stats["latency_ms"]["p50"] == 2.0
    assert stats["latency_ms"]["p99"] == 6.0
    assert stats["latency_ms"]["sample_size"] == 4
    faq = stats["task_types"]["faq"]
    assert (faq["total"], faq["enriched"], faq["held_out"], faq["fallback"]) == (3, 2, 0, 1)
    assert faq["feature_tokens_added"] == 40
    assert faq["reasons"] == {"enriched": 2, "store_unavailable": 1}
    assert stats["task_types"]["summarization"]["reasons"] == {"task_not_enabled": 1}
    assert stats["breaker_state"] is None
    json.dumps(stats)


def test_quality_groups_with_held_out_and_fallback() -> None:
    monitor = FeatureMonitor()
    monitor.record_enrichment(make_result(), inference_quality=0.9)
    monitor.record_enrichment(make_result(), inference_quality=0.7)
    monitor.record_enrichment(make_result(enriched=False, held_out=True), inference_quality=0.5)
    monitor.record_enrichment(make_result(enriched=False, failed=True), inference_quality=0.1)
    stats = monitor.get_stats()
    assert stats["quality_with_features"] == pytest.approx(0.8)
    # the specification's key: every scored request that got no features
    assert stats["quality_without_features"] == pytest.approx(0.3)
    assert stats["quality_held_out"] == pytest.approx(0.5)
    assert stats["quality_fallback"] == pytest.approx(0.1)
    # one held-out score is fewer than min_samples: compared with all un-enriched requests
    assert stats["quality_basis"] == "unenriched"
    assert stats["quality_delta"] == pytest.approx(0.5)
    assert stats["quality"]["with_features"]["n"] == 2
    assert stats["held_out_enrichments"] == 1
    faq = stats["task_types"]["faq"]
    assert faq["quality_without_features"] == pytest.approx(0.3)
    assert faq["quality_held_out"] == pytest.approx(0.5)
    assert faq["quality_basis"] == "unenriched"
    assert faq["quality_delta"] == pytest.approx(0.5)
    assert faq["quality_delta_samples"] == {"with_features": 2, "held_out": 1, "unenriched": 2}
    assert faq["quality"]["fallback"]["mean"] == pytest.approx(0.1)
    assert faq["quality_gain_lower_bound"] is None and faq["quality_gain_upper_bound"] is None


def test_quality_without_features_with_default_settings() -> None:
    """The issue's new user: no holdout configured, 40 scored requests each way."""
    monitor = FeatureMonitor()
    for i in range(40):
        monitor.record_enrichment(make_result(), inference_quality=0.9)
        reason = EnrichmentReason.ENTITY_MISSING if i % 2 else EnrichmentReason.NO_IDENTITY
        monitor.record_enrichment(
            make_result(enriched=False, attempted=bool(i % 2), reason=reason),
            inference_quality=0.5,
        )
    stats = monitor.get_stats()
    assert stats["quality_with_features"] == pytest.approx(0.9)
    assert stats["quality_without_features"] == pytest.approx(0.5)
    assert stats["quality_held_out"] is None
    assert stats["quality_basis"] == "unenriched"
    assert stats["quality_delta"] == pytest.approx(0.4)
    faq = stats["task_types"]["faq"]
    assert faq["quality_basis"] == "unenriched"
    assert faq["quality_delta"] == pytest.approx(0.4)
    assert faq["quality_delta_samples"] == {"with_features": 40, "held_out": 0, "unenriched": 40}
    assert monitor.decision("faq") == Decision(True, DecisionReason.ENABLED)


def test_without_a_control_group_unenriched_requests_can_disable_enrichment() -> None:
    monitor = FeatureMonitor(MonitorConfig(exploration_fraction=0.0))
    rnd = random.Random(4)
    for _ in range(40):  # features make answers worse than no features at all
        monitor.record_enrichment(make_result(), inference_quality=0.5 + rnd.gauss(0, 0.05))
        monitor.record_enrichment(
            make_result(enriched=False, reason=EnrichmentReason.ENTITY_MISSING),
            inference_quality=0.9 + rnd.gauss(0, 0.05),
        )
    assert monitor.decision("faq") == Decision(False, DecisionReason.QUALITY_NO_GAIN)
    faq = monitor.get_stats()["task_types"]["faq"]
    assert faq["quality_basis"] == "unenriched"
    assert faq["disabled_for_quality"] is True
    assert faq["quality_gain_upper_bound"] < 0


def test_quality_basis_switches_to_the_held_out_group_at_min_samples() -> None:
    monitor = FeatureMonitor(MonitorConfig(min_samples=3))
    for score in (0.8, 0.9, 0.7):
        monitor.record_enrichment(make_result(), inference_quality=score)
    monitor.record_enrichment(make_result(enriched=False, failed=True), inference_quality=0.1)
    monitor.record_enrichment(make_result(enriched=False, held_out=True), inference_quality=0.5)
    monitor.record_enrichment(make_result(enriched=False, held_out=True), inference_quality=0.6)
    stats = monitor.get_stats()
    assert stats["quality_basis"] == "unenriched"  # two held-out scores: fewer than 3
    assert stats["quality_delta"] == pytest.approx(0.8 - 0.4)
    monitor.record_enrichment(make_result(enriched=False, held_out=True), inference_quality=0.7)
    stats = monitor.get_stats()
    assert stats["quality_basis"] == "held_out"
    assert stats["quality_held_out"] == pytest.approx(0.6)
    assert stats["quality_without_features"] == pytest.approx((0.1 + 0.5 + 0.6 + 0.7) / 4)
    assert stats["quality_delta"] == pytest.approx(0.2)
    faq = stats["task_types"]["faq"]
    assert faq["quality_basis"] == "held_out"
    assert faq["quality_delta"] == pytest.approx(0.2)
    assert faq["quality_delta_samples"] == {"with_features": 3, "held_out": 3, "unenriched": 4}


def test_recording_the_same_unenriched_result_twice_counts_one_score() -> None:
    monitor = FeatureMonitor()
    held = make_result(enriched=False, held_out=True)
    fallback = make_result(enriched=False, failed=True)
    for result, score in ((held, 0.4), (fallback, 0.2)):
        monitor.record_enrichment(result, inference_quality=score)
        monitor.record_enrichment(result, inference_quality=score)  # e.g. a callback again
        monitor.record_enrichment(result, inference_quality=0.99)  # already scored
        assert not monitor.record_quality(result.enrichment_id, 0.99)
    stats = monitor.get_stats()
    assert stats["quality_without_features"] == pytest.approx(0.3)
    assert stats["quality_held_out"] == pytest.approx(0.4)
    faq = stats["task_types"]["faq"]
    assert faq["quality_delta_samples"] == {"with_features": 0, "held_out": 1, "unenriched": 2}
    assert stats["duplicate_records"] == 4
    assert stats["duplicate_quality_scores"] == 6  # three late scores for each


def test_late_quality_by_enrichment_id() -> None:
    monitor = FeatureMonitor()
    enriched, held = make_result(), make_result(enriched=False, held_out=True)
    monitor.record_enrichment(enriched)
    monitor.record_enrichment(held)
    assert monitor.get_stats()["pending_quality"] == 2
    assert monitor.record_quality(enriched.enrichment_id, 0.75) is True
    assert monitor.record_quality(held.enrichment_id, 0.25) is True
    assert monitor.record_quality("no-such-id", 1.0) is False
    assert monitor.record_quality(enriched.enrichment_id, 0.1) is False  # already scored
    stats = monitor.get_stats()
    assert stats["quality_with_features"] == pytest.approx(0.75)
    assert stats["quality_without_features"] == pytest.approx(0.25)
    assert stats["unmatched_quality_scores"] == 1
    assert stats["duplicate_quality_scores"] == 1


def test_quality_accepts_evaluation_result_like_objects_and_counts_invalid() -> None:
    class EvaluationResult:  # the shape of LlamaIndex's and LangSmith's results
        def __init__(self, score: Any) -> None:
            self.score = score

    monitor = FeatureMonitor()
    results = [make_result() for _ in range(5)]
    for result in results:
        monitor.record_enrichment(result)
    assert monitor.record_quality(results[0].enrichment_id, EvaluationResult(1.0))
    assert monitor.record_quality(results[1].enrichment_id, True)
    assert not monitor.record_quality(results[2].enrichment_id, EvaluationResult(None))
    assert not monitor.record_quality(results[3].enrichment_id, float("nan"))
    assert not monitor.record_quality(results[4].enrichment_id, "good")
    assert not monitor.record_quality(results[4].enrichment_id, object())
    assert not monitor.record_quality(results[4].enrichment_id, EvaluationResult([1.0]))
    stats = monitor.get_stats()
    assert stats["quality"]["with_features"]["n"] == 2
    assert stats["invalid_quality_scores"] == 5
    # the invalid ones can still be scored properly later
    assert monitor.record_quality(results[4].enrichment_id, 0)


def test_record_enrichment_is_idempotent_per_id() -> None:
    monitor = FeatureMonitor()
    result = make_result(tokens=7)
    monitor.record_enrichment(result)
    monitor.record_enrichment(result)  # e.g. a callback recording it again
    monitor.record_enrichment(result, inference_quality=0.6)  # adds only the score
    monitor.record_enrichment(result, inference_quality=0.6)  # already scored
    stats = monitor.get_stats()
    assert stats["total_enrichments"] == 1
    assert stats["feature_tokens_added_total"] == 7
    assert stats["feature_store_attempts"] == 1
    assert stats["quality"]["with_features"]["n"] == 1
    assert stats["duplicate_records"] == 3
    assert stats["duplicate_quality_scores"] == 1


def test_pending_table_is_bounded_and_evictions_counted() -> None:
    monitor = FeatureMonitor(MonitorConfig(max_pending_quality=3))
    results = [make_result() for _ in range(5)]
    for result in results:
        monitor.record_enrichment(result)
    stats = monitor.get_stats()
    assert stats["pending_quality"] == 3
    assert stats["pending_evicted"] == 2
    assert not monitor.record_quality(results[0].enrichment_id, 1.0)
    assert monitor.record_quality(results[4].enrichment_id, 1.0)
    assert monitor.get_stats()["unmatched_quality_scores"] == 1
    # evicting an already-scored entry is not a lost score
    monitor.record_enrichment(make_result())
    monitor.record_enrichment(make_result())
    monitor.record_enrichment(make_result())
    assert monitor.get_stats()["pending_evicted"] == 4


def test_task_types_beyond_the_cap_are_pooled() -> None:
    monitor = FeatureMonitor(MonitorConfig(max_task_types=2))
    for task in ("a", "b", "c", "d"):
        monitor.record_enrichment(make_result(task=task), inference_quality=0.5)
    tasks = monitor.get_stats()["task_types"]
    assert set(tasks) == {"a", "b", "__other__"}
    assert tasks["__other__"]["total"] == 2
    assert monitor.should_enrich("zzz") is True


# ---------------------------------------------------------------- holdout


def test_holdout_is_reproducible_and_close_to_the_fraction() -> None:
    config = MonitorConfig(holdout_fraction={"faq": 0.2, "*": 0.05}, seed=7)
    first, second = FeatureMonitor(config), FeatureMonitor(config)
    users = [f"user-{i}" for i in range(20_000)]
    faq = [first.is_held_out("faq", u) for u in users]
    assert faq == [second.is_held_out("faq", u) for u in users]
    assert sum(faq) / len(users) == pytest.approx(0.2, abs=0.015)
    general = sum(first.is_held_out("general", u) for u in users) / len(users)
    assert general == pytest.approx(0.05, abs=0.01)
    other_seed = FeatureMonitor(MonitorConfig(holdout_fraction={"faq": 0.2}, seed=8))
    assert [other_seed.is_held_out("faq", u) for u in users] != faq
    assert first.holdout_fraction("faq") == 0.2
    assert first.holdout_fraction("anything") == 0.05


@pytest.mark.parametrize(
    "fractions",
    [{"faq": 0.5, "support": 0.5}, {"*": 0.5}],
    ids=["per-task", "default"],
)
def test_holdout_groups_differ_between_task_types_and_are_fixed_per_seed(
    fractions: dict[str, float],
) -> None:
    """The hash covers the task type: one user's group for one task says nothing about
    another task's (1,000 users at 0.5 coincide with probability 2**-1000), and each
    task's group is the same in every monitor with the seed, another with another seed."""
    users = [f"u{i}" for i in range(1000)]

    def held(seed: int, task: str) -> frozenset[str]:
        monitor = FeatureMonitor(MonitorConfig(holdout_fraction=fractions, seed=seed))
        return frozenset(u for u in users if monitor.is_held_out(task, u))

    faq, support = held(7, "faq"), held(7, "support")
    assert faq != support
    assert 400 < len(faq) < 600 and 400 < len(support) < 600
    assert 150 < len(faq & support) < 350  # independent halves overlap by about a quarter
    assert held(7, "faq") == faq and held(7, "support") == support
    assert held(8, "faq") != faq and held(8, "support") != support


def test_holdout_edges() -> None:
    monitor = FeatureMonitor(MonitorConfig(holdout_fraction={"all": 1.0, "none": 0.0}))
    assert monitor.is_held_out("all", "u1") is True
    assert monitor.is_held_out("all", None) is False
    assert monitor.is_held_out("faq", "u1") is False  # default 0
    assert not any(monitor.is_held_out("none", f"u{i}") for i in range(1000))  # 0 is allowed
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="between 0 and 1") as raised:
            FeatureMonitor(MonitorConfig(holdout_fraction={"faq": 0.1, "support": bad}))
        assert raised.value.key_path == "monitor.holdout_fraction.support"


def _documented_holdout(seed: int, task: str, unit_id: str, fraction: float) -> bool:
    """The scheme the docs state, written out independently of the monitor: a BLAKE2b
    key of 16 bytes from the seed; an 8-byte keyed BLAKE2b of ``task \x1f unit_id``
    (UTF-8, lone surrogates passed through) read big-endian, below ``fraction * 2**64``."""
    key = hashlib.blake2b(str(seed).encode(), digest_size=16).digest()
    text = f"{task}\x1f{unit_id}".encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(text, digest_size=8, key=key).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def test_holdout_groups_are_exactly_the_documented_keyed_hash() -> None:
    """Groups must stay the same across versions and replicas: a changed key size, hash
    input or byte order silently reshuffles every user's treatment mid-experiment."""
    config = MonitorConfig(holdout_fraction={"faq": 0.3, "support": 0.7}, seed=20_261_205)
    monitor = FeatureMonitor(config)
    users = [f"user-{i}" for i in range(1000)] + ["u\ud800-cut-emoji", "ü-ñ-字"]
    for task, fraction in (("faq", 0.3), ("support", 0.7)):
        expected = [_documented_holdout(20_261_205, task, u, fraction) for u in users]
        assert [monitor.is_held_out(task, u) for u in users] == expected
        assert 0.2 < sum(expected) / len(users) < 0.8


# ---------------------------------------------------------------- availability


def _fail(monitor: FeatureMonitor, n: int) -> None:
    for _ in range(n):
        monitor.record_enrichment(make_result(enriched=False, failed=True))


def test_disables_on_persistent_failure_and_reenables_after_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    config = MonitorConfig(
        availability_window=10,
        failure_window_min_attempts=5,
        min_availability_pct=50.0,
        availability_probe_interval_seconds=10.0,
    )
    monitor = FeatureMonitor(config, clock=clock)
    _fail(monitor, 4)
    assert monitor.should_enrich("faq")  # not enough attempts to judge
    _fail(monitor, 1)
    with caplog.at_level(logging.WARNING, logger="asahi_features.monitor"):
        assert monitor.decision("faq") == Decision(False, DecisionReason.STORE_UNAVAILABLE)
    assert "enrichment paused" in caplog.text
    assert not monitor.should_enrich("general")  # the store is shared by all tasks
    assert monitor.get_stats()["availability_paused"] is True
    clock.now += 10.0
    assert monitor.decision("faq") == Decision(True, DecisionReason.AVAILABILITY_PROBE)
    assert not monitor.should_enrich("faq")  # one probe per interval
    _fail(monitor, 1)  # the probe failed: still paused
    clock.now += 10.0
    assert monitor.decision("faq").reason == DecisionReason.AVAILABILITY_PROBE
    monitor.record_enrichment(make_result())  # the probe succeeded: recovered
    assert monitor.decision("faq") == Decision(True, DecisionReason.ENABLED)
    stats = monitor.get_stats()
    assert stats["availability_paused"] is False
    assert stats["feature_store_window_attempts"] == 0  # the outage was forgotten
    assert stats["availability_probes"] == 2
    assert stats["availability_pauses"] == 1
    assert stats["feature_store_attempts"] == 7  # overall history is kept
    # a new outage pauses again
    _fail(monitor, 5)
    assert not monitor.should_enrich("faq")


def test_mostly_successful_store_is_not_disabled() -> None:
    config = MonitorConfig(availability_window=20, failure_window_min_attempts=10)
    monitor = FeatureMonitor(config)
    for i in range(100):
        monitor.record_enrichment(make_result(enriched=i % 3 != 0, failed=i % 3 == 0))
    assert monitor.should_enrich("faq")
    assert monitor.get_stats()["feature_store_availability_pct_recent"] == pytest.approx(65.0)


def test_requests_never_sent_to_the_store_do_not_count_as_attempts() -> None:
    config = MonitorConfig(availability_window=10, failure_window_min_attempts=2)
    monitor = FeatureMonitor(config)
    for _ in range(50):
        monitor.record_enrichment(make_result(enriched=False, held_out=True))
        monitor.record_enrichment(
            make_result(
                enriched=False, attempted=False, reason=EnrichmentReason.DISABLED_BY_MONITOR
            )
        )
    stats = monitor.get_stats()
    assert stats["feature_store_attempts"] == 0
    assert stats["feature_store_availability_pct"] is None
    assert monitor.should_enrich("faq")


def test_overloaded_requests_are_counted_apart_from_the_store() -> None:
    config = MonitorConfig(availability_window=10, failure_window_min_attempts=2)
    monitor = FeatureMonitor(config)
    monitor.record_enrichment(make_result())
    for _ in range(20):  # this process was too busy: the store was never asked
        monitor.record_enrichment(
            make_result(enriched=False, attempted=False, reason=EnrichmentReason.OVERLOADED)
        )
    stats = monitor.get_stats()
    assert stats["overloaded_enrichments"] == 20
    assert stats["fallback_enrichments"] == 20 and stats["total_enrichments"] == 21
    assert stats["feature_store_attempts"] == 1
    assert stats["feature_store_availability_pct"] == 100.0
    assert stats["fallbacks_by_reason"] == {"overloaded": 20}
    assert monitor.decision("faq") == Decision(True, DecisionReason.ENABLED)
    json.dumps(stats)


def test_follows_the_guards_circuit_breaker() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        window=2, minimum_calls=2, reset_seconds=30.0, half_open_calls=1, clock=clock
    )

    class Guarded:  # the GuardedClient shape: a client exposing .breaker
        def __init__(self) -> None:
            self.breaker = breaker

    monitor = FeatureMonitor(MonitorConfig(failure_window_min_attempts=3))
    monitor.watch(Guarded())
    assert monitor.decision("faq") == Decision(True, DecisionReason.ENABLED)
    assert monitor.get_stats()["breaker_state"] == "closed"
    for _ in range(2):
        permit = breaker.acquire()
        assert permit is not None
        permit.failure()
    _fail(monitor, 3)  # the guard's fallbacks were recorded as failed attempts
    assert monitor.decision("faq") == Decision(False, DecisionReason.BREAKER_OPEN)
    assert monitor.get_stats()["breaker_state"] == "open"
    clock.now += 30.0  # cool-down over: the breaker reads half-open
    assert breaker.state is BreakerState.HALF_OPEN
    assert monitor.decision("faq").enrich is True
    probe = breaker.acquire()
    assert probe is not None
    probe.success()  # the probe succeeded: closed
    assert monitor.decision("faq") == Decision(True, DecisionReason.ENABLED)
    assert monitor.get_stats()["feature_store_window_attempts"] == 0


class _SettableBreaker:
    state = "closed"


def _paused_watching(breaker: _SettableBreaker) -> FeatureMonitor:
    """A monitor watching ``breaker``, paused by five failures while it stayed closed
    (a slow store: timeouts that did not, yet, open the breaker)."""
    monitor = FeatureMonitor(
        MonitorConfig(availability_window=5, failure_window_min_attempts=5),
        breaker=breaker,
    )
    _fail(monitor, 5)
    assert monitor.decision("faq").reason == DecisionReason.STORE_UNAVAILABLE
    return monitor


def test_breaker_closing_ends_an_availability_pause() -> None:
    breaker = _SettableBreaker()
    monitor = _paused_watching(breaker)
    breaker.state = "open"
    assert monitor.decision("faq").reason == DecisionReason.BREAKER_OPEN
    breaker.state = "closed"  # the guard's probe succeeded
    assert monitor.decision("faq") == Decision(True, DecisionReason.ENABLED)
    assert monitor.get_stats()["availability_paused"] is False


def test_only_the_breaker_closing_again_ends_a_pause_not_its_opening() -> None:
    """Failures go on while the breaker is open (its half-open probes time out): the
    pause must hold until the breaker closes again, and end then."""
    breaker = _SettableBreaker()
    monitor = _paused_watching(breaker)
    breaker.state = "open"
    assert monitor.decision("faq").reason == DecisionReason.BREAKER_OPEN
    _fail(monitor, 5)
    assert monitor.get_stats()["availability_paused"] is True
    breaker.state = "half_open"
    assert monitor.decision("faq").reason == DecisionReason.BREAKER_HALF_OPEN
    breaker.state = "closed"
    assert monitor.decision("faq") == Decision(True, DecisionReason.ENABLED)
    assert monitor.get_stats()["availability_paused"] is False


def test_half_open_breaker_lets_requests_through() -> None:
    class Breaker:
        state = BreakerState.HALF_OPEN

    monitor = FeatureMonitor(breaker=Breaker())
    assert monitor.decision("faq") == Decision(True, DecisionReason.BREAKER_HALF_OPEN)


def test_watch_rejects_objects_without_state_and_survives_broken_breakers() -> None:
    monitor = FeatureMonitor()
    with pytest.raises(TypeError, match=r"circuit breaker \(with \.state\).*got object$"):
        monitor.watch(object())

    class Broken:
        @property
        def state(self) -> str:
            raise RuntimeError("boom")

    monitor.watch(Broken())
    assert monitor.should_enrich("faq")
    assert monitor.get_stats()["breaker_state"] is None
    monitor.watch(None)
    assert monitor.should_enrich("faq")


# ---------------------------------------------------------------- quality decision


def _scores(
    monitor: FeatureMonitor,
    n: int,
    with_mean: float,
    held_mean: float,
    seed: int = 1,
    task: str = "faq",
) -> None:
    rnd = random.Random(seed)
    for _ in range(n):
        monitor.record_enrichment(
            make_result(task=task), inference_quality=with_mean + rnd.gauss(0, 0.05)
        )
        monitor.record_enrichment(
            make_result(task=task, enriched=False, held_out=True),
            inference_quality=held_mean + rnd.gauss(0, 0.05),
        )


def test_quality_disables_only_after_min_samples() -> None:
    config = MonitorConfig(min_samples=30, exploration_fraction=0.0)
    monitor = FeatureMonitor(config)
    _scores(monitor, 29, with_mean=0.5, held_mean=0.8)  # clearly worse, but too few
    assert monitor.decision("faq") == Decision(True, DecisionReason.ENABLED)
    faq = monitor.get_stats()["task_types"]["faq"]
    assert faq["disabled_for_quality"] is False
    assert faq["quality_gain_upper_bound"] is None  # not decided before min_samples
    _scores(monitor, 1, with_mean=0.5, held_mean=0.8, seed=2)
    assert monitor.decision("faq") == Decision(False, DecisionReason.QUALITY_NO_GAIN)
    assert monitor.should_enrich("general")  # other task types are not affected
    faq = monitor.get_stats()["task_types"]["faq"]
    assert faq["disabled_for_quality"] is True
    assert faq["quality_basis"] == "held_out"
    assert faq["quality_gain_lower_bound"] < faq["quality_delta"] < faq["quality_gain_upper_bound"]
    assert faq["quality_gain_upper_bound"] < 0
    assert faq["quality_delta"] == pytest.approx(-0.3, abs=0.05)


def test_fallback_scores_do_not_count_once_the_control_group_has_min_samples() -> None:
    monitor = FeatureMonitor(MonitorConfig(min_samples=5, exploration_fraction=0.0))
    rnd = random.Random(6)
    for _ in range(50):
        monitor.record_enrichment(make_result(), inference_quality=0.2 + rnd.gauss(0, 0.02))
        monitor.record_enrichment(
            make_result(enriched=False, reason=EnrichmentReason.ENTITY_MISSING),
            inference_quality=0.9 + rnd.gauss(0, 0.02),
        )
    # no control group yet: the requests without features are all there is to compare with
    assert monitor.decision("faq") == Decision(False, DecisionReason.QUALITY_NO_GAIN)
    for _ in range(20):  # the control group shows that features do help
        monitor.record_enrichment(
            make_result(enriched=False, held_out=True), inference_quality=0.1 + rnd.gauss(0, 0.02)
        )
    assert monitor.decision("faq") == Decision(True, DecisionReason.ENABLED)
    faq = monitor.get_stats()["task_types"]["faq"]
    assert faq["quality_basis"] == "held_out"
    assert faq["quality_gain_lower_bound"] > 0
    assert faq["quality"]["fallback"]["mean"] > 0.8  # still reported, no longer decisive


def test_helpful_or_undecided_enrichment_stays_enabled() -> None:
    helpful = FeatureMonitor(MonitorConfig(min_samples=10, exploration_fraction=0.0))
    _scores(helpful, 50, with_mean=0.8, held_mean=0.6)
    assert helpful.should_enrich("faq")
    # equal means with noise: the upper bound of the gain stays above 0, keep enriching
    noisy = FeatureMonitor(MonitorConfig(min_samples=10, exploration_fraction=0.0))
    _scores(noisy, 10, with_mean=0.7, held_mean=0.7, seed=3)
    assert noisy.should_enrich("faq")
    # ... but a required margin that the data shows is not met disables it
    margin = FeatureMonitor(
        MonitorConfig(min_samples=10, exploration_fraction=0.0, min_quality_gain=0.1)
    )
    _scores(margin, 200, with_mean=0.72, held_mean=0.7)
    assert margin.decision("faq").reason == DecisionReason.QUALITY_NO_GAIN


def test_quality_decision_recovers_when_the_data_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    monitor = FeatureMonitor(MonitorConfig(min_samples=10, exploration_fraction=0.0))
    with caplog.at_level(logging.INFO, logger="asahi_features.monitor"):
        _scores(monitor, 10, with_mean=0.5, held_mean=0.7)
        assert not monitor.should_enrich("faq")
        rnd = random.Random(5)
        for _ in range(30):  # exploration samples start to say enrichment now helps ...
            monitor.record_enrichment(make_result(), inference_quality=0.9 + rnd.gauss(0, 0.05))
        faq = monitor.get_stats()["task_types"]["faq"]
        assert faq["quality_delta"] > 0  # ... the estimate has turned,
        assert faq["quality_gain_lower_bound"] < 0  # but it is not shown yet:
        assert not monitor.should_enrich("faq")  # the decision does not flip on noise
        for _ in range(120):  # enough evidence
            monitor.record_enrichment(make_result(), inference_quality=0.9 + rnd.gauss(0, 0.05))
        assert monitor.should_enrich("faq")
        assert monitor.get_stats()["task_types"]["faq"]["quality_gain_lower_bound"] > 0
    assert "disabled for quality" in caplog.text
    assert "re-enabled for quality" in caplog.text


def test_exploration_share_while_disabled_for_quality() -> None:
    rng = ScriptedRng([0.01, 0.5, 0.09, 0.99])
    config = MonitorConfig(min_samples=10, exploration_fraction=0.1)
    monitor = FeatureMonitor(config, rng=rng)
    _scores(monitor, 10, with_mean=0.4, held_mean=0.8)
    assert monitor.decision("faq") == Decision(True, DecisionReason.EXPLORATION)
    assert monitor.decision("faq") == Decision(False, DecisionReason.QUALITY_NO_GAIN)
    assert monitor.decision("faq") == Decision(True, DecisionReason.EXPLORATION)
    assert monitor.decision("faq") == Decision(False, DecisionReason.QUALITY_NO_GAIN)


def test_exploration_fraction_is_approximately_honoured() -> None:
    monitor = FeatureMonitor(
        MonitorConfig(min_samples=10, exploration_fraction=0.05), rng=random.Random(42)
    )
    _scores(monitor, 10, with_mean=0.4, held_mean=0.8)
    share = sum(monitor.should_enrich("faq") for _ in range(20_000)) / 20_000
    assert share == pytest.approx(0.05, abs=0.01)


def test_a_malformed_result_changes_nothing() -> None:
    class Partial:  # lacks most attributes of EnrichmentResult
        enrichment_id = "x"
        task_type = "faq"
        features_available = False
        held_out = False
        reason = "enriched"

    monitor = FeatureMonitor()
    with pytest.raises(AttributeError):
        monitor.record_enrichment(Partial())  # type: ignore[arg-type]
    stats = monitor.get_stats()
    assert stats["total_enrichments"] == 0
    assert stats["task_types"] == {}
    assert stats["pending_quality"] == 0
