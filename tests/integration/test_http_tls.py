"""HttpFeatureStore in production shape against a real ``feast serve`` (issue 19 item 9;
gated by RUN_INTEGRATION_TESTS=1).

The repository is the one ``feast init`` makes (tests/support/feast_init_repo.py); the TLS
material is made in the test with the openssl CLI (tests/support/tls_proxy.py). ``feast serve``
itself serves HTTPS (``--cert/--key``) for the CA bundle checks; it cannot require client
certificates or check tokens, so a TLS-terminating proxy in front of a second, plain
``feast serve`` does that (as an ingress or auth gateway would).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Dict, List

import pytest

from asahi_features.config import load_config
from asahi_features.enricher import FeatureEnricher, build_enricher
from asahi_features.errors import FeatureStoreUnavailableError
from asahi_features.models import FeatureStatus
from asahi_features.settings import EnricherConfig
from asahi_features.stores.feast_store import FeastClient
from asahi_features.stores.http import HttpFeatureStore
from asahi_features.stores.http_auth import TokenSource
from tests.support.feast_init_repo import PROJECT, make_feast_init_repo
from tests.support.feast_server import FeastServe
from tests.support.tls_proxy import Certificates, TlsProxy, make_certificates

VIEW = "driver_hourly_stats"
FEATURES = ["conv_rate", "avg_daily_trips", "driver_metadata", "driver_config", "driver_profile"]
REFS = [f"{VIEW}:{f}" for f in FEATURES]
JSON_REFS = [f"{VIEW}:driver_config"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_feast_init_repo(tmp_path_factory.mktemp("feast_init"))


@pytest.fixture(scope="module")
def tls_server(
    repo: Path, certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FeastServe]:
    log = tmp_path_factory.mktemp("logs") / "feast_tls.log"
    with FeastServe(repo, log=log, tls=(certs.server_cert, certs.server_key, certs.ca)) as srv:
        yield srv


@pytest.fixture(scope="module")
def plain_server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeastServe]:
    log = tmp_path_factory.mktemp("logs") / "feast_plain.log"
    with FeastServe(repo, log=log) as srv:
        yield srv


def http_store(url: str, **kw: Any) -> HttpFeatureStore:
    kw.setdefault("feature_views", {"driver": REFS})
    kw.setdefault("json_features", JSON_REFS)
    return HttpFeatureStore(url, timeout_ms=10_000, **kw)


def enricher_config() -> EnricherConfig:
    return EnricherConfig(
        enabled_task_types=["driver_report"],
        task_features={"driver_report": {"driver": REFS}},
        freshness_threshold_seconds=10**9,
        max_feature_tokens=400,
    )


# -- CA bundle -----------------------------------------------------------------------------


def test_ca_bundle_verifies_feast_serve(tls_server: FeastServe, certs: Certificates) -> None:
    store = http_store(tls_server.url, ca_bundle=certs.ca)
    assert store.url.startswith("https://")
    assert store.health_check() is True
    vectors = store.get_batch_features(["1001", "1002", "999999"], "driver", ["conv_rate"])
    assert [v.status for v in vectors] == [
        FeatureStatus.FOUND,
        FeatureStatus.FOUND,
        FeatureStatus.MISSING,
    ]
    store.close()


@pytest.mark.parametrize("ca", ["other", "default"])
def test_a_certificate_that_does_not_verify_is_an_outage_that_degrades(
    tls_server: FeastServe, certs: Certificates, ca: str
) -> None:
    kw: Dict[str, Any] = {"ca_bundle": certs.other_ca} if ca == "other" else {}
    store = http_store(tls_server.url, **kw)
    assert store.health_check() is False
    with pytest.raises(FeatureStoreUnavailableError, match="could not be opened"):
        store.get_features("1001", "driver", ["conv_rate"])
    store.close()
    config_file = _write_config(Path(str(certs.ca)).parent / f"asahi_{ca}.yaml", tls_server.url, kw)
    enricher = build_enricher(load_config(config_file))
    results = [
        enricher.enrich("Plan the route.", task_type="driver_report", context={"driver_id": str(d)})
        for d in (1001, 1002, 1003)
    ]
    assert [r.enriched_prompt for r in results] == ["Plan the route."] * 3
    assert not any(r.features_available for r in results)
    enricher.client.close()  # type: ignore[attr-defined]


def test_verify_off_connects(tls_server: FeastServe) -> None:
    store = http_store(tls_server.url, verify=False)
    assert store.get_features("1001", "driver", ["conv_rate"]).status is FeatureStatus.FOUND
    store.close()


def _write_config(path: Path, url: str, http: Dict[str, Any]) -> Path:
    lines = [
        "feature_store:",
        "  provider: http",
        "  timeout_ms: 10000",
        "  http:",
        f"    url: {url}",
        f"    feature_views: {{driver: [{', '.join(REFS)}]}}",
        f"    json_features: [{', '.join(JSON_REFS)}]",
    ]
    for key, value in http.items():
        # relative to the config file: checks path resolution as users write it
        lines.append(f"    {key}: {os.path.relpath(value, path.parent)}")
    lines += [
        "enricher:",
        "  enabled_task_types: [driver_report]",
        f"  task_features: {{driver_report: {{driver: [{', '.join(REFS)}]}}}}",
        "  freshness_threshold_seconds: 1000000000",
        "  max_feature_tokens: 400",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- Json values render as the embedded backend renders them -------------------------------


def test_json_features_render_exactly_as_embedded_feast(
    tls_server: FeastServe, repo: Path, certs: Certificates
) -> None:
    feast_client = FeastClient(str(repo), PROJECT)
    assert feast_client.health_check() is True
    embedded = FeatureEnricher(feast_client, enricher_config())
    over_http = FeatureEnricher(http_store(tls_server.url, ca_bundle=certs.ca), enricher_config())
    undeclared = FeatureEnricher(
        http_store(tls_server.url, ca_bundle=certs.ca, json_features=()), enricher_config()
    )
    differs = 0
    for driver in ("1001", "1002", "1003", "1004", "1005"):
        context = {"driver_id": driver}
        want = embedded.enrich("Plan the route.", task_type="driver_report", context=context)
        got = over_http.enrich("Plan the route.", task_type="driver_report", context=context)
        assert want.features_available and len(want.features_used) == len(REFS)
        assert got.enriched_prompt == want.enriched_prompt
        assert got.features_used == want.features_used
        raw = undeclared.enrich("Plan the route.", task_type="driver_report", context=context)
        differs += raw.enriched_prompt != want.enriched_prompt
    assert differs == 5  # without json_features the JSON text is shown as sent
    over_http.client.close()  # type: ignore[attr-defined]
    undeclared.client.close()  # type: ignore[attr-defined]


# -- client certificates (mutual TLS) ------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_proxy(plain_server: FeastServe, certs: Certificates) -> Iterator[TlsProxy]:
    with TlsProxy(plain_server.url, certs, require_client_cert=True) as proxy:
        yield proxy


def test_client_certificate_required_by_the_server(
    mtls_proxy: TlsProxy, certs: Certificates
) -> None:
    without = http_store(mtls_proxy.url, ca_bundle=certs.ca)
    assert without.health_check() is False
    with pytest.raises(FeatureStoreUnavailableError):
        without.get_features("1001", "driver", ["conv_rate"])
    without.close()
    for kw in (
        {"client_cert": certs.client_cert, "client_key": certs.client_key},
        {"client_cert": certs.client_combined},
    ):
        store = http_store(mtls_proxy.url, ca_bundle=certs.ca, **kw)
        assert store.health_check() is True
        vec = store.get_features("1001", "driver", ["conv_rate", "driver_config"])
        assert vec.status is FeatureStatus.FOUND
        assert isinstance(vec.features["driver_config"], dict)
        store.close()


# -- bearer tokens ---------------------------------------------------------------------------


def test_a_rotated_token_file_is_picked_up_without_a_rejected_request(
    plain_server: FeastServe, certs: Certificates, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("token-before-rotation\n")
    with TlsProxy(plain_server.url, certs, accepted_tokens={"token-before-rotation"}) as proxy:
        store = http_store(proxy.url, ca_bundle=certs.ca, token=TokenSource(path=token_file))
        assert store.get_features("1001", "driver", ["conv_rate"]).status is FeatureStatus.FOUND
        proxy.accepted_tokens = {"token-after-rotation"}  # the old token is revoked
        replacement = tmp_path / "token.new"
        replacement.write_text("token-after-rotation\n")
        os.replace(replacement, token_file)
        found = [
            store.get_features(d, "driver", ["conv_rate"]).status for d in ("1001", "1002", "1003")
        ]
        assert found == [FeatureStatus.FOUND] * 3
        assert proxy.rejected == 0
        assert proxy.seen_tokens == ["token-before-rotation"] + ["token-after-rotation"] * 3
        store.close()


async def test_401_refreshes_the_token_once_then_succeeds(
    plain_server: FeastServe, certs: Certificates
) -> None:
    issued: List[str] = []

    def provider() -> str:
        issued.append(f"token-{len(issued) + 1:04d}")
        return issued[-1]

    with TlsProxy(plain_server.url, certs, accepted_tokens={"token-0001"}) as proxy:
        store = http_store(proxy.url, ca_bundle=certs.ca, token=provider)
        assert store.get_features("1001", "driver", ["conv_rate"]).status is FeatureStatus.FOUND
        proxy.accepted_tokens = {"token-0002"}  # the server rotated its accepted token
        vectors = await store.aget_batch_features(["1001", "1002"], "driver", ["conv_rate"])
        assert [v.status for v in vectors] == [FeatureStatus.FOUND] * 2
        assert proxy.seen_tokens == ["token-0001", "token-0001", "token-0002"]
        assert issued == ["token-0001", "token-0002"] and proxy.rejected == 1
        await store.aclose()


def test_401_twice_degrades_every_request(plain_server: FeastServe, certs: Certificates) -> None:
    issued: List[str] = []

    def provider() -> str:
        issued.append(f"stale-token-{len(issued) + 1}")
        return issued[-1]

    with TlsProxy(plain_server.url, certs, accepted_tokens={"nobody-has-this"}) as proxy:
        enricher = FeatureEnricher(
            _guarded(http_store(proxy.url, ca_bundle=certs.ca, token=provider)),
            enricher_config(),
        )
        prompts = [
            enricher.enrich("Plan the route.", task_type="driver_report", context={"driver_id": d})
            for d in ("1001", "1002", "1003", "1004")
        ]
        assert [p.enriched_prompt for p in prompts] == ["Plan the route."] * 4
        assert not any(p.features_available for p in prompts)
        # the first read was tried twice (a refreshed token), no read a third time
        assert proxy.seen_tokens[:2] == ["stale-token-1", "stale-token-2"]
        assert proxy.rejected == len(proxy.seen_tokens) <= 2 * 4
        enricher.client.close()  # type: ignore[attr-defined]


def _guarded(store: HttpFeatureStore) -> Any:
    from asahi_features.guard import GuardedClient

    return GuardedClient(store, timeout_ms=10_000)
