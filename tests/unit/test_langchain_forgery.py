"""The monitor handler records only results a FeatureEnrichmentRunnable produced.

Any step of a chain can return something that looks like an enrichment result: a dict
with the same keys, an ``EnrichmentResult`` built or copied by hand, an
``EnrichedPrompt`` wrapping one. Recording such look-alikes let one step feed the
monitor forged "store failed" outcomes, which paused enrichment for every user while the
store was healthy. These tests put forging steps next to the real runnable and check that
the monitor, the handler's run table and the evaluation helpers see only the real
results.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel

from asahi_features.enricher import FeatureEnricher
from asahi_features.langchain import (
    ENRICHMENT_KEY,
    EnrichedPrompt,
    FeatureEnrichmentRunnable,
    FeatureMonitorCallbackHandler,
    evaluate_runs,
    find_enrichments,
)
from asahi_features.models import EnrichmentReason, EnrichmentResult
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import EnricherConfig, MonitorConfig
from asahi_features.stores.local import LocalFeatureStore

from .langchain_helpers import write_features

CONFIG = EnricherConfig(freshness_threshold_seconds=10**8)
# One failed fetch attempt in the recent window pauses enrichment: a single forged
# "store failed" record that reached the monitor would show at once.
TOUCHY = MonitorConfig(failure_window_min_attempts=1, min_availability_pct=99.0)

pytestmark = pytest.mark.usefixtures("no_tracing_env")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalFeatureStore:
    path = tmp_path_factory.mktemp("forgery") / "features.json"
    return LocalFeatureStore(write_features(Path(path)))


def forged(enrichment_id: Optional[str] = None, task: str = "general") -> EnrichmentResult:
    """A hand-made result that says the store failed."""
    return EnrichmentResult(
        original_prompt="q",
        enriched_prompt="q",
        features_used=[],
        feature_tokens_added=0,
        enrichment_latency_ms=1.0,
        features_available=False,
        enrichment_id=enrichment_id or uuid.uuid4().hex,
        task_type=task,
        reason=EnrichmentReason.STORE_UNAVAILABLE,
        store_attempted=True,
        store_failed=True,
    )


class AlwaysEqual(EnrichmentResult):
    """A result subclass that claims to equal anything."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = None  # type: ignore[assignment]


def _failed_copy(real: EnrichmentResult) -> EnrichmentResult:
    return real.model_copy(
        update={"store_failed": True, "store_attempted": True, "features_available": False}
    )


# Each shape turns a forged result into a step output that looks like an enrichment.
SHAPES: Dict[str, Callable[[EnrichmentResult], Any]] = {
    "dict_python": lambda r: {ENRICHMENT_KEY: r.model_dump()},
    "dict_json": lambda r: {ENRICHMENT_KEY: r.model_dump(mode="json"), "prompt": "q"},
    "object_under_key": lambda r: {ENRICHMENT_KEY: r},
    "bare_object": lambda r: r,
    "enriched_prompt": lambda r: EnrichedPrompt("q", r),
    "output_key_dict": lambda r: {"output": r.model_dump(mode="json")},
    "output_key_object": lambda r: {"output": r},
    "prompt_wrapping_namespace": lambda r: EnrichedPrompt("q", SimpleNamespace(**dict(r))),  # type: ignore[arg-type]
    "always_equal_subclass": lambda r: {ENRICHMENT_KEY: AlwaysEqual(**dict(r))},
}


def _forger(
    shape: str, id_mode: str, task: str, replay: List[EnrichmentResult]
) -> Runnable[Any, Any]:
    make = SHAPES[shape]

    def forge(value: Any) -> Any:
        real = getattr(value, "enrichment", None)
        if id_mode == "copy_of_input" and real is not None:
            fake = _failed_copy(real)  # the real id, forged content
        elif id_mode == "replayed_id" and replay:
            fake = forged(replay[0].enrichment_id, task)  # an earlier real id
        else:
            fake = forged(None, task)
        return make(fake)

    return RunnableLambda(forge, name="Forger")


def _count_genuine(monitor: FeatureMonitor) -> Dict[str, Any]:
    stats = monitor.get_stats()
    return {
        "total": stats["total_enrichments"],
        "failures": stats["feature_store_failures"],
        "paused": stats["availability_paused"],
    }


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    shape=st.sampled_from(sorted(SHAPES)),
    id_mode=st.sampled_from(["fresh", "copy_of_input", "replayed_id"]),
    layout=st.sampled_from(["after", "parallel", "before_parallel"]),
    enricher_records=st.booleans(),
    task=st.sampled_from(["general", "faq", "other"]),
    batch=st.booleans(),
)
def test_forged_outputs_never_reach_the_monitor(
    store: LocalFeatureStore,
    shape: str,
    id_mode: str,
    layout: str,
    enricher_records: bool,
    task: str,
    batch: bool,
) -> None:
    monitor = FeatureMonitor(TOUCHY)
    enricher = FeatureEnricher(store, CONFIG, monitor=monitor if enricher_records else None)
    handler = FeatureMonitorCallbackHandler(monitor)
    runnable = FeatureEnrichmentRunnable(enricher)
    # an earlier genuine result whose id a forger may replay with forged content
    replay: List[EnrichmentResult] = []
    elsewhere = FeatureMonitorCallbackHandler(FeatureMonitor())  # observed: registered
    earlier = runnable.invoke(
        "warm-up", {"callbacks": [elsewhere], "configurable": {"user_id": "u_001"}}
    )
    replay.append(earlier.enrichment)
    forger = _forger(shape, id_mode, task, replay)
    chain: Runnable[Any, Any]
    if layout == "after":
        chain = runnable | forger
    elif layout == "parallel":
        chain = RunnableParallel(real=runnable, fake=forger)
    else:
        chain = RunnableParallel(fake=forger) | RunnableLambda(lambda _: "q") | runnable

    users = ["u_002", "u_003", "u_004"]
    if batch:
        configs: List[Any] = [
            {"callbacks": [handler], "configurable": {"user_id": u}} for u in users
        ]
        chain.batch(["q"] * len(users), configs)
    else:
        for user in users:
            chain.invoke("q", {"callbacks": [handler], "configurable": {"user_id": user}})

    # the warm-up was not observed by the handler: the enricher alone may have recorded it
    expected_total = len(users) + (1 if enricher_records else 0)
    assert _count_genuine(monitor) == {"total": expected_total, "failures": 0, "paused": False}
    assert monitor.should_enrich("general") and monitor.should_enrich(task)
    # every run the handler tracked maps to real, successful enrichments only
    for run in handler.finished_runs:
        for result in handler.enrichments_for_run(run.id):
            assert result.features_available and not result.store_failed
    # evaluation of the same runs attaches scores to real enrichments only
    scored = evaluate_runs(list(handler.finished_runs), [lambda run: 1.0], monitor)
    assert sum(q.recorded for q in scored) == len(users)
    assert all(not e.store_failed for q in scored for e in _results(q.enrichment_ids, handler))
    stats = monitor.get_stats()
    assert stats["total_enrichments"] == expected_total
    assert stats["quality"]["fallback"]["n"] == 0  # no forged fallback got a score


def _results(ids: List[str], handler: FeatureMonitorCallbackHandler) -> List[EnrichmentResult]:
    found: List[EnrichmentResult] = []
    for run in handler.finished_runs:
        found.extend(r for r in handler.enrichments_for_run(run.id) if r.enrichment_id in ids)
    return found


def test_a_forging_step_cannot_pause_enrichment(
    store: LocalFeatureStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The reported case: a step returning 'store failed' look-alikes on every request."""
    monitor = FeatureMonitor(TOUCHY)
    handler = FeatureMonitorCallbackHandler(monitor)
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(store, CONFIG))
    fake: Runnable[Any, Any] = RunnableLambda(
        lambda _: {ENRICHMENT_KEY: forged().model_dump(mode="json")}
    )
    chain = RunnableParallel(real=runnable, fake=fake)
    with caplog.at_level(logging.DEBUG, logger="asahi_features.langchain"):
        for n in range(5):
            root = uuid.uuid4()
            chain.invoke(
                "q",
                {"callbacks": [handler], "run_id": root, "configurable": {"user_id": f"u_{n:03d}"}},
            )
            assert len(handler.enrichments_for_run(root)) == 1
    stats = monitor.get_stats()
    assert stats["total_enrichments"] == 5
    assert stats["successful_enrichments"] == 5
    assert stats["feature_store_failures"] == 0
    assert monitor.decision("general").reason == "enabled"
    assert "no FeatureEnrichmentRunnable produced it" in caplog.text


async def test_async_and_abatch_ignore_forgeries(store: LocalFeatureStore) -> None:
    monitor = FeatureMonitor(TOUCHY)
    handler = FeatureMonitorCallbackHandler(monitor)
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(store, CONFIG), output="dict")
    chain = runnable | RunnableLambda(
        lambda out: {**out, ENRICHMENT_KEY: _failed_copy(out[ENRICHMENT_KEY])}
    )
    await chain.ainvoke({"prompt": "q", "user_id": "u_001"}, {"callbacks": [handler]})
    await chain.abatch(
        [{"prompt": "q", "user_id": "u_002"}, {"prompt": "q", "user_id": "u_003"}],
        {"callbacks": [handler]},
    )
    stats = monitor.get_stats()
    assert stats["total_enrichments"] == 3
    assert stats["feature_store_failures"] == 0 and not stats["availability_paused"]


def test_exact_copies_point_at_the_real_result_and_count_once(store: LocalFeatureStore) -> None:
    """A serialised output read back (an exact copy) is the real result, counted once."""
    monitor = FeatureMonitor(TOUCHY)
    handler = FeatureMonitorCallbackHandler(monitor)
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(store, CONFIG), output="dict")
    chain = runnable | RunnableLambda(
        lambda out: {ENRICHMENT_KEY: out[ENRICHMENT_KEY].model_dump(mode="json")}
    )
    root = uuid.uuid4()
    chain.invoke({"prompt": "q", "user_id": "u_001"}, {"callbacks": [handler], "run_id": root})
    found = handler.enrichments_for_run(root)
    assert len(found) == 1 and found[0].features_available
    assert monitor.get_stats()["total_enrichments"] == 1
    # find_enrichments still reads what outputs say (look-alikes included) ...
    run = handler.finished_runs[0]
    assert len(find_enrichments(run)) == 1
    # ... and evaluation scores the real one
    assert evaluate_runs([run], [lambda r: 0.7], monitor)[0].recorded == 1


def test_results_of_unobserved_runs_are_not_vouched_for(store: LocalFeatureStore) -> None:
    """A result produced with no callback handler, re-emitted later by another step, is
    not known to the registry (nothing observed it being produced)."""
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(store, CONFIG))
    produced = runnable.batch(["q"], {"configurable": {"user_id": "u_001"}})[0]
    monitor = FeatureMonitor(TOUCHY)
    handler = FeatureMonitorCallbackHandler(monitor)
    RunnableLambda(lambda _: produced).invoke("x", {"callbacks": [handler]})
    assert monitor.get_stats()["total_enrichments"] == 0


def test_evaluation_resolves_copies_by_content_not_by_id(store: LocalFeatureStore) -> None:
    """A run tree read back from elsewhere holds serialised outputs only: an exact copy
    of a real result counts (as the real result), a copy with one field changed does not."""
    monitor = FeatureMonitor(TOUCHY)
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(store, CONFIG))
    observer = FeatureMonitorCallbackHandler(FeatureMonitor())
    real = runnable.invoke("q", {"callbacks": [observer], "configurable": {"user_id": "u_001"}})
    exact = SimpleNamespace(
        id="r1", outputs={ENRICHMENT_KEY: real.enrichment.model_dump(mode="json")}, child_runs=[]
    )
    tampered = SimpleNamespace(
        id="r2",
        outputs={ENRICHMENT_KEY: _failed_copy(real.enrichment).model_dump(mode="json")},
        child_runs=[],
    )
    first, second = evaluate_runs([exact, tampered], [lambda run: 0.9], monitor)
    assert first.recorded == 1 and first.enrichment_ids == [real.enrichment.enrichment_id]
    assert second.recorded == 0 and second.enrichment_ids == []
    stats = monitor.get_stats()
    assert stats["total_enrichments"] == 1 and stats["feature_store_failures"] == 0
