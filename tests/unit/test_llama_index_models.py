"""The model and token usage of LlamaIndex's LLM calls, recorded with each score."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.evaluation import EvaluationResult
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.llms import CompletionResponseGen, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.memory import Memory

from asahi_features.enricher import FeatureEnricher
from asahi_features.llama_index import (
    FeatureContextPostprocessor,
    FeatureMemoryBlock,
    FeatureMonitorEventHandler,
    feature_context,
    record_evaluation,
)
from asahi_features.llama_index.llm_calls import usage_of
from asahi_features.monitor import FeatureMonitor
from asahi_features.monitor.per_model import LLMCall
from asahi_features.settings import EnricherConfig, MonitorConfig
from asahi_features.stores.local import LocalFeatureStore

from .llama_index_helpers import user_id, write_features

pytestmark = pytest.mark.usefixtures("no_openai_defaults")


class UsageLLM(CustomLLM):
    """A CustomLLM named ``name`` whose every completion reports ``usage`` in ``raw``
    (OpenAI style), or no usage at all when ``usage`` is None."""

    name: str = "small"
    usage: Optional[Dict[str, int]] = None
    _count: List[int] = PrivateAttr(default_factory=list)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=8192, num_output=256, model_name=self.name)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self._count)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        with self._lock:
            self._count.append(1)
        raw = {"id": "x", "usage": dict(self.usage)} if self.usage is not None else None
        return CompletionResponse(text="an answer", raw=raw)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        done = self.complete(prompt, formatted=formatted)

        def gen() -> Iterator[CompletionResponse]:
            yield CompletionResponse(text=done.text, delta=done.text, raw=done.raw)

        return gen()  # type: ignore[return-value]


USAGE = {"prompt_tokens": 100, "completion_tokens": 7}


@pytest.fixture
def store(tmp_path: Path) -> LocalFeatureStore:
    return LocalFeatureStore(write_features(tmp_path / "features.json"))


@pytest.fixture
def index() -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        [Document(text="We sell clothes."), Document(text="We sell shoes too.")],
        embed_model=MockEmbedding(embed_dim=8),
    )


@pytest.fixture
def attached() -> Iterator[List[FeatureMonitorEventHandler]]:
    """Handlers attached to the root dispatcher during the test, detached afterwards."""
    root = get_dispatcher()
    before = list(root.event_handlers)
    made: List[FeatureMonitorEventHandler] = []
    yield made
    root.event_handlers = before


def _handler(monitor: FeatureMonitor, made: List[FeatureMonitorEventHandler]) -> Any:
    handler = FeatureMonitorEventHandler(monitor).attach()
    made.append(handler)
    return handler


def _models(monitor: FeatureMonitor, task: str = "general") -> Dict[str, Any]:
    models: Dict[str, Any] = monitor.get_stats()["task_types"][task]["models"]
    return models


def _engine(index: VectorStoreIndex, llm: CustomLLM, enricher: Any = None, **kw: Any) -> Any:
    posts = [FeatureContextPostprocessor(enricher)] if enricher is not None else []
    return index.as_query_engine(llm=llm, node_postprocessors=posts, **kw)


async def test_sync_and_async_queries_record_the_model_and_tokens_with_the_score(
    index: VectorStoreIndex, store: LocalFeatureStore, attached: List[Any]
) -> None:
    monitor = FeatureMonitor()
    handler = _handler(monitor, attached)
    engine = _engine(index, UsageLLM(name="small", usage=USAGE), FeatureEnricher(store))
    responses = []
    with feature_context(user_id=user_id(1)):
        responses.append(engine.query("sync question"))
    with feature_context(user_id=user_id(2)):
        responses.append(await engine.aquery("async question"))
    with feature_context(user_id=user_id(3)):
        streaming = _engine(
            index, UsageLLM(name="small", usage=USAGE), FeatureEnricher(store), streaming=True
        )
        stream = streaming.query("streamed question")
        assert "an answer" in "".join(stream.response_gen)  # usage arrives at the end
        responses.append(stream)
    results = [EvaluationResult(score=s) for s in (0.9, 0.7, 0.8)]

    record = handler.record_evaluation(results, responses=responses)

    assert record.recorded == 3
    small = _models(monitor)["small"]
    assert small["scored"] == {"with_features": 3, "without_features": 0}
    assert small["quality_with_features"] == pytest.approx(0.8)
    assert small["input_tokens_per_request"]["with_features"] == 100.0
    assert small["output_tokens_per_request"]["with_features"] == 7.0


async def test_several_calls_after_one_enrichment_sum_their_tokens(
    index: VectorStoreIndex, store: LocalFeatureStore, attached: List[Any]
) -> None:
    handler = _handler(FeatureMonitor(), attached)
    for run in ("sync", "async"):
        llm = UsageLLM(name="small", usage=USAGE)
        # accumulate: one LLM call per node (concurrent child tasks when async)
        engine = _engine(
            index, llm, FeatureEnricher(store), response_mode="accumulate", similarity_top_k=2
        )
        with feature_context(user_id=user_id(4)) as request:
            if run == "sync":
                engine.query("many calls")
            else:
                await engine.aquery("many calls")
        assert llm.calls >= 2
        call = handler.llm_calls.get(request.enrichment_ids[0])
        assert call == LLMCall("small", 100 * llm.calls, 7 * llm.calls)


async def test_cheap_with_features_against_expensive_without(
    index: VectorStoreIndex, store: LocalFeatureStore, attached: List[Any]
) -> None:
    monitor = FeatureMonitor(MonitorConfig(holdout_fraction={"general": 0.5}))
    handler = _handler(monitor, attached)
    enricher = FeatureEnricher(store, EnricherConfig(enabled_task_types=["general"]))
    cheap = _engine(index, UsageLLM(name="cheap", usage=USAGE), enricher)
    expensive = _engine(
        index, UsageLLM(name="expensive", usage={"input_tokens": 80, "output_tokens": 20}), enricher
    )
    users = range(40)
    enriched = [i for i in users if not monitor.is_held_out("general", user_id(i))][:4]
    held = [i for i in users if monitor.is_held_out("general", user_id(i))][:4]
    queries: List[str] = []
    scores: List[float] = []
    for i in enriched + held:
        query = f"What does customer {i} like?"
        with feature_context(user_id=user_id(i)):
            if i in enriched:
                cheap.query(query)
            else:
                await expensive.aquery(query)  # held out: enriched with nothing
        queries.append(query)
        scores.append(0.9 if i in enriched else 0.6)

    record = handler.record_evaluation([EvaluationResult(score=s) for s in scores], queries=queries)

    assert record.recorded == 8 and record.unmatched == 0
    models = _models(monitor)
    assert models["cheap"]["scored"] == {"with_features": 4, "without_features": 0}
    assert models["expensive"]["scored"] == {"with_features": 0, "without_features": 4}
    assert models["expensive"]["input_tokens_per_request"]["without_features"] == 80.0
    assert models["expensive"]["output_tokens_per_request"]["without_features"] == 20.0
    comparison = monitor.compare("general", cheap="cheap", expensive="expensive")
    assert comparison.cheap_quality == pytest.approx(0.9)
    assert comparison.expensive_quality == pytest.approx(0.6)
    assert comparison.cheap_samples == 4 and comparison.expensive_samples == 4
    assert comparison.difference == pytest.approx(0.3)


async def test_a_request_without_enrichment_is_never_attributed(
    index: VectorStoreIndex, store: LocalFeatureStore, attached: List[Any]
) -> None:
    handler = _handler(FeatureMonitor(), attached)
    llm = UsageLLM(name="small", usage=USAGE)
    enriched = _engine(index, llm, FeatureEnricher(store))
    plain = _engine(index, UsageLLM(name="other", usage={"prompt_tokens": 5}))
    with feature_context(user_id=user_id(5)) as request:
        enriched.query("first")
    plain.query("second, on the same thread, without an enrichment")
    await plain.aquery("third, async, without an enrichment")
    assert handler.llm_calls.get(request.enrichment_ids[0]) == LLMCall("small", 100, 7)
    assert len(handler.llm_calls) == 1


async def test_function_agent_runs_tie_calls_to_the_runs_enrichment(
    store: LocalFeatureStore, attached: List[Any]
) -> None:
    monitor = FeatureMonitor()
    handler = _handler(monitor, attached)

    def answer(messages: Any, **kwargs: Any) -> ChatMessage:
        return ChatMessage(
            role="assistant",
            content="an answer",
            additional_kwargs={"usage": {"input_tokens": 30, "output_tokens": 4}},
        )

    llm = _NamedFunctionLLM(response_generator=answer, is_chat_model=True)
    agent = FunctionAgent(llm=llm, tools=[], system_prompt="Shop.")
    block = FeatureMemoryBlock(FeatureEnricher(store), user_id=user_id(6))
    await agent.run("What should I buy?", memory=Memory.from_defaults(memory_blocks=[block]))
    assert block.last_result is not None
    eid = block.last_result.enrichment_id
    assert handler.llm_calls.get(eid) == LLMCall("agent-model", 30, 4)

    await FunctionAgent(llm=llm, tools=[]).run("a run without any enrichment")
    assert handler.llm_calls.get(eid) == LLMCall("agent-model", 30, 4)
    assert len(handler.llm_calls) == 1

    handler.record_evaluation(EvaluationResult(score=1.0), enrichment_ids=eid)
    assert _models(monitor)["agent-model"]["input_tokens_per_request"]["with_features"] == 30.0


class _NamedFunctionLLM(MockFunctionCallingLLM):
    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            is_chat_model=True, is_function_calling_model=True, model_name="agent-model"
        )


def test_unknown_usage_still_records_the_model(
    index: VectorStoreIndex, store: LocalFeatureStore, attached: List[Any]
) -> None:
    monitor = FeatureMonitor()
    handler = _handler(monitor, attached)
    engine = _engine(index, UsageLLM(name="quiet", usage=None), FeatureEnricher(store))
    with feature_context(user_id=user_id(7)):
        response = engine.query("no usage")
    handler.record_evaluation(EvaluationResult(score=0.5), responses=response)
    quiet = _models(monitor)["quiet"]
    assert quiet["scored"]["with_features"] == 1
    assert quiet["input_tokens_per_request"]["with_features"] is None
    assert quiet["output_tokens_per_request"]["with_features"] is None


def test_module_function_takes_calls_and_an_explicit_model(
    index: VectorStoreIndex, store: LocalFeatureStore, attached: List[Any]
) -> None:
    handler = _handler(FeatureMonitor(), attached)
    engine = _engine(index, UsageLLM(name="small", usage=USAGE), FeatureEnricher(store))
    with feature_context(user_id=user_id(8)) as request:
        first = engine.query("one")
        second = engine.query("two")
    one, two = request.enrichment_ids
    monitor = FeatureMonitor()
    for eid in (one, two):
        result = handler.enrichment_log.get(eid)
        assert result is not None
        monitor.record_enrichment(result)
    record_evaluation(
        monitor, EvaluationResult(score=0.4), responses=first, calls={one: ("mapped", 3, None)}
    )
    record_evaluation(
        monitor,
        EvaluationResult(score=0.6),
        responses=second,
        calls=handler.llm_calls,
        model="named",
    )
    models = _models(monitor)
    assert models["mapped"]["input_tokens_per_request"]["with_features"] == 3.0
    assert models["mapped"]["output_tokens_per_request"]["with_features"] is None
    assert models["named"]["input_tokens_per_request"]["with_features"] == 100.0
    assert "small" not in models
    with pytest.raises(ValueError):
        record_evaluation(monitor, EvaluationResult(score=0.6), responses=second, model=" ")


class _Exploding:
    @property
    def usage(self) -> Any:
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    "raw",
    [
        _Exploding(),
        {"usage": {"prompt_tokens": -1, "completion_tokens": True}},
        {"usage": "lots"},
        "text",
        42,
    ],
)
def test_odd_payloads_never_raise_and_give_no_tokens(raw: Any) -> None:
    handler = FeatureMonitorEventHandler(FeatureMonitor())
    response = ChatResponse(message=ChatMessage(role="assistant", content="x"), raw=None)
    object.__setattr__(response, "raw", raw)
    assert usage_of(response)[:2] == (None, None)
    for event in (
        LLMChatStartEvent(messages=[], additional_kwargs={}, model_dict={"model_name": 3}),
        LLMCompletionStartEvent(prompt="p", additional_kwargs={}, model_dict={}),
        LLMChatEndEvent(messages=[], response=response),
        LLMChatEndEvent(messages=[], response=None),
        LLMCompletionEndEvent(prompt="p", response=CompletionResponse(text="x", raw=None)),
    ):
        handler.handle(event)
    assert len(handler.llm_calls) == 0


def test_usage_forms() -> None:
    class _Usage:
        prompt_tokens = 12
        completion_tokens = 3

    class _Raw:
        usage = _Usage()

    chat = ChatResponse(
        message=ChatMessage(role="assistant", content="x", additional_kwargs={"prompt_tokens": 9})
    )
    assert usage_of(CompletionResponse(text="x", raw=_Raw()))[:2] == (12, 3)
    assert usage_of(chat)[:2] == (9, None)
    flat = CompletionResponse(text="x", additional_kwargs={"input_tokens": 2, "output_tokens": 1})
    assert usage_of(flat)[:2] == (2, 1)
    assert usage_of(None) == (None, None, None)
