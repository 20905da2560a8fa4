"""LangChain agent example: feature context for ``create_agent`` from the sample Feast repo.

Runs fully offline: it builds the sample Feast repository (SQLite) in a temporary
directory (or uses ``--repo DIR``) and answers with a small deterministic tool-calling
fake chat model. To use a real model, name its class and arguments::

    ASAHI_CHAT_MODEL=langchain_openai:ChatOpenAI \\
    ASAHI_CHAT_MODEL_KWARGS='{"model": "gpt-4o-mini"}' \\
    python examples/langchain_agent.py

It shows the middleware (the block in the system prompt of every model call, never in
the saved conversation), the features tool (identity injected, never the model's), a
two-turn conversation on a checkpointer, a burst of concurrent runs, and the LangSmith
anonymizer.

Usage: python examples/langchain_agent.py [--repo DIR] [--users 200] [--burst 50]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver

from asahi_features import EnricherConfig, FeastClient, FeatureEnricher, GuardedClient
from asahi_features.langchain import (
    FeatureContextMiddleware,
    create_feature_tool,
    feature_anonymizer,
)
from asahi_features.sample_repo import SAMPLE_TASK_FEATURES, build_sample_repo, user_id

TIER = re.compile(r"Customer tier: (\w+)")


@dataclass
class UserContext:
    """What the application passes per request (``agent.invoke(..., context=...)``)."""

    user_id: Optional[str] = None


class ToolCallingFakeChat(BaseChatModel):
    """Deterministic stand-in for an LLM: asks the features tool once per question, then
    tailors the answer when it sees the customer's tier."""

    ask_tool: bool = True

    @property
    def _llm_type(self) -> str:
        return "tool-calling-fake"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(
        self, messages: List[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        if self.ask_tool and not isinstance(messages[-1], ToolMessage):
            call = {"name": "get_user_context", "args": {}, "id": uuid.uuid4().hex}
            reply = AIMessage(content="", tool_calls=[call])
        else:
            found = TIER.search("\n".join(m.text for m in messages))
            tier = found.group(1) if found else None
            reply = AIMessage(
                content=f"As a {tier} customer, the {tier} plan add-ons suit you best."
                if tier
                else "Our most popular plan suits most customers."
            )
        return ChatResult(generations=[ChatGeneration(message=reply)])


def chat_model(ask_tool: bool) -> BaseChatModel:
    """The model named by ASAHI_CHAT_MODEL (``module:Class``), else the fake one."""
    spec = os.environ.get("ASAHI_CHAT_MODEL")
    if not spec:
        return ToolCallingFakeChat(ask_tool=ask_tool)
    module_name, _, class_name = spec.partition(":")
    if not class_name:
        raise SystemExit(f"ASAHI_CHAT_MODEL must look like 'module:Class', got {spec!r}")
    kwargs: Dict[str, Any] = json.loads(os.environ.get("ASAHI_CHAT_MODEL_KWARGS", "{}"))
    model: BaseChatModel = getattr(importlib.import_module(module_name), class_name)(**kwargs)
    return model


async def burst(agent: Any, users: int) -> int:
    """``users`` concurrent runs, one per user; how many answers name a tier."""

    async def one(n: int) -> bool:
        out = await agent.ainvoke(
            {"messages": [HumanMessage("Which plan should I pick?")]},
            {"configurable": {"thread_id": f"burst-{n}"}},
            context=UserContext(user_id=user_id(n)),
        )
        return "customer" in out["messages"][-1].text

    return sum(await asyncio.gather(*(one(n) for n in range(1, users + 1))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path, help="an existing sample repo (else a temp one)")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()

    repo = args.repo or build_sample_repo(
        Path(tempfile.mkdtemp(prefix="asahi_agent_")) / "repo", users=args.users
    )
    feast_client = FeastClient(str(repo), "asahi")
    feast_client.get_features(user_id(1), "user", ["tier"])  # warm up: registry, SQLite
    enricher = FeatureEnricher(
        GuardedClient(feast_client, timeout_ms=500),
        EnricherConfig(task_features=SAMPLE_TASK_FEATURES),
    )
    middleware = FeatureContextMiddleware(enricher)

    # 1. Middleware: the block joins the agent's system prompt for each model call.
    saver = InMemorySaver()
    agent: Any = create_agent(
        chat_model(ask_tool=False),
        [],
        system_prompt="You are a helpful sales assistant.",
        middleware=[middleware],
        context_schema=UserContext,
        checkpointer=saver,
    )
    thread: Any = {"configurable": {"thread_id": "demo"}}
    for question in ("Which plan should I pick?", "And for my team?"):
        out = agent.invoke(
            {"messages": [HumanMessage(question)]}, thread, context=UserContext(user_id(1))
        )
        print(f"middleware: {question:27} ->", out["messages"][-1].text)
    saved = agent.get_state(thread).values["messages"]
    copies = sum("[Context from" in m.text for m in saved)
    print("saved messages            ->", len(saved))
    print("context copies in history ->", copies)

    # 2. The features tool: the model calls it, the identity comes from the context.
    tool_agent: Any = create_agent(
        chat_model(ask_tool=True), [create_feature_tool(enricher)], context_schema=UserContext
    )
    out = tool_agent.invoke(
        {"messages": [HumanMessage("What do you know about me?")]},
        context=UserContext(user_id=user_id(2)),
    )
    tool_message = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    print("tool artifact reason      ->", tool_message.artifact.reason.value)
    print("tool agent answer         ->", out["messages"][-1].text)

    # 3. A burst of concurrent runs, each for its own user (async path: aenrich).
    print("burst enriched            ->", f"{asyncio.run(burst(agent, args.burst))}/{args.burst}")

    # 4. Traces: the anonymizer masks the block in whatever LangSmith would receive.
    anonymize = feature_anonymizer()
    payload = {"system": middleware_prompt(enricher)}
    print("anonymized system prompt  ->", json.dumps(anonymize(payload)["system"]))


def middleware_prompt(enricher: FeatureEnricher) -> str:
    """What the model's system message looks like for user 1 (for the anonymizer demo)."""
    result = enricher.enrich("", user_id=user_id(1))
    return f"You are a helpful sales assistant.\n\n{result.feature_context.strip()}"


if __name__ == "__main__":
    main()
