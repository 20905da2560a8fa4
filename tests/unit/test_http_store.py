"""HttpFeatureStore against a small local server that answers exactly like ``feast serve``.

The mimic reproduces what feast 0.67's feature server was measured to send (see the
integration test, which runs the same checks against a real ``feast serve``): column-major
``results`` in name order with ``metadata.feature_names``, ``NOT_FOUND`` statuses with the
epoch as timestamp, HTTP 500 with a JSON *string* body for a bad feature name, 404 with a
JSON-encoded FeastError for an unknown view, 422 without ``Content-Type: application/json``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, List, Tuple

import pytest

from asahi_features.errors import (
    ConfigError,
    FeatureConfigError,
    FeatureStoreAuthError,
    FeatureStoreDataError,
    FeatureStoreTimeoutError,
    FeatureStoreUnavailableError,
)
from asahi_features.models import FeatureStatus
from asahi_features.settings import FeatureStoreSettings
from asahi_features.stores.http import HttpFeatureStore, parse_timestamp
from tests.support.feast_mimic import NOW, VIEWS, FeastMimic
from tests.support.servers import free_port


@pytest.fixture
def mimic() -> Iterator[FeastMimic]:
    server = FeastMimic()
    yield server
    server.close()


def make(mimic: FeastMimic, **kw: Any) -> HttpFeatureStore:
    kw.setdefault("feature_views", {"user": [f"{v}:{f}" for v, fs in VIEWS.items() for f in fs]})
    kw.setdefault("timeout_ms", 5000)
    kw.setdefault("clock", lambda: NOW)
    return HttpFeatureStore(mimic.url, **kw)


@pytest.fixture
def store(mimic: FeastMimic) -> Iterator[HttpFeatureStore]:
    s = make(mimic)
    yield s
    s.close()


def test_get_features_plain_and_full_names(store: HttpFeatureStore, mimic: FeastMimic) -> None:
    vec = store.get_features("u1", "user", ["score", "user_profile:tier", "recent"])
    assert vec.status is FeatureStatus.FOUND and vec.source == "feast_http"
    assert vec.features == {"score": 0.5, "user_profile:tier": "gold", "recent": ["shoes", "belt"]}
    assert vec.feature_freshness == {
        "score": pytest.approx(30.0),
        "user_profile:tier": pytest.approx(30.0),
        "recent": pytest.approx(7200.0),
    }
    assert vec.freshness_seconds == pytest.approx(7200.0)
    sent = mimic.requests[-1]
    assert sent["path"] == "/get-online-features"
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["body"] == {
        "entities": {"user_id": ["u1"]},
        "features": ["user_profile:score", "user_profile:tier", "user_activity:recent"],
        "full_feature_names": True,
    }


def test_missing_entity_and_partial_rows(store: HttpFeatureStore) -> None:
    missing = store.get_features("ghost", "user", ["user_profile:tier", "score"])
    assert missing.status is FeatureStatus.MISSING and missing.features == {}
    partial = store.get_features("u2", "user", ["user_profile:tier", "score"])
    assert partial.features == {"user_profile:tier": "silver"}
    assert partial.freshness_seconds == pytest.approx(2 * 86400.0)


def test_batch_is_one_post_in_input_order(store: HttpFeatureStore, mimic: FeastMimic) -> None:
    out = store.get_batch_features(["u2", "ghost", "u1", "u2"], "user", ["user_profile:tier"])
    assert [v.entity_id for v in out] == ["u2", "ghost", "u1", "u2"]
    assert [v.features.get("user_profile:tier") for v in out] == ["silver", None, "gold", "silver"]
    assert [r["method"] for r in mimic.requests] == ["POST"]
    assert store.get_batch_features([], "user", ["score"]) == []
    assert store.get_batch_features(["u1"], "user", [])[0].status is FeatureStatus.MISSING


def test_unknown_and_ambiguous_names_fail_before_any_request(
    store: HttpFeatureStore, mimic: FeastMimic
) -> None:
    with pytest.raises(FeatureConfigError) as info:
        store.get_features("u1", "user", ["bogus"])
    assert "user_profile:score" in info.value.available_features
    with pytest.raises(FeatureConfigError, match="served by 2 views"):
        store.get_features("u1", "user", ["tier"])
    assert mimic.requests == []


def test_server_side_feature_errors_are_config_errors(mimic: FeastMimic) -> None:
    store = make(mimic, feature_views={})
    with pytest.raises(FeatureConfigError, match="not found in projection user_profile"):
        store.get_features("u1", "user", ["user_profile:bogus"])
    with pytest.raises(FeatureConfigError, match="FeatureViewNotFoundException: Feature view nov"):
        store.get_features("u1", "user", ["nov:tier"])
    with pytest.raises(FeatureConfigError, match="need full references"):
        store.get_features("u1", "user", ["tier"])
    with pytest.raises(FeatureConfigError, match="Missing join key values"):
        store.get_features("acme", "organization", ["user_profile:tier"])
    assert len([r for r in mimic.requests if r["method"] == "POST"]) == 3
    store.close()


def test_entity_join_keys(mimic: FeastMimic) -> None:
    store = make(mimic, entity_join_keys={"customer": "user_id"}, feature_views={})
    assert store.get_features("u1", "customer", ["user_profile:tier"]).features == {
        "user_profile:tier": "gold"
    }
    store.close()


@pytest.mark.parametrize(
    ("mode", "status", "error", "text"),
    [
        ("status", 500, FeatureStoreUnavailableError, "HTTP 500: Internal Server Error"),
        ("status", 503, FeatureStoreUnavailableError, "HTTP 503"),
        ("status", 429, FeatureStoreUnavailableError, "HTTP 429"),
        ("status", 504, FeatureStoreTimeoutError, "HTTP 504"),
        ("html", 502, FeatureStoreUnavailableError, r"non-JSON body \(text/html\)"),
        ("garbage", 200, FeatureStoreDataError, "unexpected body"),
    ],
)
def test_outages(
    store: HttpFeatureStore,
    mimic: FeastMimic,
    mode: str,
    status: int,
    error: type[Exception],
    text: str,
) -> None:
    mimic.mode, mimic.status = mode, status
    with pytest.raises(error, match=text) as info:
        store.get_features("u1", "user", ["score"])
    assert isinstance(info.value, FeatureStoreUnavailableError)


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_credentials_are_store_failures(
    store: HttpFeatureStore, mimic: FeastMimic, status: int
) -> None:
    """Rejected credentials are the store's failure (they degrade behind the guard), not
    a configuration error raised on every request."""
    mimic.mode, mimic.status = "status", status
    with pytest.raises(FeatureStoreAuthError, match=f"HTTP {status}.*headers_env"):
        store.get_features("u1", "user", ["score"])


def test_422_is_a_config_error(store: HttpFeatureStore, mimic: FeastMimic) -> None:
    mimic.mode, mimic.status = "status", 422
    with pytest.raises(ConfigError, match="HTTP 422"):
        store.get_features("u1", "user", ["score"])


def test_recycled_worker_is_retried_once(store: HttpFeatureStore, mimic: FeastMimic) -> None:
    store.get_features("u1", "user", ["score"])
    mimic.drop_next = 1
    assert store.get_features("u1", "user", ["score"]).features == {"score": 0.5}
    assert len(mimic.requests) == 3
    mimic.drop_next = 2
    with pytest.raises(FeatureStoreUnavailableError, match="RemoteProtocolError"):
        store.get_features("u1", "user", ["score"])
    assert len(mimic.requests) == 5


async def test_async_retry_and_reads(store: HttpFeatureStore, mimic: FeastMimic) -> None:
    vec = await store.aget_features("u1", "user", ["score"])
    assert vec.features == {"score": 0.5}
    mimic.drop_next = 1
    out = await store.aget_batch_features(["u1", "ghost"], "user", ["score"])
    assert [v.status for v in out] == [FeatureStatus.FOUND, FeatureStatus.MISSING]
    assert await store.aget_batch_features([], "user", ["score"]) == []
    assert (await store.aget_batch_features(["u1"], "user", []))[0].is_empty
    mimic.drop_next = 2
    with pytest.raises(FeatureStoreUnavailableError):
        await store.aget_features("u1", "user", ["score"])
    await store.aclose()
    with pytest.raises(FeatureStoreUnavailableError, match="closed"):
        await store.aget_features("u1", "user", ["score"])


def test_timeout(mimic: FeastMimic) -> None:
    store = make(mimic, timeout_ms=100)
    mimic.mode = "slow"
    with pytest.raises(FeatureStoreTimeoutError, match="100 ms"):
        store.get_features("u1", "user", ["score"])
    mimic.delay.set()
    store.close()


def test_connection_refused_and_health() -> None:
    store = HttpFeatureStore(f"http://127.0.0.1:{free_port()}", timeout_ms=500)
    with pytest.raises(FeatureStoreUnavailableError, match="unreachable"):
        store.get_features("u1", "user", ["v:f"])
    assert store.health_check() is False
    store.close()
    store.close()
    assert store.health_check() is False
    with pytest.raises(FeatureStoreUnavailableError, match="closed"):
        store.get_features("u1", "user", ["v:f"])


def test_health(store: HttpFeatureStore, mimic: FeastMimic) -> None:
    assert store.health_check() is True
    mimic.drop_next = 1
    assert store.health_check() is True
    mimic.drop_next = 2
    assert store.health_check() is False
    mimic.status = 503
    assert store.health_check() is False
    assert (mimic.requests[-1]["method"], mimic.requests[-1]["path"]) == ("GET", "/health")


@pytest.mark.parametrize("weird", ["../health", "u1/../u2", "a?b=c&d#e", "%2e%2e", "u1\nX: y"])
def test_entity_ids_stay_in_the_body(
    store: HttpFeatureStore, mimic: FeastMimic, weird: str
) -> None:
    vec = store.get_features(weird, "user", ["score"])
    assert vec.entity_id == weird and vec.status is FeatureStatus.MISSING
    assert mimic.requests[-1]["path"] == "/get-online-features"
    assert mimic.requests[-1]["body"]["entities"] == {"user_id": [weird]}


def test_headers_secret_and_repr(
    mimic: FeastMimic, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("FEAST_TOKEN", "Bearer very-secret-token")
    settings = FeatureStoreSettings.model_validate(
        {
            "provider": "http",
            "timeout_ms": 900,
            "http": {
                "url": mimic.url + "/",
                "headers_env": {"Authorization": "FEAST_TOKEN"},
                "feature_views": {"user": ["user_profile:tier"]},
                "max_connections": 4,
            },
        }
    )
    from asahi_features.config import build_backend

    store = build_backend(settings)
    assert isinstance(store, HttpFeatureStore)
    assert store.timeout_ms == 900 and store.url == mimic.url
    assert store.get_features("u1", "user", ["tier"]).features == {"tier": "gold"}
    assert mimic.requests[-1]["headers"]["Authorization"] == "Bearer very-secret-token"
    mimic.mode, mimic.status = "status", 401
    with pytest.raises(FeatureStoreAuthError) as info:
        store.get_features("u1", "user", ["tier"])
    for text in (repr(store), str(info.value), caplog.text, settings.model_dump_json()):
        assert "very-secret-token" not in text
    assert store.list_features() == {"user": ["tier"]}
    assert store.list_features("user") == {"user": ["tier"]}
    with pytest.raises(FeatureConfigError):
        store.list_features("organization")
    store.close()


def test_missing_header_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    settings = FeatureStoreSettings.model_validate(
        {
            "provider": "http",
            "http": {"url": "http://127.0.0.1:1", "headers_env": {"X-Key": "NO_SUCH_TOKEN"}},
        }
    )
    with pytest.raises(ConfigError, match="NO_SUCH_TOKEN"):
        HttpFeatureStore.from_settings(settings)


@pytest.mark.parametrize(
    ("url", "views", "match"),
    [("ftp://x", {}, "http"), ("http://x", {"user": ["tier"]}, "view:feature")],
)
def test_constructor_validation(url: str, views: dict[str, list[str]], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        HttpFeatureStore(url, feature_views=views)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24T06:56:28Z", datetime(2026, 11, 24, 6, 56, 28, tzinfo=timezone.utc)),
        ("2023-06-22T08:30Z", datetime(2023, 6, 22, 8, 30, tzinfo=timezone.utc)),
        (
            "2023-06-22T08:30:45.123456789+00:00",
            datetime(2023, 6, 22, 8, 30, 45, 123456, tzinfo=timezone.utc),
        ),
        ("2023-06-22T08:30:45", datetime(2023, 6, 22, 8, 30, 45, tzinfo=timezone.utc)),
        ("yesterday", None),
        ("2023-13-45T08:30:45.1234567", None),
    ],
)
def test_parse_timestamp(text: str, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


def test_slow_server_behind_the_guard(mimic: FeastMimic) -> None:
    """From configuration: a healthy answer under a roomy deadline; a server that answers
    only after 3 s (fifteen deadlines) cut at the 200 ms deadline, the fallback showing
    the cut; a configuration mistake still raised."""
    from asahi_features.config import client_from_config

    def guarded_with(timeout_ms: int) -> Any:
        return client_from_config(
            FeatureStoreSettings.model_validate(
                {
                    "provider": "http",
                    "timeout_ms": timeout_ms,
                    "http": {"url": mimic.url, "feature_views": {"user": ["user_profile:tier"]}},
                }
            )
        )

    roomy, short = guarded_with(2000), guarded_with(200)
    assert roomy.get_features("u1", "user", ["tier"]).features == {"tier": "gold"}
    mimic.mode = "slow"
    vec = short.get_features("u1", "user", ["tier"])
    assert vec.status is FeatureStatus.UNAVAILABLE and vec.features == {}
    mimic.delay.set()
    with pytest.raises(FeatureConfigError):
        roomy.get_features("u1", "user", ["bogus"])
    roomy.close()
    short.close()


def test_per_loop_objects_are_per_loop_and_closed_loops_are_dropped() -> None:
    import asyncio

    from asahi_features.stores.http import PerLoop

    made: List[object] = []

    def factory() -> object:
        made.append(object())
        return made[-1]

    per_loop: PerLoop[object] = PerLoop(factory)

    async def twice() -> Tuple[object, object, asyncio.AbstractEventLoop]:
        return per_loop.current(), per_loop.current(), asyncio.get_running_loop()

    first = asyncio.run(twice())
    second = asyncio.run(twice())
    assert first[0] is first[1] and second[0] is second[1] and first[0] is not second[0]
    # the first loop was closed: its entry was dropped when the second loop made its own
    assert per_loop.pop(first[2]) is None
    assert per_loop.pop(second[2]) is second[0]

    async def pop() -> object:
        per_loop.current()
        return per_loop.pop()

    assert asyncio.run(pop()) is made[-1] and len(made) == 3

    async def current() -> object:
        return per_loop.current()

    kept = asyncio.new_event_loop()
    try:
        mine = kept.run_until_complete(current())
        per_loop.clear()
        assert per_loop.pop(kept) is None  # forgotten, though its loop is open
        assert kept.run_until_complete(current()) is not mine and len(made) == 5
    finally:
        kept.close()
