"""FeatureMemoryBlock, create_feature_tool, FeatureChatEnricher and workflow identity with
real LlamaIndex 0.14 agents and workflows.

Only the LLM is a double: a real ``MockFunctionCallingLLM`` whose every chat call is
recorded, so each test asserts on the exact messages the model received.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, List

import pytest
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent, ReActAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.memory import Memory
from llama_index.core.workflow import (
    Context,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)

from asahi_features.enricher import FeatureEnricher
from asahi_features.llama_index import (
    FeatureChatEnricher,
    FeatureMemoryBlock,
    MissingIdentityError,
    create_feature_tool,
    feature_context,
    set_workflow_identity,
    workflow_identity,
)
from asahi_features.llama_index.tools import NO_PROFILE_TEXT
from asahi_features.models import EnrichmentReason
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import EnricherConfig
from asahi_features.stores.local import LocalFeatureStore

from .llama_index_helpers import recording_chat_llm, user_id, user_marker, write_features

pytestmark = pytest.mark.usefixtures("no_openai_defaults")


@pytest.fixture
def enricher(tmp_path: Path) -> FeatureEnricher:
    store = LocalFeatureStore(write_features(tmp_path / "features.json"))
    return FeatureEnricher(store, EnricherConfig(enabled_task_types=["general"]))


def _memory(block: FeatureMemoryBlock, session: str, **kw: Any) -> Memory:
    return Memory.from_defaults(session_id=session, memory_blocks=[block], **kw)


def _markers(text: str) -> List[int]:
    return [i for i in range(50) if user_marker(i) in text]


async def test_function_agent_every_call_carries_the_block(enricher: FeatureEnricher) -> None:
    llm = recording_chat_llm()
    agent = FunctionAgent(llm=llm, tools=[], system_prompt="You are a shop assistant.")
    monitor = FeatureMonitor()
    block = FeatureMemoryBlock(enricher, monitor=monitor, user_id=user_id(3))
    memory = _memory(block, "s-3")
    first = await agent.run("What should I buy?", memory=memory)
    await agent.run("And for my brother?", memory=memory)
    assert len(llm.calls) == 2
    for call in llm.calls:
        assert _markers(call) == [3]
        assert call.startswith("system: You are a shop assistant.")
    assert user_marker(3) in str(first)
    assert block.last_result is not None and block.last_result.features_available
    assert block.last_result.original_prompt == "And for my brother?"  # asked each turn
    # one enrichment per turn: the agent's read after its answer reuses the turn's block
    assert monitor.get_stats()["total_enrichments"] == 2


async def test_the_token_limit_never_truncates_the_block(enricher: FeatureEnricher) -> None:
    llm = recording_chat_llm()
    agent = FunctionAgent(llm=llm, tools=[])
    memory = _memory(FeatureMemoryBlock(enricher, user_id=user_id(4)), "s-4", token_limit=60)
    for turn in range(4):
        await agent.run(f"turn {turn} " + "words " * 30, memory=memory)
    assert all(_markers(call) == [4] for call in llm.calls)
    with pytest.raises(ValueError, match="priority must be 0"):
        FeatureMemoryBlock(enricher, priority=2)


async def test_react_agent_with_the_block_in_the_user_message(enricher: FeatureEnricher) -> None:
    # ReActAgent replaces the leading system message with its own header: the memory
    # must put its blocks in the user message (insert_method="user").
    llm = recording_chat_llm()
    agent = ReActAgent(llm=llm, tools=[])
    memory = _memory(FeatureMemoryBlock(enricher, user_id=user_id(5)), "s-5", insert_method="user")
    await agent.run("hi", memory=memory)
    (call,) = llm.calls
    assert _markers(call) == [5]
    assert "user: <memory>" in call


async def test_agent_workflow_with_identity_in_the_context_store(
    enricher: FeatureEnricher,
) -> None:
    llm = recording_chat_llm()
    agent = FunctionAgent(name="shop", description="Shop assistant", llm=llm, tools=[])
    workflow = AgentWorkflow(agents=[agent], root_agent="shop")
    shared = FeatureMemoryBlock(enricher)  # no identity of its own: reads the run's
    ctx = Context(workflow)
    await set_workflow_identity(ctx, user_id=user_id(6))
    await workflow.run("hello", ctx=ctx, memory=_memory(shared, "s-6"))
    assert llm.calls and all(_markers(c) == [6] for c in llm.calls)
    assert shared.last_result is not None and shared.last_result.features_available
    stored = await workflow_identity(ctx)
    assert stored is not None and stored.user_id == user_id(6)


async def test_fifty_concurrent_agent_runs_never_cross(enricher: FeatureEnricher) -> None:
    llm = recording_chat_llm()
    agent = FunctionAgent(llm=llm, tools=[], system_prompt="Shop.")
    shared = FeatureMemoryBlock(enricher)  # one block object for every run

    async def one(i: int) -> str:
        with feature_context(user_id=user_id(i)):
            response = await agent.run(f"question {i}", memory=_memory(shared, f"c-{i}"))
        return str(response)

    answers = await asyncio.gather(*(one(i) for i in range(50)))
    assert len(llm.calls) == 50
    by_question = {}
    for call in llm.calls:
        (question,) = [i for i in range(50) if f"user: question {i}" in call.splitlines()]
        by_question[question] = call
    assert sorted(by_question) == list(range(50))
    crossings = [i for i, call in by_question.items() if _markers(call) != [i]]
    assert crossings == []  # zero crossings AND every run enriched
    assert all(_markers(a) == [i] for i, a in enumerate(answers))


async def test_a_handler_created_before_feature_context_errors_clearly_or_is_bound(
    enricher: FeatureEnricher, caplog: pytest.LogCaptureFixture
) -> None:
    llm = recording_chat_llm()
    agent = FunctionAgent(llm=llm, tools=[])
    block = FeatureMemoryBlock(enricher, on_missing_identity="raise")
    handler = agent.run("hey", memory=_memory(block, "s-late"))  # created outside
    with feature_context(user_id=user_id(7)):
        with pytest.raises(Exception) as info:
            await handler
    error = info.value
    while not isinstance(error, MissingIdentityError) and error.__cause__ is not None:
        error = error.__cause__  # type: ignore[assignment]
    assert isinstance(error, MissingIdentityError)
    assert "before `with feature_context(...)`" in str(error)
    assert "set_workflow_identity" in str(error)
    assert llm.calls == []  # nothing went out un-enriched

    # the fix: bind the block's identity to the run it did not reach
    bound = FeatureMemoryBlock(enricher, on_missing_identity="raise")
    handler = agent.run("hey", memory=_memory(bound, "s-late-bound"))  # created outside
    with feature_context(user_id=user_id(7)) as request:
        await request.bind(handler)
        await handler
    assert _markers(llm.calls[-1]) == [7]
    assert bound.last_result is not None and bound.last_result.features_available

    # or the workflow Context store directly, whenever the handler was created
    ok = FeatureMemoryBlock(enricher, on_missing_identity="raise")
    ctx = Context(agent)
    handler = agent.run("hey", ctx=ctx, memory=_memory(ok, "s-late-2"))
    await set_workflow_identity(ctx, user_id=user_id(7))
    await handler
    assert _markers(llm.calls[-1]) == [7]


class _Asked(Event):
    question: str


class _TwoSteps(Workflow):
    """A custom two-step workflow: each step asks the enricher through the memory block."""

    def __init__(self, block: FeatureMemoryBlock, **kw: Any) -> None:
        super().__init__(**kw)
        self.block = block
        self.seen: List[str] = []

    @step
    async def first(self, ctx: Context, ev: StartEvent) -> _Asked:
        self.seen.append(await self.block.aget([ChatMessage(role="user", content=ev.q)]))
        return _Asked(question=ev.q)

    @step
    async def second(self, ctx: Context, ev: _Asked) -> StopEvent:
        self.seen.append(await self.block.aget([ChatMessage(role="user", content=ev.question)]))
        return StopEvent(result="done")


async def test_a_custom_two_step_workflow_keeps_identity(enricher: FeatureEnricher) -> None:
    via_context = _TwoSteps(FeatureMemoryBlock(enricher, on_missing_identity="raise"))
    ctx = Context(via_context)
    await set_workflow_identity(ctx, user_id=user_id(8))
    await via_context.run(ctx=ctx, q="q")
    assert [_markers(s) for s in via_context.seen] == [[8], [8]]

    via_block = _TwoSteps(FeatureMemoryBlock(enricher, on_missing_identity="raise"))
    with feature_context(user_id=user_id(9)):  # entered before run(): reaches both steps
        await via_block.run(q="q")
    assert [_markers(s) for s in via_block.seen] == [[9], [9]]


async def test_the_tool_reads_identity_from_the_context_never_the_model(
    enricher: FeatureEnricher,
) -> None:
    tool = create_feature_tool(enricher, name="profile")
    schema = tool.metadata.get_parameters_dict()
    assert set(schema["properties"]) == {"question"}  # no identity argument at all
    agent = FunctionAgent(llm=recording_chat_llm(), tools=[tool])
    ctx = Context(agent)
    await set_workflow_identity(ctx, user_id=user_id(10))
    out = await tool.acall(ctx=ctx, question="what plan am I on?")
    assert _markers(out.content) == [10]
    with pytest.raises(TypeError, match="user_id"):  # the model cannot name a user
        await tool.acall(ctx=ctx, question="x", user_id=user_id(11))
    with feature_context(user_id=user_id(12)):
        plain = await tool.acall(ctx=Context(agent), question="q")
    assert _markers(plain.content) == [12]
    assert (await tool.acall(ctx=Context(agent))).content == NO_PROFILE_TEXT
    with pytest.raises(ValueError, match="identifier"):
        create_feature_tool(enricher, name="not a name")
    with pytest.raises(ValueError, match="on_missing_identity"):
        create_feature_tool(enricher, on_missing_identity="loud")


async def test_an_agent_calls_the_tool_and_gets_the_users_block(
    enricher: FeatureEnricher,
) -> None:
    from llama_index.core.llms.mock import MockFunctionCallingLLM

    llm = MockFunctionCallingLLM(is_chat_model=True)  # calls every tool it is given
    agent = FunctionAgent(llm=llm, tools=[create_feature_tool(enricher)])
    ctx = Context(agent)
    await set_workflow_identity(ctx, user_id=user_id(13))
    handler = agent.run("who am I?", ctx=ctx)
    outputs = []
    async for event in handler.stream_events():
        if type(event).__name__ == "ToolCallResult":
            outputs.append(event.tool_output.content)
    await handler
    assert outputs and all(_markers(o) == [13] for o in outputs)


def test_simple_chat_engine_is_enriched_through_memory(enricher: FeatureEnricher) -> None:
    llm = recording_chat_llm()
    memory = _memory(FeatureMemoryBlock(enricher, user_id=user_id(14)), "chat-14")
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory)
    engine.chat("hello")
    engine.chat("again")
    assert len(llm.calls) == 2 and all(_markers(c) == [14] for c in llm.calls)


async def test_plain_chat_calls_sync_and_async(enricher: FeatureEnricher) -> None:
    llm = recording_chat_llm()
    chat = FeatureChatEnricher(enricher)
    original = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="hi"),
    ]
    with feature_context(user_id=user_id(15)):
        llm.chat(chat.messages(original))
    llm.chat(await chat.amessages(original, user_id=user_id(16)))
    no_system = await chat.amessages([ChatMessage(role="user", content="x")], user_id=user_id(17))
    assert [_markers(c) for c in llm.calls] == [[15], [16]]
    assert llm.calls[0].startswith("system: [Context from user profile]")
    assert "Be brief." in llm.calls[0]
    assert original[0].content == "Be brief."  # the caller's messages are untouched
    assert no_system[0].role.value == "system" and _markers(no_system[0].content or "") == [17]
    with feature_context(user_id=user_id(15)):  # explicit ids win, never mixed
        messages, result = chat.enrich(original, user_id=user_id(18))
    assert result.reason is EnrichmentReason.ENRICHED
    assert _markers(messages[0].content or "") == [18]
    with pytest.raises(TypeError, match="allowed"):
        chat.enrich(original, customer="x")


async def test_missing_identity_warns_once_per_cause_and_is_visible(
    enricher: FeatureEnricher, caplog: pytest.LogCaptureFixture
) -> None:
    block = FeatureMemoryBlock(enricher)
    with caplog.at_level(logging.DEBUG, logger="asahi_features"):
        assert await block.aget([ChatMessage(role="user", content="a")]) == ""
        assert await block.aget([ChatMessage(role="user", content="b")]) == ""
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "feature_context" in warnings[0].message
    assert block.last_result is not None
    assert block.last_result.reason is EnrichmentReason.NO_IDENTITY
    block.on_missing_identity = "ignore"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="asahi_features"):
        await FeatureMemoryBlock(enricher, on_missing_identity="ignore").aget([])
    assert not caplog.records
    with pytest.raises(ValueError):
        block.on_missing_identity = "loud"  # type: ignore[assignment]


async def test_a_sync_chat_inside_a_running_loop_keeps_the_identity(
    enricher: FeatureEnricher,
) -> None:
    # SimpleChatEngine.chat reads the Memory through LlamaIndex's asyncio_run, which runs
    # it in a worker thread when a loop is already running: the identity must follow.
    llm = recording_chat_llm()
    shared = FeatureMemoryBlock(enricher, on_missing_identity="raise")
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=_memory(shared, "in-loop"))
    with feature_context(user_id=user_id(19)):
        engine.chat("hello from a notebook")
    (call,) = llm.calls
    assert _markers(call) == [19]
