"""FeatureMonitorCallbackHandler and the offline evaluation helpers."""

from __future__ import annotations

import sys
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List

import pytest
from langchain_core.language_models import FakeListChatModel
from langchain_core.runnables import RunnableLambda
from langsmith.evaluation import EvaluationResult, EvaluationResults, run_evaluator
from langsmith.schemas import Example

from asahi_features.enricher import FeatureEnricher
from asahi_features.langchain import (
    FeatureEnrichmentRunnable,
    FeatureMonitorCallbackHandler,
    evaluate_offline,
    evaluate_runs,
    find_enrichments,
    offline_langsmith_client,
    record_langsmith_results,
)
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import EnricherConfig, MonitorConfig
from asahi_features.stores.local import LocalFeatureStore

from .langchain_helpers import ContextAwareChat, CountingClient, write_features

CONFIG = EnricherConfig(freshness_threshold_seconds=10**8)
TIERS = ["gold", "silver", "bronze"]

# -- a process-wide socket audit hook, active only inside `no_network()` -------------------

_NET_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname"}
_guard: Dict[str, Any] = {"active": False, "events": []}
_guard_lock = threading.Lock()
_hook_installed = False


def _audit(event: str, args: Any) -> None:
    if _guard["active"] and event in _NET_EVENTS:
        with _guard_lock:
            _guard["events"].append((event, args))
        raise OSError(f"network access attempted during an offline test: {event} {args!r}")


@pytest.fixture
def no_network() -> Iterator[List[Any]]:
    """Fails any socket connect / DNS lookup and records the attempt."""
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)
        _hook_installed = True
    _guard["events"] = []
    _guard["active"] = True
    try:
        yield _guard["events"]
    finally:
        _guard["active"] = False


def test_audit_hook_catches_connections(no_network: List[Any]) -> None:
    import socket

    with socket.socket() as s, pytest.raises(OSError, match="network access attempted"):
        s.connect(("127.0.0.1", 9))
    assert [event for event, _ in no_network] == ["socket.connect"]
    no_network.clear()


# A LANGSMITH_TRACING=true in the environment must not make these tests post runs.
pytestmark = pytest.mark.usefixtures("no_tracing_env")


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> CountingClient:
    return CountingClient(LocalFeatureStore(write_features(tmp_path / "features.json")))


@pytest.fixture
def monitor() -> FeatureMonitor:
    return FeatureMonitor()


def tier_of(user: str) -> str:
    return TIERS[int(user.split("_")[1]) % 3]


# -- the tracer ---------------------------------------------------------------------------


def test_enrichment_tied_to_root_run_and_scored(
    client: CountingClient, monitor: FeatureMonitor
) -> None:
    handler = FeatureMonitorCallbackHandler(monitor)
    chain = FeatureEnrichmentRunnable(FeatureEnricher(client, CONFIG)) | FakeListChatModel(
        responses=["ok"]
    )
    root = uuid.uuid4()
    chain.invoke(
        "Hi", {"callbacks": [handler], "run_id": root, "configurable": {"user_id": "u_001"}}
    )
    found = handler.enrichments_for_run(root)
    assert len(found) == 1 and found[0].features_available
    assert handler.latest_root_run_id == str(root)
    assert monitor.get_stats()["total_enrichments"] == 1
    assert handler.record_run_quality(root, 0.9) == 1
    assert handler.record_run_quality(str(root), 0.1) == 0  # one score per enrichment
    stats = monitor.get_stats()
    assert stats["quality_with_features"] == pytest.approx(0.9)
    assert handler.record_run_quality(uuid.uuid4(), 1.0) == 0
    # the step's own run id also finds it
    step_runs = [r for r in handler.finished_runs[0].child_runs if r.name == "FeatureEnrichment"]
    assert handler.enrichments_for_run(step_runs[0].id) == found


def test_enricher_monitor_and_handler_count_once(client: CountingClient) -> None:
    monitor = FeatureMonitor()
    handler = FeatureMonitorCallbackHandler(monitor)
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(client, CONFIG, monitor=monitor))
    chain = runnable | RunnableLambda(lambda p: p) | RunnableLambda(lambda p: p)
    chain.invoke("x", {"callbacks": [handler], "configurable": {"user_id": "u_002"}})
    assert monitor.get_stats()["total_enrichments"] == 1


def test_handler_when_the_runnable_is_the_root(
    client: CountingClient, monitor: FeatureMonitor
) -> None:
    handler = FeatureMonitorCallbackHandler(monitor, evaluators=[lambda run: 0.5])
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(client, CONFIG), output="dict")
    root = uuid.uuid4()
    runnable.invoke({"prompt": "x", "user_id": "u_003"}, {"callbacks": [handler], "run_id": root})
    assert [e.enrichment_id for e in handler.enrichments_for_run(root)] == list(
        handler.evaluations[0].enrichment_ids
    )
    assert handler.evaluations[0].score == 0.5 and handler.evaluations[0].recorded == 1
    assert monitor.get_stats()["quality_with_features"] == 0.5


def test_batch_gives_each_input_its_root_and_score(
    client: CountingClient, monitor: FeatureMonitor
) -> None:
    def good_if_tailored(run: Any) -> float:
        return 1.0 if "customer" in str(run.outputs["output"].content) else 0.0

    handler = FeatureMonitorCallbackHandler(monitor, evaluators=[good_if_tailored])
    chain = FeatureEnrichmentRunnable(FeatureEnricher(client, CONFIG)) | ContextAwareChat()
    users = [f"u_{n:03d}" for n in range(10)] + [None, None]
    configs: List[Any] = [{"callbacks": [handler], "configurable": {"user_id": u}} for u in users]
    chain.batch([f"q{n}" for n in range(12)], configs)
    assert len(client.batch_calls) == 1
    assert len(handler.evaluations) == 12
    assert len({e.run_id for e in handler.evaluations}) == 12
    assert sum(e.recorded for e in handler.evaluations) == 12
    stats = monitor.get_stats()
    assert stats["quality_with_features"] == 1.0
    assert stats["quality_fallback"] == 0.0


async def test_async_chain_records(client: CountingClient, monitor: FeatureMonitor) -> None:
    handler = FeatureMonitorCallbackHandler(monitor)
    chain = FeatureEnrichmentRunnable(FeatureEnricher(client, CONFIG)) | ContextAwareChat()
    root = uuid.uuid4()
    await chain.ainvoke(
        "q", {"callbacks": [handler], "run_id": root, "configurable": {"user_id": "u_004"}}
    )
    await chain.abatch(["a", "b"], {"callbacks": [handler], "configurable": {"user_id": "u_5"}})
    assert handler.record_run_quality(root, 1.0) == 1
    assert monitor.get_stats()["total_enrichments"] == 3


def test_failed_evaluator_and_broken_monitor_never_fail_the_chain(
    client: CountingClient, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenMonitor:
        def record_enrichment(self, result: Any) -> None:
            raise RuntimeError("monitor down")

        def record_quality(self, eid: str, score: Any) -> bool:
            raise RuntimeError("monitor down")

    def bad_evaluator(run: Any) -> float:
        raise ValueError("evaluator bug")

    handler = FeatureMonitorCallbackHandler(BrokenMonitor(), evaluators=[bad_evaluator])
    chain = FeatureEnrichmentRunnable(FeatureEnricher(client, CONFIG)) | ContextAwareChat()
    root = uuid.uuid4()
    answer = chain.invoke(
        "q", {"callbacks": [handler], "run_id": root, "configurable": {"user_id": "u_001"}}
    )
    assert "customer" in answer.content
    assert handler.evaluations[0].score is None
    assert handler.record_run_quality(root, 1.0) == 0
    assert "evaluator bad_evaluator failed" in caplog.text
    assert "monitor.record_enrichment failed" in caplog.text


def test_tracked_runs_are_bounded(client: CountingClient, monitor: FeatureMonitor) -> None:
    handler = FeatureMonitorCallbackHandler(monitor, max_tracked_runs=4, keep_finished_runs=2)
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(client, CONFIG))
    roots = [uuid.uuid4() for _ in range(5)]
    for root in roots:
        runnable.invoke("q", {"callbacks": [handler], "run_id": root})
    assert handler.enrichments_for_run(roots[0]) == []
    assert len(handler.enrichments_for_run(roots[-1])) == 1
    assert len(handler.finished_runs) == 2
    with pytest.raises(ValueError, match="max_tracked_runs"):
        FeatureMonitorCallbackHandler(monitor, max_tracked_runs=0)


# -- evaluators and scores -------------------------------------------------------------------


def test_evaluate_runs_with_langsmith_run_evaluator(
    client: CountingClient, monitor: FeatureMonitor
) -> None:
    @run_evaluator
    def mentions_tier(run: Any, example: Any) -> Dict[str, Any]:
        expected = example.outputs["tier"]
        return {"key": "tier", "score": expected in str(run.outputs["output"].content)}

    handler = FeatureMonitorCallbackHandler(monitor)
    chain = FeatureEnrichmentRunnable(FeatureEnricher(client, CONFIG)) | ContextAwareChat()
    users = ["u_001", "u_002"]
    for user in users:
        chain.invoke("q", {"callbacks": [handler], "configurable": {"user_id": user}})
    examples = [SimpleNamespace(outputs={"tier": tier_of(u)}) for u in users]
    results = evaluate_runs(
        list(handler.finished_runs), [mentions_tier], monitor, examples=examples, handler=handler
    )
    assert [r.score for r in results] == [1.0, 1.0]
    assert [r.scores for r in results] == [{"tier": 1.0}, {"tier": 1.0}]
    assert monitor.get_stats()["quality_with_features"] == 1.0
    with pytest.raises(ValueError, match="2 runs but 1 examples"):
        evaluate_runs(list(handler.finished_runs), [mentions_tier], monitor, examples=[None])
    with pytest.raises(TypeError, match="RunEvaluator or a callable"):
        evaluate_runs([], [42], monitor)


def test_evaluator_calling_conventions_and_score_shapes(
    client: CountingClient, monitor: FeatureMonitor
) -> None:
    # trace_values=True: the evaluator reads the step's real output (enriched_prompt)
    runnable = FeatureEnrichmentRunnable(
        FeatureEnricher(client, CONFIG), output="dict", trace_values=True
    )
    handler = FeatureMonitorCallbackHandler(monitor)
    runnable.invoke({"prompt": "q", "user_id": "u_001"}, {"callbacks": [handler]})
    run = handler.finished_runs[0]
    example = SimpleNamespace(outputs={"want": "x"})
    seen: Dict[str, Any] = {}

    def langsmith_style(inputs: Any, outputs: Any, reference_outputs: Any) -> bool:
        seen["named"] = (inputs["prompt"], "enriched_prompt" in outputs, reference_outputs)
        return True

    def two_positional(r: Any, ex: Any) -> Dict[str, Any]:
        seen["two"] = ex
        return {"results": [{"key": "a", "score": 0.2}, EvaluationResult(key="b", score=0.4)]}

    def returns_results(run: Any) -> Any:
        return EvaluationResults(results=[EvaluationResult(key="c", score=None, value="x")])

    def returns_list(run: Any) -> List[Any]:
        return [0.6, None, "ignored", {"key": "e", "score": "n/a"}]

    out = evaluate_runs(
        [run],
        [langsmith_style, two_positional, returns_results, returns_list],
        FeatureMonitor(),
        examples=[example],
    )[0]
    assert seen["named"] == ("q", True, {"want": "x"})
    assert seen["two"] is example
    assert out.scores == {"langsmith_style": 1.0, "a": 0.2, "b": 0.4, "returns_list": 0.6}
    assert out.score == pytest.approx((1.0 + 0.2 + 0.4 + 0.6) / 4)
    keyed = evaluate_runs([run], [two_positional], FeatureMonitor(), key="b")[0]
    assert keyed.score == 0.4
    nothing = evaluate_runs([run], [returns_results], FeatureMonitor())[0]
    assert nothing.score is None and nothing.recorded == 0


def test_find_enrichments_reads_serialised_outputs(client: CountingClient) -> None:
    result = FeatureEnricher(client, CONFIG).enrich("q", user_id="u_001")
    child = SimpleNamespace(outputs={"enrichment": result.model_dump(mode="json")}, child_runs=[])
    bad = {"enrichment_id": "x", "enriched_prompt": 3}
    broken = SimpleNamespace(outputs={"enrichment": bad}, child_runs=[])
    root = SimpleNamespace(outputs={"output": "answer"}, child_runs=[child, broken, child])
    found = find_enrichments(root)
    assert [f.enrichment_id for f in found] == [result.enrichment_id]
    assert find_enrichments(SimpleNamespace(outputs=result)) == [result]
    assert find_enrichments(SimpleNamespace()) == []


# -- fully offline evaluation with langsmith.evaluate -------------------------------------------


def _examples(users: List[str]) -> List[Example]:
    return [
        Example(
            id=uuid.uuid4(),
            dataset_id=uuid.uuid4(),
            inputs={"prompt": "Which plan suits me?", "user_id": user},
            outputs={"tier": tier_of(user)},
        )
        for user in users
    ]


def _tier_score(run: Any, example: Any) -> Dict[str, Any]:
    answer = str(run.outputs["output"])
    return {"key": "quality", "score": 1.0 if example.outputs["tier"] in answer else 0.2}


def test_offline_evaluation_enriched_beats_held_out(
    client: CountingClient, no_network: List[Any]
) -> None:
    monitor = FeatureMonitor(MonitorConfig(holdout_fraction={"general": 0.5}, seed=3))
    enricher = FeatureEnricher(client, CONFIG, monitor=monitor)
    chain = (
        FeatureEnrichmentRunnable(enricher)
        | ContextAwareChat()
        | RunnableLambda(lambda m: m.content)
    )
    users = [f"u_{n:03d}" for n in range(40)]
    held = [u for u in users if monitor.is_held_out("general", u)]
    assert 5 <= len(held) <= 35

    data: List[Any] = _examples(users[:20]) + [
        {
            "inputs": {"prompt": "Which plan suits me?", "user_id": u},
            "outputs": {"tier": tier_of(u)},
        }
        for u in users[20:]
    ]
    results = evaluate_offline(chain, data, [_tier_score], monitor, key="quality")

    assert no_network == []
    assert len(results) == 40 and all(r.recorded == 1 for r in results)
    stats = monitor.get_stats()
    assert stats["quality_with_features"] == 1.0
    assert stats["quality_without_features"] == pytest.approx(0.2)
    general = stats["task_types"]["general"]
    assert general["held_out"] == len(held)
    assert general["quality_delta"] == pytest.approx(0.8)


def test_record_results_of_langsmith_evaluate(
    client: CountingClient, no_network: List[Any]
) -> None:
    import langsmith

    monitor = FeatureMonitor(MonitorConfig(holdout_fraction={"general": 0.5}, seed=3))
    handler = FeatureMonitorCallbackHandler(monitor)
    chain = (
        FeatureEnrichmentRunnable(FeatureEnricher(client, CONFIG, monitor=monitor))
        | ContextAwareChat()
    )

    def target(inputs: Dict[str, Any]) -> Dict[str, Any]:
        return {"output": chain.invoke(inputs, {"callbacks": [handler]}).content}

    users = [f"u_{n:03d}" for n in range(12)]
    results = langsmith.evaluate(
        target,
        data=_examples(users),
        evaluators=[_tier_score],
        client=offline_langsmith_client(),
        upload_results=False,
        max_concurrency=0,
    )
    recorded = record_langsmith_results(results, monitor, handler=handler)
    assert no_network == []
    assert len(recorded) == 12 and all(r.recorded == 1 for r in recorded)
    stats = monitor.get_stats()
    assert stats["quality_with_features"] == 1.0
    assert stats["quality_without_features"] == pytest.approx(0.2)
    # rows may also be plain objects
    row = SimpleNamespace(run=SimpleNamespace(id="r", outputs={}), evaluation_results=None)
    assert record_langsmith_results([row], monitor)[0].score is None


def test_evaluate_offline_rejects_dicts_without_inputs(monitor: FeatureMonitor) -> None:
    with pytest.raises(ValueError, match="needs 'inputs'"):
        evaluate_offline(RunnableLambda(lambda x: x), [{"outputs": {}}], [], monitor)
