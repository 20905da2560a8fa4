"""Feature-enriched LlamaIndex agents (FunctionAgent, AgentWorkflow), fully offline.

Builds the sample Feast repository (SQLite online store) in a temporary directory and
gives agents the user's context three ways:

1. a FeatureMemoryBlock in the agent's Memory: every LLM call of every turn carries the
   block (refreshed each call, never truncated by the memory's token limit);
2. the identity kept in the workflow Context (set_workflow_identity), which every step and
   tool of the run reads, whenever the handler was created;
3. create_feature_tool: a tool the model can call, whose user never comes from the
   model's arguments.

The monitor is attached only through LlamaIndex instrumentation
(FeatureMonitorEventHandler), and its holdout still holds. Nothing is downloaded: the LLM
is LlamaIndex's MockFunctionCallingLLM with a response generator that records the
messages it receives and answers with the feature lines it saw.

Run: python examples/llamaindex_agent.py  (needs the [feast,llama-index] extras)
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import warnings
from typing import Any, List, Sequence

from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.memory import Memory
from llama_index.core.workflow import Context

from asahi_features.enricher import FeatureEnricher
from asahi_features.guard import GuardedClient
from asahi_features.llama_index import (
    FeatureEnrichmentEvent,
    FeatureMemoryBlock,
    FeatureMonitorEventHandler,
    create_feature_tool,
    feature_context,
    set_workflow_identity,
)
from asahi_features.monitor import FeatureMonitor
from asahi_features.sample_repo import SAMPLE_TASK_FEATURES, build_sample_repo
from asahi_features.settings import EnricherConfig, MonitorConfig
from asahi_features.stores.feast_store import FeastClient

TASK = "product_recommendation"
USER_RE = re.compile(r"Recommendation for u_(\d{4})")


def recording_llm(calls: List[str]) -> MockFunctionCallingLLM:
    """A function-calling LLM double: records every call's messages, never calls a tool."""

    def answer(messages: Sequence[ChatMessage], **_: Any) -> ChatMessage:
        text = "\n".join(f"{m.role.value}: {m.content or ''}" for m in messages)
        calls.append(text)
        lines = [line for line in text.splitlines() if line.startswith("- ")]
        return ChatMessage(role="assistant", content=" | ".join(lines) or "no context")

    return MockFunctionCallingLLM(response_generator=answer, is_chat_model=True)


class EventCollector(BaseEventHandler):
    """Keeps the FeatureEnrichmentEvents (what a trace exporter would serialise)."""

    events: List[FeatureEnrichmentEvent] = []

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, FeatureEnrichmentEvent):
            self.events.append(event)


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")  # LlamaIndex/pydantic deprecation noise

    with tempfile.TemporaryDirectory() as tmp:
        repo = build_sample_repo(tmp, users=40, organizations=5)
        feast_client = FeastClient(str(repo), "asahi")
        feast_client.get_features("u_0001", "user", ["tier"])  # warm-up: loads the registry
        client = GuardedClient(
            feast_client, timeout_ms=2000
        )  # generous: 40 runs at once on a small machine
        enricher = FeatureEnricher(
            client,
            EnricherConfig(
                enabled_task_types=["general", TASK], task_features=SAMPLE_TASK_FEATURES
            ),
        )
        # The monitor is attached ONLY through instrumentation: the holdout still holds.
        monitor = FeatureMonitor(MonitorConfig(holdout_fraction={TASK: 0.3}))
        handler = FeatureMonitorEventHandler(monitor).attach()
        collector = EventCollector(events=[])
        get_dispatcher().add_event_handler(collector)
        users = [f"u_{n:04d}" for n in range(1, 41)]
        first = next(u for u in users if not monitor.is_held_out(TASK, u))

        # 1. FunctionAgent + FeatureMemoryBlock: the agent's own calls carry the block
        calls: List[str] = []
        agent = FunctionAgent(
            llm=recording_llm(calls), tools=[], system_prompt="You are a shop assistant."
        )
        block = FeatureMemoryBlock(enricher, user_id=first, task_type=TASK)
        memory = Memory.from_defaults(session_id=first, memory_blocks=[block], token_limit=2000)
        await agent.run("What should I buy next?", memory=memory)
        await agent.run("And something cheaper?", memory=memory)
        print("=== messages the model received on turn 2 ===")
        print(calls[-1])
        print(
            f"turns whose LLM call carried the block: {sum('[Context from' in c for c in calls)}/2"
        )

        # 2. AgentWorkflow, identity in the workflow Context (one shared block, no identity)
        shared = FeatureMemoryBlock(enricher, task_type=TASK)
        wf_calls: List[str] = []
        shop = FunctionAgent(
            name="shop", description="Shop assistant", llm=recording_llm(wf_calls), tools=[]
        )
        workflow = AgentWorkflow(agents=[shop], root_agent="shop")
        ctx = Context(workflow)
        await set_workflow_identity(ctx, user_id=first)
        await workflow.run(
            "Hello!", ctx=ctx, memory=Memory.from_defaults(session_id="wf", memory_blocks=[shared])
        )
        print("\n=== AgentWorkflow with the identity in its Context ===")
        print("enriched:", shared.last_result is not None and shared.last_result.features_available)

        # 3. the tool: identity from the run's Context, never from the model
        tool = create_feature_tool(enricher, task_type=TASK)
        print("\n=== tool ===")
        print(
            "arguments the model sees:", sorted(tool.metadata.get_parameters_dict()["properties"])
        )
        out = await tool.acall(ctx=ctx, question="what do I like?")
        print("tool answer, first line:", out.content.splitlines()[0])

        # 4. 40 concurrent agent runs over ONE shared agent and block: no crossing
        many: List[str] = []
        crowd = FunctionAgent(llm=recording_llm(many), tools=[])

        async def run(user: str) -> None:
            with feature_context(user_id=user):  # entered BEFORE agent.run(): reaches every step
                mem = Memory.from_defaults(session_id=f"s-{user}", memory_blocks=[shared])
                await crowd.run(f"Recommendation for {user}?", memory=mem)

        await asyncio.gather(*(run(u) for u in users))
        held = {u for u in users if monitor.is_held_out(TASK, u)}
        enriched = set()
        mixing = []
        for call in many:
            match = USER_RE.search(call)
            assert match is not None
            asked = f"u_{match.group(1)}"
            if "[Context from user profile]" in call:
                enriched.add(asked)
            for other in users:
                if other != asked and f"Recommendation for {other}?" in call:
                    mixing.append(asked)
        print(f"\n{len(many)} concurrent runs; runs mixing users: {mixing}")
        print(f"enriched runs: {len(enriched)}; held out by the monitor: {len(held)}")
        print(f"held-out users enriched anyway: {sorted(enriched & held)}")
        print(f"other users left un-enriched: {sorted(set(users) - held - enriched)}")

        # 5. the events carry no raw text by default
        event = collector.events[-1]
        dumped = event.model_dump(mode="json")
        print("\n=== one FeatureEnrichmentEvent, as a trace exporter sees it ===")
        print(
            {
                k: dumped[k]
                for k in ("reason", "task_type", "features_used", "query_str", "feature_context")
            }
        )

        stats = monitor.get_stats()
        print("\n=== monitor (attached through instrumentation only) ===")
        for key in ("total_enrichments", "successful_enrichments", "held_out_enrichments"):
            print(f"{key}: {stats[key]}")
        handler.detach()
        get_dispatcher().event_handlers = [
            h for h in get_dispatcher().event_handlers if h is not collector
        ]
        client.close()


if __name__ == "__main__":
    asyncio.run(main())
