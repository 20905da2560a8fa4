"""OpenTelemetry integration: spans per enrichment and evaluation events, with the SDK's
in-memory exporter (real enricher, real LocalFeatureStore / GuardedClient)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, List, Tuple

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from asahi_features import enable_opentelemetry
from asahi_features.enricher import EnrichmentTrace, FeatureEnricher
from asahi_features.errors import ConfigError
from asahi_features.guard import GuardedClient
from asahi_features.models import EnrichmentResult, utc_now
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import EnricherConfig, MonitorConfig
from asahi_features.stores.local import LocalFeatureStore
from asahi_features.telemetry.otel import EnrichmentSpans
from tests.support.faults import FaultyBackend

ROOT = Path(__file__).resolve().parents[2]
TASKS = {
    "faq": {"user": ["tier", "product_owned"]},
    "content_generation": {"organization": ["brand_voice", "tone"]},
}
CONFIG = EnricherConfig(
    enabled_task_types=["faq", "content_generation"],
    task_features=TASKS,
    freshness_threshold_seconds=3600,
)
MARK = "MRK" + uuid.uuid4().hex[:10]
"""Every feature value, prompt and context value holds it: none may reach telemetry."""
USERS = [f"user-{MARK}-{i}" for i in range(40)]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


def _write_store(path: Path) -> Path:
    now = utc_now().isoformat()
    data = {
        "user": {
            user: {
                "updated_at": now,
                "features": {"tier": f"gold {MARK}{i}", "product_owned": [f"router {MARK}{i}"]},
            }
            for i, user in enumerate(USERS)
        },
        "organization": {
            f"org-{MARK}": {
                "updated_at": now,
                "features": {"brand_voice": f"warm {MARK}", "tone": f"plain {MARK}"},
            }
        },
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path: Path) -> LocalFeatureStore:
    return LocalFeatureStore(_write_store(tmp_path / "features.json"))


@pytest.fixture
def enricher(store: LocalFeatureStore) -> FeatureEnricher:
    return FeatureEnricher(store, CONFIG, monitor=FeatureMonitor(MonitorConfig()))


def _ours(exporter: InMemorySpanExporter, name: str = "retrieval asahi_features") -> List[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def _all_text(spans: Tuple[ReadableSpan, ...]) -> str:
    """Every name, attribute key/value and event of the spans, as one string."""
    parts: List[str] = []
    for span in spans:
        parts.append(span.name)
        parts.append(repr(dict(span.attributes or {})))
        if span.status.description:
            parts.append(span.status.description)
        for event in span.events:
            parts.append(event.name)
            parts.append(repr(dict(event.attributes or {})))
    return "\n".join(parts)


# -- the enrichment span ----------------------------------------------------------------


def test_span_attributes_exact_and_child_of_the_current_span(
    enricher: FeatureEnricher, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    enable_opentelemetry(enricher, tracer_provider=provider)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("chat my-model") as llm:
        result = enricher.enrich(f"Which plan? {MARK}", user_id=USERS[0], task_type="faq")
    assert result.features_available
    (span,) = _ours(exporter)
    assert span.parent is not None
    assert span.parent.span_id == llm.get_span_context().span_id
    assert span.context.trace_id == llm.get_span_context().trace_id
    assert span.kind is SpanKind.INTERNAL
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    latency = attributes.pop("asahi.enrichment.latency_ms")
    store_ms = attributes.pop("asahi.store.latency_ms")
    max_age = attributes.pop("asahi.features.max_age_seconds")
    assert latency == pytest.approx(result.enrichment_latency_ms)
    assert isinstance(store_ms, float) and 0.0 < store_ms <= latency
    assert max_age == pytest.approx(result.max_freshness_seconds)
    assert attributes == {
        "gen_ai.operation.name": "retrieval",
        "asahi.task_type": "faq",
        "asahi.enrichment.id": result.enrichment_id,
        "asahi.enrichment.reason": "enriched",
        "asahi.enrichment.enriched": True,
        "asahi.enrichment.held_out": False,
        "asahi.enrichment.tokens_added": result.feature_tokens_added,
        "asahi.features.used": ("tier", "product_owned"),
        "asahi.features.used_count": 2,
        "asahi.features.dropped_stale_count": 0,
        "asahi.features.dropped_budget_count": 0,
        "asahi.features.dropped_policy_count": 0,
        "asahi.store.attempted": True,
        "asahi.store.failed": False,
        "asahi.batch.size": 1,
        "asahi.entity.user.status": "found",
    }
    assert result.feature_tokens_added > 0
    # the span lasts exactly the enrichment and lies inside the parent span
    assert span.end_time - span.start_time == pytest.approx(latency * 1e6, abs=1)
    (parent,) = _ours(exporter, "chat my-model")
    assert parent.start_time <= span.start_time <= span.end_time <= parent.end_time


def test_no_active_span_gives_a_root_span_and_unenriched_outcomes_are_spans_too(
    enricher: FeatureEnricher, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    enable_opentelemetry(enricher, tracer_provider=provider)
    enricher.enrich("hi", user_id="nobody-here", task_type="faq")  # entity missing
    enricher.enrich("hi", task_type="faq")  # no identity: the store is not asked
    enricher.enrich("hi", user_id=USERS[0], task_type="not_enabled")
    spans = _ours(exporter)
    assert [s.parent for s in spans] == [None, None, None]
    reasons = [s.attributes["asahi.enrichment.reason"] for s in spans]
    assert reasons == ["entity_missing", "no_identity", "task_not_enabled"]
    assert [s.status.status_code for s in spans] == [StatusCode.UNSET] * 3
    assert "asahi.store.latency_ms" in spans[0].attributes
    assert "asahi.store.latency_ms" not in spans[1].attributes  # never asked
    assert spans[1].attributes["asahi.entity.missing"] == ("user",)
    assert spans[0].attributes["asahi.entity.user.status"] == "missing"


def test_no_feature_value_prompt_context_or_id_in_any_span_or_event(
    enricher: FeatureEnricher, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    enable_opentelemetry(enricher, tracer_provider=provider)
    monitor = enricher.monitor
    assert isinstance(monitor, FeatureMonitor)
    results: List[EnrichmentResult] = []
    with provider.get_tracer("app").start_as_current_span("request"):
        for user in USERS:
            results.append(
                enricher.enrich(
                    f"prompt {MARK}",
                    user_id=user,
                    organization_id=f"org-{MARK}",
                    task_type="faq",
                    context={"note": f"ctx {MARK}"},
                )
            )
        results += enricher.enrich_batch(
            [
                {
                    "prompt": f"p {MARK}",
                    "organization_id": f"org-{MARK}",
                    "task_type": "content_generation",
                }
            ]
        )
    for i, result in enumerate(results):
        monitor.record_quality(result.enrichment_id, i % 2 == 0)
    # the values did reach the prompts...
    assert all(MARK in r.feature_context for r in results)
    spans = exporter.get_finished_spans()
    assert len(_ours(exporter)) == len(results)
    text = _all_text(spans)
    assert text.count("gen_ai.evaluation.result") == len(results)
    # ...and nothing of them, of the prompts, the context or the ids reached telemetry
    assert MARK not in text
    assert "user.id" not in text and "asahi.organization.id" not in text


def test_ids_only_when_opted_in(
    enricher: FeatureEnricher, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    enable_opentelemetry(enricher, tracer_provider=provider, record_ids=True)
    enricher.enrich("hi", user_id=USERS[1], organization_id="acme", task_type="faq")
    (span,) = _ours(exporter)
    assert span.attributes["user.id"] == USERS[1]
    assert span.attributes["asahi.organization.id"] == "acme"
    # the values stay out even so
    assert f"{MARK}1" not in _all_text(exporter.get_finished_spans()).replace(USERS[1], "")


def test_batch_gives_one_span_per_request_under_the_current_span(
    enricher: FeatureEnricher, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    enable_opentelemetry(enricher, tracer_provider=provider)
    requests = [{"prompt": "hi", "user_id": u, "task_type": "faq"} for u in USERS[:5]]
    requests.append({"prompt": "hi", "task_type": "faq"})  # no identity
    with provider.get_tracer("app").start_as_current_span("batch job") as job:
        results = enricher.enrich_batch(requests)
    spans = _ours(exporter)
    assert [s.attributes["asahi.enrichment.id"] for s in spans] == [
        r.enrichment_id for r in results
    ]
    assert {s.parent.span_id for s in spans} == {job.get_span_context().span_id}
    assert [s.attributes["asahi.batch.size"] for s in spans] == [6] * 6
    store = {s.attributes.get("asahi.store.latency_ms") for s in spans[:5]}
    assert len(store) == 1 and None not in store  # one read for the batch
    assert "asahi.store.latency_ms" not in spans[5].attributes
    assert sum(s.attributes["asahi.enrichment.enriched"] for s in spans) == 5


async def test_async_spans_are_children_of_each_tasks_own_span(
    enricher: FeatureEnricher, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    enable_opentelemetry(enricher, tracer_provider=provider)
    tracer = provider.get_tracer("app")

    async def one(user: str) -> Tuple[int, str]:
        with tracer.start_as_current_span(f"chat {user}") as llm:
            await asyncio.sleep(0)
            result = await enricher.aenrich("hi", user_id=user, task_type="faq")
            return llm.get_span_context().span_id, result.enrichment_id

    pairs = await asyncio.gather(*(one(u) for u in USERS[:20]))
    by_id = {s.attributes["asahi.enrichment.id"]: s for s in _ours(exporter)}
    assert len(by_id) == 20
    for parent_id, enrichment_id in pairs:
        assert by_id[enrichment_id].parent.span_id == parent_id
    assert all(s.attributes["asahi.enrichment.enriched"] for s in by_id.values())
    results = await enricher.aenrich_batch(
        [{"prompt": "x", "user_id": u, "task_type": "faq"} for u in USERS[:3]]
    )
    assert [s.attributes["asahi.batch.size"] for s in _ours(exporter)[-3:]] == [3, 3, 3]
    assert len(results) == 3


def test_failing_store_spans_error_with_reason_and_requests_degrade(
    provider: TracerProvider, exporter: InMemorySpanExporter, backends: List[FaultyBackend]
) -> None:
    backend = FaultyBackend("raise")
    backends.append(backend)
    guarded = GuardedClient(
        backend, timeout_ms=2000, breaker_window=1000, breaker_minimum_calls=1000
    )
    enricher = FeatureEnricher(guarded, CONFIG)
    enable_opentelemetry(enricher, tracer_provider=provider)
    results = [enricher.enrich(f"hi {i}", user_id=f"u{i}", task_type="faq") for i in range(30)]
    assert [r.enriched_prompt for r in results] == [f"hi {i}" for i in range(30)]
    spans = _ours(exporter)
    assert len(spans) == 30
    assert all(s.status.status_code is StatusCode.ERROR for s in spans)
    assert {s.status.description for s in spans} == {"store_unavailable"}
    assert {s.attributes["error.type"] for s in spans} == {"store_unavailable"}
    assert all(s.attributes["asahi.store.failed"] for s in spans)
    # the store comes back: every request is enriched and no span is an error
    backend.set_mode("ok")
    exporter.clear()
    healthy = [enricher.enrich("hi", user_id=f"u{i}", task_type="faq") for i in range(30)]
    assert sum(r.features_available for r in healthy) == 30
    spans = _ours(exporter)
    assert len(spans) == 30
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)
    assert all("error.type" not in s.attributes for s in spans)
    guarded.close()


def test_an_observer_that_raises_never_fails_the_request(
    enricher: FeatureEnricher, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def enrichment_finished(self, result: EnrichmentResult, trace: EnrichmentTrace) -> None:
            raise RuntimeError("observer bug")

    enricher.observers.append(Broken())
    first = enricher.enrich("hi", user_id=USERS[0], task_type="faq")
    second = enricher.enrich("hi", user_id=USERS[1], task_type="faq")
    assert first.features_available and second.features_available
    assert caplog.text.count("observer.enrichment_finished failed;") == 1


def test_a_broken_tracer_provider_never_fails_the_request(enricher: FeatureEnricher) -> None:
    class BrokenTracer:
        def start_span(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("exporter down")

    enricher.observers.append(EnrichmentSpans(BrokenTracer()))  # type: ignore[arg-type]
    assert enricher.enrich("hi", user_id=USERS[0], task_type="faq").features_available


# -- quality events -----------------------------------------------------------------------


def test_score_in_an_active_span_is_an_event_on_it(
    enricher: FeatureEnricher, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    enable_opentelemetry(enricher, tracer_provider=provider, evaluation_name="helpfulness")
    result = enricher.enrich("hi", user_id=USERS[0], task_type="faq")
    monitor = enricher.monitor
    assert isinstance(monitor, FeatureMonitor)
    with provider.get_tracer("app").start_as_current_span("evaluate"):
        assert monitor.record_quality(result.enrichment_id, 0.75)
        assert not monitor.record_quality(result.enrichment_id, 0.5)  # duplicate: ignored
        assert not monitor.record_quality("unknown-id", 0.5)  # unmatched: ignored
    (evaluate,) = _ours(exporter, "evaluate")
    (event,) = evaluate.events
    assert event.name == "gen_ai.evaluation.result"
    assert dict(event.attributes or {}) == {
        "gen_ai.evaluation.name": "helpfulness",
        "gen_ai.evaluation.score.value": 0.75,
        "asahi.enrichment.id": result.enrichment_id,
        "asahi.task_type": "faq",
        "asahi.quality.group": "with_features",
    }
    assert _ours(exporter, "evaluation asahi_features") == []


def test_late_score_without_a_span_is_a_child_of_the_enrichment_span(
    enricher: FeatureEnricher, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    enable_opentelemetry(enricher, tracer_provider=provider)
    monitor = enricher.monitor
    assert isinstance(monitor, FeatureMonitor)
    with provider.get_tracer("app").start_as_current_span("chat"):
        result = enricher.enrich("hi", user_id=USERS[0], task_type="faq")
        unenriched = enricher.enrich("hi", user_id="nobody", task_type="faq")
    monitor.record_quality(result.enrichment_id, True)
    monitor.record_enrichment(unenriched, inference_quality=False)  # scored when recorded again
    (enrichment, other) = _ours(exporter)
    first, second = _ours(exporter, "evaluation asahi_features")
    assert first.parent.span_id == enrichment.context.span_id
    assert first.context.trace_id == enrichment.context.trace_id
    assert second.parent.span_id == other.context.span_id
    assert dict(first.events[0].attributes or {}) == {
        "gen_ai.evaluation.name": "asahi.inference_quality",
        "gen_ai.evaluation.score.value": 1.0,
        "gen_ai.evaluation.score.label": "pass",
        "asahi.enrichment.id": result.enrichment_id,
        "asahi.task_type": "faq",
        "asahi.quality.group": "with_features",
    }
    assert second.events[0].attributes["gen_ai.evaluation.score.label"] == "fail"
    assert second.events[0].attributes["asahi.quality.group"] == "fallback"


def test_monitor_alone_and_an_evaluation_result_object(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    class EvaluationResult:  # the shape of LlamaIndex's EvaluationResult
        score = 4.0
        passing = True
        feedback = f"secret feedback {MARK}"

    monitor = FeatureMonitor()
    handle = enable_opentelemetry(monitor, tracer_provider=provider)
    assert handle.enrichers == [] and handle.monitors == [monitor]
    result = EnrichmentResult(
        original_prompt="p",
        enriched_prompt="p",
        features_used=[],
        feature_tokens_added=0,
        enrichment_latency_ms=1.0,
        features_available=False,
    )
    monitor.record_enrichment(result, inference_quality=EvaluationResult())  # type: ignore[arg-type]
    (span,) = _ours(exporter, "evaluation asahi_features")
    assert span.parent is None  # no enrichment span known: a root span
    attributes = dict(span.events[0].attributes or {})
    assert attributes["gen_ai.evaluation.score.value"] == 4.0
    assert attributes["gen_ai.evaluation.score.label"] == "pass"
    assert MARK not in _all_text(exporter.get_finished_spans())


def test_a_score_observer_that_raises_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    monitor = FeatureMonitor()

    def broken(event: Any) -> None:
        raise RuntimeError("bug")

    monitor.score_observers.append(broken)
    result = EnrichmentResult(
        original_prompt="p",
        enriched_prompt="p",
        features_used=[],
        feature_tokens_added=0,
        enrichment_latency_ms=1.0,
        features_available=False,
    )
    monitor.record_enrichment(result)
    assert monitor.record_quality(result.enrichment_id, 0.5)
    assert "quality score observer failed" in caplog.text


# -- enabling, disabling -----------------------------------------------------------------


def test_enable_twice_replaces_and_disable_removes(
    enricher: FeatureEnricher, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    enable_opentelemetry(enricher, tracer_provider=provider)
    handle = enable_opentelemetry(enricher, tracer_provider=provider)
    assert len(enricher.observers) == 1
    assert enricher.monitor is not None and len(enricher.monitor.score_observers) == 1  # type: ignore[attr-defined]
    enricher.enrich("hi", user_id=USERS[0], task_type="faq")
    assert len(_ours(exporter)) == 1
    handle.disable()
    assert enricher.observers == []
    enricher.enrich("hi", user_id=USERS[0], task_type="faq")
    assert len(_ours(exporter)) == 1


def test_not_enabled_gives_no_span(
    enricher: FeatureEnricher, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with provider.get_tracer("app").start_as_current_span("chat"):
        enricher.enrich("hi", user_id=USERS[0], task_type="faq")
    assert [s.name for s in exporter.get_finished_spans()] == ["chat"]


def test_bad_arguments_are_clear_errors(enricher: FeatureEnricher) -> None:
    with pytest.raises(TypeError, match="FeatureEnricher, a FeatureMonitor"):
        enable_opentelemetry(object())
    with pytest.raises(ValueError, match="evaluation_name"):
        enable_opentelemetry(enricher, evaluation_name=" ")
    with pytest.raises(ValueError, match="max_tracked"):
        enable_opentelemetry(enricher, max_tracked=0)
    assert enricher.observers == []


def test_the_langchain_runnable_is_traced_under_the_llm_span(
    enricher: FeatureEnricher, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    from langchain_core.language_models import FakeListChatModel

    from asahi_features.langchain import FeatureEnrichmentRunnable

    runnable = FeatureEnrichmentRunnable(enricher, task_type="faq")
    handle = enable_opentelemetry(runnable, tracer_provider=provider)
    assert handle.enrichers == [enricher]
    chain = runnable | FakeListChatModel(responses=["ok"])
    with provider.get_tracer("app").start_as_current_span("chat fake") as llm:
        assert chain.invoke("hi", config={"configurable": {"user_id": USERS[2]}}).content == "ok"
    (span,) = _ours(exporter)
    assert span.parent.span_id == llm.get_span_context().span_id
    assert span.attributes["asahi.enrichment.enriched"] is True


# -- settings and the optional dependency ------------------------------------------------


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )


def _config_file(tmp_path: Path, telemetry: str) -> Path:
    data = _write_store(tmp_path / "features.json")
    path = tmp_path / "config.yaml"
    path.write_text(
        "feature_store:\n"
        "  provider: local\n"
        f"  local: {{data_path: {data}}}\n"
        "enricher:\n"
        "  enabled_task_types: [faq]\n"
        "  task_features: {faq: {user: [tier, product_owned]}}\n"
        f"{telemetry}",
        encoding="utf-8",
    )
    return path


def test_disabled_never_imports_opentelemetry(tmp_path: Path) -> None:
    config = _config_file(tmp_path, "telemetry: {opentelemetry: false}\n")
    code = (
        "import sys\n"
        "from asahi_features import build_enricher, enable_opentelemetry, TelemetryConfig\n"
        "import asahi_features.telemetry.attributes\n"
        f"e = build_enricher({str(config)!r}, monitor=True)\n"
        f"r = e.enrich('hi', user_id={USERS[0]!r}, task_type='faq')\n"
        "e.monitor.record_quality(r.enrichment_id, 0.9)\n"
        "assert r.features_available\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_enabled_in_settings_traces_through_the_global_provider(tmp_path: Path) -> None:
    config = _config_file(
        tmp_path, "telemetry:\n  opentelemetry: true\n  evaluation_name: relevance\n"
    )
    code = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "exporter = InMemorySpanExporter()\n"
        "provider = TracerProvider()\n"
        "provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
        "trace.set_tracer_provider(provider)\n"
        "from asahi_features import build_enricher\n"
        f"e = build_enricher({str(config)!r}, monitor=True)\n"
        f"r = e.enrich('hi', user_id={USERS[0]!r}, task_type='faq')\n"
        "e.monitor.record_quality(r.enrichment_id, 0.9)\n"
        "for s in exporter.get_finished_spans():\n"
        "    names = [dict(ev.attributes).get('gen_ai.evaluation.name') for ev in s.events]\n"
        "    print(s.name, names)\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "retrieval asahi_features []",
        "evaluation asahi_features ['relevance']",
    ]


def test_enabled_without_the_extra_is_a_clear_error(tmp_path: Path) -> None:
    config = _config_file(tmp_path, "telemetry: {opentelemetry: true}\n")
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if the otel extra were not installed\n"
        "from asahi_features import ConfigError, FeatureEnricher, LocalFeatureStore, "
        "build_enricher, enable_opentelemetry\n"
        "try:\n"
        f"    build_enricher({str(config)!r})\n"
        "except ConfigError as exc:\n"
        "    print('build:', exc.key_path, '|', exc)\n"
        f"e = FeatureEnricher(LocalFeatureStore({str(tmp_path / 'features.json')!r}))\n"
        "try:\n"
        "    enable_opentelemetry(e)\n"
        "except ConfigError as exc:\n"
        "    print('api:', exc)\n"
        "print(len(e.observers))\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    build, api, observers = proc.stdout.splitlines()
    assert build.startswith("build: telemetry.opentelemetry | telemetry.opentelemetry is true")
    assert "pip install 'asahi-features[otel]'" in build
    assert api.startswith("api: OpenTelemetry is not installed")
    assert "asahi-features[otel]" in api
    assert observers == "0"


def test_telemetry_settings_are_validated(tmp_path: Path) -> None:
    from asahi_features.config import load_config

    config = load_config(_config_file(tmp_path, "telemetry: {record_ids: true}\n"))
    assert config.telemetry.opentelemetry is False and config.telemetry.record_ids is True
    for bad, key in (
        ("telemetry: {opentelemtry: true}\n", "opentelemtry"),
        ("telemetry: {evaluation_name: ''}\n", "evaluation_name"),
        ("telemetry: {opentelemetry: maybe}\n", "opentelemetry"),
    ):
        with pytest.raises(ConfigError, match=key):
            load_config(_config_file(tmp_path, bad))


def test_sampled_out_requests_export_nothing_and_their_scores_follow(
    enricher: FeatureEnricher, exporter: InMemorySpanExporter
) -> None:
    from opentelemetry.sdk.trace.sampling import (
        Decision,
        ParentBased,
        Sampler,
        SamplingResult,
    )

    class EvaluationsOnly(Sampler):  # as root: keeps only evaluation spans
        def should_sample(
            self, parent_context: Any, trace_id: int, name: str, *a: Any, **k: Any
        ) -> SamplingResult:
            keep = name == "evaluation asahi_features"
            return SamplingResult(Decision.RECORD_AND_SAMPLE if keep else Decision.DROP)

        def get_description(self) -> str:
            return "EvaluationsOnly"

    provider = TracerProvider(sampler=ParentBased(EvaluationsOnly()))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    enable_opentelemetry(enricher, tracer_provider=provider)
    result = enricher.enrich("hi", user_id=USERS[0], task_type="faq")
    assert result.features_available
    monitor = enricher.monitor
    assert isinstance(monitor, FeatureMonitor)
    assert monitor.record_quality(result.enrichment_id, 0.5)
    # the enrichment was sampled out: its score's span, its child, is dropped with it
    assert exporter.get_finished_spans() == ()
    # a score for an enrichment never traced is a root span, sampled on its own
    other = FeatureMonitor()
    enable_opentelemetry(other, tracer_provider=provider)
    plain = EnrichmentResult(
        original_prompt="p",
        enriched_prompt="p",
        features_used=[],
        feature_tokens_added=0,
        enrichment_latency_ms=1.0,
        features_available=False,
    )
    other.record_enrichment(plain, inference_quality=0.5)
    assert [s.name for s in exporter.get_finished_spans()] == ["evaluation asahi_features"]


def _raising_enricher(backends: List[FaultyBackend]) -> Tuple[FeatureEnricher, GuardedClient]:
    backend = FaultyBackend("raise")
    backends.append(backend)
    guarded = GuardedClient(
        backend,
        timeout_ms=2000,
        fallback_on_timeout=False,
        breaker_window=1000,
        breaker_minimum_calls=1000,
    )
    return FeatureEnricher(guarded, CONFIG), guarded


async def test_a_call_that_raises_to_its_caller_gets_an_error_span(
    provider: TracerProvider, exporter: InMemorySpanExporter, backends: List[FaultyBackend]
) -> None:
    from asahi_features.errors import FeatureStoreUnavailableError

    enricher, guarded = _raising_enricher(backends)
    enable_opentelemetry(enricher, tracer_provider=provider)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("chat") as llm:
        with pytest.raises(FeatureStoreUnavailableError):
            enricher.enrich("hi", user_id="u1", task_type="faq")
        with pytest.raises(FeatureStoreUnavailableError):
            await enricher.aenrich("hi", None, "acme", "content_generation")
        with pytest.raises(FeatureStoreUnavailableError):
            enricher.enrich_batch(
                [{"prompt": "hi", "user_id": f"u{i}", "task_type": "faq"} for i in range(3)]
            )
        with pytest.raises(FeatureStoreUnavailableError):
            await enricher.aenrich_batch([{"prompt": "hi", "user_id": "u1", "task_type": "faq"}])
    spans = _ours(exporter)
    assert len(spans) == 4
    assert {s.parent.span_id for s in spans} == {llm.get_span_context().span_id}
    assert all(s.status.status_code is StatusCode.ERROR for s in spans)
    assert {s.status.description for s in spans} == {"FeatureStoreUnavailableError"}
    error_type = "asahi_features.errors.FeatureStoreUnavailableError"
    assert [s.attributes.get("asahi.task_type") for s in spans] == [
        "faq",
        "content_generation",
        None,
        None,
    ]
    assert [s.attributes["asahi.batch.size"] for s in spans] == [1, 1, 3, 1]
    first = dict(spans[0].attributes or {})
    assert first.pop("asahi.enrichment.latency_ms") >= 0.0
    assert first == {
        "gen_ai.operation.name": "retrieval",
        "error.type": error_type,
        "asahi.batch.size": 1,
        "asahi.task_type": "faq",
    }
    guarded.close()


def test_without_observers_a_raising_call_is_untouched(backends: List[FaultyBackend]) -> None:
    from asahi_features.errors import FeatureStoreUnavailableError

    enricher, guarded = _raising_enricher(backends)

    class FinishedOnly:  # enrichment_failed is optional
        calls = 0

        def enrichment_finished(self, result: EnrichmentResult, trace: EnrichmentTrace) -> None:
            FinishedOnly.calls += 1

    with pytest.raises(FeatureStoreUnavailableError):
        enricher.enrich("hi", user_id="u1", task_type="faq")
    enricher.observers.append(FinishedOnly())
    with pytest.raises(FeatureStoreUnavailableError):
        enricher.enrich("hi", user_id="u1", task_type="faq")
    assert FinishedOnly.calls == 0
    guarded.close()


def test_a_failure_observer_that_raises_leaves_the_callers_error(
    backends: List[FaultyBackend], caplog: pytest.LogCaptureFixture
) -> None:
    from asahi_features.errors import FeatureStoreUnavailableError

    enricher, guarded = _raising_enricher(backends)

    class Broken:
        def enrichment_finished(self, result: EnrichmentResult, trace: EnrichmentTrace) -> None:
            pass

        def enrichment_failed(self, error: BaseException, call: Any) -> None:
            raise RuntimeError("observer bug")

    broken = Broken()
    enricher.add_observer(broken)
    assert "enrich" in vars(enricher)  # the failure hook is installed on this instance only
    with pytest.raises(FeatureStoreUnavailableError):
        enricher.enrich("hi", user_id="u1", task_type="faq")
    assert "observer.enrichment_failed failed;" in caplog.text
    enricher.remove_observer(broken)
    assert enricher.observers == [] and "enrich" not in vars(enricher)
    enricher.remove_observer(broken)  # not there: ignored
    guarded.close()


def test_scores_of_enrichments_no_longer_tracked_are_root_spans(
    enricher: FeatureEnricher, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    enable_opentelemetry(enricher, tracer_provider=provider, max_tracked=2)
    results = [enricher.enrich("hi", user_id=u, task_type="faq") for u in USERS[:3]]
    monitor = enricher.monitor
    assert isinstance(monitor, FeatureMonitor)
    for result in results:
        assert monitor.record_quality(result.enrichment_id, 0.5)
    enrichment_spans = {s.attributes["asahi.enrichment.id"]: s for s in _ours(exporter)}
    parents = [
        None if s.parent is None else s.parent.span_id
        for s in _ours(exporter, "evaluation asahi_features")
    ]
    assert parents == [
        None,  # the first enrichment's span was forgotten (only 2 are kept)
        enrichment_spans[results[1].enrichment_id].context.span_id,
        enrichment_spans[results[2].enrichment_id].context.span_id,
    ]


@pytest.mark.usefixtures("no_openai_defaults")
def test_the_llama_index_postprocessor_is_traced_under_the_query_span(
    tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    from asahi_features.llama_index import FeatureContextPostprocessor, feature_context

    from .llama_index_helpers import RecordingLLM, user_id, write_features

    enricher = FeatureEnricher(
        LocalFeatureStore(write_features(tmp_path / "li.json")),
        EnricherConfig(enabled_task_types=["general"]),
    )
    post = FeatureContextPostprocessor(enricher)
    handle = enable_opentelemetry(post, tracer_provider=provider)
    assert handle.enrichers == [enricher]
    index = VectorStoreIndex.from_documents(
        [Document(text="Jackets and shoes.")], embed_model=MockEmbedding(embed_dim=8)
    )
    llm = RecordingLLM()
    engine = index.as_query_engine(llm=llm, node_postprocessors=[post])
    with provider.get_tracer("app").start_as_current_span("query") as query:
        with feature_context(user_id=user_id(3)) as request:
            engine.query("What jacket?")
    (result,) = request.results
    assert result.features_available and "[Context from user profile]" in llm.prompts[0]
    (span,) = _ours(exporter)
    assert span.parent.span_id == query.get_span_context().span_id
    assert span.attributes["asahi.enrichment.id"] == result.enrichment_id


def test_require_opentelemetry_names_the_extra_and_the_setting(
    monkeypatch: pytest.MonkeyPatch, enricher: FeatureEnricher
) -> None:
    from asahi_features.telemetry import require_opentelemetry

    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"asahi-features\[otel\]") as info:
        require_opentelemetry("telemetry.opentelemetry")
    assert info.value.key_path == "telemetry.opentelemetry"
    assert str(info.value).startswith("telemetry.opentelemetry is true, but OpenTelemetry")
    with pytest.raises(ConfigError, match="opentelemetry-api"):
        enable_opentelemetry(enricher)
    assert enricher.observers == []
