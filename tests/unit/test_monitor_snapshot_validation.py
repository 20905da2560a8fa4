"""A saved monitor snapshot is checked whole at load; nothing the monitor does fails a request.

Before: a truncated or foreign snapshot loaded without error, after which every
``enrich`` of the affected task raised and ``asahi-features stats`` printed a traceback.
Now either the snapshot loads to a monitor that works, or ``load`` raises a
``ConfigError`` naming the bad field and what is allowed; and the enricher degrades
when a monitor call raises (not held out, enrich, not recorded).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from asahi_features.enricher import FeatureEnricher
from asahi_features.errors import ConfigError
from asahi_features.models import EnrichmentReason, EnrichmentResult, FeatureVector, utc_now
from asahi_features.monitor import FeatureMonitor
from asahi_features.monitor.stats import MAX_COUNT
from asahi_features.settings import EnricherConfig, MonitorConfig
from asahi_features.stores.base import BaseFeatureStore

PREFIX = "is not a saved FeatureMonitor state"
TASKS = ["faq", "summarization", "general"]
SETTINGS = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def result(
    task: str = "faq",
    *,
    enriched: bool = True,
    held_out: bool = False,
    failed: bool = False,
    latency: float = 1.0,
) -> EnrichmentResult:
    if enriched:
        reason = EnrichmentReason.ENRICHED
    elif held_out:
        reason = EnrichmentReason.HELD_OUT
    elif failed:
        reason = EnrichmentReason.STORE_UNAVAILABLE
    else:
        reason = EnrichmentReason.ENTITY_MISSING
    return EnrichmentResult(
        original_prompt="q",
        enriched_prompt="[ctx]\nq" if enriched else "q",
        features_used=["tier"] if enriched else [],
        feature_tokens_added=5 if enriched else 0,
        enrichment_latency_ms=latency,
        features_available=enriched,
        task_type=task,
        reason=reason,
        held_out=held_out,
        store_attempted=not held_out,
        store_failed=failed,
        dropped_stale=["old"] if latency > 5 else [],
        max_freshness_seconds=3.0 if enriched else 0.0,
    )


def populated() -> FeatureMonitor:
    monitor = FeatureMonitor(MonitorConfig(min_samples=3, latency_reservoir_size=16))
    for i in range(12):
        monitor.record_enrichment(result("faq", latency=1.0 + i), inference_quality=0.8)
        monitor.record_enrichment(
            result("summarization", enriched=False, held_out=True), inference_quality=0.5 + i / 100
        )
    monitor.record_enrichment(result("general", enriched=False, failed=True), inference_quality=0.1)
    monitor.record_enrichment(result("general", enriched=False))
    return monitor


BASE: Dict[str, Any] = json.loads(json.dumps(populated().snapshot()))


def _paths(value: Any, prefix: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
    """Every path (tuple of keys / indices) in a JSON value, the value itself included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value[:20]):  # the latency sample is long: its head
            found.extend(_paths(item, (*prefix, index)))
    return found


def _parent(root: Any, path: Tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        root = root[step]
    return root


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([-1, 0, 1, MAX_COUNT, MAX_COUNT + 1, 10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.5, 1e308, -1e308, 5e-324]),
    st.text(max_size=12),
    st.just("x" * 20_000),
)
# keys include a lone surrogate: what json.loads gives for a cut emoji ("\ud83d")
json_keys = st.one_of(st.text(max_size=8), st.sampled_from(["a\ud83db", "x" * 5000, ""]))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(json_keys, inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated_snapshots(draw: Any) -> Union[str, bytes]:
    """The text (or bytes) of a saved snapshot after one or more mutations."""
    kind = draw(
        st.sampled_from(
            ["drop", "rename", "replace", "replace", "numbers", "truncate", "foreign", "bytes"]
        )
    )
    if kind == "foreign":
        foreign = draw(json_values)
        if draw(st.booleans()):
            foreign = {"schema": 1, "stats": {}, "state": foreign}
        return json.dumps(foreign)
    if kind == "bytes":
        raw: bytes = draw(st.binary(max_size=64))
        return raw
    data = copy.deepcopy(BASE)
    if kind == "truncate":
        text = json.dumps(data)
        return text[: draw(st.integers(min_value=0, max_value=len(text) - 1))]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        if kind == "drop":
            if isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
        elif kind == "rename":  # a key (a task type, a reason, a field) renamed
            if isinstance(parent, dict):
                parent[draw(json_keys)] = parent.pop(path[-1])
        elif kind == "numbers":  # only numeric leaves, set to a hostile number
            numeric = [p for p in paths if isinstance(_parent(data, p)[p[-1]], (int, float))]
            path = draw(st.sampled_from(numeric))
            _parent(data, path)[path[-1]] = draw(
                st.sampled_from([math.nan, math.inf, -math.inf, -1, -0.5, 2**64, 1.5, True])
            )
        else:
            parent[path[-1]] = draw(json_values)
    return json.dumps(data)


class EchoStore(BaseFeatureStore):
    """Every user exists with a tier."""

    def get_features(self, entity_id: str, entity_type: str, names: List[str]) -> FeatureVector:
        features = dict.fromkeys(names, "gold")
        return FeatureVector.from_ages(
            entity_id, entity_type, "echo", features, dict.fromkeys(names, 1.0), utc_now()
        )

    def health_check(self) -> bool:
        return True


ENRICHER_CONFIG = EnricherConfig(enabled_task_types=TASKS, freshness_threshold_seconds=10**8)


def _exercise(monitor: FeatureMonitor, tmp_path: Path) -> None:
    """Everything a service does with a monitor; none of it may raise."""
    stats = monitor.get_stats()
    json.dumps(stats)
    tasks = list(stats["task_types"]) + TASKS + ["unseen"]
    for task in tasks:
        monitor.should_enrich(task)
        monitor.decision(task)
    registry = CollectorRegistry()
    monitor.register_prometheus(registry)
    generate_latest(registry)
    # the same snapshot saves and loads again
    again = FeatureMonitor.load(monitor.save(tmp_path / "again.json"))
    assert again.get_stats()["total_enrichments"] == stats["total_enrichments"]
    # requests through an enricher that consults and feeds it
    enricher = FeatureEnricher(EchoStore(), ENRICHER_CONFIG, monitor=monitor)
    for task in TASKS:
        out = enricher.enrich("q", user_id="u_1", task_type=task)
        assert out.original_prompt == "q"
        monitor.record_quality(out.enrichment_id, 0.9)
    monitor.record_enrichment(result("faq"), inference_quality=0.7)
    json.dumps(monitor.get_stats())
    monitor.snapshot()


@settings(max_examples=300, **SETTINGS)  # type: ignore[arg-type]
@given(text=mutated_snapshots())
def test_a_snapshot_loads_to_a_working_monitor_or_fails_at_load(
    tmp_path: Path, text: Union[str, bytes]
) -> None:
    path = tmp_path / "monitor.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    try:
        monitor = FeatureMonitor.load(path, MonitorConfig(min_samples=3))
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{path} {PREFIX} (schema 1 or 2): ")
        assert len(message) <= len(str(path)) + 300  # never echoes a huge value
        assert exc.key_path == "monitor.persist_path"
        return
    _exercise(monitor, tmp_path)


def test_the_valid_snapshot_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(BASE))
    monitor = FeatureMonitor.load(path, MonitorConfig(min_samples=3))
    assert monitor.get_stats()["total_enrichments"] == 26
    _exercise(monitor, tmp_path)


def _state_with(tmp_path: Path, change: Any) -> Path:
    data = copy.deepcopy(BASE)
    change(data)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("change", "field", "allowed"),
    [
        (
            lambda d: d["state"]["counters"].update(total=-3),
            "state.counters.total",
            f"an integer from 0 to {MAX_COUNT}, got -3",
        ),
        (
            lambda d: d["state"]["counters"].update(attempts=1.5),
            "state.counters.attempts",
            "an integer",
        ),
        (
            lambda d: d["state"]["counters"].update(latency_sum=math.inf),
            "state.counters.latency_sum",
            "a finite number, got inf",
        ),
        (
            lambda d: d["state"]["tasks"]["faq"]["quality"][0].update(mean=math.nan),
            "state.tasks.faq.quality[0].mean",
            "a finite number, got nan",
        ),
        (
            lambda d: d["state"]["tasks"]["faq"]["quality"][0].update(m2=-1.0),
            "state.tasks.faq.quality[0].m2",
            "a finite number >= 0",
        ),
        (
            lambda d: d["state"]["tasks"]["faq"]["groups"].pop(),
            "state.tasks.faq.groups",
            "a list of 3 counts",
        ),
        (
            lambda d: d["state"]["tasks"]["faq"].update(total=999),
            "state.tasks.faq.groups",
            "counts adding up to total (999)",
        ),
        (
            lambda d: d["state"]["tasks"]["faq"].pop("reasons"),
            "state.tasks.faq.reasons",
            "the field is missing",
        ),
        (
            lambda d: d["state"]["quality"].pop(),
            "state.quality",
            "a list of 3 accumulators",
        ),
        (
            lambda d: d["state"]["latency"].update(values=["fast"]),
            "state.latency.values[0]",
            "a finite number, got the string 'fast'",
        ),
        (
            lambda d: d["state"]["counters"].update(failures=10**6),
            "state.counters.failures",
            "at most counters.attempts",
        ),
        (lambda d: d.update(schema=True), "schema", "1 or 2 (the versions"),
        (lambda d: d.pop("state"), "state", "the field is missing"),
        (
            lambda d: d["state"]["tasks"].update({"y" * 5000: 1}),
            "state.tasks['yyyyyyyy",
            "an object, got 1",
        ),
    ],
)
def test_each_bad_field_is_named_with_what_is_allowed(
    tmp_path: Path, change: Any, field: str, allowed: str
) -> None:
    path = _state_with(tmp_path, change)
    with pytest.raises(ConfigError) as info:
        FeatureMonitor.load(path)
    message = str(info.value)
    assert f"{PREFIX} (schema 1 or 2): {field}" in message
    assert allowed in message
    assert len(message) < len(str(path)) + 300


def test_huge_values_are_described_not_echoed(tmp_path: Path) -> None:
    path = _state_with(tmp_path, lambda d: d["state"]["counters"].update(total="z" * 100_000))
    with pytest.raises(ConfigError, match=r"state\.counters\.total") as info:
        FeatureMonitor.load(path)
    assert "zzzz" in str(info.value) and "z" * 100 not in str(info.value)
    path.write_text('{"schema": 1, "state": {"counters": {"total": ' + "9" * 4000 + "}}}")
    with pytest.raises(ConfigError, match="got an integer of 4000 digits"):
        FeatureMonitor.load(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"schema": 1, "state": {"coun', "not JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8 text"),
        (b"[" * 100_000, "nested too deeply"),
        (b"[1, 2, 3]", "(top level): expected an object"),
        (b'{"schema": 3, "state": {}}', "schema: expected 1 or 2"),
        (b'{"schema": 1, "state": []}', "state: expected an object, got a list of 0 items"),
    ],
)
def test_unreadable_files_fail_at_load(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "m.json"
    path.write_bytes(content)
    monitor = populated()
    with pytest.raises(ConfigError, match=PREFIX) as info:
        monitor.restore(path)
    assert problem in str(info.value)
    assert monitor.get_stats()["total_enrichments"] == 0  # never half-restored


def test_older_snapshots_without_optional_fields_still_load(tmp_path: Path) -> None:
    """Counters, task tokens and the latency sample may be missing (they default to 0)."""
    data = copy.deepcopy(BASE)
    state = data["state"]
    del state["latency"]
    del state["counters"]["probes"], state["counters"]["pauses"]
    for task in state["tasks"].values():
        del task["tokens"]
    data.pop("stats")
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    monitor = FeatureMonitor.load(path)
    assert monitor.get_stats()["total_enrichments"] == 26
    _exercise(monitor, tmp_path)


# -- the enricher degrades when a monitor call raises ---------------------------------------


class Flaky:
    """An EnrichmentGate whose chosen calls raise."""

    def __init__(self, failing: set[str], exc: Optional[BaseException] = None) -> None:
        self.failing = failing
        self.exc = exc or RuntimeError("monitor broke")
        self.recorded: List[EnrichmentResult] = []

    def is_held_out(self, task_type: str, unit_id: Optional[str]) -> bool:
        if "is_held_out" in self.failing:
            raise self.exc
        return False

    def should_enrich(self, task_type: str) -> bool:
        if "should_enrich" in self.failing:
            raise self.exc
        return True

    def record_enrichment(self, result: EnrichmentResult, inference_quality: Any = None) -> None:
        if "record_enrichment" in self.failing:
            raise self.exc
        self.recorded.append(result)


CALLS = ["is_held_out", "should_enrich", "record_enrichment"]


@settings(max_examples=60, **SETTINGS)  # type: ignore[arg-type]
@given(
    failing=st.sets(st.sampled_from(CALLS)),
    exc=st.sampled_from([RuntimeError("x"), KeyError("k"), ValueError("v"), ZeroDivisionError()]),
    requests=st.integers(min_value=1, max_value=4),
    batch=st.booleans(),
)
def test_a_failing_monitor_never_fails_a_request(
    failing: set[str], exc: Exception, requests: int, batch: bool
) -> None:
    monitor = Flaky(failing, exc)
    enricher = FeatureEnricher(EchoStore(), ENRICHER_CONFIG, monitor=monitor)
    if batch:
        results = enricher.enrich_batch([{"prompt": "q", "user_id": "u"}] * requests)
    else:
        results = [enricher.enrich("q", user_id="u") for _ in range(requests)]
    # not held out, enriched, recorded only when recording works
    assert all(r.features_available and not r.held_out for r in results)
    expected = [] if "record_enrichment" in failing else results
    assert monitor.recorded == expected


async def test_async_requests_degrade_too() -> None:
    monitor = Flaky(set(CALLS))
    enricher = FeatureEnricher(EchoStore(), ENRICHER_CONFIG, monitor=monitor)
    out = await enricher.aenrich("q", user_id="u")
    assert out.features_available
    outs = await enricher.aenrich_batch([{"prompt": "q", "user_id": "u"}] * 3)
    assert all(o.features_available for o in outs)


def test_each_failing_call_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    monitor = Flaky(set(CALLS))
    enricher = FeatureEnricher(EchoStore(), ENRICHER_CONFIG, monitor=monitor)
    with caplog.at_level(logging.DEBUG, logger="asahi_features.enricher"):
        for _ in range(5):
            assert enricher.enrich("q", user_id="u").features_available
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert sorted(r.getMessage().split()[0] for r in warnings) == [
        "monitor.is_held_out",
        "monitor.record_enrichment",
        "monitor.should_enrich",
    ]
    assert all(r.exc_info for r in warnings)  # the first one carries the traceback
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "again" in r.getMessage()]
    assert len(debug) == 3 * 4
    # another enricher on the same monitor warns again (its own first failure)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="asahi_features.enricher"):
        FeatureEnricher(EchoStore(), ENRICHER_CONFIG, monitor=monitor).enrich("q", user_id="u")
    assert len(caplog.records) == 3


def test_a_real_monitor_broken_by_a_bad_load_is_impossible_but_a_raising_one_degrades(
    tmp_path: Path,
) -> None:
    """The original failure: a loaded monitor that raised on every decision. A subclass
    that raises stands in for it: requests still go through."""

    class Exploding(FeatureMonitor):
        def decision(self, task_type: str) -> Any:
            raise TypeError("'<' not supported between instances of 'str' and 'int'")

    enricher = FeatureEnricher(EchoStore(), ENRICHER_CONFIG, monitor=Exploding())
    assert enricher.enrich("q", user_id="u", task_type="faq").features_available


def test_a_task_type_with_a_lone_surrogate_loads_and_exports(tmp_path: Path) -> None:
    """json.loads turns a cut emoji into a lone surrogate; such a task type (loaded, or
    recorded live) must not break the Prometheus scrape."""
    data = copy.deepcopy(BASE)
    data["state"]["tasks"]["faq\ud83d"] = data["state"]["tasks"].pop("faq")
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    monitor = FeatureMonitor.load(path)
    monitor.record_enrichment(result("live\ud83d"))
    _exercise(monitor, tmp_path)
    registry = CollectorRegistry()
    monitor.register_prometheus(registry)
    assert 'task_type="faq\\\\ud83d"' in generate_latest(registry).decode()
