"""TectonClient with the real tecton-client against a local Tecton-protocol server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from asahi_features.errors import (
    ConfigError,
    FeatureConfigError,
    FeatureStoreDataError,
    FeatureStoreTimeoutError,
    FeatureStoreUnavailableError,
)
from asahi_features.models import FeatureStatus
from asahi_features.settings import FeatureStoreSettings
from asahi_features.stores.tecton import TectonClient
from tests.support.servers import free_port
from tests.support.tecton_server import GET_FEATURES, METADATA, TectonTestServer

KEY = "tk-very-secret-0123456789"
NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def server() -> Iterator[TectonTestServer]:
    with TectonTestServer(api_key=KEY, forbidden_workspaces=("locked",)) as srv:
        srv.add_service(
            "user_fs",
            join_keys=["user_id"],
            features={
                "profile.tier": "string",
                "profile.visits": "int64",
                "profile.score": "float64",
                "activity.recent": "string_array",
                "activity.tier": "string",
            },
        )
        srv.put(
            "user_fs",
            {"user_id": "u1"},
            {
                "profile.tier": "gold",
                "profile.visits": 12,
                "profile.score": 0.5,
                "activity.recent": ["shoes", "jacket"],
            },
            effective_times={
                "profile.tier": NOW - timedelta(seconds=30),
                "profile.visits": NOW - timedelta(seconds=30),
                "profile.score": NOW - timedelta(seconds=30),
                "activity.recent": NOW - timedelta(hours=5),
            },
        )
        srv.add_service(
            "two_keys_fs", join_keys=["user_id", "merchant"], features={"m.x": "string"}
        )
        yield srv


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECTON_TEST_KEY", KEY)


def make(server: TectonTestServer, **kw: object) -> TectonClient:
    kw.setdefault("url", server.url)
    kw.setdefault("feature_service", "user_fs")
    kw.setdefault("timeout_ms", 5000)
    kw.setdefault("clock", lambda: NOW)
    return TectonClient("TECTON_TEST_KEY", str(kw.pop("workspace", "prod")), **kw)  # type: ignore[arg-type]


@pytest.fixture
def client(server: TectonTestServer, env: None) -> Iterator[TectonClient]:
    c = make(server)
    yield c
    c.close()


# -- success ------------------------------------------------------------------------------


def test_get_features_by_plain_and_full_name(client: TectonClient) -> None:
    vec = client.get_features("u1", "user", ["profile.tier", "visits", "score", "recent"])
    assert vec.status is FeatureStatus.FOUND
    assert vec.source == "tecton"
    assert vec.features == {
        "profile.tier": "gold",
        "visits": 12,  # int64 arrives as a JSON string and is converted
        "score": 0.5,
        "recent": ["shoes", "jacket"],
    }
    assert vec.feature_freshness["visits"] == pytest.approx(30.0)
    assert vec.feature_freshness["recent"] == pytest.approx(5 * 3600.0)
    assert vec.freshness_seconds == pytest.approx(5 * 3600.0)


def test_request_on_the_wire(client: TectonClient, server: TectonTestServer) -> None:
    client.get_features("u1", "user", ["visits"])
    paths = [r["path"] for r in server.requests]
    assert paths == [METADATA, GET_FEATURES]
    params = server.requests[1]["body"]["params"]
    assert params["workspaceName"] == "prod"
    assert params["featureServiceName"] == "user_fs"
    assert params["joinKeyMap"] == {"user_id": "u1"}
    assert params["requestContextMap"] == {}
    assert params["metadataOptions"] == {
        "includeNames": True,
        "includeDataTypes": True,
        "includeEffectiveTimes": True,
        "includeServingStatus": True,
    }
    assert server.requests[1]["headers"]["user-agent"].startswith("tecton-http-python-client")


def test_missing_entity_is_an_empty_vector(
    client: TectonClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asahi_features")
    vec = client.get_features("nobody", "user", ["profile.tier", "visits"])
    assert vec.status is FeatureStatus.MISSING
    assert vec.features == {} and vec.freshness_seconds == 0.0
    assert "not found in Tecton" in caplog.text


def test_feature_missing_for_one_entity_is_left_out(client: TectonClient) -> None:
    vec = client.get_features("u1", "user", ["profile.tier", "activity.tier"])
    assert vec.features == {"profile.tier": "gold"}


def test_stale_effective_time_gives_per_feature_freshness(
    client: TectonClient, server: TectonTestServer
) -> None:
    server.put(
        "user_fs",
        {"user_id": "old"},
        {"profile.tier": "bronze", "profile.visits": 1},
        effective_times={
            "profile.tier": NOW - timedelta(days=3),
            "profile.visits": NOW - timedelta(seconds=5),
        },
    )
    vec = client.get_features("old", "user", ["profile.tier", "visits"])
    assert vec.feature_freshness == {
        "profile.tier": pytest.approx(3 * 86400.0),
        "visits": pytest.approx(5.0),
    }
    assert vec.freshness_seconds == pytest.approx(3 * 86400.0)


def test_unknown_feature_lists_metadata_and_metadata_is_cached(
    client: TectonClient, server: TectonTestServer
) -> None:
    with pytest.raises(FeatureConfigError) as info:
        client.get_features("u1", "user", ["bogus"])
    assert "profile.tier" in info.value.available_features
    assert "visits" in info.value.available_features
    client.get_features("u1", "user", ["visits"])
    client.get_batch_features(["u1", "u2"], "user", ["visits"])
    assert [r["path"] for r in server.requests].count(METADATA) == 1


def test_ambiguous_plain_name(client: TectonClient) -> None:
    with pytest.raises(FeatureConfigError, match="served by 2 views"):
        client.get_features("u1", "user", ["tier"])


def test_list_features_and_health(client: TectonClient, server: TectonTestServer) -> None:
    assert client.list_features("user") == {
        "user": ["recent", "score", "tier", "visits"],
    }
    assert client.list_features() == {"*": ["recent", "score", "tier", "visits"]}
    assert client.health_check() is True
    server.close()
    fresh = make(server, timeout_ms=300)
    assert fresh.health_check() is False
    fresh.close()


# -- configuration errors: clear, never retried, never "store down" --------------------


def test_wrong_key_is_a_config_error_not_retried(
    server: TectonTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TECTON_TEST_KEY", "not-the-key")
    c = make(server)
    with pytest.raises(ConfigError) as info:
        c.get_features("u1", "user", ["visits"])
    assert not isinstance(info.value, FeatureStoreUnavailableError)
    assert "HTTP 401" in str(info.value) and "TECTON_TEST_KEY" in str(info.value)
    assert "invalid 'Tecton-key' authorization header" in str(info.value)
    assert len(server.requests) == 1
    c.close()


def test_forbidden_workspace(server: TectonTestServer, env: None) -> None:
    c = make(server, workspace="locked")
    with pytest.raises(ConfigError, match="HTTP 403: Not Authorized"):
        c.get_features("u1", "user", ["visits"])
    c.close()


@pytest.mark.parametrize(("workspace", "service"), [("prod", "nope_fs"), ("staging", "user_fs")])
def test_unknown_service_or_workspace(
    server: TectonTestServer, env: None, workspace: str, service: str
) -> None:
    c = make(server, workspace=workspace, feature_service=service)
    with pytest.raises(ConfigError, match="HTTP 404: Unable to query FeatureService") as info:
        c.get_features("u1", "user", ["visits"])
    assert not isinstance(info.value, FeatureStoreUnavailableError)
    assert len(server.requests) == 1
    c.close()


def test_bad_request_missing_join_key(server: TectonTestServer, env: None) -> None:
    c = make(server, feature_service="two_keys_fs", entity_join_keys={"user": "user_id"})
    with pytest.raises(FeatureConfigError, match="Missing required join key: `merchant`") as info:
        c.get_features("u1", "user", ["x"])
    assert info.value.available_features == ["merchant", "user_id"]
    c.close()


def test_join_key_not_in_service(server: TectonTestServer, env: None) -> None:
    c = make(server, entity_join_keys={"user": "customer_id"})
    with pytest.raises(FeatureConfigError, match="join key") as info:
        c.get_features("u1", "user", ["visits"])
    assert info.value.available_features == ["user_id"]
    c.close()


def test_no_service_for_entity_type(server: TectonTestServer, env: None) -> None:
    c = make(server, feature_service=None, feature_services={"user": "user_fs"})
    assert c.get_features("u1", "organization" if False else "user", ["visits"]).features
    with pytest.raises(FeatureConfigError, match="organization"):
        c.get_features("acme", "organization", ["tone"])
    c.close()


def test_missing_env_var_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_TECTON_KEY", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_TECTON_KEY"):
        TectonClient("NO_SUCH_TECTON_KEY", "prod", url="https://x.tecton.ai", feature_service="f")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"url": "x.tecton.ai", "feature_service": "f"}, "http"),
        ({"url": None, "feature_service": "f"}, "url"),
        ({"url": "https://x.tecton.ai"}, "feature service"),
        ({"url": "https://x.tecton.ai", "feature_service": "f", "max_concurrency": 0}, "concur"),
    ],
)
def test_constructor_validation(env: None, kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TectonClient("TECTON_TEST_KEY", "prod", **kw)  # type: ignore[arg-type]


# -- unavailability ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "error", "text"),
    [
        ("status", 429, FeatureStoreUnavailableError, "concurrent request limit"),
        ("status", 500, FeatureStoreUnavailableError, "HTTP 500"),
        ("status", 503, FeatureStoreUnavailableError, "Service Temporarily Unavailable"),
        ("status", 504, FeatureStoreTimeoutError, "HTTP 504"),
        ("html_error", 503, FeatureStoreUnavailableError, r"non-JSON body \(text/html\)"),
        ("html_error", 502, FeatureStoreUnavailableError, "502 Bad Gateway"),
        ("malformed_json", 200, FeatureStoreDataError, "malformed body"),
        ("reset", 0, FeatureStoreUnavailableError, "unreachable"),
    ],
)
def test_outages_are_unavailability(
    client: TectonClient,
    server: TectonTestServer,
    mode: str,
    status: int,
    error: type[Exception],
    text: str,
) -> None:
    client.get_features("u1", "user", ["visits"])  # metadata cached
    server.faults.mode, server.faults.status = mode, status
    with pytest.raises(error, match=text) as info:
        client.get_features("u1", "user", ["visits"])
    assert isinstance(info.value, FeatureStoreUnavailableError)
    assert not isinstance(info.value, ConfigError)


def test_html_401_is_still_a_config_error(client: TectonClient, server: TectonTestServer) -> None:
    client.get_features("u1", "user", ["visits"])
    server.faults.mode, server.faults.status = "html_error", 401
    with pytest.raises(ConfigError, match="HTTP 401"):
        client.get_features("u1", "user", ["visits"])


def test_metadata_outage_is_unavailability(client: TectonClient, server: TectonTestServer) -> None:
    server.faults.mode, server.faults.status, server.faults.include_metadata = "status", 503, True
    server.faults.fail_count = 1
    with pytest.raises(FeatureStoreUnavailableError):
        client.get_features("u1", "user", ["visits"])
    assert client.get_features("u1", "user", ["visits"]).features == {"visits": 12}


def test_connection_refused(env: None) -> None:
    c = TectonClient(
        "TECTON_TEST_KEY", "prod", url=f"http://127.0.0.1:{free_port()}", feature_service="f"
    )
    with pytest.raises(FeatureStoreUnavailableError, match="unreachable"):
        c.get_features("u1", "user", ["visits"])
    assert c.health_check() is False
    c.close()


@pytest.mark.parametrize("mode", ["slow", "hang"])
def test_slow_server_hits_the_client_timeout(
    server: TectonTestServer, env: None, mode: str
) -> None:
    # a roomy client timeout for the healthy read; the server then answers (or gives up)
    # only after 4 s, so the timeout error shows the client stopped waiting at 2 s
    c = make(server, timeout_ms=2000)
    assert c.get_features("u1", "user", ["visits"]).features == {"visits": 12}
    server.faults.mode, server.faults.delay_seconds, server.faults.hang_seconds = mode, 4.0, 4.0
    with pytest.raises(FeatureStoreTimeoutError, match="2000 ms"):
        c.get_features("u1", "user", ["visits"])
    server.release()
    c.close()


def test_closed_client_raises(client: TectonClient) -> None:
    client.close()
    client.close()
    with pytest.raises(FeatureStoreUnavailableError, match="closed"):
        client.get_features("u1", "user", ["visits"])


# -- batch ------------------------------------------------------------------------------


def test_batch_keeps_input_order(client: TectonClient) -> None:
    out = client.get_batch_features(["u1", "ghost", "u1", "u2"], "user", ["visits"])
    assert [v.entity_id for v in out] == ["u1", "ghost", "u1", "u2"]
    assert [v.status for v in out] == [
        FeatureStatus.FOUND,
        FeatureStatus.MISSING,
        FeatureStatus.FOUND,
        FeatureStatus.MISSING,
    ]
    assert client.get_batch_features([], "user", ["visits"]) == []
    assert client.get_batch_features(["u1"], "user", ["visits"])[0].features == {"visits": 12}


def test_batch_runs_concurrently_and_bounded(server: TectonTestServer, env: None) -> None:
    c = make(server, max_concurrency=4)
    c.get_features("u1", "user", ["visits"])
    server.reset_log()
    server.faults.mode, server.faults.delay_seconds = "slow", 0.3
    out = c.get_batch_features([f"id{i}" for i in range(12)], "user", ["visits"])
    assert len(out) == 12
    assert len(server.requests) == 12
    assert 2 <= server.max_in_flight <= 4
    c.close()


def test_batch_error_propagates(client: TectonClient, server: TectonTestServer) -> None:
    client.get_features("u1", "user", ["visits"])
    server.faults.mode, server.faults.status = "status", 503
    with pytest.raises(FeatureStoreUnavailableError):
        client.get_batch_features(["a", "b", "c"], "user", ["visits"])


async def test_native_async(client: TectonClient, server: TectonTestServer) -> None:
    vec = await client.aget_features("u1", "user", ["visits"])
    assert vec.features == {"visits": 12}
    out = await client.aget_batch_features(["u1", "x"], "user", ["visits"])
    assert [v.status for v in out] == [FeatureStatus.FOUND, FeatureStatus.MISSING]
    assert await client.aget_batch_features([], "user", ["visits"]) == []
    server.faults.mode, server.faults.status = "status", 404
    with pytest.raises(ConfigError):
        await client.aget_features("u1", "user", ["visits"])
    await client.aclose()
    with pytest.raises(FeatureStoreUnavailableError):
        await client.aget_features("u1", "user", ["visits"])


async def test_async_metadata_first(server: TectonTestServer, env: None) -> None:
    c = make(server)
    assert (await c.aget_batch_features(["u1"], "user", ["visits"]))[0].features
    await c.aclose()


def test_async_across_event_loops(client: TectonClient) -> None:
    for _ in range(2):
        vec = asyncio.run(client.aget_features("u1", "user", ["visits"]))
        assert vec.features == {"visits": 12}


# -- entity ids are data, never URL parts ------------------------------------------------


@pytest.mark.parametrize("weird", ["../metadata", "u1/../u2", "a?b=c&d#e", "%2e%2e/x", " u1 "])
def test_entity_ids_with_url_metacharacters(
    client: TectonClient, server: TectonTestServer, weird: str
) -> None:
    server.put("user_fs", {"user_id": weird}, {"profile.visits": 7}, age_seconds=1)
    client.get_features("u1", "user", ["visits"])
    server.reset_log()
    assert client.get_features(weird, "user", ["visits"]).features == {"visits": 7}
    assert [r["path"] for r in server.requests] == [GET_FEATURES]
    assert server.requests[0]["body"]["params"]["joinKeyMap"] == {"user_id": weird}


# -- secrecy ----------------------------------------------------------------------------


def test_api_key_never_leaks(
    server: TectonTestServer, env: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    c = make(server, timeout_ms=2000)  # roomy for the healthy read
    seen: list[str] = [repr(c), str(c), str(vars(c))]
    c.get_features("u1", "user", ["visits"])
    for mode, status in [("status", 401), ("status", 503), ("html_error", 502), ("hang", 0)]:
        server.faults.mode, server.faults.status = mode, status
        server.faults.hang_seconds = 3.0  # past the client's timeout: its message is seen
        with pytest.raises(Exception) as info:
            c.get_features("u1", "user", ["visits"])
        seen += [str(info.value), repr(info.value)]
    c.health_check()
    settings = FeatureStoreSettings.model_validate(
        {"provider": "tecton", "tecton": {"api_key_env": "TECTON_TEST_KEY", "url": server.url}}
    )
    seen.append(settings.model_dump_json())
    seen.append(caplog.text)
    assert all(KEY not in text for text in seen)
    c.close()


# -- configuration ----------------------------------------------------------------------


def test_from_settings_and_build_backend(server: TectonTestServer, env: None) -> None:
    from asahi_features.config import build_backend

    settings = FeatureStoreSettings.model_validate(
        {
            "provider": "tecton",
            "timeout_ms": 750,
            "tecton": {
                "api_key_env": "TECTON_TEST_KEY",
                "workspace": "prod",
                "url": server.url,
                "feature_service": "user_fs",
                "max_concurrency": 3,
            },
        }
    )
    backend = build_backend(settings)
    assert isinstance(backend, TectonClient)
    assert backend.timeout_ms == 750 and backend.max_concurrency == 3
    assert backend._http.timeout.read == pytest.approx(0.75)
    assert backend.get_features("u1", "user", ["visits"]).features == {"visits": 12}
    with backend:
        pass


# -- behind the guard ---------------------------------------------------------------------


def test_slow_server_guard_deadline(server: TectonTestServer, env: None) -> None:
    from asahi_features.guard import GuardedClient

    backend = make(server, timeout_ms=10_000)  # only the guard's deadline can stop it
    backend.get_features("u1", "user", ["visits"])
    guarded = GuardedClient(backend, timeout_ms=150, fallback_on_timeout=True)
    # the server answers normally, but after 3 s: a read still waiting then would find it
    # (the guard stops waiting at 150 ms, and the client's I/O follows that deadline)
    server.faults.mode, server.faults.delay_seconds = "slow", 3.0
    vec = guarded.get_features("u1", "user", ["visits"])
    assert vec.status is FeatureStatus.UNAVAILABLE and vec.features == {}
    server.release()
    backend.close()


async def test_guarded_from_config(server: TectonTestServer, env: None) -> None:
    from asahi_features.config import client_from_config

    def guarded_with(timeout_ms: int) -> Any:
        return client_from_config(
            FeatureStoreSettings.model_validate(
                {
                    "provider": "tecton",
                    "timeout_ms": timeout_ms,
                    "tecton": {
                        "api_key_env": "TECTON_TEST_KEY",
                        "workspace": "prod",
                        "url": server.url,
                        "feature_service": "user_fs",
                    },
                }
            )
        )

    # answers (healthy or errors) under a roomy deadline; the slow server (3 s, ten
    # deadlines) under a 300 ms one, its fallback showing the cut
    roomy, short = guarded_with(2000), guarded_with(300)
    assert roomy.get_features("u1", "user", ["visits"]).features == {"visits": 12}
    server.faults.mode, server.faults.delay_seconds = "slow", 3.0
    vec = short.get_features("u1", "user", ["visits"])
    assert vec.status is FeatureStatus.UNAVAILABLE
    avec = await short.aget_features("u1", "user", ["visits"])
    assert avec.status is FeatureStatus.UNAVAILABLE
    server.faults.mode, server.faults.status = "status", 401
    with pytest.raises(ConfigError, match="HTTP 401"):
        roomy.get_features("u1", "user", ["visits"])
    with pytest.raises(FeatureConfigError):
        roomy.get_features("u1", "user", ["bogus"])
    roomy.close()
    short.close()


async def test_async_batch_is_concurrent_and_bounded(server: TectonTestServer, env: None) -> None:
    c = make(server, max_concurrency=3)
    await c.aget_features("u1", "user", ["visits"])
    server.reset_log()
    server.faults.mode, server.faults.delay_seconds = "slow", 0.3
    out = await c.aget_batch_features([f"id{i}" for i in range(9)], "user", ["visits"])
    assert [v.entity_id for v in out] == [f"id{i}" for i in range(9)]
    assert 2 <= server.max_in_flight <= 3
    await c.aclose()
