"""The repository ``feast init`` makes (made by ``feast init`` itself, applied and
materialised by the CLI) through the whole path: health check, listing, feature
services, on-demand views with request data, ttl per view, registry drift with a real
``feast apply`` while a client runs."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List

import pytest

from asahi_features import EnricherConfig, FeatureEnricher
from asahi_features.enricher import build_enricher
from asahi_features.errors import FeatureConfigError
from asahi_features.guard import GuardedClient
from asahi_features.models import EnrichmentReason, EnrichmentRequest, FeatureStatus
from asahi_features.settings import AsahiConfig
from asahi_features.stores.entity_keys import compose_key
from asahi_features.stores.feast import FeastClient
from tests.support.feast_helpers import CallCounter
from tests.support.feast_init_repo import PROJECT, feast_cli, make_feast_init_repo

TWO_DAYS = 2 * 86400
PLUS1 = "transformed_conv_rate:conv_rate_plus_val1"
SERVICE_FEATURES = [
    "driver_hourly_stats:conv_rate",
    "transformed_conv_rate:conv_rate_plus_val1",
    "transformed_conv_rate:conv_rate_plus_val2",
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_feast_init_repo(tmp_path_factory.mktemp("feast_init"))


@pytest.fixture(scope="module")
def client(repo: Path) -> FeastClient:
    return FeastClient(str(repo), PROJECT)


def raw(client: FeastClient, features: Any, rows: List[Dict[str, Any]]) -> Dict[str, List[Any]]:
    """What raw Feast answers (the reference every test compares with)."""
    answer: Dict[str, List[Any]] = client.feature_store.get_online_features(
        features=features, entity_rows=rows, full_feature_names=True
    ).to_dict()
    return answer


def shown(prompt: str, label: str) -> float:
    """The number a prompt shows on the line of ``label``."""
    for line in prompt.splitlines():
        if line.startswith(f"- {label}: "):
            return float(line.split(": ", 1)[1])
    raise AssertionError(f"no {label!r} line in {prompt!r}")


def config(**overrides: Any) -> EnricherConfig:
    values: Dict[str, Any] = {
        "enabled_task_types": ["driver_report"],
        "task_features": {},
        "freshness_threshold_seconds": TWO_DAYS,
        "max_feature_tokens": 400,
    }
    values.update(overrides)
    return EnricherConfig(**values)


def test_health_listing_and_ambiguity(client: FeastClient) -> None:
    assert client.health_check() is True  # the INT64 join key is probed with an int
    listed = client.list_features("driver")["driver"]
    assert {"conv_rate", "conv_rate_plus_val1", "acc_rate"} <= set(listed)
    assert {"@driver_activity_v1", "@driver_activity_v2", "@driver_activity_v3"} <= set(listed)
    with pytest.raises(FeatureConfigError, match="served by 2 views"):
        client.get_features("1001", "driver", ["conv_rate"])
    assert client.feature_service_entity_type("driver_activity_v1") == "driver"
    with pytest.raises(FeatureConfigError, match="driver_activity_v1"):
        client.feature_service_entity_type("driver_activty_v1")
    assert client.request_fields("driver", ["@driver_activity_v1"]) == (
        "val_to_add",
        "val_to_add_2",
    )
    assert client.request_fields("driver", ["driver_hourly_stats:acc_rate"]) == ()


def test_feature_service_read_matches_raw_feast(client: FeastClient) -> None:
    key = compose_key({"driver": "1001"}, {"val_to_add": 1, "val_to_add_2": 2})
    vector = client.get_features(key, "driver", ["@driver_activity_v1"])
    service = client.feature_store.get_feature_service("driver_activity_v1")
    expected = raw(client, service, [{"driver_id": 1001, "val_to_add": 1, "val_to_add_2": 2}])
    assert vector.status is FeatureStatus.FOUND
    assert vector.features == {ref: expected[ref.replace(":", "__")][0] for ref in SERVICE_FEATURES}
    # the on-demand features are as old as their source view, whose ttl is their limit
    ages = vector.feature_freshness
    assert ages["transformed_conv_rate:conv_rate_plus_val1"] == ages[SERVICE_FEATURES[0]]
    assert vector.freshness_limits == {ref: 86400.0 for ref in SERVICE_FEATURES}


def test_task_mapped_to_a_feature_service_gets_request_data(
    client: FeastClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = CallCounter(monkeypatch, client.feature_store, "get_online_features").calls
    enricher = FeatureEnricher(
        client, config(task_feature_services={"driver_report": "driver_activity_v1"})
    )
    context = {"val_to_add": 10, "val_to_add_2": 20, "page": "payouts"}
    result = enricher.enrich(
        "How is this driver doing?",
        task_type="driver_report",
        entity_ids={"driver": "1002"},
        context=context,
    )
    assert result.reason is EnrichmentReason.ENRICHED, result.reason
    assert result.features_used == SERVICE_FEATURES
    assert len(calls) == 1
    sent = calls[0]
    expected = raw(client, SERVICE_FEATURES, [{"driver_id": 1002, **context}])
    conv_rate = expected["driver_hourly_stats__conv_rate"][0]
    plus = expected["transformed_conv_rate__conv_rate_plus_val1"][0]
    assert plus == pytest.approx(conv_rate + 10)
    assert shown(result.enriched_prompt, "Conv rate") == pytest.approx(conv_rate, abs=1e-3)
    assert shown(result.enriched_prompt, "Conv rate plus val1") == pytest.approx(plus, abs=1e-2)
    # only the fields the on-demand view declares reach Feast; "page" stays prompt-only
    assert set(sent) == {"driver_id", "val_to_add", "val_to_add_2"}
    assert sent["val_to_add"] == [10] and sent["driver_id"] == [1002]
    assert "payouts" in result.enriched_prompt


def test_request_data_async_and_in_batches_without_leaks(client: FeastClient) -> None:
    enricher = FeatureEnricher(
        client,
        config(task_features={"driver_report": {"driver": [PLUS1]}}),
    )
    drivers = ["1001", "1002", "1003", "1004"]
    requests = [
        EnrichmentRequest(
            prompt="Report",
            task_type="driver_report",
            entity_ids={"driver": d},
            context={"val_to_add": 10 * (i + 1), "val_to_add_2": 0},
        )
        for i, d in enumerate(drivers)
    ]
    results = enricher.enrich_batch(requests)
    async_results = asyncio.run(enricher.aenrich_batch(requests))
    expected = raw(
        client,
        ["driver_hourly_stats:conv_rate"],
        [{"driver_id": int(d)} for d in drivers],
    )["driver_hourly_stats__conv_rate"]
    for i, (result, again) in enumerate(zip(results, async_results, strict=True)):
        assert result.reason is EnrichmentReason.ENRICHED
        own = 10 * (i + 1) + expected[i]  # each request's own request data, nobody else's
        for got in (result, again):
            assert shown(got.enriched_prompt, "Conv rate plus val1") == pytest.approx(own, abs=0.01)
    one = asyncio.run(
        enricher.aenrich(
            "Report",
            task_type="driver_report",
            entity_ids={"driver": "1001"},
            context={"val_to_add": 1, "val_to_add_2": 2},
        )
    )
    assert one.features_used == [PLUS1]


def test_missing_request_data_degrades_that_request_only(client: FeastClient) -> None:
    enricher = FeatureEnricher(
        client,
        config(task_features={"driver_report": {"driver": [PLUS1]}}),
    )
    results = enricher.enrich_batch(
        [
            {
                "prompt": "A",
                "task_type": "driver_report",
                "entity_ids": {"driver": "1001"},
                "context": {"val_to_add": 1},  # val_to_add_2 missing
            },
            {
                "prompt": "B",
                "task_type": "driver_report",
                "entity_ids": {"driver": "1002"},
                "context": {"val_to_add": 1, "val_to_add_2": 2},
            },
        ]
    )
    assert results[0].reason is EnrichmentReason.INVALID_ENTITY_ID
    assert results[0].entity_status == {"driver": FeatureStatus.INVALID_ID}
    assert results[0].enriched_prompt == "A"
    assert results[1].reason is EnrichmentReason.ENRICHED


def test_entity_ids_may_not_name_user_or_organization(client: FeastClient) -> None:
    enricher = FeatureEnricher(
        client, config(task_features={"driver_report": {"driver": ["acc_rate"]}})
    )
    with pytest.raises(FeatureConfigError):  # acc_rate is ambiguous: a config mistake
        enricher.enrich("x", task_type="driver_report", entity_ids={"driver": "1001"})
    enricher = FeatureEnricher(
        client,
        config(task_features={"driver_report": {"driver": ["driver_hourly_stats:acc_rate"]}}),
    )
    forged = enricher.enrich(
        "x", task_type="driver_report", entity_ids={"driver": "1001", "user": "u_1"}
    )
    assert forged.reason is EnrichmentReason.INVALID_INPUT and forged.enriched_prompt == "x"
    missing = enricher.enrich("x", task_type="driver_report")
    assert missing.reason is EnrichmentReason.NO_IDENTITY
    from_context = enricher.enrich("x", task_type="driver_report", context={"driver_id": 1001})
    assert from_context.reason is EnrichmentReason.ENRICHED


def test_build_enricher_checks_feature_services(repo: Path) -> None:
    settings: Dict[str, Any] = {
        "feature_store": {
            "provider": "feast",
            "feast": {"repo_path": str(repo), "project": PROJECT},
            "timeout_ms": 5000,
        },
        "enricher": {
            "enabled_task_types": ["driver_report"],
            "task_features": {},
            "task_feature_services": {"driver_report": "driver_activity_v9"},
        },
    }
    with pytest.raises(FeatureConfigError) as info:
        build_enricher(AsahiConfig.model_validate(settings))
    message = str(info.value)
    assert "task_feature_services.driver_report" in message
    assert "did you mean" in message and "driver_activity_v1" in message
    settings["enricher"]["task_feature_services"] = {"driver_report": "driver_activity_v2"}
    settings["enricher"]["freshness_threshold_seconds"] = TWO_DAYS
    enricher = build_enricher(AsahiConfig.model_validate(settings))
    try:
        result = enricher.enrich(
            "Report",
            task_type="driver_report",
            entity_ids={"driver": "1003"},
            context={"val_to_add": 1, "val_to_add_2": 2},
        )
    finally:
        enricher.client.close()  # type: ignore[attr-defined]
    assert result.reason is EnrichmentReason.ENRICHED
    assert "driver_hourly_stats:driver_profile" in result.features_used
    assert "driver_1003" in result.enriched_prompt  # the profile's struct value


def test_view_ttl_caps_the_threshold_and_overrides_win(client: FeastClient) -> None:
    import pandas as pd

    old = datetime.now(timezone.utc) - timedelta(hours=30)  # past the views' 1-day ttl
    frame = pd.read_parquet(Path(client.repo_path) / "data" / "driver_stats.parquet")
    row = frame[frame["driver_id"] == 1005].tail(1).copy()
    row["event_timestamp"] = [old]
    row["created"] = [old]
    row["conv_rate"] = [0.25]
    client.feature_store.write_to_online_store("driver_hourly_stats", row)
    features = ["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate"]
    task = {"driver_report": {"driver": features}}
    stale = FeatureEnricher(client, config(task_features=task)).enrich(
        "x", task_type="driver_report", entity_ids={"driver": "1005"}
    )
    assert stale.reason is EnrichmentReason.ALL_STALE
    assert stale.dropped_stale == features
    assert all("(view ttl)" in stale.stale_reasons[f] for f in features)
    assert "limit 86400 s" in stale.stale_reasons[features[0]]
    fresh = FeatureEnricher(client, config(task_features=task)).enrich(
        "x", task_type="driver_report", entity_ids={"driver": "1001"}
    )
    assert fresh.features_used == features and fresh.stale_reasons == {}
    overridden = FeatureEnricher(
        client, config(task_features=task, freshness_overrides={"conv_rate": TWO_DAYS})
    ).enrich("x", task_type="driver_report", entity_ids={"driver": "1005"})
    assert overridden.features_used == [features[0]] and "0.25" in overridden.enriched_prompt
    assert overridden.dropped_stale == [features[1]]
    assert "stale" not in overridden.enriched_prompt.lower()  # stale_note is off by default
    noted = FeatureEnricher(
        client,
        config(task_features=task, freshness_overrides={"conv_rate": TWO_DAYS}, stale_note=True),
    ).enrich("x", task_type="driver_report", entity_ids={"driver": "1005"})
    assert noted.features_used == [features[0]] and noted.dropped_stale == [features[1]]
    note = [line for line in noted.enriched_prompt.splitlines() if "stale" in line.lower()]
    assert len(note) == 1 and note[0].startswith("- Left out as stale: Acc rate (age ")
    assert "(view ttl)" in note[0]
    assert noted.feature_tokens_added > overridden.feature_tokens_added
    # a threshold shorter than the ttl stays the limit
    short = FeatureEnricher(
        client, config(task_features=task, freshness_threshold_seconds=60)
    ).enrich("x", task_type="driver_report", entity_ids={"driver": "1005"})
    assert "(freshness_threshold_seconds)" in short.stale_reasons[features[0]]


def test_registry_drift_degrades_only_the_affected_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = make_feast_init_repo(tmp_path)
    settings = AsahiConfig.model_validate(
        {
            "feature_store": {
                "provider": "feast",
                "feast": {"repo_path": str(repo), "project": PROJECT},
                "timeout_ms": 5000,
            },
            "enricher": {
                "enabled_task_types": ["fresh", "stats", "service"],
                "task_features": {
                    "fresh": {"driver": ["driver_hourly_stats_fresh:conv_rate"]},
                    "stats": {"driver": ["driver_hourly_stats:acc_rate"]},
                },
                "task_feature_services": {"service": "driver_activity_v3"},
                "freshness_threshold_seconds": TWO_DAYS,
            },
        }
    )
    # the configured guard and enricher, over a client that re-reads the registry on every
    # unknown name (the configuration has no key for that interval)
    client = FeastClient(str(repo), PROJECT, refresh_interval_seconds=0)
    guard = GuardedClient.from_settings(client, settings.feature_store)
    enricher = FeatureEnricher(guard, settings.enricher)
    ids = {"driver": "1001"}
    request = {"val_to_add": 1, "val_to_add_2": 2}

    def run(task: str) -> Any:
        return enricher.enrich("q", task_type=task, entity_ids=ids, context=request)

    assert [run(t).reason for t in ("fresh", "stats", "service")] == [EnrichmentReason.ENRICHED] * 3
    definitions = repo / "feature_definitions.py"
    original = definitions.read_text()
    start = original.index("driver_stats_push_source = PushSource(")
    end = original.index("driver_quality_labels_source")
    definitions.write_text(original[:start] + original[end:])
    feast_cli(["apply"], cwd=repo)  # removes the fresh view, its on-demand view and v3
    with caplog.at_level(logging.WARNING):
        during = [run(t) for t in ("fresh", "stats", "service") * 5]
    fresh, stats, service = during[0::3], during[1::3], during[2::3]
    assert all(r.reason is EnrichmentReason.STORE_UNAVAILABLE for r in fresh + service)
    assert all(r.enriched_prompt == "q" for r in fresh + service)
    assert all(r.reason is EnrichmentReason.ENRICHED for r in stats)
    drift = [r.getMessage() for r in caplog.records if "disappeared" in r.getMessage()]
    assert len(drift) == 2, drift  # one for the fresh view, one for the service
    assert "driver_hourly_stats_fresh:conv_rate" in drift[0]
    assert "@driver_activity_v3" in drift[1]
    assert guard.breaker.snapshot()["state"] == "closed"
    definitions.write_text(original)
    feast_cli(["apply"], cwd=repo)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    feast_cli(["materialize", "2020-01-01T00:00:00", now], cwd=repo)
    back = [run(t) for t in ("fresh", "stats", "service")]
    assert [r.reason for r in back] == [EnrichmentReason.ENRICHED] * 3
    guard.close()
