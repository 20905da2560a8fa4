"""Scores land on the model that answered (issue 20 item 3, LangChain): the handler and
the offline evaluation helpers read the model and its token usage from the run tree."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, List, Optional

import pytest
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langchain_core.tracers.context import collect_runs

from asahi_features.enricher import FeatureEnricher
from asahi_features.langchain import (
    FeatureContextMiddleware,
    FeatureEnrichmentRunnable,
    FeatureMonitorCallbackHandler,
    evaluate_runs,
    model_call_of_run,
)
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import EnricherConfig, ModelPrice, MonitorConfig
from asahi_features.stores.local import LocalFeatureStore

from .langchain_helpers import CountingClient, ScriptedToolChat, write_features
from .test_langchain_agent import Ctx, ask, create_agent

CONFIG = EnricherConfig(freshness_threshold_seconds=10**8)
MONITOR = MonitorConfig(
    min_samples=2,
    model_prices={
        "small-chat": ModelPrice(input_per_1k_tokens=0.1, output_per_1k_tokens=0.4),
        "big-chat": ModelPrice(input_per_1k_tokens=2.0, output_per_1k_tokens=8.0),
    },
)


class UsageChat(ScriptedToolChat):
    """A named chat model that reports ``input_tokens`` / ``output_tokens`` per call."""

    model: str = "small-chat"
    input_tokens: int = 100
    output_tokens: int = 7

    def _generate(
        self,
        messages: List[BaseMessage],
        stop: Optional[List[str]] = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = super()._generate(messages, stop, run_manager, **kwargs)
        message = result.generations[0].message
        assert isinstance(message, AIMessage)
        message.usage_metadata = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }
        return result


@pytest.fixture
def enricher(tmp_path: Path) -> FeatureEnricher:
    store = CountingClient(LocalFeatureStore(write_features(tmp_path / "features.json")))
    return FeatureEnricher(store, CONFIG)


def _models(monitor: FeatureMonitor, task: str = "general") -> dict[str, Any]:
    return dict(monitor.get_stats()["task_types"][task].get("models", {}))


def test_a_chain_score_counts_for_its_chat_model_with_its_usage(
    enricher: FeatureEnricher,
) -> None:
    monitor = FeatureMonitor(MONITOR)
    handler = FeatureMonitorCallbackHandler(monitor)
    chain = FeatureEnrichmentRunnable(enricher) | UsageChat(input_tokens=120, output_tokens=9)
    root = uuid.uuid4()
    chain.invoke(
        "Which plan?",
        {"callbacks": [handler], "run_id": root, "configurable": {"user_id": "u_001"}},
    )
    call = handler.model_call_for_run(root)
    assert call is not None and call.as_kwargs() == {
        "model": "small-chat",
        "input_tokens": 120,
        "output_tokens": 9,
    }
    assert handler.record_run_quality(root, 0.9) == 1
    small = _models(monitor)["small-chat"]
    assert small["quality"]["with_features"]["n"] == 1
    assert small["quality"]["with_features"]["mean"] == pytest.approx(0.9)
    assert small["input_tokens_per_request"]["with_features"] == 120.0
    assert small["output_tokens_per_request"]["with_features"] == 9.0


def test_the_step_run_id_finds_the_root_runs_model(enricher: FeatureEnricher) -> None:
    monitor = FeatureMonitor(MONITOR)
    handler = FeatureMonitorCallbackHandler(monitor)
    chain = FeatureEnrichmentRunnable(enricher) | UsageChat()
    chain.invoke("Hi", {"callbacks": [handler], "configurable": {"user_id": "u_002"}})
    run = handler.finished_runs[0]
    step = next(r for r in run.child_runs if r.name == "FeatureEnrichment")
    call = handler.model_call_for_run(step.id)
    assert call is not None and call.model == "small-chat"
    assert handler.record_run_quality(step.id, 0.7) == 1
    assert _models(monitor)["small-chat"]["quality"]["with_features"]["n"] == 1


async def test_async_chain_scores_count_for_the_model(enricher: FeatureEnricher) -> None:
    monitor = FeatureMonitor(MONITOR)
    handler = FeatureMonitorCallbackHandler(monitor)
    chain = FeatureEnrichmentRunnable(enricher) | UsageChat(model="big-chat")
    roots = [uuid.uuid4() for _ in range(3)]
    for n, root in enumerate(roots):
        await chain.ainvoke(
            "Hi", {"callbacks": [handler], "run_id": root, "configurable": {"user_id": f"u_00{n}"}}
        )
    assert [handler.record_run_quality(root, 0.5) for root in roots] == [1, 1, 1]
    assert _models(monitor)["big-chat"]["quality"]["with_features"]["n"] == 3


def test_an_agent_run_is_the_last_calls_model_with_every_calls_tokens(
    enricher: FeatureEnricher,
) -> None:
    @tool
    def opening_hours() -> str:
        """When the shop is open."""
        return "9 to 5"

    monitor = FeatureMonitor(MONITOR)
    handler = FeatureMonitorCallbackHandler(monitor)
    model = UsageChat(tool="opening_hours", input_tokens=50, output_tokens=5)
    agent = create_agent(
        model,
        [opening_hours],
        middleware=[FeatureContextMiddleware(enricher)],
        context_schema=Ctx,
    )
    root = uuid.uuid4()
    agent.invoke(
        ask(), context=Ctx(user_id="u_003"), config={"callbacks": [handler], "run_id": root}
    )
    assert len(model.received) == 2  # the tool call, then the answer
    call = handler.model_call_for_run(root)
    assert call is not None
    assert call.as_kwargs() == {"model": "small-chat", "input_tokens": 100, "output_tokens": 10}
    assert handler.record_run_quality(root, 0.8) == 1
    small = _models(monitor)["small-chat"]
    assert small["input_tokens_per_request"]["with_features"] == 100.0


def test_two_models_in_one_run_the_last_one_answered() -> None:
    first = UsageChat(model="small-chat", input_tokens=10, output_tokens=1)
    second = UsageChat(model="big-chat", input_tokens=30, output_tokens=3)
    chain = first | RunnableLambda(lambda m: m.content) | second
    with collect_runs() as runs:
        chain.invoke("Hi")
    root = next(r for r in runs.traced_runs if r.parent_run_id is None)
    call = model_call_of_run(root)
    assert call is not None and call.as_kwargs() == {
        "model": "big-chat",
        "input_tokens": 40,
        "output_tokens": 4,
    }


def test_a_model_that_names_nothing_still_gives_the_task_its_score(
    enricher: FeatureEnricher,
) -> None:
    monitor = FeatureMonitor(MONITOR)
    handler = FeatureMonitorCallbackHandler(monitor)
    chain = FeatureEnrichmentRunnable(enricher) | FakeListChatModel(responses=["ok"])
    root = uuid.uuid4()
    chain.invoke(
        "Hi", {"callbacks": [handler], "run_id": root, "configurable": {"user_id": "u_004"}}
    )
    assert handler.model_call_for_run(root) is None
    assert handler.record_run_quality(root, 0.6) == 1
    stats = monitor.get_stats()
    assert stats["quality_with_features"] == pytest.approx(0.6)
    assert "models" not in stats["task_types"]["general"]
    # naming it by hand works
    other = uuid.uuid4()
    chain.invoke(
        "Hi", {"callbacks": [handler], "run_id": other, "configurable": {"user_id": "u_005"}}
    )
    assert handler.record_run_quality(other, 0.4, model="fake-list", input_tokens=12) == 1
    fake = _models(monitor)["fake-list"]
    assert fake["quality"]["with_features"]["n"] == 1
    assert fake["input_tokens_per_request"]["with_features"] == 12.0


def test_evaluate_runs_compares_cheap_with_features_to_expensive_without(
    enricher: FeatureEnricher,
) -> None:
    monitor = FeatureMonitor(MONITOR)
    handler = FeatureMonitorCallbackHandler(monitor, keep_finished_runs=20)
    cheap = FeatureEnrichmentRunnable(enricher) | UsageChat(model="small-chat")
    expensive = FeatureEnrichmentRunnable(enricher) | UsageChat(
        model="big-chat", input_tokens=80, output_tokens=7
    )
    for n in range(4):  # known users: enriched
        cheap.invoke("Hi", {"callbacks": [handler], "configurable": {"user_id": f"u_01{n}"}})
    for n in range(4):  # users the store does not know: no features
        expensive.invoke("Hi", {"callbacks": [handler], "configurable": {"user_id": f"nobody_{n}"}})

    def score(run: Any) -> float:
        return 0.9 if "small-chat" in str(run.child_runs[-1].extra) else 0.85

    qualities = evaluate_runs(list(handler.finished_runs), [score], monitor)
    assert [q.model for q in qualities] == ["small-chat"] * 4 + ["big-chat"] * 4
    assert all(q.recorded == 1 for q in qualities)
    report = monitor.compare("general", cheap="small-chat", expensive="big-chat")
    assert report.cheap_quality == pytest.approx(0.9)
    assert report.expensive_quality == pytest.approx(0.85)
    assert report.cheap_cost_per_request == pytest.approx((100 * 0.1 + 7 * 0.4) / 1000)
    assert report.expensive_cost_per_request == pytest.approx((80 * 2.0 + 7 * 8.0) / 1000)
