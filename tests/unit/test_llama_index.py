"""FeatureContextPostprocessor in real LlamaIndex query and chat engines.

Real VectorStoreIndex (MockEmbedding: no download), real engines and postprocessors, a
real LocalFeatureStore and FeatureEnricher; only the LLM is a recording CustomLLM, so
each test asserts on the exact prompt the model received.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, List

import pytest
from llama_index.core import Document, PromptTemplate, VectorStoreIndex
from llama_index.core.chat_engine import CondensePlusContextChatEngine
from llama_index.core.chat_engine.types import ChatMode
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.postprocessor import LongContextReorder, SimilarityPostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from asahi_features.enricher import FeatureEnricher
from asahi_features.errors import FeatureStoreUnavailableError
from asahi_features.guard import GuardedClient
from asahi_features.llama_index import (
    ENRICHMENT_ID_METADATA_KEY,
    FEATURE_CONTEXT_METADATA_KEY,
    FeatureContextPostprocessor,
    current_feature_request,
    enrichment_id_from_response,
    feature_context,
    feature_context_text,
    is_feature_context_node,
)
from asahi_features.models import EnrichmentReason, FeatureVector
from asahi_features.settings import EnricherConfig
from asahi_features.stores.local import LocalFeatureStore

from .llama_index_helpers import RecordingLLM, user_id, user_marker, write_features

DOC_TEXT = "The store sells jackets, shoes and belts. Returns are free for 30 days."
CUTOFF_DROPS_ALL = SimilarityPostprocessor(similarity_cutoff=1.5)  # cosine is <= 1


# Keep LlamaIndex from ever resolving its OpenAI defaults.
pytestmark = pytest.mark.usefixtures("no_openai_defaults")


@pytest.fixture
def enricher(tmp_path: Path) -> FeatureEnricher:
    store = LocalFeatureStore(write_features(tmp_path / "features.json"))
    return FeatureEnricher(store, EnricherConfig(enabled_task_types=["general"]))


@pytest.fixture
def index() -> VectorStoreIndex:
    docs = [Document(text=DOC_TEXT), Document(text="Shipping takes two days.")]
    return VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))


@pytest.fixture
def llm() -> RecordingLLM:
    return RecordingLLM()


@pytest.fixture
def post(enricher: FeatureEnricher) -> FeatureContextPostprocessor:
    return FeatureContextPostprocessor(enricher)


def _block(i: int) -> str:
    return f"- Preference: {user_marker(i)}"


def _engine(index: VectorStoreIndex, llm: RecordingLLM, post: Any, **kw: Any) -> Any:
    return index.as_query_engine(
        llm=llm, node_postprocessors=[SimilarityPostprocessor(similarity_cutoff=0.1), post], **kw
    )


# ------------------------------------------------------------------ query engines


def test_query_puts_the_block_at_the_top_of_the_context(
    index: VectorStoreIndex, llm: RecordingLLM, post: FeatureContextPostprocessor
) -> None:
    engine = _engine(index, llm, post)
    with feature_context(user_id=user_id(7)) as request:
        response = engine.query("What jacket should I buy?")
    (prompt,) = llm.prompts
    assert "[Context from user profile]" in prompt
    assert _block(7) in prompt
    assert "- Customer tier: gold" in prompt
    assert prompt.index("[Context from user profile]") < prompt.index("The store sells")
    assert "What jacket should I buy?" in prompt
    # metadata is excluded from the LLM text: the flag never reaches the prompt
    assert FEATURE_CONTEXT_METADATA_KEY not in prompt
    assert ENRICHMENT_ID_METADATA_KEY not in prompt
    # the request remembers its enrichment, and the response carries the same id
    (result,) = request.results
    assert result.reason is EnrichmentReason.ENRICHED
    assert enrichment_id_from_response(response) == result.enrichment_id
    assert request.last_result is result
    assert request.enrichment_ids == [result.enrichment_id]
    assert current_feature_request() is None


async def test_aquery_uses_the_native_async_path(
    index: VectorStoreIndex, llm: RecordingLLM, enricher: FeatureEnricher
) -> None:
    calls: List[str] = []
    original = enricher.aenrich

    async def spy(prompt: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(prompt)
        return await original(prompt, *args, **kwargs)

    enricher.enrich = None  # type: ignore[method-assign,assignment]  # sync path must not run
    enricher.aenrich = spy  # type: ignore[method-assign]
    post = FeatureContextPostprocessor(enricher)
    engine = _engine(index, llm, post)
    with feature_context(user_id=user_id(3)):
        await engine.aquery("Any news?")
    assert calls == ["Any news?"]
    (prompt,) = llm.prompts
    assert _block(3) in prompt


def test_streaming_query(
    index: VectorStoreIndex, llm: RecordingLLM, post: FeatureContextPostprocessor
) -> None:
    engine = _engine(index, llm, post, streaming=True)
    with feature_context(user_id=user_id(11)):
        response = engine.query("Stream me an answer")
    text = "".join(response.response_gen)
    (prompt,) = llm.prompts
    assert _block(11) in prompt
    assert user_marker(11) in text  # the recording LLM answers with the feature lines
    assert enrichment_id_from_response(response) is not None


def test_the_node_survives_a_similarity_cutoff_placed_before_it(
    index: VectorStoreIndex, llm: RecordingLLM, post: FeatureContextPostprocessor
) -> None:
    engine = index.as_query_engine(llm=llm, node_postprocessors=[CUTOFF_DROPS_ALL, post])
    with feature_context(user_id=user_id(5)):
        response = engine.query("Anything?")
    (prompt,) = llm.prompts
    assert _block(5) in prompt
    assert "The store sells" not in prompt  # the cut-off dropped every retrieved node
    assert len(response.source_nodes) == 1
    assert is_feature_context_node(response.source_nodes[0])
    assert response.source_nodes[0].score == 1.0


def test_a_reorderer_after_it_moves_the_block_which_is_why_it_goes_last(
    enricher: FeatureEnricher,
) -> None:
    post = FeatureContextPostprocessor(enricher, node_score=0.3)
    nodes = [NodeWithScore(node=TextNode(text=f"doc {i}"), score=0.5) for i in range(4)]
    with feature_context(user_id=user_id(1)):
        processed = post.postprocess_nodes(nodes, query_str="q")
    assert is_feature_context_node(processed[0])
    reordered = LongContextReorder().postprocess_nodes(processed, query_str="q")
    assert [is_feature_context_node(n) for n in reordered] == [False, False, True, False, False]
    cut = SimilarityPostprocessor(similarity_cutoff=0.4).postprocess_nodes(processed)
    assert not any(is_feature_context_node(n) for n in cut)  # judged like any node


def test_position_last_and_no_duplicates(enricher: FeatureEnricher) -> None:
    post = FeatureContextPostprocessor(enricher, position="last", node_score=0.9)
    nodes = [NodeWithScore(node=TextNode(text="doc"), score=0.5)]
    with feature_context(user_id=user_id(2)):
        once = post.postprocess_nodes(nodes, query_str="q")
        twice = post.postprocess_nodes(once, query_str="q")
    assert [is_feature_context_node(n) for n in once] == [False, True]
    assert once[-1].score == 0.9
    assert sum(is_feature_context_node(n) for n in twice) == 1


def test_no_identity_adds_no_node_and_logs_why(
    index: VectorStoreIndex,
    llm: RecordingLLM,
    post: FeatureContextPostprocessor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = _engine(index, llm, post)
    with caplog.at_level(logging.DEBUG, logger="asahi_features.llama_index"):
        response = engine.query("Who am I?")
    (prompt,) = llm.prompts
    assert "[Context from" not in prompt
    assert "The store sells" in prompt
    assert enrichment_id_from_response(response) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no identity for task type 'general'" in warnings[0].message
    assert "feature_context(" in warnings[0].message  # says how to fix it
    assert len(post.enrichment_log.ids_for_query("Who am I?")) == 1  # visible, not silent
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="asahi_features.llama_index"):
        engine.query("Who am I, again?")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # once per cause


def test_fixed_identity_fields_and_request_override(
    index: VectorStoreIndex, llm: RecordingLLM, enricher: FeatureEnricher
) -> None:
    post = FeatureContextPostprocessor(enricher, user_id=user_id(9))
    engine = _engine(index, llm, post)
    engine.query("fixed")
    with feature_context(user_id=user_id(4)):
        engine.query("override")
    fixed, override = llm.prompts
    assert _block(9) in fixed
    assert _block(4) in override and user_marker(9) not in override


def test_entity_missing_adds_no_node_but_is_remembered(
    post: FeatureContextPostprocessor, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = [NodeWithScore(node=TextNode(text="doc"), score=0.5)]
    with caplog.at_level(logging.DEBUG, logger="asahi_features.llama_index"):
        with feature_context(user_id="nobody") as request:
            out = post.postprocess_nodes(nodes, query_str="q")
    assert out == nodes
    assert request.last_result is not None
    assert request.last_result.reason is EnrichmentReason.ENTITY_MISSING
    assert post.enrichment_log.ids_for_query("q") == [request.last_result.enrichment_id]
    assert post.enrichment_log.get(request.last_result.enrichment_id) is None  # ids only
    assert any("entity_missing" in r.message for r in caplog.records)


def test_task_type_from_request_and_context_only_requests(enricher: FeatureEnricher) -> None:
    post = FeatureContextPostprocessor(enricher, task_type="not-enabled")
    with feature_context(user_id=user_id(1)) as request:
        post.postprocess_nodes([], query_str="q")
    assert request.results[0].reason is EnrichmentReason.TASK_NOT_ENABLED
    with feature_context(user_id=user_id(1), task_type="general") as request:
        out = post.postprocess_nodes([], query_str="q")
    assert request.results[0].task_type == "general"
    assert len(out) == 1
    with feature_context(context={"channel": "mobile"}) as request:
        post.postprocess_nodes([], query_str="q")
    assert len(request.results) == 1  # context alone is enough to ask the enricher


def test_nested_feature_context_inherits_unset_values() -> None:
    with feature_context(user_id="u", task_type="faq") as outer:
        with feature_context(organization_id="acme") as inner:
            assert current_feature_request() is inner
            assert (inner.user_id, inner.organization_id, inner.task_type) == ("u", "acme", "faq")
        with feature_context(user_id=None) as cleared:
            assert cleared.user_id is None and cleared.task_type == "faq"
        assert current_feature_request() is outer
    assert current_feature_request() is None


# ------------------------------------------------------------------ chat engines


def test_context_chat_engine(
    index: VectorStoreIndex, llm: RecordingLLM, post: FeatureContextPostprocessor
) -> None:
    chat = index.as_chat_engine(chat_mode=ChatMode.CONTEXT, llm=llm, node_postprocessors=[post])
    with feature_context(user_id=user_id(21)) as request:
        chat.chat("Hello, what should I wear?")
        chat.chat("And shoes?")
    first, second = llm.prompts
    assert _block(21) in first and _block(21) in second
    assert len(request.results) == 2  # one enrichment per turn


async def test_context_chat_engine_async_and_streaming(
    index: VectorStoreIndex, llm: RecordingLLM, post: FeatureContextPostprocessor
) -> None:
    chat = index.as_chat_engine(chat_mode=ChatMode.CONTEXT, llm=llm, node_postprocessors=[post])
    with feature_context(user_id=user_id(22)):
        await chat.achat("Hi")
        streamed = chat.stream_chat("Stream please")
        answer = "".join(streamed.response_gen)
    assert all(_block(22) in p for p in llm.prompts) and len(llm.prompts) == 2
    assert user_marker(22) in answer


async def test_condense_plus_context_chat_engine(
    index: VectorStoreIndex, llm: RecordingLLM, post: FeatureContextPostprocessor
) -> None:
    chat = CondensePlusContextChatEngine.from_defaults(
        retriever=index.as_retriever(), llm=llm, node_postprocessors=[CUTOFF_DROPS_ALL, post]
    )
    with feature_context(user_id=user_id(31)):
        chat.chat("What do you recommend?")
        await chat.achat("Tell me more")
    answer_prompts = [p for p in llm.prompts if "[Context from user profile]" in p]
    assert len(answer_prompts) == 2
    assert all(_block(31) in p for p in answer_prompts)


# ------------------------------------------------------------------ concurrency


async def test_fifty_concurrent_aqueries_each_see_only_their_own_user(
    index: VectorStoreIndex, llm: RecordingLLM, post: FeatureContextPostprocessor
) -> None:
    engine = _engine(index, llm, post)

    async def ask(i: int) -> str:
        with feature_context(user_id=user_id(i)) as request:
            await asyncio.sleep(0)  # let the others start
            await engine.aquery(f"question {i:03d}?")
            return request.enrichment_ids[0]

    ids = await asyncio.gather(*(ask(i) for i in range(50)))
    assert len(set(ids)) == 50
    _assert_isolated(llm, range(50))


def test_threads_each_see_only_their_own_user(
    index: VectorStoreIndex, llm: RecordingLLM, post: FeatureContextPostprocessor
) -> None:
    engine = _engine(index, llm, post)

    def ask(i: int) -> None:
        with feature_context(user_id=user_id(i)):
            engine.query(f"question {i:03d}?")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(ask, range(50)))
    _assert_isolated(llm, range(50))


def _assert_isolated(llm: RecordingLLM, users: range) -> None:
    prompts = llm.prompts
    assert len(prompts) == len(users)
    for i in users:
        (prompt,) = llm.prompts_with(f"question {i:03d}?")
        assert _block(i) in prompt
        others = [j for j in users if j != i and user_marker(j) in prompt]
        assert others == [], f"user {i}'s prompt holds features of {others}"


# ------------------------------------------------------------------ store down


class _DownStore:
    """A backend whose store is unreachable."""

    def get_features(self, entity_id: str, entity_type: str, names: List[str]) -> FeatureVector:
        raise FeatureStoreUnavailableError("connection refused (127.0.0.1:1)")

    def get_batch_features(
        self, ids: List[str], entity_type: str, names: List[str]
    ) -> List[FeatureVector]:
        raise FeatureStoreUnavailableError("connection refused (127.0.0.1:1)")

    def health_check(self) -> bool:
        return False


async def test_store_down_the_engine_still_answers(
    index: VectorStoreIndex, llm: RecordingLLM
) -> None:
    guarded = GuardedClient(_DownStore(), timeout_ms=1000)
    try:
        post = FeatureContextPostprocessor(FeatureEnricher(guarded))
        engine = _engine(index, llm, post)
        with feature_context(user_id=user_id(1)) as request:
            sync_response = engine.query("Are you there?")
            async_response = await engine.aquery("Still there?")
    finally:
        guarded.close()
    assert str(sync_response) and str(async_response)
    assert len(llm.prompts) == 2
    assert all("[Context from" not in p and "The store sells" in p for p in llm.prompts)
    assert [r.reason for r in request.results] == [EnrichmentReason.STORE_UNAVAILABLE] * 2
    assert all(r.store_failed for r in request.results)


# ------------------------------------------------------------------ templates, settings


def test_function_mapping_puts_the_block_in_a_custom_template(
    index: VectorStoreIndex, llm: RecordingLLM, enricher: FeatureEnricher
) -> None:
    post = FeatureContextPostprocessor(enricher, inject_node=False)
    template = PromptTemplate(
        "FEATURES:\n{features}\nDOCS:\n{context_str}\nQ: {query_str}\nA: ",
        function_mappings={"features": feature_context_text},
    )
    engine = index.as_query_engine(llm=llm, node_postprocessors=[post], text_qa_template=template)
    with feature_context(user_id=user_id(12)):
        engine.query("templated?")
    engine.query("no identity")
    with_identity, without = llm.prompts
    assert with_identity.startswith("FEATURES:\n[Context from user profile]")
    assert with_identity.count(_block(12)) == 1  # in the template only, not as a node
    assert without.startswith("FEATURES:\n\nDOCS:")
    assert feature_context_text() == ""


def test_settings_serialise_and_clients_stay_private(enricher: FeatureEnricher) -> None:
    post = FeatureContextPostprocessor(enricher, task_type="faq", user_id="u_1", node_score=0.7)
    data = post.to_dict()
    assert data["class_name"] == "FeatureContextPostprocessor"
    assert data["task_type"] == "faq" and data["user_id"] == "u_1" and data["node_score"] == 0.7
    assert "enricher" not in data and "_enricher" not in str(data)
    clone = FeatureContextPostprocessor.from_dict(data, enricher=enricher)
    assert clone.task_type == "faq" and clone.enricher is enricher and clone.monitor is None
    with pytest.raises(TypeError, match="FeatureEnricher"):
        FeatureContextPostprocessor(object())  # type: ignore[arg-type]


def test_query_bundle_none_enriches_an_empty_query(post: FeatureContextPostprocessor) -> None:
    with feature_context(user_id=user_id(1)) as request:
        out = post.postprocess_nodes([], None)
    assert len(out) == 1 and request.results[0].original_prompt == ""
    assert post.postprocess_nodes([], QueryBundle("x")) == []  # no identity outside
    with pytest.raises(ValueError, match="both"):
        post.postprocess_nodes([], query_bundle=QueryBundle("a"), query_str="b")


async def test_async_without_identity_passes_nodes_through(
    post: FeatureContextPostprocessor,
) -> None:
    nodes = [NodeWithScore(node=TextNode(text="doc"), score=0.5)]
    assert await post.apostprocess_nodes(nodes, query_str="q") == nodes
    assert len(post.enrichment_log) == 1  # a no_identity enrichment, visible


def test_the_injected_node_is_a_well_formed_node(post: FeatureContextPostprocessor) -> None:
    with feature_context(user_id=user_id(1)):
        (scored,) = post.postprocess_nodes([], query_str="q")
        (other,) = post.postprocess_nodes([], query_str="q")
    node = scored.node
    assert isinstance(node, TextNode) and isinstance(scored, NodeWithScore)
    assert TextNode.model_validate(node.model_dump()) == node
    assert NodeWithScore(node=node, score=1.0) == scored
    assert scored.model_dump()["score"] == 1.0
    assert node.get_content(metadata_mode=MetadataMode.LLM) == node.text
    assert node.get_content(metadata_mode=MetadataMode.EMBED) == node.text
    assert node.text.startswith("[Context from user profile]") and node.text.endswith("]")
    assert node.hash and node.node_id.startswith("asahi-feature-context-")
    # nothing mutable is shared between injected nodes
    node.metadata["x"] = 1
    node.relationships["y"] = "z"  # type: ignore[index,assignment]
    node.excluded_llm_metadata_keys.append("x")
    assert "x" not in other.node.metadata and other.node.relationships == {}
    assert "x" not in other.node.excluded_llm_metadata_keys
    assert scored.get_score() == 1.0


def test_emit_span_restores_llama_index_span(enricher: FeatureEnricher) -> None:
    from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
    from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler

    root = get_dispatcher()
    before = list(root.span_handlers)
    spans = SimpleSpanHandler()
    root.add_span_handler(spans)
    try:
        quiet = FeatureContextPostprocessor(enricher)
        traced = FeatureContextPostprocessor(enricher, emit_span=True)
        with feature_context(user_id=user_id(1)):
            assert len(quiet.postprocess_nodes([], query_str="q")) == 1
            assert not any("FeatureContextPostprocessor" in s.id_ for s in spans.completed_spans)
            assert len(traced.postprocess_nodes([], query_str="q")) == 1
    finally:
        root.span_handlers = before
    assert any(
        "FeatureContextPostprocessor._postprocess_nodes" in s.id_ for s in spans.completed_spans
    )


async def test_emit_span_async(enricher: FeatureEnricher) -> None:
    traced = FeatureContextPostprocessor(enricher, emit_span=True)
    with feature_context(user_id=user_id(2)) as request:
        out = await traced.apostprocess_nodes([], query_str="q")
    assert len(out) == 1 and len(request.results) == 1
    with pytest.raises(ValueError, match="both"):
        await traced.apostprocess_nodes([], query_bundle=QueryBundle("a"), query_str="b")


def test_a_feature_context_block_cannot_be_entered_twice() -> None:
    block = feature_context(user_id="u")
    with block:
        with pytest.raises(RuntimeError, match="already active"):
            block.__enter__()
    assert current_feature_request() is None
    with block:  # re-usable once exited
        assert current_feature_request() is block
