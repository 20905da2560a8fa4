"""One freshness rule on every backend that parses timestamps: an unknown age is unknown.

A feature whose event time is missing, null, not a string, unparsable, at or before the
epoch (what online stores send for "no timestamp") or far in the future gets the age
:data:`~asahi_features.stores.base.UNKNOWN_AGE`, never 0; the enricher's freshness check
drops it as stale under the default configuration (``enricher.unknown_age: drop``) and
keeps it with ``unknown_age: keep``. Property-based: hypothesis generates the timestamps
and each backend (HTTP against the ``feast serve`` mimic, Tecton against the
Tecton-protocol server through the real ``tecton-client``, the local JSON file) is driven
with them; the outcome must be the same everywhere.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asahi_features.enricher import FeatureEnricher
from asahi_features.errors import FeatureStoreDataError
from asahi_features.guard import GuardedClient
from asahi_features.models import EnrichmentReason, EnrichmentResult, FeatureVector
from asahi_features.settings import EnricherConfig
from asahi_features.stores.base import (
    FUTURE_TOLERANCE_SECONDS,
    UNKNOWN_AGE,
    age_of,
    is_unknown_age,
    parse_timestamp,
)
from asahi_features.stores.http import HttpFeatureStore
from asahi_features.stores.local import LocalFeatureStore
from tests.support.feast_mimic import NOW, FeastMimic
from tests.support.tecton_server import GET_FEATURES, TectonTestServer

KEY_ENV = "ASAHI_UNKNOWN_AGE_TECTON_KEY"
KEY = "tk-unknown-age-test"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class _Missing:
    """The timestamp field is absent from the answer."""

    def __repr__(self) -> str:
        return "MISSING"


class _Short:
    """HTTP only: ``event_timestamps`` is a list with no entry for the entity."""

    def __repr__(self) -> str:
        return "SHORT_LIST"


MISSING = _Missing()
SHORT = _Short()


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- timestamps whose age is unknown ------------------------------------------------------

_epoch_texts = st.sampled_from(
    [
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:00:00.000000Z",
        "1970-01-01T00:00:00+00:00",
        "1970-01-01T00:00:00",
        "1970-01-01T01:00:00+01:00",
    ]
)
_pre_epoch = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(1969, 12, 31), timezones=st.just(timezone.utc)
).map(lambda ts: ts.isoformat())
_far_future = st.datetimes(
    min_value=(NOW + timedelta(seconds=FUTURE_TOLERANCE_SECONDS + 1)).replace(tzinfo=None),
    max_value=datetime(9999, 12, 30),
    timezones=st.just(timezone.utc),
).map(_iso)
_garbage = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["yesterday", "now", "0", "2026-13-45T99:99:99Z", "T12:00", "NaN"]),
).filter(lambda text: parse_timestamp(text) is None)
_not_a_string = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)

unknown_stamps = st.one_of(
    st.just(MISSING), st.none(), _epoch_texts, _pre_epoch, _far_future, _garbage, _not_a_string
)
"""Raw values of a timestamp field whose age no backend may call known."""

parsable_unknown_stamps = st.one_of(_epoch_texts, _pre_epoch, _far_future)
"""The subset that parses as ISO-8601 (the local store accepts only those in its file)."""


# -- the backends ---------------------------------------------------------------------


class StampedMimic(FeastMimic):
    """``feast serve`` whose ``user_profile__tier`` column carries ``raw`` as timestamp."""

    raw: Any = MISSING

    def answer(self, body: Dict[str, Any]) -> Tuple[int, Any]:
        status, out = super().answer(body)
        if status == 200:
            column = out["results"][out["metadata"]["feature_names"].index("user_profile__tier")]
            if self.raw is MISSING:
                del column["event_timestamps"]
            elif self.raw is SHORT:
                column["event_timestamps"] = []
            else:
                column["event_timestamps"] = [self.raw for _ in column["values"]]
        return status, out


class StampedTecton(TectonTestServer):
    """Tecton whose ``profile.tier`` carries ``raw`` as ``effectiveTime``."""

    raw: Any = MISSING

    def _answer(self, path: str, headers: Mapping[str, str], raw: bytes) -> Tuple[int, Any]:
        status, out = super()._answer(path, headers, raw)
        if status == 200 and path == GET_FEATURES:
            for item in out["metadata"]["features"]:
                if item.get("name") == "profile.tier":
                    if self.raw is MISSING or self.raw is SHORT:
                        item.pop("effectiveTime", None)
                    else:
                        item["effectiveTime"] = self.raw
        return status, out


@pytest.fixture(scope="module")
def mimic() -> Iterator[StampedMimic]:
    server = StampedMimic()
    yield server
    server.close()


@pytest.fixture(scope="module")
def http_store(mimic: StampedMimic) -> Iterator[HttpFeatureStore]:
    store = HttpFeatureStore(
        mimic.url,
        feature_views={"user": ["user_profile:tier"]},
        timeout_ms=5000,
        clock=lambda: NOW,
    )
    yield store
    store.close()


@pytest.fixture(scope="module")
def tecton() -> Iterator[Tuple[StampedTecton, Any]]:
    from asahi_features.stores.tecton import TectonClient

    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, KEY)
    server = StampedTecton(api_key=KEY)
    server.start()
    server.add_service("user_fs", join_keys=["user_id"], features={"profile.tier": "string"})
    server.put("user_fs", {"user_id": "u1"}, {"profile.tier": "gold"}, age_seconds=30)
    client = TectonClient(
        KEY_ENV,
        "prod",
        url=server.url,
        feature_service="user_fs",
        timeout_ms=5000,
        clock=lambda: NOW,
    )
    yield server, client
    client.close()
    server.close()
    mp.undo()


def _local_store(directory: Path, raw: Any) -> LocalFeatureStore:
    row: Dict[str, Any] = {"features": {"tier": "gold"}}
    if raw is not MISSING:
        row["updated_at"] = raw
    path = directory / "features.json"
    path.write_text(json.dumps({"user": {"u1": row}}), encoding="utf-8")
    return LocalFeatureStore(path, clock=lambda: NOW)


# -- the outcome ----------------------------------------------------------------------


def _config(**overrides: Any) -> EnricherConfig:
    """The default configuration (threshold 3600 s, unknown_age drop) with a task map
    that asks for the one feature these backends serve."""
    return EnricherConfig(
        enabled_task_types=["t"], task_features={"t": {"user": ["tier"]}}, **overrides
    )


def _enrich(client: Any, **overrides: Any) -> EnrichmentResult:
    return FeatureEnricher(client, _config(**overrides)).enrich("P", user_id="u1", task_type="t")


def assert_dropped_as_stale(client: Any, name: str) -> None:
    """The feature's age is unknown, the vector round-trips through JSON, the default
    enricher drops the feature as stale, and ``unknown_age: keep`` lets it through."""
    vector = client.get_features("u1", "user", [name])
    assert vector.features == {name: "gold"}
    assert is_unknown_age(vector.feature_freshness[name])
    assert vector.freshness_seconds == UNKNOWN_AGE
    again = FeatureVector.model_validate_json(vector.model_dump_json())
    assert again.feature_freshness == vector.feature_freshness
    assert again.freshness_seconds == vector.freshness_seconds
    assert json.loads(json.dumps(vector.model_dump(mode="json")))["freshness_seconds"] == (
        UNKNOWN_AGE
    )

    result = _enrich(client)
    assert result.dropped_stale == [name]
    assert result.reason is EnrichmentReason.ALL_STALE
    assert "gold" not in result.enriched_prompt and not result.features_available

    kept = _enrich(client, unknown_age="keep")
    assert kept.features_available and "gold" in kept.enriched_prompt
    assert kept.max_freshness_seconds == UNKNOWN_AGE
    assert EnrichmentResult.model_validate_json(kept.model_dump_json()).max_freshness_seconds == (
        UNKNOWN_AGE
    )


PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(raw=st.one_of(unknown_stamps, st.just(SHORT)))
def test_http_unknown_timestamps_are_stale(
    mimic: StampedMimic, http_store: HttpFeatureStore, raw: Any
) -> None:
    mimic.raw = raw
    assert_dropped_as_stale(http_store, "tier")


@PROPERTY
@given(raw=unknown_stamps)
def test_tecton_unknown_effective_times_are_stale(
    tecton: Tuple[StampedTecton, Any], raw: Any
) -> None:
    server, client = tecton
    server.raw = raw
    assert_dropped_as_stale(client, "tier")


@PROPERTY
@given(raw=parsable_unknown_stamps)
def test_local_unknown_timestamps_are_stale(tmp_path: Path, raw: str) -> None:
    assert_dropped_as_stale(_local_store(tmp_path, raw), "tier")


@PROPERTY
@given(raw=unknown_stamps.filter(lambda r: not isinstance(r, str) or parse_timestamp(r) is None))
def test_local_file_without_a_usable_timestamp_is_refused(tmp_path: Path, raw: Any) -> None:
    """The local file's format requires an ISO-8601 ``updated_at``: a missing, null or
    unparsable one makes the file invalid (a loud error naming the entity), and through
    the guard the feature never reaches a prompt, fresh or not."""
    store = _local_store(tmp_path, raw)
    with pytest.raises(FeatureStoreDataError, match=r"user\.u1\.updated_at"):
        store.get_features("u1", "user", ["tier"])
    with GuardedClient(store, timeout_ms=2_000) as guarded:
        result = _enrich(guarded)
    assert "gold" not in result.enriched_prompt and not result.features_available
    assert result.store_failed


# -- known ages stay known (the properties above are not vacuous) -------------------------


@pytest.mark.parametrize(
    ("offset", "age"),
    [(-30.0, 30.0), (-3000.0, 3000.0), (60.0, 0.0), (FUTURE_TOLERANCE_SECONDS, 0.0)],
)
def test_known_ages_pass_on_every_backend(
    mimic: StampedMimic,
    http_store: HttpFeatureStore,
    tecton: Tuple[StampedTecton, Any],
    tmp_path: Path,
    offset: float,
    age: float,
) -> None:
    """A real timestamp (small clock skew included) gives a finite age and the feature
    reaches the prompt, on every backend alike."""
    stamp = _iso(NOW + timedelta(seconds=offset))
    mimic.raw = stamp
    server, tecton_client = tecton
    server.raw = stamp
    for client in (http_store, tecton_client, _local_store(tmp_path, stamp)):
        vector = client.get_features("u1", "user", ["tier"])
        assert vector.feature_freshness["tier"] == pytest.approx(age)
        result = _enrich(client)
        assert result.features_available and "gold" in result.enriched_prompt
        assert result.dropped_stale == []


def test_old_features_are_stale_but_not_unknown(
    mimic: StampedMimic, http_store: HttpFeatureStore
) -> None:
    """``unknown_age: keep`` keeps only the unknown: an age above the threshold is still
    dropped."""
    mimic.raw = _iso(NOW - timedelta(hours=2))
    assert not is_unknown_age(http_store.get_features("u1", "user", ["tier"]).freshness_seconds)
    assert _enrich(http_store, unknown_age="keep").dropped_stale == ["tier"]


# -- the rule itself --------------------------------------------------------------------


@settings(max_examples=500)
@given(
    ts=st.one_of(st.none(), st.datetimes(timezones=st.just(timezone.utc))),
    now=st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(9000, 1, 1),
        timezones=st.just(timezone.utc),
    ),
)
def test_age_of(ts: datetime | None, now: datetime) -> None:
    age = age_of(ts, now)
    unknown = ts is None or ts <= EPOCH or (ts - now).total_seconds() > FUTURE_TOLERANCE_SECONDS
    assert is_unknown_age(age) is unknown
    if not unknown:
        assert ts is not None
        assert age == max(0.0, (now - ts).total_seconds())
        assert age < UNKNOWN_AGE


def test_unknown_age_survives_cache_ageing_and_json() -> None:
    """The guard's cache adds the seconds a vector spent there; the marker stays."""
    assert is_unknown_age(UNKNOWN_AGE + 86_400.0 * 365 * 100)
    assert sys.float_info.max == UNKNOWN_AGE
    assert json.loads(json.dumps(UNKNOWN_AGE)) == UNKNOWN_AGE
    assert _config().freshness_threshold_seconds < UNKNOWN_AGE


def test_unknown_age_setting_is_validated() -> None:
    assert _config().unknown_age == "drop"
    assert _config(unknown_age="keep").unknown_age == "keep"
    with pytest.raises(ValueError, match="unknown_age"):
        _config(unknown_age="sometimes")
