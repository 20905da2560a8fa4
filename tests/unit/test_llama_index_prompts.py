"""Prompt-level injection: the feature block in every LLM call of every response mode,
never a citable source, never silently dropped by a postprocessor placed after it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document, PromptTemplate, VectorStoreIndex
from llama_index.core.llms import LLMMetadata
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.query_engine import CitationQueryEngine
from llama_index.core.response_synthesizers import ResponseMode, get_response_synthesizer

from asahi_features.enricher import FeatureEnricher
from asahi_features.llama_index import (
    FeatureContextPostprocessor,
    FeaturePromptTemplate,
    apply_feature_prompts,
    feature_context,
    is_feature_context_node,
)
from asahi_features.settings import EnricherConfig
from asahi_features.stores.local import LocalFeatureStore

from .llama_index_helpers import (
    HashingEmbedding,
    RecordingLLM,
    recording_chat_llm,
    user_id,
    user_marker,
    write_features,
)

pytestmark = pytest.mark.usefixtures("no_openai_defaults")

TOPICS = ["jackets", "shoes", "belts", "returns", "shipping", "warranty"]


class SmallWindowLLM(RecordingLLM):
    """A recording LLM with a small context window, so every response mode needs
    several calls for six chunks."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=700, num_output=40, model_name="small")


@pytest.fixture
def enricher(tmp_path: Path) -> FeatureEnricher:
    store = LocalFeatureStore(write_features(tmp_path / "features.json"))
    return FeatureEnricher(store, EnricherConfig(enabled_task_types=["general"]))


@pytest.fixture
def index() -> VectorStoreIndex:
    docs = [
        Document(text=f"About {topic}: " + " ".join(f"{topic} fact {n}." for n in range(25)))
        for topic in TOPICS
    ]
    return VectorStoreIndex.from_documents(docs, embed_model=HashingEmbedding())


HEADER = "[Context from user profile]"


def _count(text: str, i: int) -> int:
    """How many blocks of user ``i`` the prompt carries (the recording LLM repeats the
    feature lines in its answers, which refine prompts quote: count block headers)."""
    return text.count(HEADER) if user_marker(i) in text else 0


MODES = [
    ResponseMode.REFINE,
    ResponseMode.COMPACT,
    ResponseMode.TREE_SUMMARIZE,
    ResponseMode.ACCUMULATE,
    ResponseMode.COMPACT_ACCUMULATE,
    ResponseMode.SIMPLE_SUMMARIZE,
]


@pytest.mark.parametrize("mode", MODES, ids=[m.value for m in MODES])
async def test_every_response_mode_carries_the_block_in_every_call(
    index: VectorStoreIndex, enricher: FeatureEnricher, mode: ResponseMode
) -> None:
    llm = SmallWindowLLM()
    post = FeatureContextPostprocessor(enricher, mode="prompt")
    engine = apply_feature_prompts(
        index.as_query_engine(
            llm=llm, similarity_top_k=6, response_mode=mode, node_postprocessors=[post]
        )
    )
    with feature_context(user_id=user_id(1)):
        response = engine.query("Tell me everything")
    with feature_context(user_id=user_id(2)):
        await engine.aquery("Tell me everything, async")
    prompts = llm.prompts
    sync_calls = [p for p in prompts if _count(p, 1)]
    async_calls = [p for p in prompts if _count(p, 2)]
    assert len(sync_calls) + len(async_calls) == len(prompts)  # no call without it
    assert all(_count(p, 1) == 1 and _count(p, 2) == 0 for p in sync_calls)  # once, own user
    assert all(_count(p, 2) == 1 and _count(p, 1) == 0 for p in async_calls)
    if mode is not ResponseMode.SIMPLE_SUMMARIZE:
        assert len(sync_calls) >= 2 and len(async_calls) >= 2  # several calls, all carry it
    assert not any(is_feature_context_node(n) for n in response.source_nodes)
    engine.query("Nobody asked")  # outside feature_context: no stale block
    assert all(HEADER not in p for p in llm.prompts[len(prompts) :])


def test_node_mode_reaches_one_call_of_n_unless_the_prompts_are_wrapped(
    index: VectorStoreIndex, enricher: FeatureEnricher
) -> None:
    plain_llm, wrapped_llm = SmallWindowLLM(), SmallWindowLLM()
    post = FeatureContextPostprocessor(enricher)  # mode="node"
    kwargs: dict[str, Any] = {"similarity_top_k": 6, "response_mode": ResponseMode.REFINE}
    plain = index.as_query_engine(llm=plain_llm, node_postprocessors=[post], **kwargs)
    wrapped = apply_feature_prompts(
        index.as_query_engine(llm=wrapped_llm, node_postprocessors=[post], **kwargs)
    )
    with feature_context(user_id=user_id(3)):
        plain.query("q")
        wrapped.query("q")
    assert sum(_count(p, 3) for p in plain_llm.prompts) == 1 < len(plain_llm.prompts)
    assert all(_count(p, 3) == 1 for p in wrapped_llm.prompts)  # never twice


async def test_a_wrapped_engine_switches_a_default_postprocessor_to_prompt_mode(
    index: VectorStoreIndex, enricher: FeatureEnricher
) -> None:
    wrapped_llm, plain_llm = SmallWindowLLM(), SmallWindowLLM()
    post = FeatureContextPostprocessor(enricher)  # mode="auto"
    kwargs: dict[str, Any] = {"similarity_top_k": 6, "response_mode": ResponseMode.REFINE}
    wrapped = apply_feature_prompts(
        index.as_query_engine(llm=wrapped_llm, node_postprocessors=[post], **kwargs)
    )
    plain = index.as_query_engine(llm=plain_llm, node_postprocessors=[post], **kwargs)
    with feature_context(user_id=user_id(12)):
        answer = wrapped.query("everything")
        async_answer = await wrapped.aquery("everything, async")
        plain_answer = plain.query("everything")
    assert len(wrapped_llm.prompts) >= 4
    assert all(_count(p, 12) == 1 for p in wrapped_llm.prompts)  # every call, once
    shown = [*answer.source_nodes, *async_answer.source_nodes]
    assert shown and not any(is_feature_context_node(n) for n in shown)
    assert user_marker(12) not in answer.get_formatted_sources(length=10_000)
    # the caller's postprocessor is unchanged: a node where the prompts are not wrapped
    assert post.mode == "auto"
    assert sum(map(is_feature_context_node, plain_answer.source_nodes)) == 1
    # the engine's copy shares the postprocessor's log (evaluations still map)
    assert len(post.enrichment_log.ids_for_query("everything, async")) == 1


def test_citation_query_engine_never_cites_the_block(
    index: VectorStoreIndex, enricher: FeatureEnricher
) -> None:
    llm = RecordingLLM()
    post = FeatureContextPostprocessor(enricher, mode="prompt")
    engine = apply_feature_prompts(
        CitationQueryEngine.from_args(
            index, llm=llm, similarity_top_k=3, node_postprocessors=[post]
        )
    )
    with feature_context(user_id=user_id(4)):
        response = engine.query("What about jackets?")
    (prompt,) = llm.prompts
    assert _count(prompt, 4) == 1
    sources = prompt.split("Source 1:", 1)[1]
    assert user_marker(4) not in sources  # the block is before the sources, not one
    assert not any(is_feature_context_node(n) for n in response.source_nodes)
    assert user_marker(4) not in response.get_formatted_sources(length=10_000)


def test_a_cutoff_after_the_postprocessor_cannot_drop_the_block_silently(
    index: VectorStoreIndex, enricher: FeatureEnricher, caplog: pytest.LogCaptureFixture
) -> None:
    llm = RecordingLLM()
    post = FeatureContextPostprocessor(enricher, node_score=0.0, mode="node")
    drops_it = SimilarityPostprocessor(similarity_cutoff=0.01)
    engine = index.as_query_engine(llm=llm, node_postprocessors=[post, drops_it])
    with caplog.at_level(logging.WARNING, logger="asahi_features.llama_index"):
        apply_feature_prompts(engine)
        apply_feature_prompts(engine)  # idempotent: nothing wrapped twice
    warnings = [r.message for r in caplog.records if "not the last" in r.message]
    assert len(warnings) == 2 and "SimilarityPostprocessor" in warnings[0]
    with feature_context(user_id=user_id(5)):
        response = engine.query("jackets")
    assert not any(is_feature_context_node(n) for n in response.source_nodes)  # dropped...
    (prompt,) = llm.prompts
    assert _count(prompt, 5) == 1  # ...and re-injected by the prompt


DROPPED = "dropped before the answer"


def _dropped_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and DROPPED in r.getMessage()
    ]


async def test_a_dropped_node_without_wrapped_prompts_is_warned_about_once(
    index: VectorStoreIndex, enricher: FeatureEnricher, caplog: pytest.LogCaptureFixture
) -> None:
    llm = RecordingLLM()
    post = FeatureContextPostprocessor(enricher, node_score=0.0)
    drops_it = SimilarityPostprocessor(similarity_cutoff=0.01)
    engine = index.as_query_engine(llm=llm, node_postprocessors=[post, drops_it])
    with caplog.at_level(logging.DEBUG, logger="asahi_features.llama_index"):
        with feature_context(user_id=user_id(7)):
            first = engine.query("jackets")
        with feature_context(user_id=user_id(8)):
            second = await engine.aquery("shoes")  # async path: noticed too, logged at DEBUG
    assert not any(user_marker(7) in p or user_marker(8) in p for p in llm.prompts)
    assert not any(is_feature_context_node(n) for n in [*first.source_nodes, *second.source_nodes])
    (warning,) = _dropped_warnings(caplog)  # once per postprocessor, DEBUG after
    assert "Put FeatureContextPostprocessor last" in warning and "apply_feature_prompts" in warning
    assert user_marker(7) not in caplog.text and "jackets" not in warning  # no text logged
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "dropped again" in r.msg]
    assert len(debug) == 1
    other = FeatureContextPostprocessor(enricher, node_score=0.0)  # a new one warns again
    engine = index.as_query_engine(llm=llm, node_postprocessors=[other, drops_it])
    with caplog.at_level(logging.WARNING, logger="asahi_features.llama_index"):
        with feature_context(user_id=user_id(9)):
            engine.query("belts")
    assert len(_dropped_warnings(caplog)) == 2


async def test_a_kept_or_re_injected_node_is_not_warned_about(
    index: VectorStoreIndex, enricher: FeatureEnricher, caplog: pytest.LogCaptureFixture
) -> None:
    llm = RecordingLLM()
    post = FeatureContextPostprocessor(enricher, node_score=0.0, mode="node")
    cutoff = SimilarityPostprocessor(similarity_cutoff=0.01)
    last = index.as_query_engine(llm=llm, node_postprocessors=[cutoff, post])
    wrapped = apply_feature_prompts(
        index.as_query_engine(llm=llm, node_postprocessors=[post, cutoff])
    )
    with caplog.at_level(logging.DEBUG, logger="asahi_features.llama_index"):
        for i, engine in ((10, last), (11, wrapped)):
            with feature_context(user_id=user_id(i)):
                engine.query("jackets")
                await engine.aquery("jackets, async")
        engine.query("nobody: no node, nothing to check")
    assert [sum(user_marker(i) in p for p in llm.prompts) for i in (10, 11)] == [2, 2]
    assert not _dropped_warnings(caplog)
    assert not [r for r in caplog.records if "dropped again" in r.getMessage()]


def test_chat_models_get_the_block_in_the_system_message(
    index: VectorStoreIndex, enricher: FeatureEnricher
) -> None:
    llm = recording_chat_llm()
    post = FeatureContextPostprocessor(enricher, mode="prompt")
    engine = apply_feature_prompts(index.as_query_engine(llm=llm, node_postprocessors=[post]))
    with feature_context(user_id=user_id(6)):
        engine.query("jackets?")
    (call,) = llm.calls
    assert call.startswith("system: [Context from user profile]")
    assert call.count(user_marker(6)) == 1


def test_feature_prompt_template_wraps_any_template_and_validates() -> None:
    synth = get_response_synthesizer(llm=RecordingLLM(), response_mode=ResponseMode.REFINE)
    apply_feature_prompts(synth)
    prompts = synth.get_prompts()
    assert prompts and all(isinstance(p, FeaturePromptTemplate) for p in prompts.values())
    template = FeaturePromptTemplate(PromptTemplate("Q: {q}"))
    assert template.get_template() == "Q: {q}"
    assert template.partial_format(q="x").format() == "Q: x"  # no enrichment: unchanged
    assert template.format_messages(q="y")[0].content == "Q: y"
    with pytest.raises(TypeError, match="BasePromptTemplate"):
        FeaturePromptTemplate("Q: {q}")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="PromptMixin"):
        apply_feature_prompts(object())


def test_streaming_prompt_mode_carries_the_block(
    index: VectorStoreIndex, enricher: FeatureEnricher
) -> None:
    llm = SmallWindowLLM()
    post = FeatureContextPostprocessor(enricher, mode="prompt")
    engine = apply_feature_prompts(
        index.as_query_engine(
            llm=llm, similarity_top_k=6, streaming=True, node_postprocessors=[post]
        )
    )
    with feature_context(user_id=user_id(7)):
        response = engine.query("Tell me everything")
        text = "".join(response.response_gen)  # type: ignore[union-attr,arg-type]
    assert text
    assert llm.prompts and all(_count(p, 7) == 1 for p in llm.prompts)


def test_model_name_of_llms_agents_and_engines(index: VectorStoreIndex) -> None:
    from llama_index.core.agent.workflow import FunctionAgent

    from asahi_features.llama_index import model_name

    llm = SmallWindowLLM()
    assert model_name(llm) == "small"
    assert model_name(index.as_query_engine(llm=llm)) == "small"
    assert model_name(get_response_synthesizer(llm=llm)) == "small"
    assert model_name(FunctionAgent(llm=llm, tools=[])) == "small"
    assert model_name(object()) is None
    assert model_name(None) is None
