"""HttpFeatureStore credentials and values (issue 19 item 9): a bearer token that follows
its source (env var, file, provider), is re-read once after a 401 and otherwise degrades;
TLS settings validated with clear errors; Json values parsed as the embedded backend does.

The server is the in-process ``feast serve`` look-alike with token checking; the TLS
handshakes and the real ``feast serve`` are in tests/integration/test_http_tls.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Dict, List

import pytest

from asahi_features.config import build_backend, client_from_config
from asahi_features.enricher import build_enricher
from asahi_features.errors import ConfigError, FeatureStoreAuthError
from asahi_features.models import FeatureStatus
from asahi_features.settings import AsahiConfig, FeatureStoreSettings
from asahi_features.stores.http import HttpFeatureStore, json_value
from asahi_features.stores.http_auth import TokenSource, load_callable, tls_context
from tests.support.feast_mimic import NOW, VIEWS, FeastMimic

REFS = [f"{v}:{f}" for v, fs in VIEWS.items() for f in fs]


@pytest.fixture
def mimic() -> Iterator[FeastMimic]:
    server = FeastMimic()
    yield server
    server.close()


def make(mimic: FeastMimic, **kw: Any) -> HttpFeatureStore:
    kw.setdefault("feature_views", {"user": REFS})
    kw.setdefault("timeout_ms", 5000)
    kw.setdefault("clock", lambda: NOW)
    return HttpFeatureStore(mimic.url, **kw)


def sent_tokens(mimic: FeastMimic) -> List[str]:
    return [r["headers"].get("Authorization", "") for r in mimic.requests]


class Provider:
    """A token provider handing out ``tokens`` in turn (the last one forever)."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return self.tokens[min(self.calls, len(self.tokens)) - 1]


# -- token sources -------------------------------------------------------------------------


def test_env_token_is_re_read_when_it_changes(
    mimic: FeastMimic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASAHI_TEST_TOKEN", "token-one-0001\n")
    store = make(mimic, token=TokenSource(env="ASAHI_TEST_TOKEN"))
    mimic.accepted_tokens = {"token-one-0001"}
    assert store.get_features("u1", "user", ["user_profile:tier"]).features == {
        "user_profile:tier": "gold"
    }
    # rotation: the server accepts only the new token, the variable holds it
    mimic.accepted_tokens = {"token-two-0002"}
    monkeypatch.setenv("ASAHI_TEST_TOKEN", "token-two-0002")
    assert store.get_features("u1", "user", ["user_profile:tier"]).features == {
        "user_profile:tier": "gold"
    }
    assert sent_tokens(mimic) == ["Bearer token-one-0001", "Bearer token-two-0002"]
    store.close()


def test_file_token_is_re_read_when_the_file_changes(mimic: FeastMimic, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("file-token-aaaa\n")
    store = make(mimic, token=TokenSource(path=path))
    mimic.accepted_tokens = {"file-token-aaaa"}
    assert store.get_batch_features(["u1", "u2"], "user", ["user_profile:tier"])[1].features == {
        "user_profile:tier": "silver"
    }
    # a rotated secret: a new file moved into place (new inode), as Kubernetes does
    new = tmp_path / "token.new"
    new.write_text("file-token-bbbbb")
    os.replace(new, path)
    mimic.accepted_tokens = {"file-token-bbbbb"}
    assert store.get_features("u1", "user", ["user_profile:tier"]).status is FeatureStatus.FOUND
    assert sent_tokens(mimic) == ["Bearer file-token-aaaa", "Bearer file-token-bbbbb"]
    store.close()


def test_401_refreshes_the_provider_once_then_succeeds(mimic: FeastMimic) -> None:
    provider = Provider("old-token-1111", "new-token-2222")
    store = make(mimic, token=provider)
    mimic.accepted_tokens = {"new-token-2222"}
    vec = store.get_features("u1", "user", ["user_profile:tier"])
    assert vec.features == {"user_profile:tier": "gold"}
    assert provider.calls == 2
    assert sent_tokens(mimic) == ["Bearer old-token-1111", "Bearer new-token-2222"]
    # the refreshed token is kept: no more provider calls, one request per read
    store.get_features("u1", "user", ["user_profile:tier"])
    assert provider.calls == 2 and len(mimic.requests) == 3
    store.close()


async def test_async_401_refreshes_once_then_succeeds(mimic: FeastMimic) -> None:
    provider = Provider("old-token-1111", "new-token-2222")
    store = make(mimic, token=provider)
    mimic.accepted_tokens = {"new-token-2222"}
    vecs = await store.aget_batch_features(["u1", "u2"], "user", ["user_profile:tier"])
    assert [v.features for v in vecs] == [
        {"user_profile:tier": "gold"},
        {"user_profile:tier": "silver"},
    ]
    assert sent_tokens(mimic) == ["Bearer old-token-1111", "Bearer new-token-2222"]
    await store.aclose()


def test_401_after_refresh_fails_with_an_auth_error_and_no_third_try(
    mimic: FeastMimic,
) -> None:
    provider = Provider("bad-token-1111", "bad-token-2222")
    clock = [0.0]
    store = make(mimic, token=TokenSource(provider=provider, clock=lambda: clock[0]))
    mimic.accepted_tokens = {"the-real-token"}
    with pytest.raises(FeatureStoreAuthError, match="HTTP 401") as info:
        store.get_features("u1", "user", ["user_profile:tier"])
    assert "bad-token" not in str(info.value)
    assert len(mimic.requests) == 2 and provider.calls == 2
    # within min_refresh_seconds a new 401 re-reads nothing: one request, no provider call
    with pytest.raises(FeatureStoreAuthError):
        store.get_features("u1", "user", ["user_profile:tier"])
    assert len(mimic.requests) == 3 and provider.calls == 2
    clock[0] = 5.0
    with pytest.raises(FeatureStoreAuthError):
        store.get_features("u1", "user", ["user_profile:tier"])
    assert provider.calls == 3
    store.close()


def test_an_unchanged_token_is_not_retried(
    mimic: FeastMimic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASAHI_TEST_TOKEN", "revoked-token-1")
    store = make(mimic, token=TokenSource(env="ASAHI_TEST_TOKEN"))
    mimic.accepted_tokens = {"other"}
    with pytest.raises(FeatureStoreAuthError, match="ASAHI_TEST_TOKEN"):
        store.get_features("u1", "user", ["user_profile:tier"])
    assert len(mimic.requests) == 1  # the variable still holds the rejected token
    store.close()


def test_concurrent_401s_refresh_the_provider_once(mimic: FeastMimic) -> None:
    provider = Provider("old-token-1111", "new-token-2222")
    store = make(mimic, token=provider)
    store.get_features("u1", "user", ["user_profile:tier"])  # the old token is in use
    mimic.accepted_tokens = {"new-token-2222"}
    results: List[Dict[str, Any]] = []
    start = threading.Barrier(8)

    def read() -> None:
        start.wait()
        results.append(store.get_features("u1", "user", ["user_profile:tier"]).features)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [{"user_profile:tier": "gold"}] * 8
    assert provider.calls == 2
    store.close()


def test_a_rejected_token_degrades_behind_the_guard_and_raises_only_when_configured(
    mimic: FeastMimic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASAHI_TEST_TOKEN", "revoked-token-1")
    http = {"url": mimic.url, "token_env": "ASAHI_TEST_TOKEN", "feature_views": {"user": REFS}}
    config = AsahiConfig.model_validate(
        {
            "feature_store": {"provider": "http", "timeout_ms": 5000, "http": http},
            "enricher": {
                "enabled_task_types": ["t"],
                "task_features": {"t": {"user": ["user_profile:tier"]}},
                "freshness_threshold_seconds": 10**9,
            },
        }
    )
    enricher = build_enricher(config)
    assert enricher.enrich("Hi", user_id="u1", task_type="t").features_available
    mimic.accepted_tokens = {"rotated-token-2"}  # revoked; the variable is not updated
    outcomes = [enricher.enrich("Hi", user_id="u1", task_type="t") for _ in range(3)]
    assert [r.enriched_prompt for r in outcomes] == ["Hi"] * 3
    assert not any(r.features_available for r in outcomes)
    strict = client_from_config(
        FeatureStoreSettings.model_validate(
            {"provider": "http", "fallback_on_timeout": False, "timeout_ms": 5000, "http": http}
        )
    )
    with pytest.raises(FeatureStoreAuthError):
        strict.get_features("u1", "user", ["user_profile:tier"])
    strict.close()  # type: ignore[attr-defined]
    monkeypatch.setenv("ASAHI_TEST_TOKEN", "rotated-token-2")  # the secret is rotated
    vec = enricher.client.get_features("u1", "user", ["user_profile:tier"])
    assert vec.features == {"user_profile:tier": "gold"}
    enricher.client.close()  # type: ignore[attr-defined]


def test_health_check_sends_the_token_and_refreshes(mimic: FeastMimic) -> None:
    provider = Provider("old-token-1111", "new-token-2222")
    store = make(mimic, token=provider)
    mimic.accepted_tokens = {"new-token-2222"}
    assert store.health_check() is True
    assert sent_tokens(mimic) == ["Bearer old-token-1111", "Bearer new-token-2222"]
    mimic.accepted_tokens = {"nobody"}
    assert store.health_check() is False
    store.close()


def test_a_lost_source_keeps_the_last_token_and_a_provider_failure_degrades(
    mimic: FeastMimic, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ASAHI_TEST_TOKEN", "kept-token-0001")
    store = make(mimic, token=TokenSource(env="ASAHI_TEST_TOKEN"))
    store.get_features("u1", "user", ["user_profile:tier"])
    monkeypatch.delenv("ASAHI_TEST_TOKEN")
    with caplog.at_level(logging.WARNING):
        assert store.get_features("u1", "user", ["user_profile:tier"]).status is FeatureStatus.FOUND
    assert "'ASAHI_TEST_TOKEN' is not set; the last token read is used" in caplog.text
    assert sent_tokens(mimic)[-1] == "Bearer kept-token-0001"
    store.close()

    def broken() -> str:
        raise RuntimeError("vault down")

    failing = make(mimic, token=broken)
    with pytest.raises(FeatureStoreAuthError, match="no bearer token: token provider"):
        failing.get_features("u1", "user", ["user_profile:tier"])
    failing.close()
    not_a_string = make(mimic, token=lambda: 42)  # type: ignore[arg-type,return-value]
    with pytest.raises(FeatureStoreAuthError, match="no bearer token"):
        not_a_string.get_features("u1", "user", ["user_profile:tier"])
    not_a_string.close()


def test_settings_build_each_token_source(
    mimic: FeastMimic, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "tok").write_text("Bearer from-file-token\n")
    monkeypatch.setenv("ASAHI_TEST_TOKEN", "from-env-token")
    sources: Dict[str, Any] = {
        "token_env": "ASAHI_TEST_TOKEN",
        "token_file": str(tmp_path / "tok"),
        "token_provider": f"{__name__}:fixed_token",
    }
    expected = {
        "token_env": "Bearer from-env-token",
        "token_file": "Bearer from-file-token",
        "token_provider": "Bearer provider-token",
    }
    for key, value in sources.items():
        settings = FeatureStoreSettings.model_validate(
            {"provider": "http", "http": {"url": mimic.url, key: value, "feature_views": {}}}
        )
        store = build_backend(settings)
        assert store.get_features("u1", "user", ["user_profile:tier"]).features
        assert sent_tokens(mimic)[-1] == expected[key], key
        assert "token" not in repr(store)
        store.close()  # type: ignore[attr-defined]
    plain = make(mimic, token="  plain-token-1234\n")
    plain.get_features("u1", "user", ["user_profile:tier"])
    assert sent_tokens(mimic)[-1] == "Bearer plain-token-1234"
    plain.close()


def fixed_token() -> str:
    return "provider-token"


NOT_CALLABLE = "a string"


@pytest.mark.parametrize(
    ("http", "match"),
    [
        ({"token_env": "A", "token_file": "t"}, "at most one bearer token source"),
        ({"token_env": "sk-live abc"}, "NAME of an environment variable"),
        (
            {"token_env": "A", "headers_env": {"Authorization": "B"}},
            "token_env and an Authorization header",
        ),
        ({"token_provider": "no colon"}, "token_provider"),
        ({"url": "http://x", "ca_bundle": "ca.pem"}, "ca_bundle configure TLS.*https://"),
        ({"url": "http://x", "verify": False}, "verify: false configure TLS"),
        ({"verify": False, "ca_bundle": "ca.pem"}, "verify is false but ca_bundle is set"),
        ({"client_key": "k.pem"}, "client_key is set without client_cert"),
    ],
)
def test_settings_validation(http: Dict[str, Any], match: str) -> None:
    section = {"url": "https://features.internal", **http}
    with pytest.raises(ValueError, match=match):
        FeatureStoreSettings.model_validate({"provider": "http", "http": section})


def test_store_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://127.0.0.1:1"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    cases: List[tuple[Dict[str, Any], str]] = [
        ({"ca_bundle": tmp_path / "none.pem"}, r"ca_bundle: no file at .*none\.pem"),
        ({"ca_bundle": garbage}, r"ca_bundle: .*garbage\.pem holds no usable PEM CA"),
        ({"client_cert": garbage}, r"client_cert: cannot load the client certificate"),
        ({"client_key": garbage}, "client_key is set without client_cert"),
        ({"verify": False, "ca_bundle": garbage}, "verify is false but ca_bundle"),
        ({"json_features": ["tier"]}, "json_features: 'tier' is not a feature reference"),
        ({"token": 42}, "token must be a string"),
        ({"token": "a\nb"}, "control or non-ASCII"),
        ({"token": "t-1234567", "headers": {"Authorization": "x"}}, "both configured"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ConfigError, match=match):
            HttpFeatureStore(url, **kwargs)
    with pytest.raises(ConfigError, match="needs an https:// url"):
        HttpFeatureStore("http://x", verify=False)
    monkeypatch.delenv("ASAHI_NO_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="'ASAHI_NO_TOKEN' for the bearer token is not set"):
        TokenSource(env="ASAHI_NO_TOKEN")
    with pytest.raises(ConfigError, match="exactly one token source"):
        TokenSource()
    with pytest.raises(ConfigError, match="token_file: no file"):
        TokenSource(path=tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="cannot read a token from"):
        TokenSource(path=tmp_path / "empty")
    assert tls_context("http://x") is True
    insecure = tls_context(url, verify=False)
    assert not isinstance(insecure, bool) and insecure.check_hostname is False


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("nocolon", "must look like"),
        ("no_such_module_xyz:f", "cannot import module"),
        (f"{__name__}:missing", "has no attribute"),
        (f"{__name__}:NOT_CALLABLE", "not a callable"),
    ],
)
def test_load_callable_errors(path: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_callable(path)
    assert load_callable(f"{__name__}:fixed_token")() == "provider-token"


def test_a_token_echoed_by_the_server_is_redacted(mimic: FeastMimic) -> None:
    """A gateway quoting the request's header in its 401 body: the error hides it."""
    secret = "echoed-secret-token-99"

    def rows(entity_id: str) -> Dict[str, Any]:
        return {}

    mimic.mode, mimic.status = "status", 401
    store = make(mimic, token=secret)
    original = mimic.answer

    def echo(body: Dict[str, Any]) -> Any:
        return 401, f"bad credentials: Bearer {secret}"

    mimic.answer = echo  # type: ignore[method-assign]
    mimic.mode = "ok"
    with pytest.raises(FeatureStoreAuthError) as info:
        store.get_features("u1", "user", ["user_profile:tier"])
    assert secret not in str(info.value) and "[redacted]" in str(info.value)
    mimic.answer = original  # type: ignore[method-assign]
    store.close()


# -- Json values ---------------------------------------------------------------------------


def test_json_features_are_parsed_like_the_embedded_backend() -> None:
    config = {"retries": 3, "regions": ["eu", "us"]}
    cells = {
        "user_profile__tier": (json.dumps(config), NOW),
        "user_profile__score": ("not json {", NOW),
        "user_activity__recent": ([json.dumps({"a": 1}), "plain", None], NOW),
        "user_activity__tier": (json.dumps([1, 2]), NOW),
    }
    server = FeastMimic(rows=lambda entity_id: cells)
    try:
        store = make(
            server,
            json_features=["user_profile:tier", "user_profile:score", "user_activity:recent"],
        )
        refs = ["user_profile:tier", "user_profile:score", "user_activity:recent"]
        vec = store.get_features("u1", "user", [*refs, "user_activity:tier"])
        assert vec.features == {
            "user_profile:tier": config,
            "user_profile:score": "not json {",  # Feast keeps a text that does not parse
            "user_activity:recent": [{"a": 1}, "plain", None],
            "user_activity:tier": "[1, 2]",  # not declared Json: the text as sent
        }
        store.close()
    finally:
        server.close()
    assert json_value(5) == 5


def test_map_values_get_sorted_keys_json_keeps_its_order() -> None:
    """Feast Map / Struct values are protobuf maps (no key order; feast serve sends them
    in arbitrary order): keys are sorted, as the embedded backend sorts them. A Json
    object keeps the order its text has."""
    cells = {
        "user_profile__tier": ({"z": 1, "a": {"y": 2, "b": 3}}, NOW),
        "user_profile__score": ([{"k": 1, "c": 2}, "x"], NOW),
        "user_activity__recent": (["z", "a"], NOW),
        "user_activity__tier": ('{"z": 1, "a": 2}', NOW),
    }
    server = FeastMimic(rows=lambda entity_id: cells)
    try:
        store = make(server, json_features=["user_activity:tier"])
        refs = ["user_profile:tier", "user_profile:score", "user_activity:recent"]
        vec = store.get_features("u1", "user", [*refs, "user_activity:tier"])
        assert list(vec.features["user_profile:tier"]) == ["a", "z"]
        assert list(vec.features["user_profile:tier"]["a"]) == ["b", "y"]
        assert list(vec.features["user_profile:score"][0]) == ["c", "k"]
        assert vec.features["user_activity:recent"] == ["z", "a"]  # a list keeps its order
        assert list(vec.features["user_activity:tier"]) == ["z", "a"]
        store.close()
    finally:
        server.close()


def test_async_provider_path_uses_one_client_per_loop(mimic: FeastMimic) -> None:
    provider = Provider("tok-aaaa-1111")
    store = make(mimic, token=provider)

    async def read() -> Any:
        return (await store.aget_features("u1", "user", ["user_profile:tier"])).features

    assert asyncio.run(read()) == {"user_profile:tier": "gold"}
    assert asyncio.run(read()) == {"user_profile:tier": "gold"}
    assert provider.calls == 1
    store.close()


async def test_async_reads_call_the_provider_off_the_event_loop(mimic: FeastMimic) -> None:
    loop_thread = threading.get_ident()
    callers: List[int] = []

    def provider() -> str:
        callers.append(threading.get_ident())
        return f"tok-async-{len(callers):04d}"

    store = make(mimic, token=provider)
    mimic.accepted_tokens = {"tok-async-0002"}
    vec = await store.aget_features("u1", "user", ["user_profile:tier"])
    assert vec.features == {"user_profile:tier": "gold"}
    assert len(callers) == 2 and loop_thread not in callers
    await store.aclose()


def test_a_token_over_plain_http_warns_unless_loopback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        HttpFeatureStore("http://127.0.0.1:1", token="tok-12345678").close()
        assert "plain http://" not in caplog.text
        HttpFeatureStore("http://features.internal:6566", token="tok-12345678").close()
    assert "the bearer token is sent over plain http://" in caplog.text
    assert "tok-12345678" not in caplog.text


def test_a_401_re_reads_a_file_whose_change_went_unnoticed(
    mimic: FeastMimic, tmp_path: Path
) -> None:
    """A rewrite within the file system's timestamp granularity (same size, inode and
    mtime) is invisible to the stat check: the 401 re-reads the file anyway."""
    path = tmp_path / "token"
    path.write_text("token-aaaa")
    stat = path.stat()
    store = make(mimic, token=TokenSource(path=path))
    store.get_features("u1", "user", ["user_profile:tier"])
    with path.open("r+") as f:  # in place: same inode
        f.write("token-bbbb")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    mimic.accepted_tokens = {"token-bbbb"}
    assert store.get_features("u1", "user", ["user_profile:tier"]).status is FeatureStatus.FOUND
    assert sent_tokens(mimic) == ["Bearer token-aaaa", "Bearer token-aaaa", "Bearer token-bbbb"]
    # the file removed mid-rotation, or the variable holding garbage: the last token stays
    path.unlink()
    assert store.get_features("u1", "user", ["user_profile:tier"]).status is FeatureStatus.FOUND
    assert sent_tokens(mimic)[-1] == "Bearer token-bbbb"
    store.close()


def test_a_garbled_env_value_keeps_the_last_token(
    mimic: FeastMimic, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ASAHI_TEST_TOKEN", "good-token-0001")
    store = make(mimic, token=TokenSource(env="ASAHI_TEST_TOKEN"))
    store.get_features("u1", "user", ["user_profile:tier"])
    monkeypatch.setenv("ASAHI_TEST_TOKEN", "bad\x01token")
    with caplog.at_level(logging.WARNING):
        store.get_features("u1", "user", ["user_profile:tier"])
    assert sent_tokens(mimic)[-1] == "Bearer good-token-0001"
    assert "failed (ConfigError); the last token read is used" in caplog.text
    assert "bad\x01token" not in caplog.text
    store.close()


def test_cli_health_with_token_sources(
    mimic: FeastMimic, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from asahi_features.cli import app

    (tmp_path / "token").write_text("cli-file-token-1\n")
    monkeypatch.setenv("ASAHI_TEST_TOKEN", "cli-env-token-2")
    runner = CliRunner()
    for key, value, token in (
        ("token_file", "token", "cli-file-token-1"),
        ("token_env", "ASAHI_TEST_TOKEN", "cli-env-token-2"),
    ):
        config = tmp_path / f"{key}.yaml"
        config.write_text(
            f"feature_store:\n  provider: http\n  http:\n    url: {mimic.url}\n    {key}: {value}\n"
        )
        mimic.accepted_tokens = {token}
        ok = runner.invoke(app, ["health", "--config", str(config)])
        assert ok.exit_code == 0 and ok.stdout.strip() == "healthy"
        mimic.accepted_tokens = {"someone-else"}
        bad = runner.invoke(app, ["health", "--config", str(config)])
        assert bad.exit_code == 1 and bad.stdout.strip() == "unhealthy"
        assert token not in ok.output + bad.output


def test_without_ca_bundle_the_trust_store_is_the_one_httpx_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client certificate alone builds a context: it trusts SSL_CERT_FILE when set
    (as httpx does), else certifi's bundle; a bad SSL_CERT_FILE is named."""
    import ssl
    import subprocess

    key, cert = tmp_path / "c.key", tmp_path / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=asahi test ca"],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = tls_context("https://x", client_cert=cert, client_key=key)
    assert isinstance(context, ssl.SSLContext)
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "asahi test ca"),),)]
    monkeypatch.delenv("SSL_CERT_FILE")
    context = tls_context("https://x", client_cert=cert, client_key=key)
    assert isinstance(context, ssl.SSLContext) and len(context.get_ca_certs()) > 50
    monkeypatch.setenv("SSL_CERT_FILE", str(key))  # a key is no CA bundle
    with pytest.raises(ConfigError, match=r"c\.key holds no usable PEM CA certificate"):
        tls_context("https://x", client_cert=cert, client_key=key)
