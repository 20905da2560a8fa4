"""FeastClient against a real Feast repository built in code (SQLite online store)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asahi_features.config import build_backend
from asahi_features.errors import (
    ConfigError,
    FeatureConfigError,
    FeatureStoreUnavailableError,
    RegistryDriftError,
)
from asahi_features.models import FeatureStatus, FeatureVector
from asahi_features.sample_repo import SAMPLE_TASK_FEATURES
from asahi_features.settings import DEFAULT_TASK_FEATURES, FeastSettings, FeatureStoreSettings
from asahi_features.stores.base import AsyncFeatureStoreClient, FeatureStoreClient
from asahi_features.stores.entity_keys import compose_key
from asahi_features.stores.feast.response import convert_value, found_vector
from asahi_features.stores.feast_store import FeastClient
from tests.support.feast_helpers import (
    AMBIGUOUS_FEATURE,
    FRESH_USER,
    MISSING_USER,
    PARTIAL_USER,
    PRODUCT,
    STALE_ORG,
    STALE_USER,
    CallCounter,
    add_feature_view,
    build_test_repo,
    claim_native_async_reads,
)

USERS = 1000


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_test_repo(tmp_path_factory.mktemp("feast_repo"), users=USERS)


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[FeastClient]:
    c = FeastClient(str(repo), "asahi")
    yield c
    c.close()


# -- protocol and construction ---------------------------------------------------------


def test_satisfies_protocols(client: FeastClient) -> None:
    assert isinstance(client, FeatureStoreClient)
    assert isinstance(client, AsyncFeatureStoreClient)
    assert client.source == "feast"
    assert "asahi" in repr(client)


def test_from_settings_via_build_backend(repo: Path) -> None:
    settings = FeatureStoreSettings(
        provider="feast",
        feast=FeastSettings(repo_path=repo, project="asahi", registry_ttl_seconds=5),
    )
    backend = build_backend(settings)
    assert isinstance(backend, FeastClient)
    assert backend.feature_store.config.registry.cache_ttl_seconds == 5
    assert backend.get_features(FRESH_USER, "user", ["tier"]).features["tier"]


def test_from_settings_without_section_is_config_error(repo: Path) -> None:
    settings = FeatureStoreSettings.model_construct(provider="feast", feast=None)
    with pytest.raises(ConfigError, match=r"feature_store\.feast"):
        FeastClient.from_settings(settings)


def test_project_mismatch_is_a_clear_error(repo: Path) -> None:
    with pytest.raises(ConfigError) as info:
        FeastClient(str(repo), "production")
    message = str(info.value)
    assert "'production'" in message and "'asahi'" in message
    assert info.value.key_path == "feature_store.feast.project"


def test_project_mismatch_with_supplied_store(client: FeastClient) -> None:
    with pytest.raises(ConfigError, match="project mismatch"):
        FeastClient(client.repo_path, "other", feature_store=client.feature_store)


# -- single reads ----------------------------------------------------------------------


def test_single_entity_plain_names(client: FeastClient) -> None:
    vec = client.get_features(FRESH_USER, "user", PRODUCT)
    assert vec.status is FeatureStatus.FOUND
    assert vec.entity_id == FRESH_USER and vec.entity_type == "user" and vec.source == "feast"
    assert set(vec.features) == set(PRODUCT)
    assert isinstance(vec.features["purchase_history"], list)
    assert all(isinstance(x, str) for x in vec.features["purchase_history"])
    assert vec.features["browsing"].startswith("currently viewing ")
    assert ", " in vec.features["demographics"]
    assert set(vec.feature_freshness) == set(PRODUCT)
    # the sample data of fresh users is at most 45 minutes old when built
    assert 0 <= vec.freshness_seconds < 3 * 3600
    assert vec.freshness_seconds == max(vec.feature_freshness.values())
    assert vec.retrieved_at.tzinfo is not None


def test_values_match_raw_feast_read(client: FeastClient) -> None:
    store = client.feature_store
    raw = store.get_online_features(
        features=["user_purchases:purchase_history", "user_profile:tier"],
        entity_rows=[{"user_id": "u_0042"}],
    ).to_dict()
    vec = client.get_features("u_0042", "user", ["purchase_history", "tier"])
    assert vec.features == {
        "purchase_history": raw["purchase_history"][0],
        "tier": raw["tier"][0],
    }


def test_full_and_plain_names_mixed(client: FeastClient) -> None:
    vec = client.get_features(FRESH_USER, "user", ["user_profile:tier", "preferences"])
    assert set(vec.features) == {"user_profile:tier", "preferences"}
    plain = client.get_features(FRESH_USER, "user", ["tier"])
    assert vec.features["user_profile:tier"] == plain.features["tier"]


def test_same_feature_by_plain_and_full_name_is_fetched_once(client: FeastClient) -> None:
    vec = client.get_features(FRESH_USER, "user", ["tier", "user_profile:tier"])
    assert set(vec.features) == {"tier"}


def test_every_default_task_feature_is_served(client: FeastClient) -> None:
    tasks = [*DEFAULT_TASK_FEATURES.items(), *SAMPLE_TASK_FEATURES.items()]
    for task, per_entity in tasks:
        for entity_type, names in per_entity.items():
            entity_id = FRESH_USER if entity_type == "user" else "org_001"
            vec = client.get_features(entity_id, entity_type, names)
            assert set(vec.features) == set(names), task


def test_organization_features(client: FeastClient) -> None:
    vec = client.get_features("org_001", "organization", ["brand_voice", "tone", "style_guide"])
    assert set(vec.features) == {"brand_voice", "tone", "style_guide"}


def test_missing_entity_is_empty_and_logged(
    client: FeastClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="asahi_features.stores.feast"):
        vec = client.get_features(MISSING_USER, "user", PRODUCT)
    assert vec.status is FeatureStatus.MISSING
    assert vec.features == {} and vec.freshness_seconds == 0.0
    assert any(MISSING_USER in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_stale_entity_reports_its_age(client: FeastClient) -> None:
    vec = client.get_features(STALE_USER, "user", ["tier", "purchase_history"])
    assert vec.status is FeatureStatus.FOUND
    assert vec.freshness_seconds >= 3 * 86400
    assert all(age >= 3 * 86400 for age in vec.feature_freshness.values())
    org = client.get_features(STALE_ORG, "organization", ["tone"])
    assert org.freshness_seconds >= 5 * 86400 - 60


def test_freshness_uses_exact_event_timestamps(client: FeastClient) -> None:
    proto = (
        client.feature_store.get_online_features(
            features=["user_profile:tier"], entity_rows=[{"user_id": FRESH_USER}]
        )
        .proto.results[1]
        .event_timestamps[0]
    )
    event = proto.seconds + proto.nanos * 1e-9
    vec = client.get_features(FRESH_USER, "user", ["tier"])
    assert vec.feature_freshness["tier"] == pytest.approx(
        vec.retrieved_at.timestamp() - event, abs=1e-3
    )


def test_null_features_are_left_out(client: FeastClient) -> None:
    vec = client.get_features(
        PARTIAL_USER, "user", ["browsing", "budget_level", "tier", "framework_history"]
    )
    assert vec.status is FeatureStatus.FOUND
    assert set(vec.features) == {"tier"}
    assert set(vec.feature_freshness) == {"tier"}


def test_entity_with_every_requested_feature_null_is_found_but_empty(client: FeastClient) -> None:
    vec = client.get_features(PARTIAL_USER, "user", ["browsing", "budget_level"])
    assert vec.features == {}
    assert vec.status is FeatureStatus.FOUND
    [batch] = client.get_batch_features([PARTIAL_USER, MISSING_USER], "user", ["browsing"])[:1]
    assert batch.status is FeatureStatus.FOUND and batch.features == {}


def test_entity_without_a_row_in_the_view_is_missing(client: FeastClient) -> None:
    # the partial user has no user_dev row at all
    vec = client.get_features(PARTIAL_USER, "user", ["language_preferences"])
    assert vec.status is FeatureStatus.MISSING


# -- batch -----------------------------------------------------------------------------


def test_batch_of_1000_is_one_call_in_order(
    client: FeastClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = CallCounter(monkeypatch, client.feature_store, "get_online_features")
    ids = [f"u_{n:04d}" for n in range(USERS, 0, -1)]
    vectors = client.get_batch_features(ids, "user", ["tier", "purchase_history"])
    assert len(counter.calls) == 1
    assert [v.entity_id for v in vectors] == ids
    assert all(v.status is FeatureStatus.FOUND for v in vectors)
    singles = {eid: client.get_features(eid, "user", ["tier"]) for eid in ids[:20]}
    for vec in vectors[:20]:
        assert vec.features["tier"] == singles[vec.entity_id].features["tier"]


def test_batch_duplicates_and_missing_ids(client: FeastClient) -> None:
    ids = [FRESH_USER, MISSING_USER, FRESH_USER, STALE_USER, "u_0000"]
    vectors = client.get_batch_features(ids, "user", ["tier", "browsing"])
    assert [v.entity_id for v in vectors] == ids
    assert [v.status for v in vectors] == [
        FeatureStatus.FOUND,
        FeatureStatus.MISSING,
        FeatureStatus.FOUND,
        FeatureStatus.FOUND,
        FeatureStatus.MISSING,
    ]
    assert vectors[0].features == vectors[2].features
    assert vectors[3].freshness_seconds > vectors[0].freshness_seconds


def test_batch_null_features_per_entity(client: FeastClient) -> None:
    vectors = client.get_batch_features(
        [FRESH_USER, PARTIAL_USER], "user", ["browsing", "tier", "framework_history"]
    )
    assert set(vectors[0].features) == {"browsing", "tier", "framework_history"}
    assert set(vectors[1].features) == {"tier"}


def test_empty_batch_validates_and_returns_nothing(client: FeastClient) -> None:
    assert client.get_batch_features([], "user", ["tier"]) == []
    with pytest.raises(FeatureConfigError):
        client.get_batch_features([], "user", ["nope"])


def test_found_vector_equals_from_ages(client: FeastClient) -> None:
    vec = client.get_features(FRESH_USER, "user", ["tier", "preferences"])
    reference = FeatureVector.from_ages(
        vec.entity_id,
        vec.entity_type,
        vec.source,
        dict(vec.features),
        dict(vec.feature_freshness),
        vec.retrieved_at,
    )
    # the sample views' ttl (30 days) is each feature's store limit
    assert vec.freshness_limits == {"tier": 30 * 86400.0, "preferences": 30 * 86400.0}
    reference.freshness_limits = vec.freshness_limits
    assert vec == reference
    assert vec.model_dump() == reference.model_dump()
    fast = found_vector("e", "user", "feast", {"a": 1}, {"a": 2.0}, vec.retrieved_at)
    assert fast.freshness_seconds == 2.0 and fast.model_copy().features == {"a": 1}
    batch = client.get_batch_features([FRESH_USER, PARTIAL_USER], "user", ["tier", "preferences"])
    for got in batch:
        assert got.freshness_limits == vec.freshness_limits
        assert got.model_copy(update={"freshness_limits": {}}) == FeatureVector.from_ages(
            got.entity_id,
            got.entity_type,
            got.source,
            dict(got.features),
            dict(got.feature_freshness),
            got.retrieved_at,
        )


# -- names and errors ------------------------------------------------------------------


def test_ambiguous_plain_name_lists_both_refs(client: FeastClient) -> None:
    with pytest.raises(FeatureConfigError) as info:
        client.get_features(FRESH_USER, "user", [AMBIGUOUS_FEATURE])
    assert info.value.available_features == [
        "user_marketing:loyalty_score",
        "user_scores:loyalty_score",
    ]
    both = client.get_features(
        FRESH_USER, "user", ["user_scores:loyalty_score", "user_marketing:loyalty_score"]
    )
    assert set(both.features) == {"user_scores:loyalty_score", "user_marketing:loyalty_score"}
    assert isinstance(both.features["user_scores:loyalty_score"], float)


def test_unknown_feature_lists_available(client: FeastClient) -> None:
    with pytest.raises(FeatureConfigError) as info:
        client.get_features(FRESH_USER, "user", ["tier", "shoe_size"])
    assert "shoe_size" in str(info.value)
    assert "purchase_history" in info.value.available_features
    assert "user_purchases:purchase_history" in info.value.available_features
    assert "brand_voice" not in info.value.available_features


def test_unknown_full_reference(client: FeastClient) -> None:
    for name in ("user_profile:nope", "no_view:tier", "org_brand:tone"):
        with pytest.raises(FeatureConfigError):
            client.get_features(FRESH_USER, "user", [name])


def test_unknown_entity_type_lists_entities(client: FeastClient) -> None:
    with pytest.raises(FeatureConfigError) as info:
        client.get_features("p1", "product", ["tier"])
    assert info.value.kind == "entity types"
    assert info.value.available_features == ["organization", "user"]
    with pytest.raises(FeatureConfigError, match="entity types"):
        client.list_features("product")


def test_no_feature_names_is_an_error(client: FeastClient) -> None:
    with pytest.raises(FeatureConfigError, match="no feature names"):
        client.get_features(FRESH_USER, "user", [])


def test_list_features(client: FeastClient) -> None:
    listing = client.list_features()
    assert set(listing) == {"user", "organization"}
    assert listing["organization"] == ["brand_voice", "style_guide", "tone"]
    for names in [*DEFAULT_TASK_FEATURES.values(), *SAMPLE_TASK_FEATURES.values()]:
        for entity_type, features in names.items():
            assert set(features) <= set(listing[entity_type])
    assert client.list_features("user") == {"user": listing["user"]}


# -- health ----------------------------------------------------------------------------


def test_health_check_true(client: FeastClient) -> None:
    assert client.health_check() is True


def test_health_check_false_on_broken_repo_path(tmp_path: Path) -> None:
    broken = FeastClient(str(tmp_path / "does-not-exist"), "asahi")
    assert broken.health_check() is False
    with pytest.raises(FeatureStoreUnavailableError, match="does-not-exist"):
        broken.get_features(FRESH_USER, "user", ["tier"])


def test_health_check_false_when_online_store_breaks(repo: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    (copy / "feature_store.yaml").write_text(
        (copy / "feature_store.yaml")
        .read_text()
        .replace("path: data/online_store.db", "path: data/missing/dir/online.db")
    )
    broken = FeastClient(str(copy), "asahi")
    assert broken.health_check() is False
    with pytest.raises(FeatureStoreUnavailableError, match="online read failed"):
        broken.get_features(FRESH_USER, "user", ["tier"])


def test_broken_yaml_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "feature_store.yaml").write_text("project: [unclosed\n")
    client = FeastClient(str(tmp_path), "asahi")
    assert client.health_check() is False
    with pytest.raises(FeatureStoreUnavailableError, match="cannot load"):
        _ = client.feature_store


# -- sharing, async, registry refresh --------------------------------------------------


def test_user_supplied_feature_store_is_used(
    client: FeastClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.feature_store
    counter = CallCounter(monkeypatch, store, "get_online_features")
    shared = FeastClient("/not/used/for/loading", "asahi", feature_store=store)
    assert shared.feature_store is store
    assert shared.get_features(FRESH_USER, "user", ["tier"]).features
    shared.get_batch_features([FRESH_USER, STALE_USER], "user", ["tier"])
    assert len(counter.calls) == 2


async def test_async_on_sqlite_uses_a_worker_thread(
    client: FeastClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_native(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("native async must not be used on SQLite")

    monkeypatch.setattr(client.feature_store, "get_online_features_async", no_native)
    vec = await client.aget_features(FRESH_USER, "user", ["tier"])
    assert vec.features == client.get_features(FRESH_USER, "user", ["tier"]).features
    batch = await client.aget_batch_features([FRESH_USER, MISSING_USER], "user", ["tier"])
    assert [v.status for v in batch] == [FeatureStatus.FOUND, FeatureStatus.MISSING]
    assert await client.aget_batch_features([], "user", ["tier"]) == []
    results = await asyncio.gather(
        *(client.aget_features(f"u_{n:04d}", "user", ["tier"]) for n in range(1, 21))
    )
    assert [r.entity_id for r in results] == [f"u_{n:04d}" for n in range(1, 21)]


async def test_native_async_path_is_taken_when_supported(
    client: FeastClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite claiming async reads makes the client take Feast's native path, where SQLite
    raises NotImplementedError: an unavailable store (the Redis integration test runs it
    for real)."""
    claim_native_async_reads(monkeypatch)
    native = FeastClient(client.repo_path, "asahi", feature_store=client.feature_store)
    with pytest.raises(FeatureStoreUnavailableError, match="NotImplementedError"):
        await native.aget_features(FRESH_USER, "user", ["tier"])


def test_registry_refresh_picks_up_applied_feature(repo: Path) -> None:
    # interval 0: every unknown name re-reads (the rate limit: test_feast_typed_keys.py)
    client = FeastClient(str(repo), "asahi", registry_ttl_seconds=3600, refresh_interval_seconds=0)
    assert client.get_features(FRESH_USER, "user", ["tier"]).features
    with pytest.raises(FeatureConfigError):
        client.get_features(FRESH_USER, "user", ["nps_score"])
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    add_feature_view(
        repo,
        "user_survey",
        {"nps_score": "int"},
        [{"user_id": FRESH_USER, "event_timestamp": now, "nps_score": 9}],
    )
    vec = client.get_features(FRESH_USER, "user", ["nps_score", "tier"])
    assert vec.features["nps_score"] == 9
    assert "nps_score" in client.list_features("user")["user"]


def test_removed_view_under_a_cached_plan_is_registry_drift(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import datetime, timezone

    client = FeastClient(str(repo), "asahi", refresh_interval_seconds=0)
    add_feature_view(
        repo,
        "user_temp",
        {"temp_flag": "string"},
        [
            {
                "user_id": FRESH_USER,
                "event_timestamp": datetime.now(timezone.utc),
                "temp_flag": "x",
            }
        ],
    )
    assert client.get_features(FRESH_USER, "user", ["temp_flag"]).features == {"temp_flag": "x"}
    store = client.feature_store
    store.delete_feature_view("user_temp")
    store.refresh_registry()  # type: ignore[no-untyped-call]
    with caplog.at_level(logging.WARNING):
        with pytest.raises(RegistryDriftError) as info:  # a FeatureConfigError
            client.get_features(FRESH_USER, "user", ["temp_flag"])
        assert "tier" in info.value.available_features
        with pytest.raises(RegistryDriftError, match=r"'user_temp:temp_flag'.*disappeared"):
            client.get_features(FRESH_USER, "user", ["temp_flag"])
    warned = [r for r in caplog.records if "disappeared" in r.getMessage()]
    assert len(warned) == 1 and "user_temp:temp_flag" in warned[0].getMessage()
    with pytest.raises(FeatureConfigError, match="unknown feature") as never:
        client.get_features(FRESH_USER, "user", ["never_served"])
    assert not isinstance(never.value, RegistryDriftError)


def test_single_id_batch_and_plan_cache_bound(client: FeastClient) -> None:
    [vec] = client.get_batch_features([FRESH_USER], "user", ["tier"])
    assert vec.features == client.get_features(FRESH_USER, "user", ["tier"]).features
    names = ["tier", "preferences", "browsing", "budget_level", "demographics", "reading_level"]
    import itertools

    for combo in itertools.islice(itertools.permutations(names, 5), 4200):
        client._plan("user", list(combo))
    assert len(client._plans) <= 4097


async def test_native_async_batch_path(
    client: FeastClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    claim_native_async_reads(monkeypatch)
    native = FeastClient(client.repo_path, "asahi", feature_store=client.feature_store)
    with pytest.raises(FeatureStoreUnavailableError):
        await native.aget_batch_features([FRESH_USER, STALE_USER], "user", ["tier"])


def test_integer_join_keys_and_multi_entity_views(tmp_path: Path) -> None:
    """An INT64 entity gets integer ids; a view keyed by two entities is served under the
    compound entity type ``account+shop`` (read with a composite key)."""
    from datetime import datetime, timedelta, timezone

    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Int64, String

    from asahi_features.sample_repo import feature_store_yaml

    (tmp_path / "data").mkdir()
    (tmp_path / "feature_store.yaml").write_text(feature_store_yaml())
    now = datetime.now(timezone.utc)
    frame = pd.DataFrame(
        {
            "account_id": [1, 2],
            "store_id": [10, 20],
            "event_timestamp": [now - timedelta(minutes=5)] * 2,
            "plan": ["basic", "pro"],
        }
    )
    frame.to_parquet(tmp_path / "data" / "accounts.parquet")
    source = FileSource(
        path=str(tmp_path / "data" / "accounts.parquet"), timestamp_field="event_timestamp"
    )
    account = Entity(name="account", join_keys=["account_id"], value_type=ValueType.INT64)
    shop = Entity(name="shop", join_keys=["store_id"], value_type=ValueType.INT64)
    plans = FeatureView(
        name="account_plan",
        entities=[account],
        ttl=timedelta(days=1),
        schema=[Field(name="plan", dtype=String)],
        source=source,
    )
    pair = FeatureView(
        name="account_shop",
        entities=[account, shop],
        ttl=timedelta(days=1),
        schema=[Field(name="plan", dtype=String), Field(name="visits", dtype=Int64)],
        source=source,
    )
    store = FeatureStore(repo_path=str(tmp_path))
    store.apply([account, shop, plans, pair])
    store.write_to_online_store("account_plan", frame[["account_id", "event_timestamp", "plan"]])
    frame["visits"] = [3, 7]
    store.write_to_online_store("account_shop", frame)
    client = FeastClient(str(tmp_path), "asahi")
    assert client.get_features("2", "account", ["plan"]).features == {"plan": "pro"}
    assert client.list_features() == {
        "account": ["plan"],
        "account+shop": ["plan", "visits"],
        "shop": [],
    }
    key = compose_key({"shop": "20", "account": "2"}, {})
    pair_vector = client.get_features(key, "shop+account", ["visits"])
    assert pair_vector.features == {"visits": 7} and pair_vector.entity_id == key
    wrong_pair = client.get_batch_features(
        [compose_key({"shop": "10", "account": "1"}, {}), "2"], "account+shop", ["visits"]
    )
    assert wrong_pair[0].features == {"visits": 3}
    assert wrong_pair[1].status is FeatureStatus.INVALID_ID
    assert "ids of account and shop" in (wrong_pair[1].error or "")
    invalid = client.get_features("abc", "account", ["plan"])
    assert invalid.status is FeatureStatus.INVALID_ID and not invalid.features
    assert "INT64" in (invalid.error or "") and "account_id" in (invalid.error or "")
    assert client.health_check() is True


def test_value_conversion_fast_and_slow_paths() -> None:
    from feast.protos.feast.types.Value_pb2 import Value

    assert convert_value(Value(string_val="a"), "string_val") == "a"
    assert convert_value(Value(double_val=0.5), "double_val") == 0.5
    listed = Value()
    listed.int64_list_val.val.extend([3, 1])
    assert convert_value(listed, "int64_list_val") == [3, 1]
    stamp = convert_value(Value(unix_timestamp_val=1_700_000_000), "unix_timestamp_val")
    assert stamp.timestamp() == 1_700_000_000


def test_join_key_override(repo: Path) -> None:
    same = FeastClient(str(repo), "asahi", entity_join_keys={"user": "user_id"})
    assert same.get_features(FRESH_USER, "user", ["tier"]).features
    wrong = FeastClient(str(repo), "asahi", entity_join_keys={"user": "uid"})
    with pytest.raises(FeatureConfigError, match="join key 'uid'"):
        wrong.get_features(FRESH_USER, "user", ["tier"])


def test_registry_ttl_is_rounded_up(repo: Path) -> None:
    client = FeastClient(str(repo), "asahi", registry_ttl_seconds=0.5)
    assert client.feature_store.config.registry.cache_ttl_seconds == 1


def test_one_client_shared_across_threads(client: FeastClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ids = [f"u_{n:04d}" for n in range(1, 161)]
    expected = {v.entity_id: v.features for v in client.get_batch_features(ids, "user", ["tier"])}
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda eid: client.get_features(eid, "user", ["tier"]), ids))
    assert [v.entity_id for v in got] == ids
    assert all(v.features == expected[v.entity_id] for v in got)
