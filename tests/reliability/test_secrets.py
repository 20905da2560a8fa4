"""Secrets: the Tecton API key never leaves the tecton-client objects.

A distinctive key is put in the environment; every observable surface is searched for it
(and for a fragment of it): DEBUG logs of every logger, reprs, exceptions with their whole
chain and traceback on every error path (401, 403, 404, 500, 503, timeout, malformed
JSON, reset connection), enrichment results, config dumps, monitor snapshots, saved
monitor state and CLI output (also with ``--debug``, which prints tracebacks and DEBUG
logs).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, List, Optional

import pytest

from asahi_features.config import load_config
from asahi_features.enricher import FeatureEnricher
from asahi_features.errors import ConfigError, FeatureConfigError
from asahi_features.guard import GuardedClient
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import EnricherConfig
from tests.tecton_server import TectonTestServer

KEY_ENV = "ASAHI_RELIABILITY_TECTON_KEY"
SECRET = "tk-4sah1-S3CRET-7f3a9c1e5b2d-do-not-leak"
FRAGMENTS = (SECRET, "7f3a9c1e5b2d", "S3CRET")


def assert_clean(text: str, where: str) -> None:
    for fragment in FRAGMENTS:
        assert fragment not in text, f"the Tecton API key leaked into {where}: {text[:500]!r}"


def exception_text(exc: BaseException) -> str:
    """Everything an exception can show: message, repr, args, the formatted chain."""
    parts = [str(exc), repr(exc), repr(exc.args)]
    parts.extend(traceback.format_exception(exc))
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.extend([str(current), repr(current)])
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


def _server(api_key: str) -> TectonTestServer:
    server = TectonTestServer(api_key=api_key, forbidden_workspaces=("locked",)).start()
    server.add_service("user_fs", join_keys=["user_id"], features={"profile.tier": "string"})
    server.put("user_fs", {"user_id": "u1"}, {"profile.tier": "gold"}, age_seconds=10)
    return server


@pytest.fixture
def server(secret_env: None) -> Iterator[TectonTestServer]:
    srv = _server(SECRET)
    yield srv
    srv.close()


@pytest.fixture
def wrong_key_server(secret_env: None) -> Iterator[TectonTestServer]:
    srv = _server("some-other-key")
    yield srv
    srv.close()


def _client(
    url: str, *, workspace: str = "prod", service: str = "user_fs", timeout_ms: float = 400
) -> Any:
    from asahi_features.stores.tecton import TectonClient

    return TectonClient(KEY_ENV, workspace, url=url, feature_service=service, timeout_ms=timeout_ms)


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
]

CONFIG_ERROR_CASES = frozenset({"unauthorized", "forbidden_workspace", "unknown_service"})


@pytest.mark.parametrize(("name", "faults", "which", "client_kw"), ERROR_CASES)
def test_every_error_path_is_secret_free(
    caplog: pytest.LogCaptureFixture,
    server: TectonTestServer,
    wrong_key_server: TectonTestServer,
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
            setattr(srv.faults, key, value)
    errors: List[BaseException] = []
    try:
        calls: List[Callable[[], Any]] = [
            lambda: client.get_features("u1", "user", ["tier"]),
            lambda: client.get_batch_features(["u1", "u2"], "user", ["tier"]),
            lambda: client.list_features("user"),
        ]
        for call in calls:
            try:
                call()
            except Exception as exc:
                errors.append(exc)
        # the same failure behind the guard and the enricher
        guarded = GuardedClient(client, timeout_ms=300, breaker_failure_threshold=100)
        monitor = FeatureMonitor(breaker=guarded)
        enricher = FeatureEnricher(
            guarded,
            EnricherConfig(enabled_task_types=["t"], task_features={"t": {"user": ["tier"]}}),
            monitor=monitor,
        )
        try:
            result = enricher.enrich("prompt", user_id="u1", task_type="t")
            assert_clean(result.model_dump_json(), f"{name}: EnrichmentResult")
            vector = guarded.get_features("u1", "user", ["tier"])
            assert_clean(vector.model_dump_json(), f"{name}: fallback vector")
        except (ConfigError, FeatureConfigError) as exc:
            # Only config errors (401/403/404) propagate by design; every transient fault
            # must degrade and reach the checks on the result and the fallback vector.
            assert name in CONFIG_ERROR_CASES, f"{name}: {type(exc).__name__} propagated: {exc}"
            errors.append(exc)
        assert_clean(json.dumps(monitor.get_stats(), default=str), f"{name}: monitor stats")
        assert_clean(json.dumps(guarded.stats(), default=str), f"{name}: guard stats")
        assert_clean(repr(guarded) + repr(enricher) + repr(client), f"{name}: reprs")
        guarded.close()
    finally:
        srv.release()
        client.close()
    assert errors, f"{name}: the fault produced no error at all"
    for error in errors:
        assert_clean(exception_text(error), f"{name}: {type(error).__name__}")
    assert_clean(caplog.text, f"{name}: logs")
    for record in caplog.records:
        assert_clean(repr(record.args) + str(record.exc_info), f"{name}: log record args")


def test_success_path_reprs_logs_and_snapshots(
    caplog: pytest.LogCaptureFixture, server: TectonTestServer, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    client = _client(server.url)
    guarded = GuardedClient(client, timeout_ms=2_000)
    monitor = FeatureMonitor(breaker=guarded)
    enricher = FeatureEnricher(
        guarded,
        EnricherConfig(enabled_task_types=["t"], task_features={"t": {"user": ["tier"]}}),
        monitor=monitor,
    )
    try:
        result = enricher.enrich("prompt", user_id="u1", task_type="t")
        assert result.features_available
        assert_clean(result.model_dump_json(), "EnrichmentResult")
        assert_clean(repr(client) + str(client) + repr(guarded) + repr(enricher), "reprs")
        assert_clean(json.dumps(monitor.get_stats(), default=str), "monitor stats")
        assert_clean(json.dumps(monitor.snapshot(), default=str), "monitor snapshot")
        saved = monitor.save(tmp_path / "monitor.json")
        assert_clean(Path(saved).read_text(), "saved monitor state")
        assert_clean(json.dumps(guarded.stats(), default=str), "guard stats")
        # the requests the server recorded carry no key outside the Authorization header
        assert_clean(json.dumps(server.requests, default=str), "request bodies")
    finally:
        guarded.close()
    assert_clean(caplog.text, "logs")


def _config_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "tecton.yaml"
    path.write_text(
        "feature_store:\n"
        "  provider: tecton\n"
        "  timeout_ms: 1500\n"
        "  tecton:\n"
        f"    api_key_env: {KEY_ENV}\n"
        "    workspace: prod\n"
        f"    url: {url}\n"
        "    feature_service: user_fs\n"
        "enricher:\n"
        "  enabled_task_types: [t]\n"
        "  task_features: {t: {user: [tier]}}\n",
        encoding="utf-8",
    )
    return path


def test_config_dumps_are_secret_free(server: TectonTestServer, tmp_path: Path) -> None:
    config = load_config(_config_file(tmp_path, server.url))
    assert_clean(config.model_dump_json(), "config JSON dump")
    assert_clean(repr(config.model_dump()), "config dict dump")
    assert_clean(repr(config) + str(config), "config repr")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from asahi_features.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )


def test_cli_output_is_secret_free(
    server: TectonTestServer, wrong_key_server: TectonTestServer, tmp_path: Path
) -> None:
    good = str(_config_file(tmp_path, server.url))
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = str(_config_file(bad_dir, wrong_key_server.url))
    runs = {
        "health": (_cli("health", "--config", good), 0),
        "features": (_cli("features", "--config", good), 0),
        "enrich --json": (
            _cli("enrich", "hi", "--user-id", "u1", "--task", "t", "--json", "--config", good),
            0,
        ),
        "--debug enrich": (
            _cli("--debug", "enrich", "hi", "--user-id", "u1", "--task", "t", "--config", good),
            0,
        ),
        "401 health": (_cli("health", "--config", bad), 1),
        "401 --debug features": (_cli("--debug", "features", "--config", bad), 1),
        "401 --debug enrich": (
            _cli("--debug", "enrich", "hi", "--user-id", "u1", "--task", "t", "--config", bad),
            1,
        ),
    }
    for name, (proc, code) in runs.items():
        output = proc.stdout + proc.stderr
        assert proc.returncode == code, f"{name}: exit {proc.returncode}: {output[-800:]}"
        assert_clean(output, f"CLI {name}")
    assert "gold" in runs["enrich --json"][0].stdout
    assert "401" in runs["401 health"][0].stderr + runs["401 health"][0].stdout
