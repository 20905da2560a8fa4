"""FeatureEnrichmentRunnable with real langchain-core objects and fake chat models."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, List

import pytest
from langchain_core.language_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda

from asahi_features.enricher import FeatureEnricher
from asahi_features.errors import FeatureStoreUnavailableError
from asahi_features.guard import GuardedClient
from asahi_features.langchain import ENRICHMENT_KEY, EnrichedPrompt, FeatureEnrichmentRunnable
from asahi_features.models import EnrichmentReason, EnrichmentResult
from asahi_features.monitor import FeatureMonitor
from asahi_features.sample_repo import SAMPLE_TASK_FEATURES
from asahi_features.settings import EnricherConfig
from asahi_features.stores.local import LocalFeatureStore

from .langchain_helpers import (
    PROFILE_HEADER,
    CountingClient,
    MessageRecorder,
    marker,
    write_features,
)

CONFIG = EnricherConfig(
    enabled_task_types=["general", "faq", "content_generation"],
    # the sample map: general also shows preferred_language (the defaults do not)
    task_features=SAMPLE_TASK_FEATURES,
    freshness_threshold_seconds=10**8,
)


# A LANGSMITH_TRACING=true in the environment must not make these tests post runs.
pytestmark = pytest.mark.usefixtures("no_tracing_env")


@pytest.fixture
def client(tmp_path: Path) -> CountingClient:
    return CountingClient(LocalFeatureStore(write_features(tmp_path / "features.json")))


@pytest.fixture
def enricher(client: CountingClient) -> FeatureEnricher:
    return FeatureEnricher(client, CONFIG)


def profile(number: int, prompt: str, tier: str = "") -> str:
    tier = tier or ["gold", "silver", "bronze"][number % 3]
    return (
        f"{PROFILE_HEADER}\n- Customer tier: {tier}\n- Preference: {marker(number)}\n"
        f"- Language: en\n[End context]\n\n{prompt}"
    )


def fake_llm(n: int = 1) -> FakeListChatModel:
    return FakeListChatModel(responses=["ok"] * n)


# -- runnable | llm ---------------------------------------------------------------------


def test_runnable_pipe_llm_sends_exact_enriched_prompt(enricher: FeatureEnricher) -> None:
    recorder = MessageRecorder()
    llm = GenericFakeChatModel(messages=iter([AIMessage(content="Try the trail shoes")]))
    chain = FeatureEnrichmentRunnable(enricher) | llm
    answer = chain.invoke(
        {"prompt": "Recommend a product", "user_id": "u_001"}, config={"callbacks": [recorder]}
    )
    assert answer.content == "Try the trail shoes"
    assert recorder.messages == [[HumanMessage(content=profile(1, "Recommend a product"))]]


def test_prompt_output_is_a_str_carrying_the_result(enricher: FeatureEnricher) -> None:
    out = FeatureEnrichmentRunnable(enricher).invoke(
        "Hello", {"configurable": {"user_id": "u_004"}}
    )
    assert isinstance(out, EnrichedPrompt) and isinstance(out, str)
    assert out == profile(4, "Hello")
    assert out.enrichment.enriched_prompt == out
    assert out.enrichment.features_used == ["tier", "preferences", "preferred_language"]
    copy = pickle.loads(pickle.dumps(out))
    assert copy == out and copy.enrichment.enrichment_id == out.enrichment.enrichment_id


def test_prompt_template_chain_gets_feature_context_slot(enricher: FeatureEnricher) -> None:
    recorder = MessageRecorder()
    template = ChatPromptTemplate.from_messages(
        [
            ("system", "You are a shop assistant.\n{feature_context}"),
            ("human", "{prompt}"),
        ]
    )
    chain = FeatureEnrichmentRunnable(enricher, output="dict") | template | fake_llm()
    chain.invoke(
        {"prompt": "What should I buy?"},
        config={"callbacks": [recorder], "configurable": {"user_id": "u_002"}},
    )
    block = profile(2, "")
    assert recorder.messages == [
        [
            SystemMessage(content=f"You are a shop assistant.\n{block}"),
            HumanMessage(content="What should I buy?"),
        ]
    ]


def test_dict_output_keeps_input_and_adds_keys(enricher: FeatureEnricher) -> None:
    runnable = FeatureEnrichmentRunnable(enricher, output="dict", prompt_key="question")
    out = runnable.invoke({"question": "Q?", "user_id": "u_005", "extra": 1})
    assert out["question"] == "Q?" and out["extra"] == 1 and out["user_id"] == "u_005"
    assert out["enriched_prompt"] == profile(5, "Q?")
    assert out["feature_context"] == profile(5, "")
    assert isinstance(out[ENRICHMENT_KEY], EnrichmentResult)
    assert runnable.OutputType is dict
    from_str = runnable.invoke("Plain", {"configurable": {"user_id": "u_005"}})
    assert from_str["question"] == "Plain"
    assert FeatureEnrichmentRunnable(enricher).OutputType is str


# -- identity ------------------------------------------------------------------------


def test_config_identity_wins_over_input(enricher: FeatureEnricher) -> None:
    runnable = FeatureEnrichmentRunnable(enricher)
    out = runnable.invoke(
        {"prompt": "P", "user_id": "u_010", "task_type": "nonexistent"},
        config={"configurable": {"user_id": "u_011", "task_type": "general"}},
    )
    assert out == profile(11, "P")
    assert marker(10) not in out


def test_task_type_from_input_and_runnable_default(enricher: FeatureEnricher) -> None:
    runnable = FeatureEnrichmentRunnable(enricher, task_type="content_generation")
    out = runnable.invoke({"prompt": "Write a slogan", "organization_id": "acme"})
    assert out.enrichment.task_type == "content_generation"
    assert "Brand voice: playful" in out
    assert out.endswith("Write a slogan")
    faq = runnable.invoke({"prompt": "P", "user_id": 7, "task_type": "summarization"})
    assert faq.enrichment.reason == EnrichmentReason.TASK_NOT_ENABLED
    assert faq == "P"


def test_no_identity_leaves_prompt_unchanged(enricher: FeatureEnricher) -> None:
    out = FeatureEnrichmentRunnable(enricher).invoke("Just a question")
    assert out == "Just a question"
    assert out.enrichment.reason == EnrichmentReason.NO_IDENTITY


def test_config_specs_are_advertised_through_the_chain(enricher: FeatureEnricher) -> None:
    chain = FeatureEnrichmentRunnable(enricher) | fake_llm()
    ids = {spec.id for spec in chain.config_specs}
    assert {"asahi_user_id", "asahi_organization_id", "asahi_task_type"} <= ids


def test_context_is_passed_to_the_enricher(enricher: FeatureEnricher) -> None:
    out = FeatureEnrichmentRunnable(enricher).invoke(
        {"prompt": "P", "user_id": "u_001", "context": {"page": "checkout"}}
    )
    assert "checkout" in out and out.endswith("P")


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (42, "expects a str prompt or a dict"),
        ({"text": "no prompt"}, "is missing"),
        ({"prompt": 3}, "is a int"),
        ({"prompt": "P", "context": "nope"}, "'context' must be a dict"),
    ],
)
def test_bad_input_raises_clear_error(enricher: FeatureEnricher, bad: Any, message: str) -> None:
    recorder = MessageRecorder()
    with pytest.raises(TypeError, match=message):
        FeatureEnrichmentRunnable(enricher).invoke(bad, config={"callbacks": [recorder]})
    assert len(recorder.chain_errors) == 1


def test_needs_an_enricher() -> None:
    with pytest.raises(TypeError, match="needs an enricher"):
        FeatureEnrichmentRunnable()


def test_batch_return_exceptions_semantics(
    enricher: FeatureEnricher, client: CountingClient
) -> None:
    runnable = FeatureEnrichmentRunnable(enricher)
    inputs: List[Any] = [
        {"prompt": "a", "user_id": "u_001"},
        123,
        {"prompt": "c", "user_id": "u_003"},
    ]
    recorder = MessageRecorder()
    outs = runnable.batch(inputs, {"callbacks": [recorder]}, return_exceptions=True)
    assert outs[0] == profile(1, "a") and outs[2] == profile(3, "c")
    assert isinstance(outs[1], TypeError)
    assert len(recorder.chain_ends) == 2 and len(recorder.chain_errors) == 1
    assert client.batch_calls == [["u_001", "u_003"]]
    with pytest.raises(TypeError):
        runnable.batch(inputs)
    assert runnable.batch([]) == []
    assert runnable.batch([123], return_exceptions=True)[0].__class__ is TypeError


# -- batches --------------------------------------------------------------------------


def test_batch_of_50_users_is_one_backend_call_without_crossing(
    enricher: FeatureEnricher, client: CountingClient
) -> None:
    recorder = MessageRecorder()
    chain = FeatureEnrichmentRunnable(enricher) | fake_llm(50)
    configs: List[Any] = [
        {"configurable": {"user_id": f"u_{n:03d}"}, "callbacks": [recorder]} for n in range(50)
    ]
    answers = chain.batch([f"Question {n}" for n in range(50)], configs)
    assert len(answers) == 50
    assert client.batch_calls == [[f"u_{n:03d}" for n in range(50)]]
    assert client.single_calls == []
    assert len(recorder.messages) == 50
    by_prompt = {str(msgs[0].content).rsplit("\n", 1)[-1]: msgs for msgs in recorder.messages}
    for n in range(50):
        msgs = by_prompt[f"Question {n}"]
        assert msgs == [HumanMessage(content=profile(n, f"Question {n}"))]
        text = str(msgs[0].content)
        others = [m for m in range(50) if m != n and marker(m) in text]
        assert others == []
    # every input got its own callback run for the enrichment step
    runs = recorder.runs_named("FeatureEnrichment")
    assert len(runs) == 50 and len({run_id for _, run_id, _ in runs}) == 50
    assert sorted(inputs for _, _, inputs in runs) == sorted(f"Question {n}" for n in range(50))


async def test_ainvoke_and_abatch(enricher: FeatureEnricher, client: CountingClient) -> None:
    recorder = MessageRecorder()
    chain = FeatureEnrichmentRunnable(enricher) | fake_llm(30)
    await chain.ainvoke(
        "Async question", {"configurable": {"user_id": "u_020"}, "callbacks": [recorder]}
    )
    assert recorder.messages == [[HumanMessage(content=profile(20, "Async question"))]]
    runnable = FeatureEnrichmentRunnable(enricher)
    outs = await runnable.abatch(
        [{"prompt": f"q{n}", "user_id": f"u_{n:03d}"} for n in range(25)] + [None],
        {"callbacks": [recorder]},
        return_exceptions=True,
    )
    assert [str(o) for o in outs[:25]] == [profile(n, f"q{n}") for n in range(25)]
    assert isinstance(outs[25], TypeError)
    assert client.batch_calls == [[f"u_{n:03d}" for n in range(25)]]
    assert len(recorder.runs_named("FeatureEnrichment")) == 27
    assert await runnable.abatch([]) == []


async def test_abatch_through_sequence_keeps_single_fetch(
    enricher: FeatureEnricher, client: CountingClient
) -> None:
    chain = FeatureEnrichmentRunnable(enricher) | fake_llm(10)
    configs: List[Any] = [{"configurable": {"user_id": f"u_{n:03d}"}} for n in range(10)]
    await chain.abatch([f"q{n}" for n in range(10)], configs)
    assert len(client.batch_calls) == 1 and len(client.batch_calls[0]) == 10


def test_stream_goes_through_invoke(enricher: FeatureEnricher) -> None:
    runnable = FeatureEnrichmentRunnable(enricher)
    chunks = list(runnable.stream("S", {"configurable": {"user_id": "u_001"}}))
    assert chunks == [profile(1, "S")]


# -- degradation and monitor -----------------------------------------------------------------


def test_store_down_chain_still_answers_with_original_prompt(tmp_path: Path) -> None:
    down = GuardedClient(LocalFeatureStore(tmp_path / "missing.json"), timeout_ms=2000)
    enricher = FeatureEnricher(down, CONFIG)
    recorder = MessageRecorder()
    chain = FeatureEnrichmentRunnable(enricher) | fake_llm(3)
    answer = chain.invoke(
        "Still answer me", {"configurable": {"user_id": "u_001"}, "callbacks": [recorder]}
    )
    assert answer.content == "ok"
    assert recorder.messages == [[HumanMessage(content="Still answer me")]]
    outs = chain.batch(["a", "b"], {"configurable": {"user_id": "u_002"}})
    assert [o.content for o in outs] == ["ok", "ok"]
    enriched = FeatureEnrichmentRunnable(enricher).invoke("x", {"configurable": {"user_id": "u"}})
    assert enriched.enrichment.store_failed and enriched == "x"


def test_raw_client_failure_also_degrades(tmp_path: Path) -> None:
    enricher = FeatureEnricher(LocalFeatureStore(tmp_path / "missing.json"), CONFIG)
    out = FeatureEnrichmentRunnable(enricher).batch(["a"], {"configurable": {"user_id": "u_1"}})
    assert out == ["a"]


def test_guard_without_fallback_fails_per_langchain_semantics(tmp_path: Path) -> None:
    strict = GuardedClient(
        LocalFeatureStore(tmp_path / "missing.json"), timeout_ms=2000, fallback_on_timeout=False
    )
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(strict, CONFIG))
    with pytest.raises(FeatureStoreUnavailableError):
        runnable.invoke("a", {"configurable": {"user_id": "u_1"}})
    outs = runnable.batch(["a", "b"], {"configurable": {"user_id": "u_1"}}, return_exceptions=True)
    assert all(isinstance(o, FeatureStoreUnavailableError) for o in outs)


def test_runnable_monitor_records_each_result_once(enricher: FeatureEnricher) -> None:
    monitor = FeatureMonitor()
    runnable = FeatureEnrichmentRunnable(enricher, monitor=monitor)
    runnable.invoke("a", {"configurable": {"user_id": "u_001"}})
    runnable.batch(["b", "c"], {"configurable": {"user_id": "u_002"}})
    stats = monitor.get_stats()
    assert stats["total_enrichments"] == 3 and stats["successful_enrichments"] == 3


def test_runnable_survives_a_broken_monitor(enricher: FeatureEnricher) -> None:
    class Broken:
        def record_enrichment(self, result: Any) -> None:
            raise RuntimeError("boom")

    out = FeatureEnrichmentRunnable(enricher, monitor=Broken()).invoke("a")
    assert out == "a"


def test_works_inside_a_larger_chain(enricher: FeatureEnricher) -> None:
    recorder = MessageRecorder()
    chain: Runnable[Any, Any] = (
        RunnableLambda(lambda q: {"prompt": q.strip()})
        | FeatureEnrichmentRunnable(enricher)
        | fake_llm()
    )
    chain.invoke("  padded  ", {"configurable": {"user_id": "u_009"}, "callbacks": [recorder]})
    assert recorder.messages == [[HumanMessage(content=profile(9, "padded"))]]


def test_unobserved_batch_skips_runs_but_global_handlers_still_see_each_input(
    enricher: FeatureEnricher, client: CountingClient
) -> None:
    from langchain_core.tracers.context import collect_runs

    runnable = FeatureEnrichmentRunnable(enricher)
    inputs = [{"prompt": f"q{n}", "user_id": f"u_{n:03d}"} for n in range(3)]
    with collect_runs() as collector:
        outs = runnable.batch(inputs)
    assert [str(o) for o in outs] == [profile(n, f"q{n}") for n in range(3)]
    assert [run.inputs for run in collector.traced_runs] == inputs
    assert len(client.batch_calls) == 1


async def test_unobserved_abatch_whole_failure(tmp_path: Path) -> None:
    strict = GuardedClient(
        LocalFeatureStore(tmp_path / "missing.json"), timeout_ms=2000, fallback_on_timeout=False
    )
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(strict, CONFIG))
    cfg = RunnableConfig(configurable={"user_id": "u_1"})
    outs = await runnable.abatch(["a", "b"], cfg, return_exceptions=True)
    assert all(isinstance(o, FeatureStoreUnavailableError) for o in outs)
    with pytest.raises(FeatureStoreUnavailableError):
        await runnable.abatch(["a"], cfg)
    recorder = MessageRecorder()
    with pytest.raises(FeatureStoreUnavailableError):
        await runnable.abatch(
            ["a", "b"], RunnableConfig(configurable=cfg["configurable"], callbacks=[recorder])
        )
    assert len(recorder.chain_errors) == 2


def test_with_config_identity_and_run_name(enricher: FeatureEnricher) -> None:
    recorder = MessageRecorder()
    bound = FeatureEnrichmentRunnable(enricher).with_config(
        configurable={"user_id": "u_006"}, run_name="enrich", callbacks=[recorder]
    )
    assert bound.invoke("x") == profile(6, "x")
    assert [name for name, _, _ in recorder.chain_starts] == ["enrich"]
