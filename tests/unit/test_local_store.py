"""LocalFeatureStore: the JSON-file backend (spec 2.3, 2.5, 2.6)."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from asahi_features.errors import (
    FeatureConfigError,
    FeatureStoreDataError,
    FeatureStoreUnavailableError,
)
from asahi_features.models import FeatureStatus
from asahi_features.stores.base import FeatureStoreClient, aget_batch_features, aget_features
from asahi_features.stores.local import LocalFeatureStore
from tests.support.clocks import WallClock as Clock

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)


DATA: dict[str, Any] = {
    "user": {
        "u_1001": {
            "updated_at": "2026-11-24T11:00:00Z",
            "features": {
                "purchase_history": ["shoes", "jacket", "belt"],
                "tier": "gold",
                "budget": None,
            },
            "feature_timestamps": {"tier": "2026-11-01T00:00:00Z"},
        },
        "u_1002": {
            "updated_at": "2026-11-24T11:59:00+00:00",
            "features": {"tier": "silver", "preferences": "casual athletic"},
        },
    },
    "organization": {
        "acme": {"updated_at": "2026-11-24T10:00:00", "features": {"brand_voice": "playful"}}
    },
}


@pytest.fixture
def data_path(tmp_path: Path) -> Path:
    path = tmp_path / "features.json"
    path.write_text(json.dumps(DATA), encoding="utf-8")
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(data_path: Path, clock: Clock) -> LocalFeatureStore:
    return LocalFeatureStore(data_path, clock=clock)


def test_satisfies_the_protocol(store: LocalFeatureStore) -> None:
    assert isinstance(store, FeatureStoreClient)


def test_get_single_entity(store: LocalFeatureStore) -> None:
    vector = store.get_features("u_1002", "user", ["tier", "preferences"])
    assert vector.entity_id == "u_1002"
    assert vector.entity_type == "user"
    assert vector.source == "local"
    assert vector.status is FeatureStatus.FOUND
    assert vector.features == {"tier": "silver", "preferences": "casual athletic"}
    assert vector.freshness_seconds == pytest.approx(60.0)
    assert vector.retrieved_at == NOW


def test_only_requested_features_are_returned(store: LocalFeatureStore) -> None:
    vector = store.get_features("u_1001", "user", ["purchase_history"])
    assert vector.features == {"purchase_history": ["shoes", "jacket", "belt"]}


def test_per_feature_timestamps_override_updated_at(store: LocalFeatureStore) -> None:
    vector = store.get_features("u_1001", "user", ["purchase_history", "tier"])
    assert vector.feature_freshness["purchase_history"] == pytest.approx(3600.0)
    assert vector.feature_freshness["tier"] == pytest.approx(
        (NOW - datetime(2026, 11, 1, tzinfo=timezone.utc)).total_seconds()
    )
    # freshness_seconds is the age of the oldest returned feature
    assert vector.freshness_seconds == vector.feature_freshness["tier"]


def test_stale_data_ages_with_the_clock(store: LocalFeatureStore, clock: Clock) -> None:
    first = store.get_features("u_1002", "user", ["tier"])
    clock.advance(7200)
    later = store.get_features("u_1002", "user", ["tier"])
    assert later.freshness_seconds - first.freshness_seconds == pytest.approx(7200.0)
    assert later.freshness_seconds > 3600  # older than the enricher's default threshold


def test_naive_timestamps_are_utc(store: LocalFeatureStore) -> None:
    vector = store.get_features("acme", "organization", ["brand_voice"])
    assert vector.freshness_seconds == pytest.approx(7200.0)


def test_nanosecond_and_offset_timestamps_parse(tmp_path: Path, clock: Clock) -> None:
    """Exporters (Feast, Spark) write nanoseconds; the same parser as the HTTP backend."""
    data = {
        "user": {
            "u1": {
                "updated_at": "2026-11-24T11:00:00.123456789Z",
                "features": {"tier": "gold", "preferences": "casual"},
                "feature_timestamps": {"preferences": "2026-11-24T12:30:00+01:00"},
            }
        }
    }
    path = tmp_path / "features.json"
    LocalFeatureStore.write(path, data)
    vector = LocalFeatureStore(path, clock=clock).get_features(
        "u1", "user", ["tier", "preferences"]
    )
    assert vector.feature_freshness["tier"] == pytest.approx(3600.0 - 0.123456, abs=1e-3)
    assert vector.feature_freshness["preferences"] == pytest.approx(1800.0)


def test_null_feature_is_left_out(store: LocalFeatureStore) -> None:
    vector = store.get_features("u_1001", "user", ["budget", "tier"])
    assert vector.features == {"tier": "gold"}
    assert "budget" not in vector.feature_freshness


def test_entity_whose_requested_features_are_all_null_is_found_not_missing(
    store: LocalFeatureStore,
) -> None:
    """As Feast reports it: the row exists, so the enricher says no_feature_values."""
    from asahi_features.enricher import FeatureEnricher
    from asahi_features.settings import EnricherConfig

    vector = store.get_features("u_1001", "user", ["budget"])
    assert vector.status is FeatureStatus.FOUND and vector.features == {}
    [batched] = store.get_batch_features(["u_1001"], "user", ["budget"])
    assert batched.status is FeatureStatus.FOUND
    config = EnricherConfig(
        enabled_task_types=["t"],
        task_features={"t": {"user": ["budget"]}},
        freshness_threshold_seconds=10**9,
    )
    result = FeatureEnricher(store, config).enrich("Hi", user_id="u_1001", task_type="t")
    assert result.reason.value == "no_feature_values" and result.enriched_prompt == "Hi"


def test_missing_entity_returns_empty_vector_and_logs_info(
    store: LocalFeatureStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="asahi_features.stores.local"):
        vector = store.get_features("nobody", "user", ["tier"])
    assert vector.features == {}
    assert vector.freshness_seconds == 0.0
    assert vector.status is FeatureStatus.MISSING
    assert vector.is_empty
    assert any("nobody" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_batch_keeps_order_duplicates_and_missing(store: LocalFeatureStore) -> None:
    ids = ["u_1002", "ghost", "u_1001", "u_1002"]
    vectors = store.get_batch_features(ids, "user", ["tier"])
    assert [v.entity_id for v in vectors] == ids
    assert [v.features.get("tier") for v in vectors] == ["silver", None, "gold", "silver"]
    assert vectors[1].status is FeatureStatus.MISSING


def test_batch_of_nothing(store: LocalFeatureStore) -> None:
    assert store.get_batch_features([], "user", ["tier"]) == []


def test_invalid_feature_names_list_available(store: LocalFeatureStore) -> None:
    with pytest.raises(FeatureConfigError) as info:
        store.get_features("u_1001", "user", ["tier", "shoe_size"])
    err = info.value
    assert "shoe_size" in str(err)
    assert err.available_features == ["budget", "preferences", "purchase_history", "tier"]
    for name in err.available_features:
        assert name in str(err)


def test_unknown_entity_type_lists_entity_types(store: LocalFeatureStore) -> None:
    with pytest.raises(FeatureConfigError) as info:
        store.get_features("x", "product", ["price"])
    assert info.value.available_features == ["organization", "user"]
    assert "entity types" in str(info.value)


def test_health_check(store: LocalFeatureStore, data_path: Path) -> None:
    assert store.health_check() is True
    data_path.write_text("{not json", encoding="utf-8")
    assert store.health_check() is False
    data_path.unlink()
    assert store.health_check() is False


def test_missing_file_is_unavailable(tmp_path: Path) -> None:
    store = LocalFeatureStore(tmp_path / "absent.json")
    with pytest.raises(FeatureStoreUnavailableError, match=r"absent\.json"):
        store.get_features("u", "user", ["tier"])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"user": {"u1": {"updated_at": "2026-01-01T00:00:00Z",\n "features": [1,}}}', "line 2"),
        ("[1, 2]", "top level must be an object"),
        ('{"user": []}', "'user' must be an object of entity ids"),
        ('{"user": {"u1": 5}}', "user.u1 must be an object"),
        ('{"user": {"u1": {"features": {}}}}', "user.u1.updated_at is required"),
        ('{"user": {"u1": {"updated_at": "yesterday", "features": {}}}}', "not an ISO-8601"),
        ('{"user": {"u1": {"updated_at": 5, "features": {}}}}', "must be an ISO-8601"),
        ('{"user": {"u1": {"updated_at": "2026-01-01", "features": []}}}', "features must be"),
        ('{"user": {"u1": {"updated_at": "2026-01-01", "colour": 1}}}', "unknown key"),
        (
            '{"user": {"u1": {"updated_at": "2026-01-01", "feature_timestamps": []}}}',
            "feature_timestamps must be an object",
        ),
    ],
)
def test_malformed_file_names_file_and_position(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(FeatureStoreDataError) as info:
        LocalFeatureStore(path).get_features("u1", "user", [])
    assert "bad.json" in str(info.value)
    assert expected in str(info.value)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.json"
    path.write_bytes(b'{"user": "\xff"}')
    with pytest.raises(FeatureStoreDataError, match="UTF-8"):
        LocalFeatureStore(path).get_features("u1", "user", [])


def test_file_changed_on_disk_is_reread(store: LocalFeatureStore, data_path: Path) -> None:
    assert store.get_features("u_1002", "user", ["tier"]).features == {"tier": "silver"}
    changed = json.loads(data_path.read_text())
    changed["user"]["u_1002"]["features"]["tier"] = "platinum"
    changed["user"]["u_1003"] = {"updated_at": "2026-11-24T12:00:00Z", "features": {"tier": "new"}}
    LocalFeatureStore.write(data_path, changed)
    assert store.get_features("u_1002", "user", ["tier"]).features == {"tier": "platinum"}
    assert store.get_features("u_1003", "user", ["tier"]).features == {"tier": "new"}


def test_unchanged_file_is_not_reparsed(store: LocalFeatureStore, data_path: Path) -> None:
    """The file is read again only when its size, mtime or inode changes: rewritten in
    place with the same size and its old mtime put back, it still answers as before."""
    assert store.get_features("u_1002", "user", ["tier"]).features == {"tier": "silver"}
    before = data_path.stat()
    text = data_path.read_text(encoding="utf-8")
    assert text.count('"silver"') == 1
    data_path.write_text(text.replace('"silver"', '"bronze"'), encoding="utf-8")  # in place
    os.utime(data_path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = data_path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert store.get_features("u_1002", "user", ["tier"]).features == {"tier": "silver"}
    os.utime(data_path, ns=(1, 1))
    assert store.get_features("u_1002", "user", ["tier"]).features == {"tier": "bronze"}


def test_list_features(store: LocalFeatureStore) -> None:
    assert store.list_features() == {
        "user": ["budget", "preferences", "purchase_history", "tier"],
        "organization": ["brand_voice"],
    }
    assert store.list_features("organization") == {"organization": ["brand_voice"]}
    with pytest.raises(FeatureConfigError):
        store.list_features("product")


def test_repr_and_context_manager(store: LocalFeatureStore, data_path: Path) -> None:
    assert str(data_path) in repr(store)
    with store as same:
        assert same is store


async def test_async_paths(store: LocalFeatureStore) -> None:
    vector = await store.aget_features("u_1002", "user", ["tier"])
    assert vector.features == {"tier": "silver"}
    vectors = await store.aget_batch_features(["u_1001", "x"], "user", ["tier"])
    assert [v.status for v in vectors] == [FeatureStatus.FOUND, FeatureStatus.MISSING]
    # the module-level helpers use the native async methods
    assert (await aget_features(store, "u_1001", "user", ["tier"])).features == {"tier": "gold"}
    assert len(await aget_batch_features(store, ["u_1001"], "user", ["tier"])) == 1
