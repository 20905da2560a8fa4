"""FeatureContextMiddleware in real ``langchain.agents.create_agent`` agents: identity from
``runtime.context`` and ``configurable``, the block in the system message of the model
request only (never in saved messages), one fetch per run, sync and async, 200
concurrent runs, require_identity and warn-once, and a LangGraph ``StateGraph`` on
``MessagesState`` with the runnable."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import pytest
from langchain.agents import create_agent as _create_agent
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from typing_extensions import TypedDict

from asahi_features.enricher import FeatureEnricher
from asahi_features.langchain import (
    FeatureContextMiddleware,
    FeatureEnrichmentRunnable,
    FeatureMonitorCallbackHandler,
    MissingIdentityError,
    create_feature_tool,
)
from asahi_features.models import EnrichmentReason, FeatureVector, utc_now
from asahi_features.monitor import FeatureMonitor
from asahi_features.sample_repo import SAMPLE_TASK_FEATURES
from asahi_features.settings import EnricherConfig
from asahi_features.stores.base import BaseFeatureStore
from asahi_features.stores.local import LocalFeatureStore

from .langchain_helpers import (
    PROFILE_HEADER,
    CountingClient,
    ScriptedToolChat,
    marker,
    system_text,
    write_features,
)

pytestmark = pytest.mark.usefixtures("no_tracing_env")

CONFIG = EnricherConfig(
    enabled_task_types=["general", "faq", "content_generation"],
    task_features=SAMPLE_TASK_FEATURES,
    freshness_threshold_seconds=10**8,
)
SYSTEM = "You are a shop assistant."
TOOL = "get_user_context"


@dataclass
class Ctx:
    user_id: Optional[str] = None
    organization_id: Optional[str] = None


class DictCtx(TypedDict, total=False):
    user_id: str


def create_agent(*args: Any, **kwargs: Any) -> Any:
    """``langchain.agents.create_agent``, typed loosely (its overloads are strict)."""
    return _create_agent(*args, **kwargs)


def block(number: int) -> str:
    tier = ["gold", "silver", "bronze"][number % 3]
    return (
        f"{PROFILE_HEADER}\n- Customer tier: {tier}\n- Preference: {marker(number)}\n"
        "- Language: en\n[End context]"
    )


@pytest.fixture
def client(tmp_path: Path) -> CountingClient:
    return CountingClient(LocalFeatureStore(write_features(tmp_path / "f.json", users=200)))


@pytest.fixture
def enricher(client: CountingClient) -> FeatureEnricher:
    return FeatureEnricher(client, CONFIG)


def agent_for(
    enricher: FeatureEnricher,
    model: ScriptedToolChat,
    *,
    tools: Optional[List[Any]] = None,
    context_schema: Any = Ctx,
    checkpointer: Any = None,
    **options: Any,
) -> Any:
    return create_agent(
        model,
        tools or [],
        system_prompt=SYSTEM,
        middleware=[FeatureContextMiddleware(enricher, **options)],
        context_schema=context_schema,
        checkpointer=checkpointer,
    )


def ask(text: str = "What plan suits me?") -> Dict[str, Any]:
    return {"messages": [HumanMessage(content=text)]}


def test_sync_agent_identity_from_runtime_context(
    enricher: FeatureEnricher, client: CountingClient
) -> None:
    model = ScriptedToolChat()
    out = agent_for(enricher, model).invoke(ask(), context=Ctx(user_id="u_007"))
    assert len(model.received) == 1
    sent = model.received[0]
    assert isinstance(sent[0], SystemMessage)
    assert sent[0].text == f"{SYSTEM}\n\n{block(7)}"  # merged after the agent's own prompt
    assert [m.text for m in sent[1:]] == ["What plan suits me?"]
    assert out["messages"][-1].text == f"markers: {marker(7)}"
    assert all(PROFILE_HEADER not in m.text for m in out["messages"])
    assert client.single_calls == ["u_007"]


async def test_async_agent_identity_from_configurable(enricher: FeatureEnricher) -> None:
    model = ScriptedToolChat()
    agent = agent_for(enricher, model)
    await agent.ainvoke(ask(), {"configurable": {"asahi_user_id": "u_011"}})
    await agent.ainvoke(ask(), {"configurable": {"user_id": "u_012"}})
    assert [system_text(r) for r in model.received] == [
        f"{SYSTEM}\n\n{block(11)}",
        f"{SYSTEM}\n\n{block(12)}",
    ]


async def test_runtime_context_wins_over_configurable_and_dict_contexts_work(
    enricher: FeatureEnricher,
) -> None:
    model = ScriptedToolChat()
    await agent_for(enricher, model).ainvoke(
        ask(), {"configurable": {"user_id": "u_001"}}, context=Ctx(user_id="u_002")
    )
    agent = agent_for(enricher, model, context_schema=DictCtx)
    agent.invoke(ask(), context={"user_id": "u_003"})
    assert [marker(2) in system_text(r) for r in model.received] == [True, False]
    assert marker(3) in system_text(model.received[1])
    assert marker(1) not in "".join(system_text(r) for r in model.received)


def test_no_system_prompt_gets_a_system_message(enricher: FeatureEnricher) -> None:
    model = ScriptedToolChat()
    agent = create_agent(
        model, [], middleware=[FeatureContextMiddleware(enricher)], context_schema=Ctx
    )
    agent.invoke(ask(), context=Ctx(user_id="u_004"))
    assert system_text(model.received[0]) == block(4)


@pytest.mark.parametrize("refresh, fetches", [("run", 1), ("model_call", 2)])
async def test_features_fetched_once_per_run_unless_refresh_per_call(
    enricher: FeatureEnricher, client: CountingClient, refresh: str, fetches: int
) -> None:
    model = ScriptedToolChat(tool="noop")

    @tool
    def noop() -> str:
        """Does nothing."""
        return "done"

    agent = agent_for(enricher, model, tools=[noop], refresh=refresh)
    await agent.ainvoke(ask(), context=Ctx(user_id="u_005"))
    assert len(model.received) == 2  # question, then after the tool answered
    assert all(system_text(r) == f"{SYSTEM}\n\n{block(5)}" for r in model.received)
    assert len(client.single_calls) == fetches


def test_checkpointer_two_turns_hold_no_copy_of_the_block(enricher: FeatureEnricher) -> None:
    model = ScriptedToolChat()
    saver = InMemorySaver()
    agent = agent_for(enricher, model, checkpointer=saver)
    thread: RunnableConfig = {"configurable": {"thread_id": "t-1"}}
    agent.invoke(ask("first"), thread, context=Ctx(user_id="u_021"))
    agent.invoke(ask("second"), thread, context=Ctx(user_id="u_021"))
    assert len(model.received) == 2
    for received in model.received:
        assert system_text(received) == f"{SYSTEM}\n\n{block(21)}"
        assert sum(PROFILE_HEADER in m.text for m in received) == 1  # only the system one
    assert [m.text for m in model.received[1][1:]] == [
        "first",
        f"markers: {marker(21)}",
        "second",
    ]
    saved = list(saver.list(thread))
    assert saved
    for checkpoint in saved:
        for message in checkpoint.checkpoint["channel_values"].get("messages", []):
            assert PROFILE_HEADER not in message.text
            assert not isinstance(message, SystemMessage)
        run = checkpoint.checkpoint["channel_values"].get("asahi_enrichment_run")
        assert run is None or (len(run) == 32 and int(run, 16) >= 0)  # an opaque id only


async def test_200_concurrent_agent_runs_distinct_users_no_crossing(
    enricher: FeatureEnricher,
) -> None:
    model = ScriptedToolChat()
    agent = agent_for(enricher, model)

    async def run(n: int) -> List[BaseMessage]:
        out = await agent.ainvoke(ask(f"question of {n:03d}"), context=Ctx(user_id=f"u_{n:03d}"))
        return list(out["messages"])

    outs = await asyncio.gather(*(run(n) for n in range(200)))
    assert len(model.received) == 200
    crossings = enriched = 0
    for received in model.received:
        n = int(received[-1].text.rsplit(" ", 1)[1])
        text = system_text(received)
        if PROFILE_HEADER in text:
            enriched += 1
        if text != f"{SYSTEM}\n\n{block(n)}":
            crossings += 1
    assert (enriched, crossings) == (200, 0)
    assert [o[-1].text for o in outs] == [f"markers: {marker(n)}" for n in range(200)]


def test_require_identity_raises(enricher: FeatureEnricher) -> None:
    model = ScriptedToolChat()
    agent = agent_for(enricher, model, require_identity=True)
    with pytest.raises(MissingIdentityError, match=r"no identity.*require_identity"):
        agent.invoke(ask(), context=Ctx())
    assert model.received == []


def test_missing_identity_and_unknown_task_warn_once(
    enricher: FeatureEnricher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asahi_features.langchain")
    model = ScriptedToolChat()
    agent = agent_for(enricher, model)
    for _ in range(3):
        agent.invoke(ask(), context=Ctx())
    bad_task = agent_for(enricher, model, task_type="nope")
    for _ in range(2):
        bad_task.invoke(ask(), context=Ctx(user_id="u_001"))
    ours = [r for r in caplog.records if r.name == "asahi_features.langchain"]
    warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "no identity for task type 'general'" in warnings[0]
    assert "context=Ctx(user_id=...)" in warnings[0]
    assert "task type 'nope' is not in the enricher's enabled_task_types" in warnings[1]
    assert sum(r.levelno == logging.DEBUG for r in ours) == 3
    assert all(system_text(r) == SYSTEM for r in model.received)  # ran, unenriched


def test_result_recorded_in_the_monitor(enricher: FeatureEnricher) -> None:
    monitor = FeatureMonitor()
    model = ScriptedToolChat()
    agent = agent_for(enricher, model, monitor=monitor)
    agent.invoke(ask(), context=Ctx(user_id="u_001"))
    agent.invoke(ask(), context=Ctx())
    stats = monitor.get_stats()
    assert stats["total_enrichments"] == 2


def test_store_down_degrades_to_no_block() -> None:
    from tests.support.faults import FaultyBackend

    backend = FaultyBackend("raise")
    model = ScriptedToolChat()
    out = agent_for(FeatureEnricher(backend, CONFIG), model).invoke(
        ask(), context=Ctx(user_id="u_001")
    )
    assert system_text(model.received[0]) == SYSTEM
    assert out["messages"][-1].text == "markers: "


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"refresh": "sometimes"}, ValueError, "refresh must be 'run' or 'model_call'"),
        ({"max_cached_runs": 0}, ValueError, "max_cached_runs must be an int >= 1"),
    ],
)
def test_bad_options_are_named(
    enricher: FeatureEnricher, kwargs: Dict[str, Any], error: type, text: str
) -> None:
    with pytest.raises(error, match=text):
        FeatureContextMiddleware(enricher, **kwargs)
    with pytest.raises(TypeError, match="needs an enricher"):
        FeatureContextMiddleware(None)


def test_cached_results_are_bounded(enricher: FeatureEnricher) -> None:
    middleware = FeatureContextMiddleware(enricher, max_cached_runs=2)
    agent = create_agent(ScriptedToolChat(), [], middleware=[middleware], context_schema=Ctx)
    for n in range(5):
        agent.invoke(ask(), context=Ctx(user_id=f"u_{n:03d}"))
    assert middleware.cached_runs == 0  # each run forgets its result when it ends


async def test_cache_bound_holds_for_runs_that_never_end(enricher: FeatureEnricher) -> None:
    """Runs that fail after their model call never reach after_agent: the bound holds."""
    middleware = FeatureContextMiddleware(enricher, max_cached_runs=3)

    class Boom(ScriptedToolChat):
        def _generate(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("model down")

    agent = create_agent(Boom(), [], middleware=[middleware], context_schema=Ctx)
    for n in range(6):
        with pytest.raises(RuntimeError, match="model down"):
            await agent.ainvoke(ask(), context=Ctx(user_id=f"u_{n:03d}"))
    assert middleware.cached_runs == 3


# -- the tool in an agent -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_agent_calls_the_tool_with_injected_identity_never_the_models(
    enricher: FeatureEnricher, client: CountingClient, mode: str
) -> None:
    model = ScriptedToolChat(tool=TOOL, tool_args={"user_id": "u_099", "runtime": "forged"})
    agent = create_agent(model, [create_feature_tool(enricher)], context_schema=Ctx)
    if mode == "sync":
        out = agent.invoke(ask(), context=Ctx(user_id="u_031"))
    else:
        out = await agent.ainvoke(ask(), context=Ctx(user_id="u_031"))
    tool_message = out["messages"][2]
    assert tool_message.text == block(31)
    assert tool_message.artifact.reason is EnrichmentReason.ENRICHED
    assert tool_message.artifact.feature_context.strip() == block(31)
    assert marker(99) not in "".join(m.text for m in out["messages"])
    assert client.single_calls == ["u_031"]
    assert out["messages"][-1].text == f"markers: {marker(31)}"


# -- a LangGraph StateGraph on MessagesState ----------------------------------------------


async def test_state_graph_on_messages_state_with_the_runnable(
    enricher: FeatureEnricher,
) -> None:
    model = ScriptedToolChat()
    runnable = FeatureEnrichmentRunnable(enricher, identity_from_input=False)

    async def respond(state: MessagesState, config: RunnableConfig) -> Dict[str, Any]:
        enriched = await runnable.ainvoke(state, config)
        return {"messages": [await model.ainvoke(enriched["messages"], config)]}

    graph = StateGraph(MessagesState)
    graph.add_node("respond", respond)
    graph.add_edge(START, "respond")
    saver = InMemorySaver()
    app: Any = graph.compile(checkpointer=saver)
    config: RunnableConfig = {"configurable": {"thread_id": "g", "asahi_user_id": "u_041"}}
    out = await app.ainvoke({"messages": [SystemMessage(SYSTEM), HumanMessage("hi")]}, config)
    assert system_text(model.received[0]) == f"{SYSTEM}\n\n{block(41)}"
    assert out["messages"][0].text == SYSTEM  # the state keeps the caller's messages
    assert out["messages"][-1].text == f"markers: {marker(41)}"
    state = app.get_state(config)
    assert all(PROFILE_HEADER not in m.text for m in state.values["messages"])


# -- other entity types, context shapes ---------------------------------------------------

SHOP_TASKS = {"shop": {"user": ["user_tag"], "merchant": ["merchant_tag"]}}


class EchoStore(BaseFeatureStore):
    """Every entity exists; its one feature names the entity. Records every id asked."""

    source = "echo"

    def __init__(self) -> None:
        self.asked: Set[Tuple[str, str]] = set()
        self._lock = threading.Lock()

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        with self._lock:
            self.asked.add((entity_type, entity_id))
        features = {name: f"{entity_type}={entity_id}" for name in feature_names}
        return FeatureVector.from_ages(
            entity_id, entity_type, "echo", features, dict.fromkeys(features, 1.0), utc_now()
        )

    def health_check(self) -> bool:
        return True


class SlottedCtx:
    """A context class without ``__dict__`` (read attribute by attribute)."""

    __slots__ = ("asahi_user_id", "merchant_id")

    def __init__(self, user: str, merchant: str) -> None:
        self.asahi_user_id = user
        self.merchant_id = merchant


@pytest.mark.parametrize(
    "context, configurable, expected",
    [
        ({"user_id": "u1", "merchant_id": "m1"}, {}, {("user", "u1"), ("merchant", "m1")}),
        (SlottedCtx("u2", "m2"), {}, {("user", "u2"), ("merchant", "m2")}),
        ({"asahi_user_id": "u3"}, {"merchant_id": "m3"}, {("user", "u3"), ("merchant", "m3")}),
        (None, {"asahi_merchant_id": "m4"}, {("merchant", "m4")}),
    ],
)
def test_other_entity_types_from_context_then_configurable(
    context: Any, configurable: Dict[str, Any], expected: Set[Tuple[str, str]]
) -> None:
    store = EchoStore()
    enricher = FeatureEnricher(
        store,
        EnricherConfig(
            enabled_task_types=["shop"], task_features=SHOP_TASKS, freshness_threshold_seconds=10**8
        ),
    )
    model = ScriptedToolChat()
    agent = create_agent(
        model, [], middleware=[FeatureContextMiddleware(enricher, task_type="shop")]
    )
    agent.invoke(ask(), {"configurable": configurable}, context=context)
    assert store.asked == expected
    for entity_type, entity_id in expected:
        assert f"{entity_type}={entity_id}" in system_text(model.received[0])


def test_a_failing_extra_monitor_never_fails_the_agent(
    enricher: FeatureEnricher, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def record_enrichment(self, result: Any) -> None:
            raise RuntimeError("monitor bug")

    model = ScriptedToolChat()
    out = agent_for(enricher, model, monitor=Broken()).invoke(ask(), context=Ctx(user_id="u_001"))
    assert out["messages"][-1].text == f"markers: {marker(1)}"
    assert "monitor.record_enrichment failed" in caplog.text


def test_sync_agents_from_many_threads_never_cross(enricher: FeatureEnricher) -> None:
    model = ScriptedToolChat()
    agent = agent_for(enricher, model)

    def run(n: int) -> str:
        out = agent.invoke(ask(f"question of {n:03d}"), context=Ctx(user_id=f"u_{n:03d}"))
        return str(out["messages"][-1].text)

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(run, range(64)))
    assert answers == [f"markers: {marker(n)}" for n in range(64)]
    assert all(
        system_text(r) == f"{SYSTEM}\n\n{block(int(r[-1].text.rsplit(' ', 1)[1]))}"
        for r in model.received
    )


def test_unknown_package_attribute_is_named() -> None:
    import asahi_features.langchain as package

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        package.Nope  # noqa: B018


def test_agent_identity_gives_entity_ids_and_enrich_kwargs() -> None:
    from asahi_features.langchain.identity import agent_identity

    who = agent_identity(
        {"user_id": "u1", "task_type": "shop"},
        {"asahi_merchant_id": "m1", "organization_id": 7},
        "general",
        {"shop": ("merchant_id",)},
    )
    assert who.entity_ids == {"merchant": "m1"}
    assert who.enrich_kwargs("q") == {
        "prompt": "q",
        "user_id": "u1",
        "organization_id": "7",
        "task_type": "shop",
        "context": {"merchant_id": "m1"},
    }
    assert not who.missing and agent_identity(None, {}, "general", None).missing


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_handler_ties_agent_enrichments_to_the_root_run_for_quality(
    enricher: FeatureEnricher, mode: str
) -> None:
    monitor = FeatureMonitor()
    handler = FeatureMonitorCallbackHandler(monitor)
    seen: List[Any] = []

    class Events(BaseCallbackHandler):
        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            seen.append((name, data))

    model = ScriptedToolChat(tool="noop")

    @tool
    def noop() -> str:
        """Does nothing."""
        return "done"

    agent = agent_for(enricher, model, tools=[noop])
    run_id = uuid.uuid4()
    config: RunnableConfig = {"callbacks": [handler, Events()], "run_id": run_id}
    if mode == "sync":
        agent.invoke(ask(), config, context=Ctx(user_id="u_051"))
    else:
        await agent.ainvoke(ask(), config, context=Ctx(user_id="u_051"))
    found = handler.enrichments_for_run(run_id)
    assert len(found) == 1 and marker(51) in found[0].feature_context  # one fetch per run
    assert [name for name, _ in seen] == ["asahi_features.enrichment"]
    assert marker(51) not in json.dumps(seen[0][1].model_dump())  # the event has no values
    assert handler.record_run_quality(run_id, 0.9) == 1
    assert monitor.get_stats()["total_enrichments"] == 1


async def test_async_agent_and_tool_never_call_the_blocking_enrich(
    enricher: FeatureEnricher,
) -> None:
    class AsyncOnly:
        """The real enricher, with the blocking enrich forbidden."""

        monitor = None
        config = enricher.config

        def enrich(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the blocking enrich was called under ainvoke")

        async def aenrich(self, *args: Any, **kwargs: Any) -> Any:
            return await enricher.aenrich(*args, **kwargs)

    model = ScriptedToolChat(tool=TOOL)
    only = AsyncOnly()
    agent = create_agent(
        model,
        [create_feature_tool(only)],
        middleware=[FeatureContextMiddleware(only)],
        context_schema=Ctx,
    )
    out = await agent.ainvoke(ask(), context=Ctx(user_id="u_061"))
    assert out["messages"][2].text == block(61)
    assert all(system_text(r) == block(61) for r in model.received)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_direct_model_call_with_handlers_but_no_run_still_answers(
    enricher: FeatureEnricher, mode: str
) -> None:
    """Called outside a graph run (no parent run to announce to): the call goes on."""
    from langchain.agents.middleware import ModelRequest, ModelResponse
    from langchain_core.messages import AIMessage
    from langchain_core.runnables.config import var_child_runnable_config
    from langgraph.runtime import Runtime

    middleware = FeatureContextMiddleware(enricher, refresh="model_call")
    request: ModelRequest[Any] = ModelRequest(
        model=ScriptedToolChat(),
        messages=[HumanMessage("hi")],
        system_message=SystemMessage(SYSTEM),
        runtime=Runtime(context=Ctx(user_id="u_071")),
    )
    seen: List[Any] = []
    response = ModelResponse(result=[AIMessage("ok")])

    def handler(req: Any) -> Any:
        seen.append(req.system_message.text)
        return response

    async def ahandler(req: Any) -> Any:
        return handler(req)

    token = var_child_runnable_config.set({"callbacks": [BaseCallbackHandler()]})
    try:
        if mode == "sync":
            out = middleware.wrap_model_call(request, handler)
        else:
            out = await middleware.awrap_model_call(request, ahandler)
    finally:
        var_child_runnable_config.reset(token)
    assert out is response
    assert seen == [f"{SYSTEM}\n\n{block(71)}"]
    assert request.system_message is not None and request.system_message.text == SYSTEM
