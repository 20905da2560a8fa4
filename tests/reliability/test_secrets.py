"""Secrets: credentials never leave the HTTP clients, however they are written.

Two classes of leak are closed, and these tests would have found them:

1. A key (the Tecton API key, an HTTP header token from ``headers_env``) that ends in
   whitespace or a newline, as keys read from mounted secret files do. The HTTP stack
   refuses such a header and quotes it in its error; our error text used to copy that
   message into exceptions, ``FeatureVector.error``, the guard's fallback WARNING,
   health-check logs and the CLI's stderr. Now a key is stripped of surrounding
   whitespace at construction (or, holding a control or non-ASCII character, rejected
   there without being shown), transport errors are reported by type and a fixed
   summary (never by their message, and without keeping the original as ``__context__``),
   and an error that quotes a server's answer redacts the key.
2. A key pasted where the NAME of its environment variable belongs (``api_key_env``,
   ``headers_env`` values): rejected as not a variable name, without being shown, by the
   settings models (also in pydantic's own error text) and by ``TectonClient``.

A distinctive key is put in the environment, plain and with whitespace tails; every
observable surface is searched for it (and for fragments of it): DEBUG logs of every
logger, reprs, exceptions with their whole ``__cause__`` / ``__context__`` chain and
traceback on every error path of the HTTP stack (sync and async, ``TectonClient`` and
``HttpFeatureStore``, raw, behind the guard with and without fallback, health checks),
enrichment results, fallback vectors, config dumps, monitor snapshots, saved monitor
state and CLI output (also with ``--debug``). Hypothesis generates keys (printable,
whitespace and newline tails, Unicode) and pasted non-names.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import string
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from asahi_features.config import build_backend, load_config, parse_config
from asahi_features.enricher import FeatureEnricher
from asahi_features.errors import (
    AsahiFeaturesError,
    ConfigError,
    FeatureConfigError,
    FeatureStoreTimeoutError,
)
from asahi_features.guard import GuardedClient
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import EnricherConfig, HttpSettings, TectonSettings
from asahi_features.stores.http import HttpFeatureStore
from asahi_features.stores.tecton import TectonClient
from tests.support.feast_mimic import FeastMimic
from tests.support.servers import free_port
from tests.support.tecton_server import TectonTestServer

KEY_ENV = "ASAHI_RELIABILITY_TECTON_KEY"
TOKEN_ENV = "ASAHI_RELIABILITY_HTTP_TOKEN"
SECRET = "tk-4sah1-S3CRET-7f3a9c1e5b2d-do-not-leak"
FRAGMENTS = (SECRET, "7f3a9c1e5b2d", "S3CRET")

KEY_VALUES = {
    "plain": SECRET,
    "newline": SECRET + "\n",
    "crlf_spaces": SECRET + "  \t\r\n",
    "padded": "\n  " + SECRET + "\n\n",
}
"""The key as it may sit in the environment (read from a secret file, pasted, ...)."""


def assert_clean(text: str, where: str, fragments: Sequence[str] = FRAGMENTS) -> None:
    for fragment in fragments:
        assert fragment not in text, f"the key leaked into {where}: {text[:600]!r}"


def exception_text(exc: BaseException) -> str:
    """Everything an exception can show: the formatted traceback and, for the exception
    and everything reachable through ``__cause__`` and ``__context__`` (suppressed or
    not), its message, repr and args."""
    parts = list(traceback.format_exception(exc))
    seen: set[int] = set()
    todo: List[Optional[BaseException]] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        parts.extend([str(current), repr(current), repr(current.args)])
        todo.extend([current.__cause__, current.__context__])
    return "\n".join(parts)


def assert_logs_clean(
    caplog: pytest.LogCaptureFixture,
    where: str,
    fragments: Sequence[str] = FRAGMENTS,
    *,
    ours_only: bool = False,
) -> None:
    """No log record shows the key (with ``ours_only``, no record of this library's
    loggers: see :func:`test_a_refused_header_is_reported_by_type`)."""
    records = [r for r in caplog.records if not ours_only or r.name.startswith("asahi_features")]
    if not ours_only:
        assert_clean(caplog.text, f"{where}: logs", fragments)
    for record in records:
        shown = repr(record.args) + str(record.exc_info) + record.getMessage()
        assert_clean(shown, f"{where}: log record of {record.name}", fragments)


# -- servers and clients ------------------------------------------------------------------


class EchoingTecton(TectonTestServer):
    """With ``echo``: a gateway that rejects every request with a 401 quoting the
    Authorization header it got."""

    echo = False

    def _answer(self, path: str, headers: Mapping[str, str], raw: bytes) -> Tuple[int, Any]:
        if self.echo:
            message = f"invalid credentials {headers.get('authorization')!r}"
            return 401, {"error": message, "code": 16, "message": message}
        return super()._answer(path, headers, raw)


class EchoingMimic(FeastMimic):
    """``feast serve`` behind a gateway that, with ``echo``, rejects every request with a
    401 quoting its headers."""

    echo = False

    def answer(self, body: Dict[str, Any]) -> Tuple[int, Any]:
        if self.echo:
            return 401, f"invalid credentials in {self.requests[-1]['headers']}"
        return super().answer(body)


@pytest.fixture(params=list(KEY_VALUES), ids=list(KEY_VALUES))
def secret_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Tecton key in the environment, plain or with whitespace around it."""
    value = KEY_VALUES[request.param]
    monkeypatch.setenv(KEY_ENV, value)
    return value


@pytest.fixture
def tailed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key as a secret file gives it: with a trailing newline (Tecton and HTTP)."""
    monkeypatch.setenv(KEY_ENV, SECRET + "\n")
    monkeypatch.setenv(TOKEN_ENV, f"Bearer {SECRET}\n")


def _server(api_key: str) -> EchoingTecton:
    server = EchoingTecton(api_key=api_key, forbidden_workspaces=("locked",))
    server.start()
    server.add_service("user_fs", join_keys=["user_id"], features={"profile.tier": "string"})
    server.put("user_fs", {"user_id": "u1"}, {"profile.tier": "gold"}, age_seconds=10)
    return server


@pytest.fixture
def server() -> Iterator[EchoingTecton]:
    srv = _server(SECRET)
    yield srv
    srv.close()


@pytest.fixture
def wrong_key_server() -> Iterator[EchoingTecton]:
    srv = _server("some-other-key")
    yield srv
    srv.close()


@pytest.fixture
def mimic() -> Iterator[EchoingMimic]:
    srv = EchoingMimic()
    yield srv
    srv.close()


def _client(
    url: str, *, workspace: str = "prod", service: str = "user_fs", timeout_ms: float = 400
) -> TectonClient:
    return TectonClient(KEY_ENV, workspace, url=url, feature_service=service, timeout_ms=timeout_ms)


def _http_settings(url: str, timeout_ms: float = 400) -> Any:
    from asahi_features.settings import FeatureStoreSettings

    return FeatureStoreSettings.model_validate(
        {
            "provider": "http",
            "timeout_ms": timeout_ms,
            "http": {
                "url": url,
                "headers_env": {"Authorization": TOKEN_ENV},
                "feature_views": {"user": ["user_profile:tier"]},
            },
        }
    )


def _http_store(url: str, timeout_ms: float = 400) -> HttpFeatureStore:
    store = build_backend(_http_settings(url, timeout_ms))
    assert isinstance(store, HttpFeatureStore)
    return store


def _enricher_config() -> EnricherConfig:
    return EnricherConfig(enabled_task_types=["t"], task_features={"t": {"user": ["tier"]}})


# -- driving every path ---------------------------------------------------------------


def drive_raw(client: Any) -> List[BaseException]:
    """Every read of the backend itself, sync and async, and its health check; the
    errors they raised."""
    errors: List[BaseException] = []
    calls: List[Callable[[], Any]] = [
        lambda: client.get_features("u1", "user", ["tier"]),
        lambda: client.get_batch_features(["u1", "u2"], "user", ["tier"]),
        lambda: client.list_features("user"),
        lambda: asyncio.run(client.aget_features("u1", "user", ["tier"])),
        lambda: asyncio.run(client.aget_batch_features(["u1", "u2"], "user", ["tier"])),
        client.health_check,
    ]
    for call in calls:
        try:
            call()
        except Exception as exc:
            errors.append(exc)
    return errors


def drive_guarded(
    client: Any, name: str, config_errors_expected: bool, fragments: Sequence[str] = FRAGMENTS
) -> List[BaseException]:
    """The same reads behind the guard (with fallback, through the enricher and the
    monitor; and without fallback), checking every result; the errors raised."""
    errors: List[BaseException] = []
    guarded = GuardedClient(client, timeout_ms=300, breaker_minimum_calls=20)
    strict = GuardedClient(
        client, timeout_ms=300, breaker_minimum_calls=20, fallback_on_timeout=False
    )
    monitor = FeatureMonitor(breaker=guarded)
    enricher = FeatureEnricher(guarded, _enricher_config(), monitor=monitor)
    try:
        result = enricher.enrich("prompt", user_id="u1", task_type="t")
        assert_clean(result.model_dump_json(), f"{name}: EnrichmentResult", fragments)
        vectors = [
            guarded.get_features("u1", "user", ["tier"]),
            *guarded.get_batch_features(["u1", "u2"], "user", ["tier"]),
            asyncio.run(guarded.aget_features("u1", "user", ["tier"])),
        ]
        for vector in vectors:
            shown = vector.model_dump_json() + repr(vector) + str(vector.error)
            assert_clean(shown, f"{name}: vector / fallback error", fragments)
    except (ConfigError, FeatureConfigError) as exc:
        # only config errors (e.g. a 404 for an unknown view) propagate through the
        # fallback, by design
        assert config_errors_expected, f"{name}: {type(exc).__name__} propagated: {exc}"
        errors.append(exc)
    guarded.health_check()
    strict_calls: List[Callable[[], Any]] = [
        lambda: strict.get_features("u1", "user", ["tier"]),
        lambda: asyncio.run(strict.aget_features("u1", "user", ["tier"])),
    ]
    for call in strict_calls:
        try:
            call()
        except Exception as exc:
            errors.append(exc)
    assert_clean(json.dumps(monitor.get_stats(), default=str), f"{name}: monitor", fragments)
    for guard in (guarded, strict):
        assert_clean(json.dumps(guard.stats(), default=str), f"{name}: guard stats", fragments)
    assert_clean(repr(guarded) + repr(enricher) + repr(client), f"{name}: reprs", fragments)
    guarded.close()
    strict.close()
    return errors


# -- Tecton: every error path, with the key plain and whitespace-tailed --------------------

ERROR_CASES = [
    ("unauthorized", {}, "wrong_key", {}),
    ("forbidden_workspace", {}, "ok", {"workspace": "locked"}),
    ("unknown_service", {}, "ok", {"service": "nope"}),
    ("http_500", {"mode": "status", "status": 500}, "ok", {}),
    ("http_503", {"mode": "status", "status": 503}, "ok", {}),
    ("http_502_html", {"mode": "html_error", "status": 502}, "ok", {}),
    ("timeout", {"mode": "hang", "hang_seconds": 3.0}, "ok", {}),
    ("malformed_json", {"mode": "malformed_json"}, "ok", {}),
    ("connection_reset", {"mode": "reset"}, "ok", {}),
    ("gateway_echoes_the_key", {"echo": True}, "ok", {}),
]

CONFIG_ERROR_CASES = frozenset(
    {"unauthorized", "forbidden_workspace", "unknown_service", "gateway_echoes_the_key"}
)


@pytest.mark.parametrize(("name", "faults", "which", "client_kw"), ERROR_CASES)
def test_every_tecton_error_path_is_secret_free(
    caplog: pytest.LogCaptureFixture,
    secret_env: str,
    server: EchoingTecton,
    wrong_key_server: EchoingTecton,
    name: str,
    faults: dict[str, Any],
    which: str,
    client_kw: dict[str, Any],
) -> None:
    srv = wrong_key_server if which == "wrong_key" else server
    caplog.set_level(logging.DEBUG)
    client = _client(srv.url, **client_kw)
    if faults:
        client.list_features("user")  # metadata is fetched before the fault is switched on
        for key, value in faults.items():
            setattr(srv.faults if key != "echo" else srv, key, value)
    try:
        errors = drive_raw(client)
        errors += drive_guarded(client, name, name in CONFIG_ERROR_CASES)
    finally:
        srv.release()
        client.close()
    assert errors, f"{name}: the fault produced no error at all"
    for error in errors:
        assert isinstance(error, AsahiFeaturesError), f"{name}: {type(error).__name__}"
        assert_clean(exception_text(error), f"{name}: {type(error).__name__}")
    assert_logs_clean(caplog, name)


def test_the_key_is_sent_stripped(secret_env: str, server: EchoingTecton) -> None:
    """A whitespace-tailed key is the key: the server accepts it, sync and async."""
    client = _client(server.url, timeout_ms=2_000)
    try:
        assert client.get_features("u1", "user", ["tier"]).features == {"tier": "gold"}
        vectors = client.get_batch_features(["u1", "u2"], "user", ["tier"])
        assert vectors[0].features == {"tier": "gold"}
        vector = asyncio.run(client.aget_features("u1", "user", ["tier"]))
        assert vector.features == {"tier": "gold"}
        assert client.health_check()
    finally:
        client.close()


# -- the Feast feature server over HTTP, with a newline-tailed bearer token -----------------

HTTP_CASES = [
    ("http_500", {"mode": "status", "status": 500}),
    ("http_503", {"mode": "status", "status": 503}),
    ("http_401", {"mode": "status", "status": 401}),
    ("http_502_html", {"mode": "html", "status": 502}),
    ("garbage", {"mode": "garbage"}),
    ("timeout", {"mode": "slow"}),
    ("connection_dropped", {"drop_next": 10**6}),
    ("gateway_echoes_the_token", {"echo": True}),
    ("connection_refused", {}),
]


@pytest.mark.parametrize(("name", "faults"), HTTP_CASES)
def test_every_http_error_path_is_secret_free(
    caplog: pytest.LogCaptureFixture,
    tailed_env: None,
    mimic: EchoingMimic,
    name: str,
    faults: dict[str, Any],
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{free_port()}" if name == "connection_refused" else mimic.url
    store = _http_store(url)
    if name != "connection_refused":
        assert store.get_features("u1", "user", ["tier"]).features == {"tier": "gold"}
        assert mimic.requests[-1]["headers"]["Authorization"] == f"Bearer {SECRET}"
    for key, value in faults.items():
        setattr(mimic, key, value)
    try:
        errors = drive_raw(store)
        expect_config = False  # a 401 degrades like any store failure (issue 19 item 9)
        errors += drive_guarded(store, name, expect_config)
    finally:
        mimic.delay.set()
        store.close()
    assert errors, f"{name}: the fault produced no error at all"
    for error in errors:
        assert isinstance(error, AsahiFeaturesError), f"{name}: {type(error).__name__}"
        assert_clean(exception_text(error), f"{name}: {type(error).__name__}")
    assert_logs_clean(caplog, name)


# -- even a header the HTTP stack refuses is never quoted ---------------------------------


def test_a_refused_header_is_reported_by_type(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tailed_env: None,
    server: EchoingTecton,
    mimic: EchoingMimic,
) -> None:
    """Behind the constructors' cleaning, transport errors are the second wall: a header
    value smuggled in below them (here by httpx's own transports, as a newer code path or
    a user's own client might) makes h11 raise ``LocalProtocolError`` quoting it; the
    library's errors, vectors and log records name only the type.

    httpcore's own DEBUG trace (``send_request_headers.failed exception=...``) does quote
    the exception: that third-party logger is outside the library's reach, which is why
    the constructors never let such a value reach the transport (the other tests run with
    DEBUG on for every logger and find nothing).
    """
    caplog.set_level(logging.DEBUG)
    dirty = SECRET + "\n"
    store = _http_store(mimic.url)
    tecton = _client(server.url)
    handle = httpx.HTTPTransport.handle_request
    ahandle = httpx.AsyncHTTPTransport.handle_async_request

    def smuggle(request: httpx.Request) -> None:
        """The request's own scheme (``Bearer``, ``Tecton-key``), a dirty credential."""
        scheme = request.headers.get("Authorization", "Bearer").split(" ")[0]
        request.headers["Authorization"] = f"{scheme} {dirty}"

    def dirty_handle(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        smuggle(request)
        return handle(self, request)

    async def dirty_ahandle(
        self: httpx.AsyncHTTPTransport, request: httpx.Request
    ) -> httpx.Response:
        smuggle(request)
        return await ahandle(self, request)

    errors: List[BaseException] = []
    with monkeypatch.context() as patched:
        patched.setattr(httpx.HTTPTransport, "handle_request", dirty_handle)
        patched.setattr(httpx.AsyncHTTPTransport, "handle_async_request", dirty_ahandle)
        try:
            for client in (store, tecton):
                found = drive_raw(client)
                assert any("LocalProtocolError" in str(e) for e in found), found
                errors += found + drive_guarded(client, "refused header", False)
        finally:
            store.close()
            tecton.close()
    for error in errors:
        assert_clean(exception_text(error), f"refused header: {type(error).__name__}")
    assert_logs_clean(caplog, "refused header", ours_only=True)


# every exception the transport may raise, each quoting the key in its message and in
# the OSError chained under it
TRANSPORT_EXCEPTIONS: List[Callable[[str], BaseException]] = [
    *(
        (lambda text, cls=cls: cls(text))
        for cls in (
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.ReadTimeout,
            httpx.WriteTimeout,
            httpx.PoolTimeout,
            httpx.ReadError,
            httpx.WriteError,
            httpx.CloseError,
            httpx.RemoteProtocolError,
            httpx.LocalProtocolError,
            httpx.ProxyError,
            httpx.UnsupportedProtocol,
            httpx.DecodingError,
            httpx.TooManyRedirects,
        )
    ),
    lambda text: UnicodeEncodeError("ascii", text, 0, 1, "ordinal not in range(128)"),
    lambda text: ValueError(text),
    lambda text: RuntimeError(text),
    lambda text: OSError(errno.ECONNREFUSED, text),
]

_TOKEN_CHARS = string.ascii_letters + string.digits + "-_.~+/="
MARKER = "Zq9"
"""In every generated key; never in anything the library writes (not hex, not a word)."""
_SPACES = [" ", "\t", "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\u00a0", "\u2028", "\u3000"]


@st.composite
def secret_values(draw: st.DrawFn, unicode: bool = True) -> str:
    """A key as it may sit in the environment: a distinctive printable core, perhaps a
    control or non-ASCII character inside, perhaps whitespace and newlines around it."""
    # random chunks of at most 5 characters between markers: every 8-character window
    # holds a whole MARKER, which no output of the library contains by chance
    chunks = draw(st.lists(st.text(alphabet=_TOKEN_CHARS, max_size=5), min_size=3, max_size=8))
    core = MARKER + MARKER.join(chunks) + MARKER
    if unicode and draw(st.booleans()):
        inner = draw(
            st.one_of(
                st.characters(min_codepoint=0x80),  # surrogates are excluded by default
                # controls (no NUL: os.environ refuses it)
                st.sampled_from(["\x01", "\x7f", "\t", "\n", "\x1b"]),
            )
        )
        cut = draw(st.integers(min_value=3, max_value=len(core) - 3))
        core = core[:cut] + inner + core[cut:]
    lead = "".join(draw(st.lists(st.sampled_from(_SPACES), max_size=3)))
    tail = "".join(draw(st.lists(st.sampled_from(_SPACES), max_size=4)))
    return lead + core + tail


def fragments_of(secret: str, width: int = 8) -> List[str]:
    """Every ``width``-character window of the key (and of its escaped form) that holds a
    whole :data:`MARKER`, so that a partial leak or an escaped copy (``\\n``, ``\\xe9``)
    is found too, and a window that merely spells a word of the output (hypothesis finds
    those: ``cted_stu`` of ``rejected_stuck``) is not."""
    forms = {secret.strip(), secret.encode("unicode_escape").decode("ascii").strip()}
    out = {secret.strip()}
    for form in forms:
        for i in range(max(len(form) - width + 1, 1)):
            window = form[i : i + width]
            if MARKER in window:
                out.add(window)
    return sorted(out)


PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(
    make_error=st.sampled_from(TRANSPORT_EXCEPTIONS),
    secret=secret_values(unicode=False),
)
def test_transport_errors_never_quote_their_message(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    server: EchoingTecton,
    make_error: Callable[[str], BaseException],
    secret: str,
) -> None:
    """Whatever the transport raises, whatever its message and chained cause quote
    (here the very header it was sending), the library's error, the fallback vector and
    the logs name its type and a fixed summary only."""
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    fragments = fragments_of(secret)
    monkeypatch.setenv(KEY_ENV, secret)
    monkeypatch.setenv(TOKEN_ENV, secret)

    def failure(request: httpx.Request) -> BaseException:
        quoted = f"refused {request.headers.get('authorization')!r} ({secret!r})"
        exc = make_error(quoted)
        exc.__cause__ = OSError(errno.ECONNRESET, quoted)
        return exc

    def handle(self: Any, request: httpx.Request) -> httpx.Response:
        raise failure(request)

    async def ahandle(self: Any, request: httpx.Request) -> httpx.Response:
        raise failure(request)

    server.api_key = secret.strip()
    tecton = _client(server.url, timeout_ms=2_000)
    tecton.list_features("user")  # metadata read before the transport breaks
    store = _http_store(f"http://127.0.0.1:{free_port()}")
    errors: List[BaseException] = []
    with monkeypatch.context() as patched:
        patched.setattr(httpx.HTTPTransport, "handle_request", handle)
        patched.setattr(httpx.AsyncHTTPTransport, "handle_async_request", ahandle)
        try:
            for client in (tecton, store):
                found = drive_raw(client)
                assert found
                errors += found + drive_guarded(client, "transport", False, fragments)
        finally:
            tecton.close()
            store.close()
    for error in errors:
        assert isinstance(error, AsahiFeaturesError), type(error).__name__
        if isinstance(make_error("x"), httpx.TimeoutException):
            assert isinstance(error, FeatureStoreTimeoutError), error
        assert_clean(exception_text(error), f"transport: {type(error).__name__}", fragments)
    assert_logs_clean(caplog, "transport", fragments)


@pytest.fixture
def http_mimic() -> Iterator[EchoingMimic]:
    srv = EchoingMimic()
    yield srv
    srv.close()


@PROPERTY
@given(secret=secret_values())
def test_generated_keys_never_appear(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    server: EchoingTecton,
    http_mimic: EchoingMimic,
    secret: str,
) -> None:
    """Any key, however padded: usable ones are sent stripped and never shown; those no
    header can carry are refused at construction, unshown."""
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    fragments = fragments_of(secret)
    monkeypatch.setenv(KEY_ENV, secret)
    monkeypatch.setenv(TOKEN_ENV, secret)
    key = secret.strip()
    usable = bool(key) and all(" " <= ch <= "~" for ch in key)
    errors: List[BaseException] = []
    if not usable:
        for build in (lambda: _client(server.url), lambda: _http_store(http_mimic.url)):
            with pytest.raises(ConfigError) as info:
                build()
            assert "not shown" in str(info.value)
            errors.append(info.value)
    else:
        server.api_key = key
        server.faults.mode = "ok"
        http_mimic.mode, http_mimic.echo = "ok", False
        tecton = _client(server.url, timeout_ms=2_000)
        store = _http_store(http_mimic.url, timeout_ms=2_000)
        try:
            assert tecton.get_features("u1", "user", ["tier"]).features == {"tier": "gold"}
            assert store.get_features("u1", "user", ["tier"]).features == {"tier": "gold"}
            assert http_mimic.requests[-1]["headers"]["Authorization"] == key
            server.faults.mode, server.faults.status = "status", 503
            http_mimic.mode, http_mimic.status = "status", 503
            for client in (tecton, store):
                errors += drive_raw(client) + drive_guarded(client, "generated", False, fragments)
            server.faults.mode, server.echo, http_mimic.echo = "ok", True, True
            http_mimic.mode = "ok"
            for client in (tecton, store):
                errors += drive_raw(client) + drive_guarded(client, "echo", True, fragments)
        finally:
            server.echo = False
            tecton.close()
            store.close()
        assert errors
    for error in errors:
        assert_clean(exception_text(error), f"generated: {type(error).__name__}", fragments)
    assert_logs_clean(caplog, "generated", fragments)


# -- a key pasted where the variable's NAME belongs ----------------------------------------


def _pasted_errors(value: Any) -> List[str]:
    """Every way of configuring ``value`` as a variable name, each rejected: the texts
    of the errors."""
    texts: List[str] = []
    tecton = {"provider": "tecton", "tecton": {"api_key_env": value, "url": "http://x"}}
    http = {"provider": "http", "http": {"url": "http://x", "headers_env": {"Auth": value}}}
    for section in (tecton, http):
        with pytest.raises(ConfigError) as config_error:
            parse_config({"feature_store": section})
        texts.append(exception_text(config_error.value))
    for model, data in (
        (TectonSettings, {"api_key_env": value}),
        (HttpSettings, {"url": "http://x", "headers_env": {"Authorization": value}}),
    ):
        with pytest.raises(ValidationError) as validation_error:
            model.model_validate(data)
        texts.append(exception_text(validation_error.value) + str(validation_error.value))
    with pytest.raises(ConfigError) as client_error:
        TectonClient(value, "prod", url="http://127.0.0.1:1", feature_service="fs")
    texts.append(exception_text(client_error.value))
    return texts


def test_pasted_key_is_rejected_unseen(server: EchoingTecton, tmp_path: Path) -> None:
    for value in (SECRET, SECRET + "\n", f"Bearer {SECRET}", "12345678901234567890"):
        for text in _pasted_errors(value):
            assert_clean(text, "pasted key error", [value.strip(), *FRAGMENTS])
            assert "not shown" in text or "valid string" in text
    with pytest.raises(ConfigError, match="api_key_env"):
        parse_config({"feature_store": {"provider": "tecton", "tecton": {"api_key_env": 12345}}})
    # from a YAML file and through the CLI (whose stderr must not show it either)
    path = _config_file(tmp_path, server.url, api_key_env=SECRET)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert_clean(exception_text(info.value), "load_config")
    for args in (("health",), ("features",), ("--debug", "health")):
        proc = _cli(*args, "--config", str(path))
        assert proc.returncode == 1, proc.stderr
        assert "api_key_env" in proc.stderr
        assert_clean(proc.stdout + proc.stderr, f"CLI {args}")


_ENV_NAME_CHARS = string.ascii_letters + string.digits + "_"


@settings(max_examples=200, deadline=None)
@given(
    value=st.text(min_size=1, max_size=60).filter(
        lambda v: not (v[0] in string.ascii_letters + "_" and set(v) <= set(_ENV_NAME_CHARS))
    )
)
def test_pasted_non_names_are_rejected_unseen(value: str) -> None:
    """Any string that is not a plausible variable name is rejected by every way of
    configuring it, and no error text contains it."""
    baseline = "\n".join(_pasted_errors("0-not-a-name"))
    assume(value not in baseline)  # text the message contains anyway proves nothing
    for text in _pasted_errors(value):
        assert value not in text


# -- success paths, dumps, snapshots ------------------------------------------------------


def test_success_path_reprs_logs_and_snapshots(
    caplog: pytest.LogCaptureFixture, secret_env: str, server: EchoingTecton, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    client = _client(server.url)
    guarded = GuardedClient(client, timeout_ms=2_000)
    monitor = FeatureMonitor(breaker=guarded)
    enricher = FeatureEnricher(guarded, _enricher_config(), monitor=monitor)
    try:
        result = enricher.enrich("prompt", user_id="u1", task_type="t")
        assert result.features_available
        assert_clean(result.model_dump_json(), "EnrichmentResult")
        assert_clean(repr(client) + str(client) + str(vars(client)), "client reprs")
        assert_clean(repr(guarded) + repr(enricher), "reprs")
        assert_clean(json.dumps(monitor.get_stats(), default=str), "monitor stats")
        assert_clean(json.dumps(monitor.snapshot(), default=str), "monitor snapshot")
        saved = monitor.save(tmp_path / "monitor.json")
        assert_clean(Path(saved).read_text(), "saved monitor state")
        assert_clean(json.dumps(guarded.stats(), default=str), "guard stats")
        # the requests the server recorded carry no key outside the Authorization header
        assert_clean(json.dumps(server.requests, default=str), "request bodies")
    finally:
        guarded.close()
    assert_logs_clean(caplog, "success")


def _config_file(
    tmp_path: Path, url: str, *, api_key_env: str = KEY_ENV, name: str = "tecton.yaml"
) -> Path:
    path = tmp_path / name
    path.write_text(
        "feature_store:\n"
        "  provider: tecton\n"
        "  timeout_ms: 1500\n"
        "  tecton:\n"
        f"    api_key_env: {json.dumps(api_key_env)}\n"
        "    workspace: prod\n"
        f"    url: {url}\n"
        "    feature_service: user_fs\n"
        "enricher:\n"
        "  enabled_task_types: [t]\n"
        "  task_features: {t: {user: [tier]}}\n",
        encoding="utf-8",
    )
    return path


def _http_config_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "http.yaml"
    path.write_text(
        "feature_store:\n"
        "  provider: http\n"
        "  timeout_ms: 1500\n"
        "  http:\n"
        f"    url: {url}\n"
        f"    headers_env: {{Authorization: {TOKEN_ENV}}}\n"
        "    feature_views: {user: ['user_profile:tier']}\n"
        "enricher:\n"
        "  enabled_task_types: [t]\n"
        "  task_features: {t: {user: [tier]}}\n",
        encoding="utf-8",
    )
    return path


def test_config_dumps_are_secret_free(
    secret_env: str, server: EchoingTecton, tmp_path: Path
) -> None:
    config = load_config(_config_file(tmp_path, server.url))
    assert_clean(config.model_dump_json(), "config JSON dump")
    assert_clean(repr(config.model_dump()), "config dict dump")
    assert_clean(repr(config) + str(config), "config repr")


def _cli(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from asahi_features.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})},
    )


def test_cli_output_is_secret_free(
    tailed_env: None,
    server: EchoingTecton,
    wrong_key_server: EchoingTecton,
    mimic: EchoingMimic,
    tmp_path: Path,
) -> None:
    """With the key newline-tailed (as read from a secret file): every command works or
    fails without showing it, also with --debug (tracebacks and DEBUG logs)."""
    good = str(_config_file(tmp_path, server.url))
    bad = str(_config_file(tmp_path, wrong_key_server.url, name="bad.yaml"))
    http = str(_http_config_file(tmp_path, mimic.url))
    enrich = ("enrich", "hi", "--user-id", "u1", "--task", "t")
    unusable = {KEY_ENV: SECRET + "\u00e9\n", TOKEN_ENV: f"Bearer {SECRET}\x1b\n"}
    runs = {
        "health": (_cli("health", "--config", good), 0),
        "features": (_cli("features", "--config", good), 0),
        "enrich --json": (_cli(*enrich, "--json", "--config", good), 0),
        "--debug enrich": (_cli("--debug", *enrich, "--config", good), 0),
        "401 health": (_cli("health", "--config", bad), 1),
        "401 --debug features": (_cli("--debug", "features", "--config", bad), 1),
        "401 --debug enrich": (_cli("--debug", *enrich, "--config", bad), 1),
        "http health": (_cli("health", "--config", http), 0),
        "http --debug enrich --json": (_cli("--debug", *enrich, "--json", "--config", http), 0),
        "unusable key health": (_cli("health", "--config", good, env=unusable), 1),
        "unusable key --debug enrich": (
            _cli("--debug", *enrich, "--config", good, env=unusable),
            1,
        ),
        "unusable token health": (_cli("health", "--config", http, env=unusable), 1),
    }
    for name, (proc, code) in runs.items():
        output = proc.stdout + proc.stderr
        assert proc.returncode == code, f"{name}: exit {proc.returncode}: {output[-800:]}"
        assert_clean(output, f"CLI {name}")
    assert "gold" in runs["enrich --json"][0].stdout
    # the mimic's rows are dated November 2026: found, then dropped as stale
    http_result = json.loads(runs["http --debug enrich --json"][0].stdout)
    assert http_result["entity_status"] == {"user": "found"}
    assert "401" in runs["401 health"][0].stderr + runs["401 health"][0].stdout
    assert "not shown" in runs["unusable key health"][0].stderr
    assert "not shown" in runs["unusable token health"][0].stderr
