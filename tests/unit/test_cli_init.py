"""``asahi-features init --feast-repo PATH`` (issue 19 item 10): a starter config that
works as written on the repository ``feast init`` makes.

The repository is made by the real CLI (``feast init``, offline template; ``feast
apply``; materialized up to now): an int64 join key, two views serving the same feature
names, Map / Json / Struct features, on-demand views needing request data, a label view
and three feature services. The written config is loaded as a user would load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
import yaml
from typer.testing import CliRunner

from asahi_features.cli import app
from asahi_features.config import load_config
from asahi_features.enricher import build_enricher
from asahi_features.errors import ConfigError
from asahi_features.starter import read_repo, starter_config
from tests.support.feast_helpers import FRESH_USER, build_test_repo
from tests.support.feast_init_repo import FEAST_INIT_DRIVERS, PROJECT, make_feast_init_repo

runner = CliRunner()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_feast_init_repo(tmp_path_factory.mktemp("feast_init"))


@pytest.fixture(scope="module")
def online(repo: Path) -> Dict[int, Dict[str, Any]]:
    """What raw Feast serves per driver (the expected values)."""
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    refs = [f"driver_hourly_stats:{f}" for f in ("conv_rate", "avg_daily_trips", "driver_config")]
    rows = store.get_online_features(
        features=refs, entity_rows=[{"driver_id": d} for d in FEAST_INIT_DRIVERS]
    ).to_dict()
    return {
        d: {k: rows[k][i] for k in ("conv_rate", "avg_daily_trips", "driver_config")}
        for i, d in enumerate(FEAST_INIT_DRIVERS)
    }


def test_init_writes_a_config_that_works_as_written(
    repo: Path, online: Dict[int, Dict[str, Any]], tmp_path: Path
) -> None:
    output = tmp_path / "conf" / "asahi.yaml"
    result = runner.invoke(app, ["init", "--feast-repo", str(repo), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert f"wrote {output}: 3 tasks (general, driver_hourly_stats, driver_hourly_stats_fresh)" in (
        result.stdout
    )
    assert "--entity driver=ID" in result.stdout
    data = yaml.safe_load(output.read_text())
    assert data["feature_store"]["feast"] == {
        "repo_path": str(Path("..") / ".." / repo.relative_to(tmp_path.parent)),
        "project": PROJECT,
        "entity_join_keys": {"driver": "driver_id"},
    }
    assert data["enricher"]["freshness_threshold_seconds"] == 86400  # the views' TTL
    assert data["enricher"]["feature_labels"]["avg_daily_trips"] == "Average daily trips"
    assert data["enricher"]["feature_labels"]["driver_config"] == "Driver config"

    config = load_config(output)
    enricher = build_enricher(config)  # checks every mapped feature against the registry
    assert enricher.client.health_check() is True
    enriched = 0
    for task in config.enricher.enabled_task_types:
        for driver in FEAST_INIT_DRIVERS:
            r = enricher.enrich("Summarise this driver.", task_type=task,
                                context={"driver_id": str(driver)})  # fmt: skip
            enriched += r.features_available and len(r.features_used) == 6
    assert enriched == 3 * len(FEAST_INIT_DRIVERS)
    result_1001 = enricher.enrich(
        "Summarise this driver.", task_type="general", context={"driver_id": "1001"}
    )
    block = result_1001.enriched_prompt
    expected = online[1001]
    assert block.startswith("[Context from driver profile]\n")
    assert f"- Average daily trips: {expected['avg_daily_trips']}\n" in block
    zones = ", ".join(expected["driver_config"]["preferred_zones"])
    assert f"preferred zones: {zones}" in block  # the Json value, parsed
    # Map / Struct keys sorted (protobuf maps have no order): the same prompt every run
    assert "- Driver metadata: rating: " in block and "- Driver profile: age: " in block
    assert block.endswith("[End context]\n\nSummarise this driver.")
    enricher.client.close()  # type: ignore[attr-defined]


def test_the_header_lists_what_is_not_mapped(repo: Path) -> None:
    text = starter_config(repo)
    header = text.split("feature_store:")[0]
    for service in ("driver_activity_v1", "driver_activity_v2", "driver_activity_v3"):
        assert f"#   {service}: " in header
    assert (
        "#   driver_activity_v1: driver_hourly_stats[conv_rate]; transformed_conv_rate[" in header
    )
    assert (
        "on-demand view transformed_conv_rate: needs request data (val_to_add, val_to_add_2)"
        in header
    )
    assert "label view driver_quality_labels: training labels" in header
    assert all(line.startswith("#") for line in header.splitlines())
    assert "&id" not in text  # no YAML anchors in a file people edit
    data = yaml.safe_load(text)
    assert Path(data["feature_store"]["feast"]["repo_path"]) == repo.resolve()
    assert "task_feature_services" not in data["enricher"]


def test_cli_enrich_with_an_entity_option(repo: Path, tmp_path: Path) -> None:
    output = tmp_path / "asahi.yaml"
    assert runner.invoke(app, ["init", "--feast-repo", str(repo), "-o", str(output)]).exit_code == 0
    args = ["enrich", "Summarise.", "--entity", "driver=1002", "--config", str(output)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("[Context from driver profile]\n- Conv rate: ")
    bad = runner.invoke(app, ["enrich", "x", "--entity", "driver", "--config", str(output)])
    assert bad.exit_code == 2 and "expected TYPE=ID" in bad.stderr
    health = runner.invoke(app, ["health", "--config", str(output)])
    assert health.exit_code == 0 and health.stdout.strip() == "healthy"


def test_init_overwrites_only_with_force_and_prints_with_dash(repo: Path, tmp_path: Path) -> None:
    output = tmp_path / "asahi.yaml"
    output.write_text("mine\n")
    refused = runner.invoke(app, ["init", "--feast-repo", str(repo), "-o", str(output)])
    assert refused.exit_code == 2 and "already exists; pass --force" in refused.stderr
    assert output.read_text() == "mine\n"
    forced = runner.invoke(app, ["init", "--feast-repo", str(repo), "-o", str(output), "--force"])
    assert forced.exit_code == 0 and output.read_text().startswith("# Written by")
    printed = runner.invoke(app, ["init", "--feast-repo", str(repo), "-o", "-"])
    assert printed.exit_code == 0 and "provider: feast" in printed.stdout


def test_init_errors_are_one_clear_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", "--feast-repo", str(tmp_path), "-o", "-"])
    assert result.exit_code == 1
    assert "no feature_store.yaml in" in result.stderr and "feast init" in result.stderr
    empty = tmp_path / "empty_repo"
    empty.mkdir()
    (empty / "feature_store.yaml").write_text(
        "project: empty\nregistry: data/registry.db\nprovider: local\n"
        "online_store:\n  type: sqlite\n  path: data/online.db\n"
        "entity_key_serialization_version: 3\n"
    )
    with pytest.raises(ConfigError, match="no feature view keyed on one entity"):
        read_repo(empty)


def test_init_on_a_repo_of_two_entity_types(tmp_path: Path) -> None:
    """The sample repository (users and organisations): `general` maps the first view of
    each entity type, and both kinds of id enrich."""
    repo = build_test_repo(tmp_path / "sample", users=30, organizations=5)
    output = tmp_path / "asahi.yaml"
    result = runner.invoke(app, ["init", "--feast-repo", str(repo), "-o", str(output)])
    assert result.exit_code == 0, result.output
    config = load_config(output)
    general = config.enricher.task_features["general"]
    assert set(general) == {"user", "organization"}
    enricher = build_enricher(config)
    r = enricher.enrich("Hi", user_id=FRESH_USER, organization_id="org_001", task_type="general")
    assert r.features_available
    assert "[Context from user profile]" in r.enriched_prompt
    assert "[Context from organization profile]" in r.enriched_prompt
    enricher.client.close()  # type: ignore[attr-defined]


def test_views_that_cannot_be_mapped_are_listed(tmp_path: Path) -> None:
    """A view keyed on two entities (compound key) and a Bytes feature are named in the
    header, not mapped; a view without a TTL leaves the freshness limit alone."""
    from datetime import datetime, timezone

    import pandas as pd
    from feast import FeatureStore, FeatureView, Field, FileSource
    from feast.types import Bytes, String

    repo = build_test_repo(tmp_path / "sample", users=10, organizations=3)
    now = datetime.now(timezone.utc)
    data = tmp_path / "extra.parquet"
    pd.DataFrame(
        {
            "user_id": ["u_0001"],
            "organization_id": ["org_001"],
            "event_timestamp": [now],
            "role": ["admin"],
            "blob": [b"\x00\x01"],
        }
    ).to_parquet(data)
    source = FileSource(name="extra", path=str(data), timestamp_field="event_timestamp")
    store = FeatureStore(repo_path=str(repo))
    user, org = store.get_entity("user"), store.get_entity("organization")
    membership = FeatureView(
        name="membership", entities=[user, org], schema=[Field(name="role", dtype=String)],
        source=source,
    )  # fmt: skip
    blobs = FeatureView(
        name="user_blobs", entities=[user], source=source,
        schema=[Field(name="blob", dtype=Bytes), Field(name="role", dtype=String)],
    )  # fmt: skip
    store.apply([membership, blobs])
    text = starter_config(repo)
    header = text.split("feature_store:")[0]
    assert "#   feature view membership: keyed on entities [user, organization]" in header
    assert "#   user_blobs:blob: Bytes values do not fit a prompt" in header
    data_ = yaml.safe_load(text)
    assert data_["enricher"]["task_features"]["user_blobs"] == {"user": ["user_blobs:role"]}
    assert "membership" not in data_["enricher"]["task_features"]


def test_an_unloadable_repository_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "feature_store.yaml").write_text("project: broken\nprovider: nowhere\n")
    result = runner.invoke(app, ["init", "--feast-repo", str(tmp_path), "-o", "-"])
    assert result.exit_code == 1
    assert "cannot read the Feast registry of" in result.stderr
