"""The protocol, the async helpers for sync-only clients, name resolution, errors."""

from __future__ import annotations

from typing import List

import pytest

from asahi_features.errors import (
    AsahiFeaturesError,
    FeatureConfigError,
    FeatureStoreTimeoutError,
    FeatureStoreUnavailableError,
)
from asahi_features.models import EnrichmentResult, FeatureStatus, FeatureVector, utc_now
from asahi_features.stores.base import (
    AsyncFeatureStoreClient,
    BaseFeatureStore,
    FeatureStoreClient,
    aget_batch_features,
    aget_features,
    missing_protocol_methods,
)
from asahi_features.stores.naming import FeatureNameResolver


class SyncOnly:
    """A user's own client implementing only the spec's three sync methods."""

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        return FeatureVector(
            entity_id=entity_id,
            entity_type=entity_type,
            features={n: n.upper() for n in feature_names},
            retrieved_at=utc_now(),
            freshness_seconds=1.0,
            source="custom",
        )

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        return [self.get_features(e, entity_type, feature_names) for e in entity_ids]

    def health_check(self) -> bool:
        return True


class Minimal(BaseFeatureStore):
    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        return FeatureVector.from_ages(
            entity_id, entity_type, "custom", {"a": 1}, {"a": 5.0}, utc_now()
        )

    def health_check(self) -> bool:
        return True


def test_sync_only_client_is_a_client_but_not_async() -> None:
    client = SyncOnly()
    assert isinstance(client, FeatureStoreClient)
    assert not isinstance(client, AsyncFeatureStoreClient)
    assert missing_protocol_methods(client) == []
    assert missing_protocol_methods(object()) == [
        "get_features",
        "get_batch_features",
        "health_check",
    ]


async def test_async_helpers_run_sync_clients_in_a_thread() -> None:
    client = SyncOnly()
    vector = await aget_features(client, "u1", "user", ["tier"])
    assert vector.features == {"tier": "TIER"}
    vectors = await aget_batch_features(client, ["a", "b"], "user", ["x"])
    assert [v.entity_id for v in vectors] == ["a", "b"]


async def test_base_class_defaults() -> None:
    store = Minimal()
    assert isinstance(store, AsyncFeatureStoreClient)
    batch = store.get_batch_features(["a", "b"], "user", ["a"])
    assert [v.entity_id for v in batch] == ["a", "b"]
    assert batch[0].freshness_seconds == 5.0
    assert (await store.aget_features("x", "user", ["a"])).entity_id == "x"
    assert len(await store.aget_batch_features(["x", "y"], "user", ["a"])) == 2
    with pytest.raises(NotImplementedError, match="Minimal cannot list"):
        store.list_features()
    with store as same:
        assert same is store


def test_vector_constructors() -> None:
    empty = FeatureVector.empty("u", "user", "feast", FeatureStatus.UNAVAILABLE, error="down")
    assert empty.features == {} and empty.freshness_seconds == 0.0
    assert empty.status is FeatureStatus.UNAVAILABLE and empty.error == "down"
    nothing = FeatureVector.from_ages("u", "user", "feast", {}, {}, utc_now())
    assert nothing.status is FeatureStatus.MISSING
    found = FeatureVector.from_ages(
        "u", "user", "feast", {"a": 1, "b": 2}, {"a": 3.0, "b": 9.0}, utc_now()
    )
    assert found.freshness_seconds == 9.0 and not found.is_empty
    assert FeatureVector.model_validate(found.model_dump()) == found


def test_enrichment_result_ids_are_unique() -> None:
    kwargs = dict(
        original_prompt="p",
        enriched_prompt="p",
        features_used=[],
        feature_tokens_added=0,
        enrichment_latency_ms=0.1,
        features_available=False,
    )
    a, b = EnrichmentResult(**kwargs), EnrichmentResult(**kwargs)  # type: ignore[arg-type]
    assert a.enrichment_id != b.enrichment_id
    assert not a.succeeded


def test_error_hierarchy() -> None:
    assert issubclass(FeatureStoreTimeoutError, FeatureStoreUnavailableError)
    assert issubclass(FeatureStoreTimeoutError, TimeoutError)
    assert issubclass(FeatureConfigError, AsahiFeaturesError)
    err = FeatureConfigError("bad", [f"f{i:02d}" for i in range(60)])
    assert "f00" in str(err) and "(10 more)" in str(err)
    assert err.reason == "bad"
    assert "(none)" in str(FeatureConfigError("empty store", []))


class TestNameResolver:
    resolver = FeatureNameResolver(
        "user",
        {"user_purchases": ["purchase_history", "tier"], "user_profile": ["tier", "age"]},
    )

    def test_plain_and_full_names(self) -> None:
        assert self.resolver.resolve(["purchase_history", "user_profile:tier"]) == [
            ("purchase_history", "user_purchases:purchase_history"),
            ("user_profile:tier", "user_profile:tier"),
        ]

    def test_ambiguous_name_lists_both_references(self) -> None:
        with pytest.raises(FeatureConfigError) as info:
            self.resolver.resolve(["tier"])
        assert info.value.available_features == ["user_profile:tier", "user_purchases:tier"]

    def test_unknown_name_lists_everything(self) -> None:
        with pytest.raises(FeatureConfigError) as info:
            self.resolver.resolve(["shoe_size"])
        assert "age" in info.value.available_features
        assert "user_profile:age" in info.value.available_features
        assert self.resolver.plain_names == ["age", "purchase_history", "tier"]

    def test_try_resolve_reports_unknown(self) -> None:
        resolved, unknown = self.resolver.try_resolve(["age", "nope"])
        assert resolved == [("age", "user_profile:age")] and unknown == ["nope"]

    def test_other_separator(self) -> None:
        tecton = FeatureNameResolver("user", {"fv": ["a"]}, separator=".")
        assert tecton.resolve(["fv.a", "a"]) == [("fv.a", "fv.a"), ("a", "fv.a")]
