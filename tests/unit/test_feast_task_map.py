"""Feature-service tasks and other entity ids on backends that cannot describe services,
and while the Feast repository cannot be read: clear errors for configuration mistakes,
degraded requests (never exceptions) for a store that is down."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from asahi_features import EnricherConfig, FeatureEnricher, LocalFeatureStore
from asahi_features.config import check_task_features
from asahi_features.errors import ConfigError
from asahi_features.models import EnrichmentReason
from asahi_features.stores.feast import FeastClient

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_features.json"


def service_config() -> EnricherConfig:
    return EnricherConfig(
        enabled_task_types=["report"],
        task_features={},
        task_feature_services={"report": "driver_activity_v1"},
    )


def test_a_backend_without_feature_services_says_how_to_map_the_task() -> None:
    store = LocalFeatureStore(SAMPLE)
    with pytest.raises(ConfigError, match=r"@driver_activity_v1") as info:
        check_task_features(store, service_config())
    assert info.value.key_path == "enricher.task_feature_services.report"
    enricher = FeatureEnricher(store, service_config())
    with pytest.raises(ConfigError, match="cannot describe feature services"):
        enricher.enrich("x", task_type="report", entity_ids={"driver": "1"})


def test_an_unreadable_repository_degrades_service_tasks_and_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = FeastClient(str(tmp_path / "not_yet"), "demo")  # no repository there yet
    enricher = FeatureEnricher(client, service_config())
    with caplog.at_level(logging.WARNING):
        first = enricher.enrich("x", task_type="report", entity_ids={"driver": "1"})
        second = enricher.enrich("x", task_type="report", entity_ids={"driver": "1"})
    for result in (first, second):  # asked again: the task is not cached while unknown
        assert result.reason is EnrichmentReason.STORE_UNAVAILABLE
        assert result.enriched_prompt == "x"
    assert (
        sum("feature service 'driver_activity_v1'" in r.getMessage() for r in caplog.records) == 2
    )
    with caplog.at_level(logging.WARNING):  # the build-time check skips with a warning
        check_task_features(client, service_config(), timeout_seconds=5)


def test_request_fields_unknown_while_the_store_is_down(tmp_path: Path) -> None:
    client = FeastClient(str(tmp_path / "missing"), "demo")
    config = EnricherConfig(
        enabled_task_types=["report"],
        task_features={"report": {"driver": ["driver_hourly_stats:conv_rate"]}},
    )
    result = FeatureEnricher(client, config).enrich(
        "x", task_type="report", entity_ids={"driver": "1"}
    )
    assert result.reason is EnrichmentReason.STORE_UNAVAILABLE and result.enriched_prompt == "x"


def test_entity_ids_that_are_not_a_mapping_degrade_that_request() -> None:
    store = LocalFeatureStore(SAMPLE)
    enricher = FeatureEnricher(
        store,
        EnricherConfig(
            enabled_task_types=["product_recommendation"], freshness_threshold_seconds=10**9
        ),
    )
    bad = enricher.enrich(
        "x",
        user_id="u_1001",
        task_type="product_recommendation",
        entity_ids=["merchant", "m1"],  # type: ignore[arg-type]
    )
    assert bad.reason is EnrichmentReason.INVALID_INPUT and bad.enriched_prompt == "x"
    good = enricher.enrich(
        "x", user_id="u_1001", task_type="product_recommendation", entity_ids={"merchant": "m1"}
    )
    assert good.reason is EnrichmentReason.ENRICHED


def test_a_service_and_a_feature_list_for_the_same_entity_type_is_refused(
    tmp_path: Path,
) -> None:
    from tests.support.feast_init_repo import PROJECT, make_feast_init_repo

    client = FeastClient(str(make_feast_init_repo(tmp_path)), PROJECT)
    both = EnricherConfig(
        enabled_task_types=["report"],
        task_features={"report": {"driver": ["driver_hourly_stats:acc_rate"]}},
        task_feature_services={"report": "driver_activity_v1"},
    )
    with pytest.raises(ConfigError, match="also maps: keep one"):
        check_task_features(client, both, timeout_seconds=30)
