"""Identity precedence, missing identity, field validation, events without raw text and
the holdout when the monitor is attached only through the event handler."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.workflow import Context

from asahi_features.enricher import FeatureEnricher
from asahi_features.llama_index import (
    FeatureContextPostprocessor,
    FeatureEnrichmentEvent,
    FeatureMemoryBlock,
    FeatureMonitorEventHandler,
    MissingIdentityError,
    feature_context,
    set_workflow_identity,
)
from asahi_features.models import EnrichmentReason
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import EnricherConfig, MonitorConfig
from asahi_features.stores.local import LocalFeatureStore

from .llama_index_helpers import RecordingLLM, user_id, user_marker, write_features

pytestmark = pytest.mark.usefixtures("no_openai_defaults")


@pytest.fixture
def store(tmp_path: Path) -> LocalFeatureStore:
    return LocalFeatureStore(write_features(tmp_path / "features.json"))


@pytest.fixture
def enricher(store: LocalFeatureStore) -> FeatureEnricher:
    return FeatureEnricher(store, EnricherConfig(enabled_task_types=["general"]))


@pytest.fixture
def index() -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        [Document(text="We sell clothes.")], embed_model=MockEmbedding(embed_dim=8)
    )


class _Collector(BaseEventHandler):
    events: List[FeatureEnrichmentEvent] = []

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, FeatureEnrichmentEvent):
            self.events.append(event)


@pytest.fixture
def collector() -> Iterator[_Collector]:
    root = get_dispatcher()
    before = list(root.event_handlers)
    handler = _Collector(events=[])
    root.add_event_handler(handler)
    yield handler
    root.event_handlers = before


def test_a_fixed_user_never_fills_in_for_an_organization_only_request(
    enricher: FeatureEnricher,
) -> None:
    post = FeatureContextPostprocessor(enricher, user_id=user_id(9))
    with feature_context(organization_id="acme") as request:
        nodes = post.postprocess_nodes([], query_str="q")
    (result,) = request.results
    assert result.reason is EnrichmentReason.NO_IDENTITY  # not user 9's features
    assert "user" in result.missing_entities
    assert not any(user_marker(9) in n.node.get_content() for n in nodes)
    with feature_context(task_type="general") as request:  # no identity in the block
        nodes = post.postprocess_nodes([], query_str="q")
    assert user_marker(9) in nodes[0].node.get_content()  # then the fixed one applies


async def test_workflow_identity_wins_over_feature_context_on_the_async_path(
    enricher: FeatureEnricher,
) -> None:
    from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step

    post = FeatureContextPostprocessor(enricher)

    class Flow(Workflow):
        @step
        async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
            nodes = await post.apostprocess_nodes([], query_str="q")
            return StopEvent(result=nodes[0].node.get_content())

    flow = Flow()
    ctx = Context(flow)
    await set_workflow_identity(ctx, user_id=user_id(20), task_type="general")
    with feature_context(user_id=user_id(21)):
        text = str(await flow.run(ctx=ctx))
    assert user_marker(20) in text and user_marker(21) not in text
    with pytest.raises(TypeError, match="Context"):
        await set_workflow_identity(object(), user_id="u")
    with pytest.raises(TypeError, match="user_id"):
        await set_workflow_identity(ctx, user_id=7)  # type: ignore[arg-type]


def test_on_missing_identity_raise_and_ignore(
    enricher: FeatureEnricher, index: VectorStoreIndex, caplog: pytest.LogCaptureFixture
) -> None:
    strict = FeatureContextPostprocessor(enricher, on_missing_identity="raise")
    engine = index.as_query_engine(llm=RecordingLLM(), node_postprocessors=[strict])
    with pytest.raises(MissingIdentityError, match="no identity for task type 'general'"):
        engine.query("who?")
    quiet = FeatureContextPostprocessor(enricher, on_missing_identity="ignore")
    with caplog.at_level(logging.WARNING, logger="asahi_features"):
        quiet.postprocess_nodes([], query_str="q")
    assert not caplog.records
    quiet.on_missing_identity = "raise"  # validated and applied on assignment
    with pytest.raises(MissingIdentityError):
        quiet.postprocess_nodes([], query_str="q")


@pytest.mark.parametrize(
    "field, value",
    [
        ("node_score", float("nan")),
        ("node_score", float("inf")),
        ("node_score", -0.5),
        ("position", "middle"),
        ("mode", "both"),
        ("on_missing_identity", "loud"),
        ("max_tracked", 0),
    ],
)
def test_fields_are_validated_at_construction_and_on_assignment(
    enricher: FeatureEnricher, field: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=field):
        FeatureContextPostprocessor(enricher, **{field: value})
    post = FeatureContextPostprocessor(enricher)
    if field != "max_tracked":
        with pytest.raises(ValueError, match=field):
            setattr(post, field, value)


def test_unknown_task_types_are_warned_at_construction(
    store: LocalFeatureStore, caplog: pytest.LogCaptureFixture
) -> None:
    enricher = FeatureEnricher(
        store,
        EnricherConfig(
            enabled_task_types=["general", "empty"],
            task_features={**EnricherConfig().task_features, "empty": {"user": []}},
        ),
    )
    with caplog.at_level(logging.WARNING, logger="asahi_features"):
        FeatureContextPostprocessor(enricher, task_type="genral")
        FeatureMemoryBlock(enricher, task_type="empty")
        FeatureContextPostprocessor(enricher)  # fine: no warning
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "'genral' is not in the enricher's enabled_task_types (empty, general)" in messages[0]
    assert "'empty' maps no features" in messages[1]


def test_events_carry_no_raw_text_unless_opted_in(
    enricher: FeatureEnricher, index: VectorStoreIndex, collector: _Collector
) -> None:
    secret_query = "my private question"
    for texts in (False, True):
        post = FeatureContextPostprocessor(enricher, event_texts=texts)
        engine = index.as_query_engine(llm=RecordingLLM(), node_postprocessors=[post])
        with feature_context(user_id=user_id(30)):
            engine.query(secret_query)
    plain, opted = collector.events
    dumped = json.dumps(plain.model_dump(mode="json"))
    assert user_marker(30) not in dumped and secret_query not in dumped
    assert user_marker(30) not in repr(plain)
    assert plain.reason == "enriched" and plain.identity_source == "request"
    assert plain.features_used and plain.feature_tokens_added > 0
    assert plain.component == "FeatureContextPostprocessor"
    assert plain.result.features_available  # in memory for in-process handlers
    opted_dump = json.dumps(opted.model_dump(mode="json"))
    assert user_marker(30) in opted_dump and secret_query in opted_dump


async def test_missing_identity_reaches_events_and_the_monitor(
    enricher: FeatureEnricher, collector: _Collector
) -> None:
    monitor = FeatureMonitor()
    block = FeatureMemoryBlock(enricher, monitor=monitor, on_missing_identity="ignore")
    assert await block.aget([]) == ""
    (event,) = collector.events
    assert event.reason == "no_identity" and event.identity_source == "none"
    assert event.component == "FeatureMemoryBlock"
    assert monitor.get_stats()["total_enrichments"] == 1


def test_holdout_holds_when_the_monitor_is_attached_only_as_an_event_handler(
    enricher: FeatureEnricher, index: VectorStoreIndex
) -> None:
    assert enricher.monitor is None
    monitor = FeatureMonitor(MonitorConfig(holdout_fraction={"general": 0.5}))
    held = {i for i in range(50) if monitor.is_held_out("general", user_id(i))}
    assert 0 < len(held) < 50
    handler = FeatureMonitorEventHandler(monitor).attach()
    try:
        llm = RecordingLLM()
        engine = index.as_query_engine(
            llm=llm, node_postprocessors=[FeatureContextPostprocessor(enricher)]
        )
        for i in range(50):
            with feature_context(user_id=user_id(i)):
                engine.query(f"question {i}")
    finally:
        handler.detach()
    enriched = {i for i, prompt in enumerate(llm.prompts) if user_marker(i) in prompt}
    assert enriched == set(range(50)) - held  # every held-out user un-enriched, others all
    stats = monitor.get_stats()
    assert stats["total_enrichments"] == 50
    assert stats["quality"]["held_out"]["n"] == 0  # no scores yet, but split recorded
    assert stats["successful_enrichments"] == 50 - len(held)


def test_a_component_monitor_gates_and_never_fails_the_request(
    enricher: FeatureEnricher, caplog: pytest.LogCaptureFixture
) -> None:
    class Paused(FeatureMonitor):
        def should_enrich(self, task_type: str) -> bool:
            return False

    class Broken(FeatureMonitor):
        def is_held_out(self, task_type: str, unit_id: Any) -> bool:
            raise RuntimeError("boom")

        def record_enrichment(self, result: Any, inference_quality: Any = None, **kw: Any) -> Any:
            raise RuntimeError("boom")

    paused = FeatureContextPostprocessor(enricher, monitor=Paused())
    with feature_context(user_id=user_id(1)) as request:
        assert paused.postprocess_nodes([], query_str="q") == []
    assert request.results[0].reason is EnrichmentReason.DISABLED_BY_MONITOR
    broken = FeatureContextPostprocessor(enricher, monitor=Broken())
    with caplog.at_level(logging.WARNING, logger="asahi_features"):
        with feature_context(user_id=user_id(1)) as request:
            nodes = broken.postprocess_nodes([], query_str="q")
    assert user_marker(1) in nodes[0].node.get_content()  # enriched anyway
    messages = [r.getMessage() for r in caplog.records]
    assert any("holdout check failed" in m for m in messages)
    assert any("recording the enrichment failed" in m for m in messages)


def test_a_request_task_type_typo_warns_once(
    enricher: FeatureEnricher, caplog: pytest.LogCaptureFixture
) -> None:
    post = FeatureContextPostprocessor(enricher)
    with caplog.at_level(logging.DEBUG, logger="asahi_features"):
        for _ in range(3):
            with feature_context(user_id=user_id(1), task_type="genral"):
                post.postprocess_nodes([], query_str="q")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "FeatureContextPostprocessor: task type 'genral' is not in the enricher's "
        "enabled_task_types, the request goes out without features (later occurrences "
        "are logged at DEBUG)"
    ]


async def test_plain_chat_events_name_the_call_as_the_identity_source(
    enricher: FeatureEnricher, collector: _Collector
) -> None:
    from llama_index.core.base.llms.types import ChatMessage

    from asahi_features.llama_index import FeatureChatEnricher

    chat = FeatureChatEnricher(enricher)
    await chat.amessages([ChatMessage(role="user", content="hi")], user_id=user_id(2))
    with feature_context(user_id=user_id(3)):
        chat.messages([ChatMessage(role="user", content="hi")])
    assert [e.identity_source for e in collector.events] == ["call", "request"]
    with pytest.raises(ValueError, match="task_type"):
        FeatureChatEnricher(enricher, task_type="")
