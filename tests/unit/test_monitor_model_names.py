"""``model_name_of`` finds the model's name where LangChain and LlamaIndex really put it:
a LangChain chat model run's callback metadata, a LlamaIndex LLM start event."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from asahi_features.monitor.model_names import model_name_of


def test_plain_values() -> None:
    assert model_name_of("gpt-4o") == "gpt-4o"
    assert model_name_of("  ") is None
    assert model_name_of(None) is None
    assert model_name_of(42) is None
    assert model_name_of({"model": "m-1"}) == "m-1"
    assert model_name_of({"model": ""}) is None
    assert model_name_of({"ls_model_name": "a", "model": "b"}) == "a"


def test_a_failing_property_gives_no_name() -> None:
    class Broken:
        @property
        def model_name(self) -> str:
            raise RuntimeError("boom")

    assert model_name_of(Broken()) is None


def test_langchain_chat_model_run_metadata() -> None:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.language_models import FakeListChatModel
    from langchain_core.messages import HumanMessage

    class NamedFake(FakeListChatModel):
        model_name: str = "small-chat"

    seen: Dict[str, Any] = {}

    class Handler(BaseCallbackHandler):
        def on_chat_model_start(
            self,
            serialized: Dict[str, Any],
            messages: List[List[Any]],
            *,
            metadata: Optional[Dict[str, Any]] = None,
            **kwargs: Any,
        ) -> None:
            seen["metadata"] = metadata
            seen["invocation_params"] = kwargs.get("invocation_params")

    model = NamedFake(responses=["ok"])
    model.invoke([HumanMessage("hi")], config={"callbacks": [Handler()]})
    assert model_name_of(seen["metadata"]) == "small-chat"
    assert model_name_of(model) == "small-chat"
    # a model that names nothing
    assert model_name_of(FakeListChatModel(responses=["ok"])) is None


def test_llama_index_llm_event_and_llm() -> None:
    from llama_index.core.base.llms.types import (
        CompletionResponse,
        CompletionResponseGen,
        LLMMetadata,
    )
    from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events import BaseEvent
    from llama_index.core.instrumentation.events.llm import LLMCompletionStartEvent
    from llama_index.core.llms import CustomLLM, MockLLM
    from llama_index.core.llms.callbacks import llm_completion_callback

    class NamedLLM(CustomLLM):
        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="big-llm")

        @llm_completion_callback()
        def complete(
            self, prompt: str, formatted: bool = False, **kwargs: Any
        ) -> CompletionResponse:
            return CompletionResponse(text="ok")

        @llm_completion_callback()
        def stream_complete(
            self, prompt: str, formatted: bool = False, **kwargs: Any
        ) -> CompletionResponseGen:
            yield CompletionResponse(text="ok", delta="ok")

    events: List[BaseEvent] = []

    class Handler(BaseEventHandler):
        def handle(self, event: BaseEvent, **kwargs: Any) -> None:
            if isinstance(event, LLMCompletionStartEvent):
                events.append(event)

    dispatcher = get_dispatcher()
    handler = Handler()
    dispatcher.add_event_handler(handler)
    try:
        NamedLLM().complete("hi")
        MockLLM().complete("hi")
    finally:
        dispatcher.event_handlers.remove(handler)
    assert [model_name_of(e) for e in events] == ["big-llm", None]  # MockLLM: "unknown"
    assert model_name_of(NamedLLM()) == "big-llm"
    assert model_name_of(MockLLM()) is None
