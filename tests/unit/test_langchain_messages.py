"""FeatureEnrichmentRunnable with message inputs (prompt values, message lists, single
messages, ``{"messages": [...]}`` states), ``output="context"``, namespaced identity keys
(``RunnableWithMessageHistory``) and the warn-once log of missing identity / unknown task."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.language_models import FakeMessagesListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompt_values import ChatPromptValue, StringPromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder, PromptTemplate
from langchain_core.runnables import (
    ConfigurableFieldSpec,
    RunnableLambda,
    RunnablePassthrough,
)
from langchain_core.runnables.history import RunnableWithMessageHistory

from asahi_features.enricher import FeatureEnricher
from asahi_features.langchain import (
    EnrichedChatPromptValue,
    EnrichedMessages,
    EnrichedStringPromptValue,
    FeatureEnrichmentRunnable,
    FeatureMonitorCallbackHandler,
)
from asahi_features.monitor import FeatureMonitor
from asahi_features.sample_repo import SAMPLE_TASK_FEATURES
from asahi_features.settings import EnricherConfig
from asahi_features.stores.local import LocalFeatureStore

from .langchain_helpers import PROFILE_HEADER, CountingClient, MessageRecorder, marker
from .langchain_helpers import write_features as write_feature_file

CONFIG = EnricherConfig(
    enabled_task_types=["general", "faq", "content_generation"],
    task_features=SAMPLE_TASK_FEATURES,
    freshness_threshold_seconds=10**8,
)

pytestmark = pytest.mark.usefixtures("no_tracing_env")

SYSTEM = "You are a shop assistant."


@pytest.fixture
def client(tmp_path: Path) -> CountingClient:
    return CountingClient(LocalFeatureStore(write_feature_file(tmp_path / "features.json")))


@pytest.fixture
def enricher(client: CountingClient) -> FeatureEnricher:
    return FeatureEnricher(client, CONFIG)


def block(number: int) -> str:
    tier = ["gold", "silver", "bronze"][number % 3]
    return (
        f"{PROFILE_HEADER}\n- Customer tier: {tier}\n- Preference: {marker(number)}\n"
        "- Language: en\n[End context]"
    )


def model(n: int = 1) -> FakeMessagesListChatModel:
    return FakeMessagesListChatModel(responses=[AIMessage(content="ok")] * n)


def cfg(number: int, recorder: MessageRecorder) -> Any:
    return {"configurable": {"user_id": f"u_{number:03d}"}, "callbacks": [recorder]}


def with_system(question: str) -> List[BaseMessage]:
    return [SystemMessage(content=SYSTEM), HumanMessage(content=question)]


# Every input shape, the step that turns the runnable's output into model input, and the
# messages the model must receive (system placement).
Shape = Callable[[str], Any]
SHAPES: Dict[str, tuple[Shape, Callable[[Any], Any]]] = {
    "chat_prompt_value": (lambda q: ChatPromptValue(messages=with_system(q)), lambda o: o),
    "message_list": (with_system, lambda o: o),
    "single_message": (lambda q: HumanMessage(content=q), lambda o: o),
    "messages_state": (lambda q: {"messages": with_system(q)}, lambda o: o["messages"]),
}


def expected(shape: str, number: int, question: str) -> List[BaseMessage]:
    if shape == "single_message":
        return [SystemMessage(content=block(number)), HumanMessage(content=question)]
    return [
        SystemMessage(content=f"{SYSTEM}\n\n{block(number)}"),
        HumanMessage(content=question),
    ]


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_every_shape_sync_async_batch_reaches_the_model(
    enricher: FeatureEnricher, client: CountingClient, shape: str
) -> None:
    make, to_model = SHAPES[shape]
    chain = FeatureEnrichmentRunnable(enricher) | RunnableLambda(to_model) | model(20)

    recorder = MessageRecorder()
    chain.invoke(make("Which plan?"), cfg(1, recorder))
    assert recorder.messages == [expected(shape, 1, "Which plan?")]

    recorder = MessageRecorder()
    await chain.ainvoke(make("Async plan?"), cfg(2, recorder))
    assert recorder.messages == [expected(shape, 2, "Async plan?")]

    for runner in ("batch", "abatch"):
        recorder = MessageRecorder()
        client.batch_calls.clear()
        inputs = [make(f"q{n}") for n in range(3, 6)]
        configs: Any = [cfg(n, recorder) for n in range(3, 6)]
        if runner == "batch":
            chain.batch(inputs, configs)
        else:
            await chain.abatch(inputs, configs)
        got = sorted(recorder.messages, key=lambda msgs: str(msgs[-1].content))
        assert got == [expected(shape, n, f"q{n}") for n in range(3, 6)]
        assert client.batch_calls == [["u_003", "u_004", "u_005"]]  # one backend call


def test_chat_prompt_template_pipe_runnable_pipe_model(enricher: FeatureEnricher) -> None:
    """The reported case: ``ChatPromptTemplate | runnable | chat_model``."""
    template = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    recorder = MessageRecorder()
    chain = template | FeatureEnrichmentRunnable(enricher) | model()
    answer = chain.invoke({"question": "What should I buy?"}, cfg(7, recorder))
    assert answer.content == "ok"
    assert recorder.messages == [expected("message_list", 7, "What should I buy?")]
    out = (template | FeatureEnrichmentRunnable(enricher)).invoke(
        {"question": "Q"}, {"configurable": {"user_id": "u_007"}}
    )
    assert isinstance(out, EnrichedChatPromptValue)
    assert out.enrichment is not None and out.enrichment.features_used


def test_new_system_message_when_none_leads(enricher: FeatureEnricher) -> None:
    runnable = FeatureEnrichmentRunnable(enricher)
    history: List[BaseMessage] = [
        HumanMessage(content="Hi"),
        AIMessage(content="Hello!"),
        HumanMessage(content="Which plan?"),
    ]
    out = runnable.invoke(history, {"configurable": {"user_id": "u_008"}})
    assert isinstance(out, EnrichedMessages)
    assert out == [SystemMessage(content=block(8)), *history]
    # the enricher was asked with the last human message's text
    assert out.enrichment.enriched_prompt.endswith("\n\nWhich plan?")


def test_human_placement_puts_block_in_front_of_last_human_message(
    enricher: FeatureEnricher,
) -> None:
    recorder = MessageRecorder()
    runnable = FeatureEnrichmentRunnable(enricher, placement="human")
    history: List[BaseMessage] = [
        SystemMessage(content=SYSTEM),
        HumanMessage(content="Hi"),
        AIMessage(content="Hello!"),
        HumanMessage(content="Which plan?"),
    ]
    (runnable | model()).invoke(ChatPromptValue(messages=history), cfg(9, recorder))
    assert recorder.messages == [
        [
            SystemMessage(content=SYSTEM),
            HumanMessage(content="Hi"),
            AIMessage(content="Hello!"),
            HumanMessage(content=f"{block(9)}\n\nWhich plan?"),
        ]
    ]


def test_merge_into_content_blocks(enricher: FeatureEnricher) -> None:
    system = SystemMessage(content=[{"type": "text", "text": SYSTEM}])
    out = FeatureEnrichmentRunnable(enricher).invoke(
        [system, HumanMessage(content="Q")], {"configurable": {"user_id": "u_001"}}
    )
    assert out[0].content == [
        {"type": "text", "text": SYSTEM},
        {"type": "text", "text": block(1)},
    ]


def test_string_prompt_value_keeps_its_shape(enricher: FeatureEnricher) -> None:
    recorder = MessageRecorder()
    template = PromptTemplate.from_template("Q: {question}")
    chain = template | FeatureEnrichmentRunnable(enricher) | model()
    chain.invoke({"question": "plan?"}, cfg(10, recorder))
    assert recorder.messages == [[HumanMessage(content=f"{block(10)}\n\nQ: plan?")]]
    out = FeatureEnrichmentRunnable(enricher).invoke(
        StringPromptValue(text="x"), {"configurable": {"user_id": "u_010"}}
    )
    assert isinstance(out, EnrichedStringPromptValue) and out.enrichment is not None


def test_no_identity_leaves_messages_as_they_were(enricher: FeatureEnricher) -> None:
    messages = with_system("Q")
    out = FeatureEnrichmentRunnable(enricher).invoke(messages)
    assert out == messages and out is not messages


@pytest.mark.parametrize(
    "make",
    [
        lambda q: q,
        lambda q: {"prompt": q},
        lambda q: StringPromptValue(text=q),
        *(make for make, _ in SHAPES.values()),
    ],
)
async def test_context_output_is_the_block_alone_for_every_shape(
    enricher: FeatureEnricher, make: Shape
) -> None:
    runnable = FeatureEnrichmentRunnable(enricher, output="context")
    config: Any = {"configurable": {"user_id": "u_011"}}
    assert runnable.invoke(make("Q"), config) == f"{block(11)}\n\n"
    assert await runnable.ainvoke(make("Q"), config) == f"{block(11)}\n\n"
    assert runnable.batch([make("Q"), make("R")], config) == [f"{block(11)}\n\n"] * 2
    assert runnable.invoke(make("Q")) == ""  # nothing added: empty block
    assert runnable.OutputType is str


def test_passthrough_assign_puts_only_the_block_in_the_slot(enricher: FeatureEnricher) -> None:
    template = ChatPromptTemplate.from_messages(
        [("system", SYSTEM + "\n{feature_context}"), ("human", "{prompt}")]
    )
    recorder = MessageRecorder()
    chain = (
        RunnablePassthrough.assign(
            feature_context=FeatureEnrichmentRunnable(enricher, output="context")
        )
        | template
        | model(3)
    )
    chain.invoke({"prompt": "Which plan?"}, cfg(12, recorder))
    chain.batch([{"prompt": "Q2"}], [cfg(13, recorder)])
    assert recorder.messages == [
        [
            SystemMessage(content=f"{SYSTEM}\n{block(12)}\n\n"),
            HumanMessage(content="Which plan?"),
        ],
        [SystemMessage(content=f"{SYSTEM}\n{block(13)}\n\n"), HumanMessage(content="Q2")],
    ]


def test_dict_output_for_messages(enricher: FeatureEnricher) -> None:
    runnable = FeatureEnrichmentRunnable(enricher, output="dict")
    out = runnable.invoke(
        {"messages": with_system("Q"), "user_id": "u_014", "thread": 1},
    )
    assert out["thread"] == 1 and out["feature_context"] == f"{block(14)}\n\n"
    assert out["messages"] == expected("message_list", 14, "Q")
    assert out["enrichment"].features_used
    listed = runnable.invoke(with_system("Q"), {"configurable": {"user_id": "u_014"}})
    assert listed["messages"] == expected("message_list", 14, "Q")


@pytest.mark.parametrize("placement", ["system", "human"])
def test_caller_messages_are_never_mutated(enricher: FeatureEnricher, placement: str) -> None:
    runnable = FeatureEnrichmentRunnable(enricher, placement=placement)  # type: ignore[arg-type]
    messages: List[BaseMessage] = [
        SystemMessage(content=SYSTEM),
        HumanMessage(content=[{"type": "text", "text": "Q"}]),
    ]
    state = {"messages": messages}
    value = ChatPromptValue(messages=messages)
    before = copy.deepcopy(messages)
    config: Any = {"configurable": {"user_id": "u_015"}}
    for shape in (messages, state, value, messages[1]):
        runnable.invoke(shape, config)
        runnable.batch([shape], config)
    assert messages == before and state["messages"] is messages
    assert value.messages == before


def test_bad_messages_state_raises_clear_error(enricher: FeatureEnricher) -> None:
    with pytest.raises(TypeError, match="'messages' list of messages"):
        FeatureEnrichmentRunnable(enricher).invoke({"messages": "nope"})
    with pytest.raises(TypeError, match="a PromptValue, a list of messages"):
        FeatureEnrichmentRunnable(enricher).invoke([1, 2])


def test_monitor_handler_sees_message_outputs(enricher: FeatureEnricher) -> None:
    monitor = FeatureMonitor()
    handler = FeatureMonitorCallbackHandler(monitor)
    template = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    chain = template | FeatureEnrichmentRunnable(enricher) | model()
    chain.invoke({"question": "Q"}, {"callbacks": [handler], "configurable": {"user_id": "u_016"}})
    run_id = handler.latest_root_run_id
    assert run_id is not None and len(handler.enrichments_for_run(run_id)) == 1
    state_chain = FeatureEnrichmentRunnable(enricher)
    state_chain.invoke(
        {"messages": with_system("Q")},
        {"callbacks": [handler], "configurable": {"user_id": "u_016"}},
    )
    assert len(handler.enrichments_for_run(handler.latest_root_run_id)) == 1


def test_input_schema_lists_every_shape(enricher: FeatureEnricher) -> None:
    schema = FeatureEnrichmentRunnable(enricher).get_input_jsonschema()
    refs = {alt.get("$ref", alt.get("type")) for alt in schema["anyOf"]}
    assert {"string", "array", "#/$defs/ChatPromptValueConcrete"} <= refs
    form = schema["$defs"]["FeatureEnrichmentInput"]
    assert form["required"] == ["prompt"] and "user_id" in form["properties"]


# -- identity keys ---------------------------------------------------------------------


def test_namespaced_keys_are_advertised_and_win(enricher: FeatureEnricher) -> None:
    runnable = FeatureEnrichmentRunnable(enricher)
    ids = [spec.id for spec in runnable.config_specs]
    assert ids == ["asahi_user_id", "asahi_organization_id", "asahi_task_type"]
    both = {"configurable": {"asahi_user_id": "u_017", "user_id": "u_018"}}
    assert marker(17) in runnable.invoke("Q", both)  # type: ignore[arg-type]
    plain = {"configurable": {"user_id": "u_018"}}
    assert marker(18) in runnable.invoke("Q", plain)  # type: ignore[arg-type]
    # presence is final: a namespaced None means "no user", not "take the plain key"
    final: Any = {"configurable": {"asahi_user_id": None, "user_id": "u_018"}}
    assert runnable.invoke({"prompt": "Q", "user_id": "u_019"}, final) == "Q"
    task: Any = {"configurable": {"asahi_task_type": "content_generation", "task_type": "general"}}
    out = runnable.invoke({"prompt": "Q", "organization_id": "acme"}, task)
    assert out.enrichment.task_type == "content_generation" and "playful" in out


def test_runnable_with_message_history_and_user_id(enricher: FeatureEnricher) -> None:
    """``RunnableWithMessageHistory`` declares its own ``user_id`` spec: no conflict, and
    the user's features reach the model."""
    stores: Dict[tuple[str, str], InMemoryChatMessageHistory] = {}

    def get_session_history(user_id: str, conversation_id: str) -> InMemoryChatMessageHistory:
        return stores.setdefault((user_id, conversation_id), InMemoryChatMessageHistory())

    prompt = ChatPromptTemplate.from_messages(
        [("system", SYSTEM), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    llm = GenericFakeChatModel(messages=iter([AIMessage(content="A1"), AIMessage(content="A2")]))
    chain = RunnableWithMessageHistory(
        prompt | FeatureEnrichmentRunnable(enricher) | llm,  # type: ignore[arg-type]
        get_session_history,
        input_messages_key="question",
        history_messages_key="history",
        history_factory_config=[
            ConfigurableFieldSpec(
                id="user_id", annotation=str, name="User ID", default="", is_shared=True
            ),
            ConfigurableFieldSpec(
                id="conversation_id",
                annotation=str,
                name="Conversation",
                default="",
                is_shared=True,
            ),
        ],
    )
    ids = {spec.id for spec in chain.config_specs}
    assert {"user_id", "conversation_id", "asahi_user_id"} <= ids
    recorder = MessageRecorder()
    config: Any = {
        "configurable": {"user_id": "u_020", "conversation_id": "c1"},
        "callbacks": [recorder],
    }
    assert chain.invoke({"question": "Which plan?"}, config).content == "A1"
    assert chain.invoke({"question": "And now?"}, config).content == "A2"
    system = ("system", f"{SYSTEM}\n\n{block(20)}")
    assert [[(m.type, m.content) for m in msgs] for msgs in recorder.messages] == [
        [system, ("human", "Which plan?")],
        [system, ("human", "Which plan?"), ("ai", "A1"), ("human", "And now?")],
    ]
    # the saved history holds the conversation, not the block
    saved = stores[("u_020", "c1")].messages
    assert [m.content for m in saved] == ["Which plan?", "A1", "And now?", "A2"]


# -- warn once -------------------------------------------------------------------------


def _records(caplog: pytest.LogCaptureFixture, level: int) -> List[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "asahi_features.langchain" and r.levelno == level
    ]


async def test_missing_identity_and_unknown_task_warn_once_per_cause(
    enricher: FeatureEnricher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asahi_features.langchain")
    runnable = FeatureEnrichmentRunnable(enricher)
    runnable.invoke("Q")
    runnable.invoke("Q")
    runnable.batch(["Q", "R"])
    await runnable.ainvoke([HumanMessage(content="Q")])
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 1 and "no identity for task type 'general'" in warnings[0]
    assert len(_records(caplog, logging.DEBUG)) == 4

    unknown: Any = {"configurable": {"user_id": "u_001", "task_type": "nonexistent"}}
    runnable.invoke("Q", unknown)
    runnable.batch(["Q", "R"], unknown)
    other: Any = {"configurable": {"user_id": "u_001", "task_type": "other"}}
    runnable.invoke("Q", other)
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 3
    assert "'nonexistent' is not in the enricher's enabled_task_types" in warnings[1]
    assert "'other'" in warnings[2]
    # a second runnable warns on its own
    FeatureEnrichmentRunnable(enricher).invoke("Q")
    assert len(_records(caplog, logging.WARNING)) == 4
    # enriched requests log nothing
    caplog.clear()
    runnable.invoke("Q", {"configurable": {"user_id": "u_001"}})
    assert _records(caplog, logging.WARNING) == [] and _records(caplog, logging.DEBUG) == []
