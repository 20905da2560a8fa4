"""Instrumentation events, the monitor event handler and evaluation results -> monitor."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.evaluation import (
    BatchEvalRunner,
    EvaluationResult,
    SemanticSimilarityEvaluator,
)
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.schema import NodeWithScore, TextNode

from asahi_features.enricher import FeatureEnricher
from asahi_features.llama_index import (
    EnrichmentLog,
    FeatureContextPostprocessor,
    FeatureEnrichmentEvent,
    FeatureMonitorEventHandler,
    enrichment_id_from_response,
    feature_context,
    record_evaluation,
)
from asahi_features.models import EnrichmentResult
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import EnricherConfig, MonitorConfig
from asahi_features.stores.local import LocalFeatureStore

from .llama_index_helpers import HashingEmbedding, RecordingLLM, user_id, write_features

# Keep LlamaIndex from ever resolving its OpenAI defaults.
pytestmark = pytest.mark.usefixtures("no_openai_defaults")


@pytest.fixture
def store(tmp_path: Path) -> LocalFeatureStore:
    return LocalFeatureStore(write_features(tmp_path / "features.json"))


@pytest.fixture
def index() -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        [Document(text="We sell clothes.")], embed_model=MockEmbedding(embed_dim=8)
    )


class _Collector(BaseEventHandler):
    events: List[BaseEvent] = []

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def root_handlers() -> Iterator[List[BaseEventHandler]]:
    """Handlers added to the root dispatcher during the test, removed afterwards."""
    root = get_dispatcher()
    before = list(root.event_handlers)
    added: List[BaseEventHandler] = []
    yield added
    root.event_handlers = before


def _result(**kw: Any) -> EnrichmentResult:
    fields: dict[str, Any] = {
        "original_prompt": "q",
        "enriched_prompt": "q",
        "features_used": [],
        "feature_tokens_added": 0,
        "enrichment_latency_ms": 0.1,
        "features_available": False,
    }
    fields.update(kw)
    return EnrichmentResult(**fields)


# ------------------------------------------------------------------ events


async def test_events_reach_handlers_sync_and_async(
    index: VectorStoreIndex, store: LocalFeatureStore, root_handlers: List[Any]
) -> None:
    collector = _Collector(events=[])
    get_dispatcher().add_event_handler(collector)
    monitor = FeatureMonitor()
    handler = FeatureMonitorEventHandler(monitor).attach()
    handler.attach()  # attaching twice is harmless
    post = FeatureContextPostprocessor(FeatureEnricher(store), event_texts=True)
    engine = index.as_query_engine(llm=RecordingLLM(), node_postprocessors=[post])
    with feature_context(user_id=user_id(1)) as request:
        engine.query("sync question")
        await engine.aquery("async question")
    with feature_context(user_id="nobody"):
        engine.query("missing user")

    ours = [e for e in collector.events if isinstance(e, FeatureEnrichmentEvent)]
    assert [e.query_str for e in ours] == ["sync question", "async question", "missing user"]
    assert [e.result.enrichment_id for e in ours[:2]] == request.enrichment_ids
    assert ours[0].class_name() == "FeatureEnrichmentEvent"
    assert ours[0].span_id is not None  # dispatched inside the query's span

    stats = monitor.get_stats()
    assert stats["total_enrichments"] == 3
    assert stats["successful_enrichments"] == 2
    assert stats["duplicate_records"] == 0  # attached once: each event counted once
    assert handler.enrichment_log.ids_for_query("sync question") == [request.enrichment_ids[0]]
    assert handler.enrichment_log.keeps_results
    assert handler.enrichment_log.get(request.enrichment_ids[0]) is ours[0].result
    assert handler.monitor is monitor
    handler.detach()
    engine.query("after detach")
    assert monitor.get_stats()["total_enrichments"] == 3


def test_handler_ignores_other_events_and_survives_a_failing_monitor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def record_enrichment(self, result: Any, inference_quality: Any = None) -> None:
            raise RuntimeError("boom")

    handler = FeatureMonitorEventHandler(Broken(), max_tracked=5)  # type: ignore[arg-type]
    assert handler.class_name() == "FeatureMonitorEventHandler"
    handler.handle(BaseEvent())
    assert len(handler.enrichment_log) == 0
    with caplog.at_level(logging.WARNING, logger="asahi_features.llama_index"):
        handler.handle(FeatureEnrichmentEvent(result=_result(), query_str="q"))
    assert "recording enrichment" in caplog.text
    assert len(handler.enrichment_log) == 1


def test_postprocessor_records_in_its_own_monitor_once(store: LocalFeatureStore) -> None:
    monitor = FeatureMonitor()
    enricher = FeatureEnricher(store, monitor=monitor)
    shared = FeatureContextPostprocessor(enricher, monitor=monitor)  # same as the enricher's
    separate_monitor = FeatureMonitor()
    separate = FeatureContextPostprocessor(enricher, monitor=separate_monitor)
    with feature_context(user_id=user_id(2)):
        shared.postprocess_nodes([], query_str="q")
        separate.postprocess_nodes([], query_str="q")
    assert shared.monitor is monitor
    assert monitor.get_stats()["total_enrichments"] == 2
    assert monitor.get_stats()["duplicate_records"] == 0
    assert separate_monitor.get_stats()["total_enrichments"] == 1


# ------------------------------------------------------------------ evaluation


def _split_users(monitor: FeatureMonitor, n: int) -> tuple[List[int], List[int]]:
    held: List[int] = []
    enriched: List[int] = []
    for i in range(50):
        (held if monitor.is_held_out("general", user_id(i)) else enriched).append(i)
    return enriched[:n], held[:n]


async def test_batch_eval_runner_scores_land_in_the_monitor_with_the_split(
    index: VectorStoreIndex, store: LocalFeatureStore
) -> None:
    monitor = FeatureMonitor(MonitorConfig(holdout_fraction={"general": 0.5}))
    enricher = FeatureEnricher(
        store, EnricherConfig(enabled_task_types=["general"]), monitor=monitor
    )
    post = FeatureContextPostprocessor(enricher)
    engine = index.as_query_engine(llm=RecordingLLM(), node_postprocessors=[post])
    enriched, held = _split_users(monitor, 4)
    assert enriched and held

    queries, responses, references = [], [], []
    for i in enriched + held:
        query = f"What does customer {i} like?"
        with feature_context(user_id=user_id(i)):
            responses.append(await engine.aquery(query))
        queries.append(query)
        references.append(f"- Customer tier: {'gold' if i % 2 else 'silver'} - Language: en")

    runner = BatchEvalRunner(
        {"semantic": SemanticSimilarityEvaluator(embed_model=HashingEmbedding())}, workers=2
    )
    # LlamaIndex annotates ``reference`` as a dict, but reads it per response like a list
    results = await runner.aevaluate_responses(
        queries=queries,
        responses=responses,  # type: ignore[arg-type]
        reference=references,  # type: ignore[arg-type]
    )
    assert all(r.query is None for r in results["semantic"])  # evaluator drops the query

    record = record_evaluation(monitor, results, queries=queries, log=post.enrichment_log)
    assert record.recorded == len(queries) and record.unmatched == 0 and record.invalid == 0
    # enriched responses carry their enrichment id; the mapping agrees with it
    for response in responses[: len(enriched)]:
        eid = enrichment_id_from_response(response)
        assert eid is not None and eid in record.scores
    stats = monitor.get_stats()
    assert stats["quality_with_features"] is not None
    assert stats["quality_without_features"] is not None
    assert stats["quality_with_features"] > stats["quality_without_features"]
    assert stats["quality"]["with_features"]["n"] == len(enriched)
    assert stats["quality"]["held_out"]["n"] == len(held)


def test_record_evaluation_mapping_rules(store: LocalFeatureStore) -> None:
    monitor = FeatureMonitor()
    log = EnrichmentLog()
    a, b, c = (_result(original_prompt=f"q{i}") for i in range(3))
    log.add("same", a)
    log.add("same", b)
    log.add("other", c)
    log.add("other", c)  # idempotent per id

    # a query asked twice maps to the two most recent enrichments of that query, in order
    results = [
        EvaluationResult(query="same", score=0.25),
        EvaluationResult(query="same", passing=True),
        EvaluationResult(query="other", passing=False),
        EvaluationResult(query="other", score=0.5, invalid_result=True),
        EvaluationResult(query="unknown", score=1.0),
        EvaluationResult(query="same"),  # neither score nor passing
    ]
    record = record_evaluation(monitor, results, log=log)
    assert record.scores == {a.enrichment_id: 0.25, b.enrichment_id: 1.0, c.enrichment_id: 0.0}
    assert record.unmatched == 1 and record.invalid == 2
    assert monitor.get_stats()["total_enrichments"] == 3  # recorded from the log

    # explicit ids win; several evaluators are averaged per enrichment
    monitor2 = FeatureMonitor()
    d = _result()
    monitor2.record_enrichment(d)
    batch = {
        "x": [EvaluationResult(score=0.2)],
        "y": [EvaluationResult(score=0.6)],
    }
    record = record_evaluation(monitor2, batch, enrichment_ids=d.enrichment_id)
    assert record.scores == {d.enrichment_id: pytest.approx(0.4)}
    assert monitor2.get_stats()["quality_fallback"] == pytest.approx(0.4)
    # one evaluator only
    e = _result()
    monitor2.record_enrichment(e)
    only_y = record_evaluation(monitor2, batch, enrichment_ids=[e.enrichment_id], evaluator="y")
    assert only_y.scores == {e.enrichment_id: 0.6}
    with pytest.raises(KeyError, match="available: x, y"):
        record_evaluation(monitor2, batch, evaluator="z")


def test_record_evaluation_from_responses_and_handler(store: LocalFeatureStore) -> None:
    monitor = FeatureMonitor()
    handler = FeatureMonitorEventHandler(monitor)
    post = FeatureContextPostprocessor(FeatureEnricher(store))
    root = get_dispatcher()
    before = list(root.event_handlers)
    handler.attach(root)
    try:
        with feature_context(user_id=user_id(3)) as request:
            nodes = post.postprocess_nodes([], query_str="q3")
    finally:
        root.event_handlers = before

    class _Response:
        source_nodes = nodes

    single = EvaluationResult(score=0.9)
    record = handler.record_evaluation(single, responses=_Response())
    assert record.scores == {request.enrichment_ids[0]: 0.9}
    assert monitor.get_stats()["quality_with_features"] == pytest.approx(0.9)

    plain = [NodeWithScore(node=TextNode(text="doc"), score=0.1)]

    class _Plain:
        source_nodes = plain

    assert enrichment_id_from_response(_Plain()) is None
    assert enrichment_id_from_response(object()) is None
    nothing = record_evaluation(monitor, [single], responses=[_Plain()])
    assert nothing.recorded == 0 and nothing.unmatched == 1


def test_record_evaluation_rejects_other_inputs() -> None:
    monitor = FeatureMonitor()
    with pytest.raises(TypeError, match="EvaluationResult"):
        record_evaluation(monitor, 0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="EvaluationResult items"):
        record_evaluation(monitor, [0.5])  # type: ignore[list-item]


def test_enrichment_log_is_bounded() -> None:
    log = EnrichmentLog(max_entries=3)
    results = [_result() for _ in range(5)]
    for i, r in enumerate(results):
        log.add("q" if i < 4 else "z", r)
    log.add("z", results[4])  # the same enrichment twice is listed once
    assert len(log) == 3
    assert log.get(results[0].enrichment_id) is None
    assert log.get(results[4].enrichment_id) is results[4]
    assert log.ids_for_query("q") == [results[3].enrichment_id]
    assert log.ids_for_query("z") == [results[4].enrichment_id]
    ids_only = EnrichmentLog(max_entries=2, keep_results=False)
    ids_only.add(None, results[0])
    assert not ids_only.keeps_results
    assert ids_only.ids_for_query("") == [results[0].enrichment_id]
    assert ids_only.get(results[0].enrichment_id) is None
    with pytest.raises(ValueError, match="max_entries"):
        EnrichmentLog(0)
