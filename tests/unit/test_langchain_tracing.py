"""Trace hygiene: captured LangSmith payloads (the real client, its HTTP call replaced by
a recorder) carry feature names, reasons and counts but no feature value; the
anonymizer masks the block in every later step; the handler's memory is bounded;
results serialise through LangChain (dumpd / load) and LangGraph checkpoints without
"unregistered type" warnings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import requests
from langchain.agents import create_agent as _create_agent
from langchain_core.load import dumpd, load
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tracers.langchain import LangChainTracer
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.event_hooks import register_serde_event_listener
from langgraph.graph import START, MessagesState, StateGraph
from langsmith import Client

from asahi_features.enricher import FeatureEnricher
from asahi_features.langchain import (
    MASK,
    FeatureContextMiddleware,
    FeatureEnrichmentRunnable,
    FeatureMonitorCallbackHandler,
    SerializableEnrichmentResult,
    TracedEnrichment,
    create_feature_tool,
    feature_anonymizer,
    feature_serializer,
    serializable,
)
from asahi_features.langchain.tracing import mask_blocks
from asahi_features.models import EnrichmentReason, EnrichmentResult
from asahi_features.monitor import FeatureMonitor
from asahi_features.sample_repo import SAMPLE_TASK_FEATURES
from asahi_features.settings import EnricherConfig
from asahi_features.stores.local import LocalFeatureStore

from .langchain_helpers import PROFILE_HEADER, ScriptedToolChat, marker, write_features

pytestmark = pytest.mark.usefixtures("no_tracing_env")

CONFIG = EnricherConfig(
    enabled_task_types=["general"],
    task_features=SAMPLE_TASK_FEATURES,
    freshness_threshold_seconds=10**8,
)


class CapturingClient(Client):
    """A real LangSmith client (serialisation, anonymizer, hiding all real) whose HTTP
    requests are recorded instead of sent."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            api_url="http://127.0.0.1:9", api_key="offline", auto_batch_tracing=False, **kwargs
        )
        self.payloads: List[Tuple[str, str, str]] = []

    def request_with_retries(  # type: ignore[override]
        self, method: str, pathname: str, *, request_kwargs: Any = None, **kwargs: Any
    ) -> requests.Response:
        data = (request_kwargs or {}).get("data")
        text = data.decode() if isinstance(data, bytes) else str(data)
        self.payloads.append((method, pathname, text))
        response = requests.Response()
        response.status_code = 200
        response._content = b"{}"
        return response

    def text(self) -> str:
        return "\n".join(p[2] for p in self.payloads)

    def runs_named(self, name: str) -> List[Dict[str, Any]]:
        """The create and update payloads of every run named ``name``."""
        ids = {
            json.loads(body)["id"]
            for method, _, body in self.payloads
            if method == "POST" and json.loads(body).get("name") == name
        }
        return [
            json.loads(body)
            for _, path, body in self.payloads
            if any(path.endswith(i) for i in ids) or json.loads(body).get("id") in ids
        ]


def traced(client: CapturingClient) -> LangChainTracer:
    return LangChainTracer(client=client, project_name="hygiene")


@pytest.fixture
def enricher(tmp_path: Path) -> FeatureEnricher:
    return FeatureEnricher(LocalFeatureStore(write_features(tmp_path / "f.json")), CONFIG)


def chain(runnable: FeatureEnrichmentRunnable, model: ScriptedToolChat) -> Any:
    return runnable | RunnableLambda(lambda d: d["enriched_prompt"]) | model


def test_hygiene_on_by_default_the_steps_payload_has_names_not_values(
    enricher: FeatureEnricher,
) -> None:
    client = CapturingClient()
    tracer = traced(client)
    model = ScriptedToolChat()
    answer = chain(FeatureEnrichmentRunnable(enricher, output="dict"), model).invoke(
        {"prompt": "hi", "user_id": "u_007"}, {"callbacks": [tracer]}
    )
    tracer.wait_for_futures()
    assert answer.text == f"markers: {marker(7)}"  # the chain got the real output
    ours = client.runs_named("FeatureEnrichment")
    assert ours
    ours_text = json.dumps(ours)
    assert marker(7) not in ours_text and PROFILE_HEADER not in ours_text
    outputs = [p["outputs"] for p in ours if p.get("outputs")]
    assert len(outputs) == 1
    summary = outputs[0]["enrichment"]
    assert summary["reason"] == "enriched"
    assert summary["feature_count"] == len(summary["features_used"]) >= 2
    assert "enriched_prompt" not in summary and "feature_context" not in summary
    # without the anonymizer the next steps (and the model) still carry the block
    assert marker(7) in client.text()


def test_trace_values_true_reports_the_real_output(enricher: FeatureEnricher) -> None:
    client = CapturingClient()
    tracer = traced(client)
    runnable = FeatureEnrichmentRunnable(enricher, output="dict", trace_values=True)
    runnable.invoke({"prompt": "hi", "user_id": "u_008"}, {"callbacks": [tracer]})
    tracer.wait_for_futures()
    assert marker(8) in json.dumps(client.runs_named("FeatureEnrichment"))


async def test_captured_payload_with_hygiene_and_anonymizer_has_no_feature_value(
    enricher: FeatureEnricher,
) -> None:
    client = CapturingClient(anonymizer=feature_anonymizer())
    tracer = traced(client)
    model = ScriptedToolChat(echo=False)
    runnable = FeatureEnrichmentRunnable(enricher, output="dict")
    await chain(runnable, model).ainvoke(
        {"prompt": "hi", "user_id": "u_009"}, {"callbacks": [tracer]}
    )
    runnable.batch(
        [{"prompt": "a", "user_id": "u_010"}, {"prompt": "b", "user_id": "u_011"}],
        {"callbacks": [tracer]},
    )
    tracer.wait_for_futures()
    text = client.text()
    assert len(model.received) == 1 and marker(9) in model.received[0][0].text
    for n in (9, 10, 11):
        assert marker(n) not in text
    assert "Customer tier" not in text and PROFILE_HEADER not in text
    assert MASK in text  # masked where the block was
    assert '"features_used"' in text and '"reason":"enriched"' in text.replace(" ", "")


async def test_agent_payload_with_anonymizer_has_no_feature_value(
    enricher: FeatureEnricher,
) -> None:
    client = CapturingClient(anonymizer=feature_anonymizer())
    tracer = traced(client)
    model = ScriptedToolChat(tool="get_user_context", echo=False)
    agent: Any = _create_agent(
        model,
        [create_feature_tool(enricher)],
        system_prompt="Be brief.",
        middleware=[FeatureContextMiddleware(enricher)],
    )
    await agent.ainvoke(
        {"messages": [HumanMessage("hi")]},
        {"callbacks": [tracer], "configurable": {"user_id": "u_012"}},
    )
    tracer.wait_for_futures()
    assert all(marker(12) in r[0].text for r in model.received)  # the model got it
    text = client.text()
    assert client.payloads and marker(12) not in text and MASK in text


def test_mask_blocks_keeps_the_rest() -> None:
    text = (
        "Be brief.\n\n[Context from user profile]\n- Tier: gold\n[End context]\n\n"
        "[Context from organization profile]\n- Tone: warm\n[End context]\n\nQuestion?"
    )
    assert mask_blocks(text) == f"Be brief.\n\n{MASK}\n\n{MASK}\n\nQuestion?"
    assert mask_blocks("no block") == "no block"
    with pytest.raises(ValueError, match="max_depth must be an int >= 1"):
        feature_anonymizer(max_depth=0)


def test_handler_records_through_the_summary_and_memory_is_bounded(
    enricher: FeatureEnricher,
) -> None:
    monitor = FeatureMonitor()
    handler = FeatureMonitorCallbackHandler(monitor, max_tracked_runs=6, keep_finished_runs=2)
    runnable = FeatureEnrichmentRunnable(enricher)
    run_ids = []
    for n in range(10):
        out = runnable.invoke(
            f"q{n}", {"callbacks": [handler], "configurable": {"user_id": "u_001"}}
        )
        run_ids.append(out.enrichment.enrichment_id)
    assert monitor.get_stats()["total_enrichments"] == 10
    assert len(handler.finished_runs) == 2
    assert handler.latest_root_run_id is not None
    assert handler.enrichments_for_run(handler.latest_root_run_id)[0].enrichment_id == run_ids[-1]
    assert isinstance((handler.finished_runs[-1].outputs or {})["enrichment"], TracedEnrichment)
    assert FeatureMonitorCallbackHandler(monitor).finished_runs.maxlen == 100


# -- serialisation ---------------------------------------------------------------------------


@pytest.fixture
def serde_events() -> Iterator[List[Dict[str, Any]]]:
    events: List[Dict[str, Any]] = []
    remove = register_serde_event_listener(lambda event: events.append(dict(event)))
    yield events
    remove()


def _result(enricher: FeatureEnricher) -> EnrichmentResult:
    return enricher.enrich("hi", user_id="u_013")


def test_dumpd_load_round_trip(enricher: FeatureEnricher) -> None:
    result = serializable(_result(enricher))
    assert isinstance(result, EnrichmentResult)
    again = load(
        dumpd(result),
        valid_namespaces=["asahi_features"],
        allowed_objects=[SerializableEnrichmentResult],
    )
    assert isinstance(again, SerializableEnrichmentResult)
    assert again.model_dump() == result.model_dump()
    assert again.reason is EnrichmentReason.ENRICHED
    message = ToolMessage(content="c", artifact=result, tool_call_id="1")
    loaded = load(
        dumpd(message),
        valid_namespaces=["asahi_features"],
        allowed_objects=[ToolMessage, SerializableEnrichmentResult],
    )
    assert loaded.artifact.feature_context == result.feature_context
    assert serializable(result) is result


@dataclass
class Ctx:
    user_id: Optional[str] = None


def test_tool_message_checkpoints_without_unregistered_types(
    enricher: FeatureEnricher, serde_events: List[Dict[str, Any]]
) -> None:
    model = ScriptedToolChat(tool="get_user_context")
    saver = InMemorySaver()
    agent: Any = _create_agent(
        model, [create_feature_tool(enricher)], context_schema=Ctx, checkpointer=saver
    )
    config: RunnableConfig = {"configurable": {"thread_id": "s"}}
    agent.invoke({"messages": [HumanMessage("hi")]}, config, context=Ctx(user_id="u_014"))
    agent.invoke({"messages": [HumanMessage("again")]}, config, context=Ctx(user_id="u_014"))
    state = agent.get_state(config)
    tool_messages = [m for m in state.values["messages"] if isinstance(m, ToolMessage)]
    assert len(tool_messages) == 2 and marker(14) in tool_messages[0].text
    assert [e for e in serde_events if "unregistered" in e["kind"]] == []


async def test_result_in_graph_state_with_feature_serializer(
    enricher: FeatureEnricher, serde_events: List[Dict[str, Any]]
) -> None:
    class State(MessagesState):
        enrichment: Optional[EnrichmentResult]

    runnable = FeatureEnrichmentRunnable(enricher, output="dict")

    async def enrich(state: State, config: RunnableConfig) -> Dict[str, Any]:
        out = await runnable.ainvoke({"messages": state["messages"]}, config)
        return {"enrichment": out["enrichment"]}

    graph = StateGraph(State)
    graph.add_node("enrich", enrich)
    graph.add_edge(START, "enrich")
    app: Any = graph.compile(checkpointer=InMemorySaver(serde=feature_serializer()))
    config: RunnableConfig = {"configurable": {"thread_id": "g", "user_id": "u_015"}}
    first = await app.ainvoke({"messages": [HumanMessage("hi")]}, config)
    await app.ainvoke({"messages": [HumanMessage("again")]}, config)
    saved = app.get_state(config).values["enrichment"]
    assert isinstance(saved, EnrichmentResult)
    assert saved.reason is EnrichmentReason.ENRICHED and marker(15) in saved.feature_context
    assert first["enrichment"].enrichment_id != saved.enrichment_id  # the second turn's
    assert [e for e in serde_events if "unregistered" in e["kind"] or "blocked" in e["kind"]] == []


STRICT_PROBE = """
import tempfile, pathlib
from typing import Optional
from langgraph.checkpoint.serde.event_hooks import register_serde_event_listener
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langchain_core.messages import HumanMessage
from asahi_features.enricher import FeatureEnricher
from asahi_features.models import EnrichmentResult
from asahi_features.settings import EnricherConfig
from asahi_features.sample_repo import SAMPLE_TASK_FEATURES
from asahi_features.stores.local import LocalFeatureStore
from asahi_features.langchain import FeatureEnrichmentRunnable
from tests.unit.langchain_helpers import write_features

events = []
register_serde_event_listener(events.append)
path = write_features(pathlib.Path(tempfile.mkdtemp()) / "f.json")
config = EnricherConfig(enabled_task_types=["general"], task_features=SAMPLE_TASK_FEATURES,
                        freshness_threshold_seconds=10**8)
runnable = FeatureEnrichmentRunnable(FeatureEnricher(LocalFeatureStore(path), config),
                                     output="dict")

class State(MessagesState):
    enrichment: Optional[EnrichmentResult]

def node(state, config):
    return {"enrichment": runnable.invoke({"messages": state["messages"]}, config)["enrichment"]}

graph = StateGraph(State)
graph.add_node("n", node)
graph.add_edge(START, "n")
app = graph.compile(checkpointer=InMemorySaver())
cfg = {"configurable": {"thread_id": "x", "user_id": "u_001"}}
app.invoke({"messages": [HumanMessage("hi")]}, cfg)
app.invoke({"messages": [HumanMessage("again")]}, cfg)
loaded = app.get_state(cfg).values["enrichment"]
print(type(loaded).__name__, loaded.reason.value, len(events))
"""


def test_strict_langgraph_registers_a_state_field_typed_enrichment_result() -> None:
    """Under LANGGRAPH_STRICT_MSGPACK a field typed EnrichmentResult is registered by the
    graph itself (its enums included): it loads whole, with no serde event at all."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "LANGGRAPH_STRICT_MSGPACK": "true", "PYTHONPATH": f"{root / 'src'}:{root}"}
    proc = subprocess.run(
        [sys.executable, "-c", STRICT_PROBE],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=root,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["EnrichmentResult", "enriched", "0"]
