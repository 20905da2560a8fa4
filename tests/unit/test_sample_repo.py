"""The bundled sample Feast repository: generator, builder and command line."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from asahi_features import sample_repo
from asahi_features.models import FeatureStatus
from asahi_features.sample_repo import (
    ENTITIES,
    PARTIAL_NULL_FEATURES,
    PROJECT,
    SAMPLE_TASK_FEATURES,
    SAMPLE_VIEWS,
    build_sample_repo,
    feature_store_yaml,
    generate_organization_rows,
    generate_user_rows,
    partial_user_ids,
    stale_organization_ids,
    stale_user_ids,
)
from asahi_features.settings import DEFAULT_FEATURE_LABELS, DEFAULT_TASK_FEATURES
from asahi_features.stores.feast_store import FeastClient

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    messages: list[str] = []
    repo = build_sample_repo(
        tmp_path_factory.mktemp("sample") / "repo", users=1000, progress=messages.append
    )
    assert len(messages) == 4
    return repo


def test_views_cover_every_default_task_feature() -> None:
    served = {(v.entity, name) for v in SAMPLE_VIEWS for name in v.feature_names}
    # the default map (spec table 3.5) and the richer sample map of examples/config.yaml
    for per_entity in [*DEFAULT_TASK_FEATURES.values(), *SAMPLE_TASK_FEATURES.values()]:
        for entity_type, names in per_entity.items():
            for name in names:
                assert (entity_type, name) in served
    plain = [name for v in SAMPLE_VIEWS for name in v.feature_names]
    assert len(plain) == len(set(plain)), "the sample repo must have no ambiguous names"
    assert set(plain) == set(DEFAULT_FEATURE_LABELS)
    assert {e.name: e.join_key for e in ENTITIES} == {
        "user": "user_id",
        "organization": "organization_id",
    }


def test_generator_is_deterministic_and_seeded() -> None:
    a = generate_user_rows(50, seed=7, now=NOW)
    b = generate_user_rows(50, seed=7, now=NOW)
    c = generate_user_rows(50, seed=8, now=NOW)
    assert a == b
    assert a != c
    assert generate_organization_rows(10, now=NOW) == generate_organization_rows(10, now=NOW)


def test_generator_shapes_and_oddities() -> None:
    rows = generate_user_rows(1000, now=NOW)
    purchases = rows["user_purchases"]
    assert len(purchases) == 1000
    assert purchases[0]["user_id"] == "u_0001" and purchases[-1]["user_id"] == "u_1000"
    assert all(isinstance(r["purchase_history"], list) for r in purchases)
    stale = set(stale_user_ids(1000))
    partial = set(partial_user_ids(1000))
    assert len(stale) == 10 and "u_0007" in stale and "u_0107" in stale
    assert len(partial) == 10 and "u_0013" in partial
    for view_rows in rows.values():
        for row in view_rows:
            age = NOW - row["event_timestamp"]
            if row["user_id"] in stale:
                assert age >= timedelta(days=3)
            else:
                assert age <= timedelta(hours=1)
    by_id = {r["user_id"]: r for r in rows["user_profile"]}
    assert by_id["u_0013"]["demographics"] is None
    assert by_id["u_0001"]["demographics"].split(", ")[1] in {"urban", "suburban", "rural"}
    assert "u_0013" not in {r["user_id"] for r in rows["user_dev"]}
    assert "browsing" in PARTIAL_NULL_FEATURES
    orgs = generate_organization_rows(50, now=NOW)["org_brand"]
    assert [o["organization_id"] for o in orgs][:2] == ["org_001", "org_002"]
    assert stale_organization_ids(50) == ["org_007", "org_032"]
    assert NOW - orgs[6]["event_timestamp"] == timedelta(days=5)


def test_feature_store_yaml_variants() -> None:
    sqlite = feature_store_yaml()
    assert f"project: {PROJECT}" in sqlite and "type: sqlite" in sqlite
    redis = feature_store_yaml("redis", "127.0.0.1:7777")
    assert "type: redis" in redis and '"127.0.0.1:7777"' in redis
    with pytest.raises(ValueError, match="sqlite"):
        feature_store_yaml("dynamodb")  # type: ignore[arg-type]


def test_built_repo_serves_every_feature(built: Path) -> None:
    assert (built / "feature_store.yaml").exists()
    assert (built / "features.py").exists()
    assert (built / "data" / "user_purchases.parquet").exists()
    manifest = json.loads((built / "asahi_sample.json").read_text())
    assert manifest["stale_user_ids"][:2] == ["u_0007", "u_0107"]
    client = FeastClient(str(built), PROJECT)
    assert client.list_features() == {
        "organization": ["brand_voice", "style_guide", "tone"],
        "user": sorted(n for v in SAMPLE_VIEWS if v.entity == "user" for n in v.feature_names),
    }
    users = client.get_batch_features(
        ["u_0001", "u_1000", "u_1001"], "user", client.list_features("user")["user"]
    )
    assert users[0].status is FeatureStatus.FOUND and len(users[0].features) == 12
    assert users[1].status is FeatureStatus.FOUND
    assert users[2].status is FeatureStatus.MISSING
    org = client.get_features("org_050", "organization", ["brand_voice", "tone", "style_guide"])
    assert len(org.features) == 3


def test_rebuild_is_idempotent_and_renews_timestamps(tmp_path: Path) -> None:
    old = datetime.now(timezone.utc) - timedelta(days=2)
    repo = build_sample_repo(tmp_path / "r", users=20, organizations=3, now=old)
    first = FeastClient(str(repo), PROJECT).get_features("u_0001", "user", ["tier"])
    assert first.freshness_seconds > 86400
    again = build_sample_repo(tmp_path / "r", users=20, organizations=3)
    assert again == repo
    second = FeastClient(str(repo), PROJECT).get_features("u_0001", "user", ["tier"])
    assert second.features == first.features
    assert second.freshness_seconds < 3600
    assert FeastClient(str(repo), PROJECT).list_features("user")["user"][0] == "browsing"


def test_rebuild_keeps_commented_yaml_and_rewrites_a_changed_one(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    build_sample_repo(repo, users=5, organizations=1)
    commented = "# my comment\n" + feature_store_yaml()
    (repo / "feature_store.yaml").write_text(commented)
    build_sample_repo(repo, users=5, organizations=1)
    assert (repo / "feature_store.yaml").read_text() == commented
    (repo / "feature_store.yaml").write_text(feature_store_yaml(registry_ttl_seconds=5))
    build_sample_repo(repo, users=5, organizations=1)
    assert "cache_ttl_seconds: 60" in (repo / "feature_store.yaml").read_text()
    assert FeastClient(str(repo), PROJECT).get_features("u_0001", "user", ["tier"]).features


def test_generated_definitions_file_applies(built: Path) -> None:
    namespace: dict[str, object] = {"__file__": str(built / "features.py")}
    exec((built / "features.py").read_text(), namespace)
    assert {"user", "organization", "user_purchases", "org_brand"} <= set(namespace)


def test_build_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        build_sample_repo(tmp_path, users=0)
    with pytest.raises(ValueError, match="online_store"):
        build_sample_repo(tmp_path, online_store="mongo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown entity"):
        sample_repo.apply_view(
            tmp_path, sample_repo.ViewSpec("v", "product", (sample_repo.FieldSpec("x"),)), []
        )


def test_main_builds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = sample_repo.main(
        ["build", str(tmp_path / "cli"), "--users", "10", "--organizations", "2"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "sample repository ready" in out
    assert (tmp_path / "cli" / "feature_store.yaml").exists()
    assert sample_repo.main(["build", str(tmp_path / "bad"), "--users", "0"]) == 2
    assert "error:" in capsys.readouterr().err


def test_main_redis_option_passes_the_connection_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}

    def fake_build(path: Path, **kwargs: object) -> Path:
        seen.update(kwargs)
        return Path(path)

    monkeypatch.setattr(sample_repo, "build_sample_repo", fake_build)
    assert sample_repo.main(["build", str(tmp_path), "--redis", "127.0.0.1:6390"]) == 0
    assert seen["online_store"] == "redis" and seen["redis_connection"] == "127.0.0.1:6390"
