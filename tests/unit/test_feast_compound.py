"""Views keyed on several entities (user + merchant) through the enricher: the request
supplies the merchant with ``entity_ids``; every pair gets its own row (unique markers),
in single, batch and async requests."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from asahi_features import EnricherConfig, FeatureEnricher
from asahi_features.guard import GuardedClient
from asahi_features.models import EnrichmentReason, EnrichmentRequest, EnrichmentResult
from asahi_features.stores.feast import FeastClient

USERS = [f"u{n}" for n in range(12)]
MERCHANTS = [f"m{n}" for n in range(5)]


def marker(user: str, merchant: str) -> str:
    return f"pair-{user}-{merchant}-x"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> FeastClient:
    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Int64, String

    from asahi_features.sample_repo import feature_store_yaml

    path = tmp_path_factory.mktemp("compound")
    (path / "data").mkdir()
    (path / "feature_store.yaml").write_text(feature_store_yaml())
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    pairs = pd.DataFrame(
        [
            {
                "user_id": u,
                "merchant_id": m,
                "event_timestamp": now,
                "note": marker(u, m),
                "txn_count": i * 10 + j,
            }
            for i, u in enumerate(USERS)
            for j, m in enumerate(MERCHANTS)
        ]
    )
    users = pd.DataFrame(
        {"user_id": USERS, "event_timestamp": [now] * len(USERS), "tier": ["gold"] * len(USERS)}
    )
    pairs.to_parquet(path / "data" / "pairs.parquet")
    users.to_parquet(path / "data" / "users.parquet")
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.STRING)
    profile = FeatureView(
        name="user_profile",
        entities=[user],
        ttl=timedelta(days=1),
        schema=[Field(name="tier", dtype=String)],
        source=FileSource(
            path=str(path / "data" / "users.parquet"), timestamp_field="event_timestamp"
        ),
    )
    pair = FeatureView(
        name="user_merchant",
        entities=[user, merchant],
        ttl=timedelta(days=1),
        schema=[Field(name="note", dtype=String), Field(name="txn_count", dtype=Int64)],
        source=FileSource(
            path=str(path / "data" / "pairs.parquet"), timestamp_field="event_timestamp"
        ),
    )
    store = FeatureStore(repo_path=str(path))
    store.apply([user, merchant, profile, pair])
    store.write_to_online_store("user_profile", users)
    store.write_to_online_store("user_merchant", pairs)
    return FeastClient(str(path), "asahi", feature_store=store)


def config() -> EnricherConfig:
    return EnricherConfig(
        enabled_task_types=["payment"],
        task_features={"payment": {"user": ["tier"], "user+merchant": ["note", "txn_count"]}},
        feature_labels={"note": "Pair note"},
        max_feature_tokens=400,
    )


def test_listing_names_the_compound_entity_type(client: FeastClient) -> None:
    assert client.list_features("user+merchant") == {"merchant+user": ["note", "txn_count"]}
    assert client.list_features()["user"] == ["tier"]


def test_each_request_gets_its_own_pair(client: FeastClient) -> None:
    enricher = FeatureEnricher(GuardedClient(client, timeout_ms=10_000), config())
    result = enricher.enrich(
        "Is this payment usual?", user_id="u3", task_type="payment", entity_ids={"merchant": "m2"}
    )
    assert result.reason is EnrichmentReason.ENRICHED
    assert result.features_used == ["tier", "note", "txn_count"]
    assert marker("u3", "m2") in result.enriched_prompt
    requests = [
        EnrichmentRequest(
            prompt=f"q{u}{m}", user_id=u, task_type="payment", entity_ids={"merchant": m}
        )
        for u in USERS
        for m in MERCHANTS
    ]
    batch = enricher.enrich_batch(requests)

    async def all_at_once() -> list[EnrichmentResult]:
        return await asyncio.gather(
            *(
                enricher.aenrich(
                    r.prompt, user_id=r.user_id, task_type="payment", entity_ids=r.entity_ids
                )
                for r in requests
            )
        )

    concurrent = asyncio.run(all_at_once())
    enriched = 0
    for request, got, again in zip(requests, batch, concurrent, strict=True):
        assert request.entity_ids is not None and request.user_id is not None
        own = marker(request.user_id, request.entity_ids["merchant"])
        for result in (got, again):
            assert own in result.enriched_prompt
            assert result.enriched_prompt.count("pair-") == 1  # nobody else's marker
        enriched += got.reason is EnrichmentReason.ENRICHED
    assert enriched == len(requests)  # a healthy store enriches every one


def test_missing_merchant_is_a_missing_entity_not_an_error(client: FeastClient) -> None:
    enricher = FeatureEnricher(client, config())
    result = enricher.enrich("q", user_id="u1", task_type="payment")
    assert result.missing_entities == ["user+merchant"]
    assert result.features_used == ["tier"]
    unknown_pair = enricher.enrich(
        "q", user_id="u1", task_type="payment", entity_ids={"merchant": "m-none"}
    )
    assert unknown_pair.features_used == ["tier"]
    from_context = enricher.enrich(
        "q", user_id="u1", task_type="payment", context={"merchant_id": "m4"}
    )
    assert marker("u1", "m4") in from_context.enriched_prompt
