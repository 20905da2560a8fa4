"""FeastClient as Feast users run it: typed join keys, rate-limited registry refreshes,
"did you mean" errors and the remote registry's dependencies.

The repository is built in code like the one ``feast init`` makes: an entity declared
without a ``value_type`` whose join key is typed INT64 by its feature view's schema.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Dict, List

import pytest

from asahi_features.enricher import FeatureEnricher
from asahi_features.errors import FeatureConfigError, FeatureStoreUnavailableError
from asahi_features.guard import GuardedClient
from asahi_features.models import EnrichmentReason, FeatureStatus
from asahi_features.settings import EnricherConfig
from asahi_features.stores.feast.keys import BAD_ID_ERRORS, CONVERTERS
from asahi_features.stores.feast_store import FeastClient
from asahi_features.stores.naming import FeatureNameResolver, close_matches
from tests.support.feast_helpers import CallCounter, claim_native_async_reads

USERS = 20
FEATURES = ["tier", "conv_rate"]


def _build_int_repo(path: Path) -> Path:
    """Entity ``user`` (join key ``user_id``, no value_type: typed by the view's
    ``Int64`` column, as in ``feast init``), view ``user_stats`` (tier, conv_rate) and
    entity ``organization`` with a STRING key and view ``org_info`` (tone)."""
    from datetime import datetime, timedelta, timezone

    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32, Int64, String

    from asahi_features.sample_repo import feature_store_yaml

    (path / "data").mkdir()
    (path / "feature_store.yaml").write_text(feature_store_yaml())
    now = datetime.now(timezone.utc)
    users = pd.DataFrame(
        {
            "user_id": list(range(1, USERS + 1)),
            "event_timestamp": [now - timedelta(minutes=5)] * USERS,
            "tier": [f"tier-{n % 3}" for n in range(1, USERS + 1)],
            "conv_rate": [n / 100 for n in range(1, USERS + 1)],
        }
    )
    users.to_parquet(path / "data" / "users.parquet")
    orgs = pd.DataFrame(
        {"org_id": ["o1"], "event_timestamp": [now - timedelta(minutes=5)], "tone": ["warm"]}
    )
    orgs.to_parquet(path / "data" / "orgs.parquet")
    with warnings.catch_warnings():  # Feast deprecates a missing value_type
        warnings.simplefilter("ignore", DeprecationWarning)
        user = Entity(name="user", join_keys=["user_id"])  # no value_type, like feast init
    org = Entity(name="organization", join_keys=["org_id"], value_type=ValueType.STRING)
    stats = FeatureView(
        name="user_stats",
        entities=[user],
        ttl=timedelta(days=1),
        schema=[
            Field(name="user_id", dtype=Int64),
            Field(name="tier", dtype=String),
            Field(name="conv_rate", dtype=Float32),
        ],
        source=FileSource(
            path=str(path / "data" / "users.parquet"), timestamp_field="event_timestamp"
        ),
    )
    info = FeatureView(
        name="org_info",
        entities=[org],
        ttl=timedelta(days=1),
        schema=[Field(name="org_id", dtype=String), Field(name="tone", dtype=String)],
        source=FileSource(
            path=str(path / "data" / "orgs.parquet"), timestamp_field="event_timestamp"
        ),
    )
    store = FeatureStore(repo_path=str(path))
    store.apply([user, org, stats, info])
    store.write_to_online_store("user_stats", users)
    store.write_to_online_store("org_info", orgs)
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_int_repo(tmp_path_factory.mktemp("feast_int_repo"))


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[FeastClient]:
    c = FeastClient(str(repo), "asahi")
    yield c
    c.close()


def _spy_registry(monkeypatch: pytest.MonkeyPatch, client: FeastClient) -> Dict[str, List[Any]]:
    """Count registry reads: Feast's refresh_registry and the listing calls."""
    store = client.feature_store
    counters = {
        name: CallCounter(monkeypatch, store, name)
        for name in ("refresh_registry", "list_entities", "list_feature_views")
    }
    return {name: counter.calls for name, counter in counters.items()}


# -- typed join keys -------------------------------------------------------------------


def test_join_key_type_comes_from_the_view_schema(client: FeastClient) -> None:
    # INT64 for user (from the view's Int64 column): an id that is no integer is refused
    bad = client.get_features("abc", "user", FEATURES)
    assert bad.status is FeatureStatus.INVALID_ID
    assert "is not a valid INT64 value of join key 'user_id'" in (bad.error or "")
    # STRING for organization: any text is an id (this one just has no row)
    assert client.get_features("abc", "organization", ["tone"]).status is FeatureStatus.MISSING
    vec = client.get_features("3", "user", FEATURES)
    assert vec.status is FeatureStatus.FOUND
    assert vec.features["tier"] == "tier-0"
    assert vec.features["conv_rate"] == pytest.approx(0.03)
    assert client.get_features(3, "user", FEATURES).features == vec.features  # type: ignore[arg-type]
    assert client.get_features("o1", "organization", ["tone"]).features == {"tone": "warm"}


def test_health_check_probes_with_a_value_of_the_key_type(
    client: FeastClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = CallCounter(monkeypatch, client.feature_store, "get_online_features").calls
    assert client.health_check() is True
    [rows] = calls
    [(key, values)] = rows.items()
    if key == "user_id":
        assert values == [0] and type(values[0]) is int
    else:
        assert (key, values) == ("org_id", ["__asahi_health_check__"])


@pytest.mark.parametrize(
    "bad", ["abc", "", "1.5", "99999999999999999999", "0x10", None, 2.5, b"1", object()]
)
def test_an_id_that_does_not_convert_is_invalid_not_a_config_error(
    client: FeastClient, monkeypatch: pytest.MonkeyPatch, bad: Any
) -> None:
    calls = CallCounter(monkeypatch, client.feature_store, "get_online_features").calls
    vec = client.get_features(bad, "user", FEATURES)
    assert vec.status is FeatureStatus.INVALID_ID
    assert vec.features == {} and vec.entity_id is bad
    assert "INT64" in (vec.error or "") and "user_id" in (vec.error or "")
    assert calls == []  # nothing is read for it


def test_a_batch_reads_its_valid_ids_in_one_call(
    client: FeastClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = CallCounter(monkeypatch, client.feature_store, "get_online_features").calls
    ids = ["1", "abc", "2", "9999", "x", "1"]
    vectors = client.get_batch_features(ids, "user", FEATURES)
    assert [v.entity_id for v in vectors] == ids
    assert [v.status for v in vectors] == [
        FeatureStatus.FOUND,
        FeatureStatus.INVALID_ID,
        FeatureStatus.FOUND,
        FeatureStatus.MISSING,
        FeatureStatus.INVALID_ID,
        FeatureStatus.FOUND,
    ]
    assert vectors[2].features["tier"] == "tier-2"
    assert calls == [{"user_id": [1, 2, 9999, 1]}]
    calls.clear()
    only_bad = client.get_batch_features(["a", "b"], "user", FEATURES)
    assert [v.status for v in only_bad] == [FeatureStatus.INVALID_ID] * 2
    assert calls == []


async def test_async_paths_degrade_invalid_ids_alike(
    client: FeastClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors = await client.aget_batch_features(["1", "abc"], "user", FEATURES)
    assert [v.status for v in vectors] == [FeatureStatus.FOUND, FeatureStatus.INVALID_ID]
    assert (await client.aget_features("abc", "user", FEATURES)).status is FeatureStatus.INVALID_ID
    # the native path (Redis in production): no read at all for a batch of invalid ids,
    # so SQLite's NotImplementedError is never reached
    claim_native_async_reads(monkeypatch)
    native = FeastClient(client.repo_path, "asahi", feature_store=client.feature_store)
    vectors = await native.aget_batch_features(["abc", "def"], "user", FEATURES)
    assert [v.status for v in vectors] == [FeatureStatus.INVALID_ID] * 2
    with pytest.raises(FeatureStoreUnavailableError, match="NotImplementedError"):
        await native.aget_batch_features(["1", "abc"], "user", FEATURES)


def test_key_converters() -> None:
    to_int32 = CONVERTERS["INT32"]
    assert to_int32("2147483647") == 2**31 - 1
    for bad in ("2147483648", "-2147483649", "1e3", 1.0):
        with pytest.raises(BAD_ID_ERRORS):
            to_int32(bad)
    assert CONVERTERS["STRING"](12) == "12"
    with pytest.raises(BAD_ID_ERRORS):
        CONVERTERS["STRING"](b"u1")
    assert CONVERTERS["BYTES"]("u1") == b"u1"
    with pytest.raises(BAD_ID_ERRORS):
        CONVERTERS["DOUBLE"]("nan")


# -- enrichment through the guard ------------------------------------------------------


def test_enrich_batch_degrades_only_the_invalid_request(client: FeastClient) -> None:
    guarded = GuardedClient(client, timeout_ms=5000, cache_ttl_seconds=60)
    try:
        config = EnricherConfig(
            enabled_task_types=["general"],
            task_features={"general": {"user": FEATURES}},
        )
        enricher = FeatureEnricher(guarded, config)
        requests = [
            {"prompt": "Hi", "user_id": "1", "task_type": "general"},
            {"prompt": "Hi", "user_id": "abc", "task_type": "general"},
            {"prompt": "Hi", "user_id": "2", "task_type": "general"},
        ]
        for _ in range(3):  # again: served from the cache, except the invalid id
            results = enricher.enrich_batch(requests)
            assert [r.reason for r in results] == [
                EnrichmentReason.ENRICHED,
                EnrichmentReason.INVALID_ENTITY_ID,
                EnrichmentReason.ENRICHED,
            ]
            bad = results[1]
            assert bad.enriched_prompt == "Hi" and not bad.features_available
            assert bad.entity_status == {"user": FeatureStatus.INVALID_ID}
            assert not bad.store_failed
            assert "tier-1" in results[0].feature_context
        single = enricher.enrich("Hi", user_id="abc", task_type="general")
        assert single.reason is EnrichmentReason.INVALID_ENTITY_ID
        stats = guarded.stats()
        assert stats["unavailable"] == 0 and stats["fallbacks"] == 0
        assert stats["breaker"]["window_failures"] == 0
        assert stats["breaker"]["state"] == "closed"
        cache = guarded.cache
        assert cache is not None
        assert cache.get("user", "1", FEATURES) is not None
        assert cache.get("user", "abc", FEATURES) is None  # never cached
    finally:
        guarded.close()


def test_invalid_id_beside_a_found_entity_still_enriches(client: FeastClient) -> None:
    config = EnricherConfig(
        enabled_task_types=["general"],
        task_features={"general": {"user": FEATURES, "organization": ["tone"]}},
    )
    result = FeatureEnricher(client, config).enrich(
        "Hi", user_id="abc", organization_id="o1", task_type="general"
    )
    assert result.reason is EnrichmentReason.ENRICHED
    assert result.entity_status["user"] is FeatureStatus.INVALID_ID


# -- registry refreshes are rate-limited -----------------------------------------------


def test_bad_input_cannot_trigger_a_refresh_per_request(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = FeastClient(str(repo), "asahi")
    assert client.get_features("1", "user", FEATURES).features
    reads = _spy_registry(monkeypatch, client)
    for n in range(1000):
        assert client.get_features(f"bad{n}", "user", FEATURES).status is FeatureStatus.INVALID_ID
    client.get_batch_features([f"bad{n}" for n in range(1000)], "user", FEATURES)
    assert len(reads["refresh_registry"]) == 0
    # unknown names and entity types: one re-read, then none within the interval
    for n in range(1000):
        with pytest.raises(FeatureConfigError):
            client.get_features("1", "user", [f"nope_{n}"])
        with pytest.raises(FeatureConfigError):
            client.get_features("1", f"kind_{n}", ["tier"])
        with pytest.raises(FeatureConfigError):
            client.list_features(f"kind_{n}")
    assert len(reads["refresh_registry"]) == 1
    assert len(reads["list_entities"]) <= 1 and len(reads["list_feature_views"]) <= 1
    with pytest.raises(FeatureConfigError, match=r"re-read less than 10 s ago"):
        client.get_features("1", "user", ["nope"])


def test_refreshes_resume_after_the_interval(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    client = FeastClient(str(repo), "asahi", refresh_interval_seconds=30)
    client._clock = lambda: now[0]
    reads = _spy_registry(monkeypatch, client)
    for _ in range(5):
        with pytest.raises(FeatureConfigError):
            client.get_features("1", "user", ["nope"])
    assert len(reads["refresh_registry"]) == 1
    now[0] += 29.9
    with pytest.raises(FeatureConfigError):
        client.get_features("1", "user", ["nope"])
    assert len(reads["refresh_registry"]) == 1
    now[0] += 0.2
    with pytest.raises(FeatureConfigError):
        client.get_features("1", "user", ["nope"])
    assert len(reads["refresh_registry"]) == 2
    client.refresh()  # an explicit refresh always re-reads
    assert len(reads["refresh_registry"]) == 3


def test_refresh_interval_must_not_be_negative(repo: Path) -> None:
    from asahi_features.errors import ConfigError

    with pytest.raises(ConfigError, match="refresh_interval_seconds"):
        FeastClient(str(repo), "asahi", refresh_interval_seconds=-1)


# -- errors that help ------------------------------------------------------------------


def test_unknown_feature_suggests_close_matches_first(client: FeastClient) -> None:
    with pytest.raises(FeatureConfigError) as info:
        client.get_features("1", "user", ["tierr", "conv_rat"])
    err = info.value
    assert err.suggestions == ["tier", "conv_rate"]
    message = str(err)
    hint = message.index("did you mean 'tier' or 'conv_rate'?")
    assert hint < message.index("Available other features by view: ")
    # the flat list of accepted names is unchanged
    assert "user_stats:tier" in err.available_features and "tier" in err.available_features


def test_unknown_feature_without_a_close_match_lists_by_view(client: FeastClient) -> None:
    with pytest.raises(FeatureConfigError) as info:
        client.get_features("1", "user", ["shoe_size"])
    assert info.value.suggestions == []
    assert "did you mean" not in str(info.value)
    assert "Available features by view: user_stats: tier, conv_rate" in str(info.value)


def test_unknown_entity_type_suggests_close_matches(client: FeastClient) -> None:
    with pytest.raises(FeatureConfigError) as info:
        client.get_features("1", "usr", ["tier"])
    assert info.value.suggestions == ["user"]
    assert "did you mean 'user'?" in str(info.value)
    assert info.value.available_features == ["organization", "user"]


def test_resolver_suggestions() -> None:
    resolver = FeatureNameResolver(
        "user",
        {"user_profile": ["tier", "preferences"], "user_purchases": ["purchase_history"]},
    )
    with pytest.raises(FeatureConfigError) as info:
        resolver.resolve(["Tier", "user_profile:preference", "purchase_histroy"])
    assert info.value.suggestions == ["tier", "user_profile:preferences", "purchase_history"]
    message = str(info.value)
    assert message.index("did you mean") < message.index("Available other features by view")
    assert "user_profile: preferences" in message  # 'tier' is suggested, not repeated
    assert close_matches(["zzz"], ["tier"]) == []


# -- the remote registry ---------------------------------------------------------------


def test_remote_registry_dependencies_are_installed(tmp_path: Path) -> None:
    """``[feast]`` brings grpcio: a repository with ``registry_type: remote`` loads, and
    an unreachable registry server is an unavailable store, not an ImportError."""
    import grpc  # type: ignore[import-untyped]  # noqa: F401
    from feast.infra.registry.remote import RemoteRegistry  # noqa: F401

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "feature_store.yaml").write_text(
        "project: asahi\nprovider: local\n"
        f"registry:\n  registry_type: remote\n  path: 127.0.0.1:{port}\n"
        "online_store:\n  type: sqlite\n  path: data/online.db\n"
        "entity_key_serialization_version: 3\n"
    )
    client = FeastClient(str(tmp_path), "asahi")
    assert type(client.feature_store.registry).__name__ == "RemoteRegistry"
    assert client.health_check() is False
    with pytest.raises(FeatureStoreUnavailableError):
        client.get_features("1", "user", ["tier"])
