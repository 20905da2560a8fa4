"""The batch fast paths: request tuples, the line cache and enricher look-alikes."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Sequence

import pytest

from asahi_features.enricher import EnrichmentTuple, FeatureEnricher
from asahi_features.langchain import FeatureEnrichmentRunnable
from asahi_features.models import EnrichmentRequest, EnrichmentResult, FeatureVector
from asahi_features.settings import EnricherConfig
from asahi_features.stores.local import LocalFeatureStore

from .langchain_helpers import CountingClient, marker, write_features

CONFIG = EnricherConfig(enabled_task_types=["general"], freshness_threshold_seconds=10**8)


@pytest.fixture
def enricher(tmp_path: Path) -> FeatureEnricher:
    client = CountingClient(LocalFeatureStore(write_features(tmp_path / "features.json")))
    return FeatureEnricher(client, CONFIG)


class LookAlike:
    """Not a FeatureEnricher: only the public batch methods."""

    def __init__(self, inner: FeatureEnricher) -> None:
        self.inner = inner
        self.seen: List[EnrichmentRequest] = []

    def enrich_batch(self, requests: Sequence[EnrichmentRequest]) -> List[EnrichmentResult]:
        self.seen.extend(requests)
        return self.inner.enrich_batch(requests)

    async def aenrich_batch(self, requests: Sequence[EnrichmentRequest]) -> List[EnrichmentResult]:
        self.seen.extend(requests)
        return await self.inner.aenrich_batch(requests)


def test_enrich_requests_equals_enrich_batch(enricher: FeatureEnricher) -> None:
    ids = ["u_001", "u_002", "u_001", "nobody"]
    tuples = [EnrichmentTuple("Hi", uid, None, "general", None) for uid in ids]
    fast = enricher.enrich_requests(tuples)
    slow = enricher.enrich_batch([EnrichmentRequest(prompt="Hi", user_id=u) for u in ids])
    assert [r.enriched_prompt for r in fast] == [r.enriched_prompt for r in slow]
    assert marker(1) in fast[0].enriched_prompt and marker(1) in fast[2].enriched_prompt
    assert not fast[3].features_available


async def test_runnable_batch_with_an_enricher_look_alike(enricher: FeatureEnricher) -> None:
    alike = LookAlike(enricher)
    runnable = FeatureEnrichmentRunnable(alike)
    inputs: List[Any] = [{"prompt": "Hi", "user_id": "u_002"}, "Hello"]
    outputs = runnable.batch(inputs)
    assert marker(2) in outputs[0] and outputs[1] == "Hello"
    again = await runnable.abatch(inputs)
    assert [str(o) for o in again] == [str(o) for o in outputs]
    assert all(isinstance(r, EnrichmentRequest) for r in alike.seen)
    assert [r.user_id for r in alike.seen] == ["u_002", None] * 2


def test_line_cache_keys_keep_types_apart(tmp_path: Path) -> None:
    class Fixed:
        def __init__(self) -> None:
            self.values: List[Any] = []

        def get_features(self, entity_id: str, entity_type: str, names: List[str]) -> Any:
            from datetime import datetime, timezone

            from asahi_features.models import FeatureVector

            value = self.values.pop(0)
            return FeatureVector.from_ages(
                entity_id,
                entity_type,
                "t",
                {"flag": value},
                {"flag": 1.0},
                datetime.now(timezone.utc),
            )

    client = Fixed()
    cfg = EnricherConfig(
        enabled_task_types=["t"],
        task_features={"t": {"user": ["flag"]}},
        freshness_threshold_seconds=10**8,
    )
    enricher = FeatureEnricher(client, cfg)  # type: ignore[arg-type]
    client.values = [1, True, 1.5, ["a", "b"], ("a", "b"), [1, True], "", "x" * 300]
    texts = [enricher.enrich("P", user_id="u", task_type="t").feature_context for _ in range(8)]
    assert "- Flag: 1\n" in texts[0] and "- Flag: yes\n" in texts[1]
    assert "- Flag: 1.5\n" in texts[2]
    assert "- Flag: a, b\n" in texts[3] and "- Flag: a, b\n" in texts[4]
    assert "- Flag: 1, yes\n" in texts[5]
    assert texts[6] == ""
    assert "x" * 100 in texts[7]


def test_list_render_cache_keeps_item_types_apart() -> None:
    from asahi_features.rendering import format_value

    first = format_value([1], max_list_items=5, max_value_chars=99)
    second = format_value([True], max_list_items=5, max_value_chars=99)
    assert first is not None and second is not None
    assert (first.text, second.text) == ("1", "yes")


def test_name_caches_stay_bounded_with_many_context_keys(
    enricher: FeatureEnricher, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asahi_features.enricher import blocks, policy

    # each part reads the bound from its own module (prefixes: blocks; decisions: policy)
    monkeypatch.setattr(blocks, "_NAME_CACHE_SIZE", 8)
    monkeypatch.setattr(policy, "_NAME_CACHE_SIZE", 8)
    for i in range(50):
        result = enricher.enrich("Hi", user_id="u_001", context={f"key_{i}": "v"})
        assert f"- Key {i}: v\n" in result.feature_context
    assert 0 < len(enricher._policy._cache) <= 8
    assert 0 < len(enricher._prefixes) <= 8


class AgedClient:
    """One user whose features have the given values and ages (seconds; may be negative
    for timestamps in the future)."""

    def __init__(self, values: Dict[str, Any], ages: Dict[str, float]) -> None:
        self.values = values
        self.ages = ages

    def get_features(self, entity_id: str, entity_type: str, names: List[str]) -> FeatureVector:
        return FeatureVector.from_ages(
            entity_id,
            entity_type,
            "t",
            dict(self.values),
            dict(self.ages),
            datetime.now(timezone.utc),
        )


def _aged_enricher(client: AgedClient, **overrides: Any) -> FeatureEnricher:
    cfg = EnricherConfig(
        enabled_task_types=["t"],
        task_features={"t": {"user": ["a", "b", "c"]}},
        freshness_threshold_seconds=10**8,
        **overrides,
    )
    return FeatureEnricher(client, cfg)  # type: ignore[arg-type]


def test_max_freshness_is_the_oldest_line_that_made_it_in() -> None:
    client = AgedClient({"a": "x", "b": "y", "c": "z"}, {"a": 5.0, "b": 50.0, "c": 20.0})
    assert (
        _aged_enricher(client).enrich("P", user_id="u", task_type="t").max_freshness_seconds == 50.0
    )
    # clock skew: every timestamp in the future gives a negative age, reported as such
    client.ages = {"a": -3.0, "b": -7.0, "c": -5.0}
    assert (
        _aged_enricher(client).enrich("P", user_id="u", task_type="t").max_freshness_seconds == -3.0
    )
    # a context block does not change it, and context alone never counts
    client.ages = {"a": 5.0, "b": 50.0, "c": 20.0}
    with_context = _aged_enricher(client).enrich(
        "P", user_id="u", task_type="t", context={"page": "home"}
    )
    assert with_context.max_freshness_seconds == 50.0
    assert "- Page: home\n" in with_context.feature_context


def test_max_freshness_ignores_lines_dropped_by_the_budget() -> None:
    items = [f"w{i}" for i in range(5)]
    client = AgedClient({"a": "x", "b": items, "c": "z"}, {"a": 5.0, "b": 50.0, "c": 20.0})
    dropped = _aged_enricher(client, max_feature_tokens=20).enrich("P", user_id="u", task_type="t")
    assert dropped.features_used == ["a", "c"] and dropped.dropped_budget == ["b"]
    assert dropped.max_freshness_seconds == 20.0
    shortened = _aged_enricher(client, max_feature_tokens=22).enrich(
        "P", user_id="u", task_type="t"
    )
    assert shortened.features_used == ["a", "b"] and "- B: w0\n" in shortened.feature_context
    assert shortened.max_freshness_seconds == 50.0


def test_results_never_share_mutable_lists(enricher: FeatureEnricher) -> None:
    results = enricher.enrich_requests(
        [EnrichmentTuple("Hi", uid, None, "general", None) for uid in ["nobody", "ghost", "u_001"]]
    )
    lists = [
        getattr(r, name)
        for r in results
        for name in ("features_used", "dropped_stale", "dropped_budget", "dropped_policy")
    ]
    assert len({id(x) for x in lists}) == len(lists)
    results[0].dropped_budget.append("mutated")
    assert results[1].dropped_budget == []


def test_every_result_path_fills_every_field_and_validates(enricher: FeatureEnricher) -> None:
    """Results are built without validation: each path must give every field, typed."""
    requests = [
        EnrichmentTuple("Hi", "u_001", None, "general", None),  # enriched
        EnrichmentTuple("Hi", "u_001", None, "general", {"page": "home"}),  # with context
        EnrichmentTuple("Hi", "nobody", None, "general", None),  # entity missing
        EnrichmentTuple("Hi", None, None, "general", None),  # no identity
        EnrichmentTuple("Hi", "u_001", None, "not_enabled", None),  # task not enabled
    ]
    results = [*enricher.enrich_requests(requests), enricher.enrich("Hi", user_id="u_002")]
    reasons = {r.reason.value for r in results}
    assert {"enriched", "entity_missing", "no_identity", "task_not_enabled"} <= reasons
    for result in results:
        assert list(result.__dict__) == list(EnrichmentResult.model_fields)
        assert list(result.model_dump()) == list(EnrichmentResult.model_fields)
        assert result.model_fields_set == set(EnrichmentResult.model_fields)
        assert EnrichmentResult.model_validate(result.model_dump()) == result
    assert len({r.enrichment_id for r in results}) == len(results)
    assert all(len(r.enrichment_id) == 32 for r in results)


def test_trusted_constructor_gives_independent_instances() -> None:
    from asahi_features.models import trusted_constructor

    build = trusted_constructor(FeatureVector)
    now = datetime.now(timezone.utc)
    values = dict(
        entity_id="e",
        entity_type="user",
        features={"a": 1},
        retrieved_at=now,
        freshness_seconds=2.0,
        source="t",
        status=FeatureVector.model_fields["status"].default,
        feature_freshness={"a": 2.0},
        error=None,
        freshness_limits={},
    )
    first, second = build(dict(values)), build(dict(values))
    assert first == FeatureVector.model_construct(**values) == second
    first.source = "changed"
    assert second.source == "t" and first.model_fields_set is not second.model_fields_set


class PerEntityClient:
    """One :class:`AgedClient` per entity type."""

    def __init__(self, clients: Dict[str, AgedClient]) -> None:
        self.clients = clients

    def get_features(self, entity_id: str, entity_type: str, names: List[str]) -> FeatureVector:
        return self.clients[entity_type].get_features(entity_id, entity_type, names)


def test_max_freshness_follows_the_kept_line_when_names_repeat_across_entities() -> None:
    # a user and an organisation that both have a feature called ``tier``
    client = PerEntityClient(
        {
            "user": AgedClient({"tier": "gold"}, {"tier": 90.0}),
            "organization": AgedClient(
                {"tier": "platinum enterprise tier, long " * 3}, {"tier": 5.0}
            ),
        }
    )
    cfg = EnricherConfig(
        enabled_task_types=["t"],
        task_features={"t": {"user": ["tier"], "organization": ["tier"]}},
        freshness_threshold_seconds=10**8,
        max_feature_tokens=20,
    )
    result = FeatureEnricher(client, cfg).enrich(  # type: ignore[arg-type]
        "P", user_id="u", organization_id="o", task_type="t"
    )
    assert result.features_used == ["tier"] and result.dropped_budget == ["tier"]
    assert "gold" in result.feature_context and "platinum" not in result.feature_context
    assert result.max_freshness_seconds == 90.0  # the user's line, not the dropped one


def test_a_feature_named_like_a_context_line_is_a_feature_on_every_path() -> None:
    client = AgedClient({"context.score": "v"}, {"context.score": 1.0})
    cfg = EnricherConfig(
        enabled_task_types=["t"],
        task_features={"t": {"user": ["context.score"]}},
        freshness_threshold_seconds=10**8,
    )
    enricher = FeatureEnricher(client, cfg)  # type: ignore[arg-type]
    alone = enricher.enrich("P", user_id="u", task_type="t")
    with_context = enricher.enrich("P", user_id="u", task_type="t", context={"note": "hi"})
    assert alone.features_used == with_context.features_used == ["context.score"]
    assert alone.reason.value == with_context.reason.value == "enriched"
    assert "- Note: hi\n" in with_context.feature_context


def test_first_use_of_a_task_from_many_threads_at_once() -> None:
    """The task's resolved features are published whole: no thread sees half of them.

    Resolving the task is made slow (each policy decision sleeps), so that threads
    arriving together would find a half-resolved task if it were published early.
    """
    import threading
    import time

    names = [f"feat_{i}" for i in range(5)]
    client = AgedClient({"feat_0": "v"}, {"feat_0": 1.0})
    cfg = EnricherConfig(enabled_task_types=["t"], task_features={"t": {"user": names}})
    errors: List[BaseException] = []
    results: List[EnrichmentResult] = []
    for _ in range(20):
        enricher = FeatureEnricher(client, cfg)  # type: ignore[arg-type]
        decide = enricher._policy.decide

        def slow_decide(name: str, decide: Any = decide) -> Any:
            time.sleep(0.001)
            return decide(name)

        enricher._policy.decide = slow_decide  # type: ignore[method-assign]
        barrier = threading.Barrier(6)

        def run(enricher: FeatureEnricher, barrier: threading.Barrier) -> None:
            barrier.wait()
            try:
                results.append(enricher.enrich("P", user_id="u", task_type="t"))
            except BaseException as exc:  # any escape is the failure
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(enricher, barrier)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert len(results) == 120 and all(r.features_used == ["feat_0"] for r in results)
