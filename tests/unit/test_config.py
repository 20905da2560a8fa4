"""YAML configuration: spec 2.4 block, validation messages, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from asahi_features.config import build_backend, client_from_config, load_config, parse_config
from asahi_features.errors import ConfigError
from asahi_features.settings import EnricherConfig, FeatureStoreSettings, MonitorConfig
from asahi_features.stores.local import LocalFeatureStore

SPEC_BLOCK = """\
feature_store:
  provider: feast          # feast | tecton | custom | local
  feast:
    repo_path: /path/to/feast/repo
    project: asahi
  tecton:
    api_key_env: TECTON_API_KEY
    workspace: production
  local:
    data_path: data/features.json

  timeout_ms: 200          # max wait for feature fetch
  fallback_on_timeout: true  # proceed without features if store is slow
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_spec_block_verbatim(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SPEC_BLOCK))
    fs = config.feature_store
    assert fs.provider == "feast"
    assert fs.feast is not None and fs.feast.project == "asahi"
    assert fs.feast.repo_path == Path("/path/to/feast/repo")
    assert fs.tecton is not None and fs.tecton.api_key_env == "TECTON_API_KEY"
    assert fs.tecton.workspace == "production"
    assert fs.timeout_ms == 200
    assert fs.fallback_on_timeout is True
    assert config.source_path == tmp_path / "config.yaml"
    # sections that later issues fill have defaults
    assert config.enricher == EnricherConfig()
    assert config.monitor == MonitorConfig()


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    config = load_config(write(sub, SPEC_BLOCK))
    assert config.feature_store.local is not None
    assert config.feature_store.local.data_path == sub.resolve() / "data" / "features.json"


def test_home_is_expanded(tmp_path: Path) -> None:
    text = "feature_store:\n  provider: local\n  local:\n    data_path: ~/f.json\n"
    config = load_config(write(tmp_path, text))
    assert config.feature_store.local is not None
    assert config.feature_store.local.data_path == Path.home() / "f.json"


def test_unknown_provider_names_key_and_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, SPEC_BLOCK.replace("provider: feast ", "provider: feest ")))
    assert info.value.key_path == "feature_store.provider"
    assert (
        "feature_store.provider: 'feest' is not one of feast, tecton, http, custom, local"
        in str(info.value)
    )


def test_unknown_key_lists_allowed_keys(tmp_path: Path) -> None:
    text = SPEC_BLOCK.replace("timeout_ms: 200", "timeout: 200")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "feature_store.timeout: unknown key" in message
    assert "timeout_ms" in message and "fallback_on_timeout" in message


def test_unknown_nested_key(tmp_path: Path) -> None:
    text = SPEC_BLOCK.replace("project: asahi", "projekt: asahi")
    with pytest.raises(ConfigError, match=r"feature_store\.feast\.projekt: unknown key.*project"):
        load_config(write(tmp_path, text))


def test_wrong_type_names_key(tmp_path: Path) -> None:
    text = SPEC_BLOCK.replace("timeout_ms: 200", "timeout_ms: soon")
    with pytest.raises(ConfigError, match=r"feature_store\.timeout_ms: .*number"):
        load_config(write(tmp_path, text))


def test_out_of_range_value(tmp_path: Path) -> None:
    text = SPEC_BLOCK.replace("timeout_ms: 200", "timeout_ms: 0")
    with pytest.raises(ConfigError, match=r"feature_store\.timeout_ms: .*greater than 0"):
        load_config(write(tmp_path, text))


def test_missing_provider_section(tmp_path: Path) -> None:
    text = "feature_store:\n  provider: local\n"
    with pytest.raises(ConfigError, match="'local:' section is missing"):
        load_config(write(tmp_path, text))


def test_missing_required_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"feature_store: is required"):
        load_config(write(tmp_path, "enricher: {}\n"))


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_not_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, text))


def test_invalid_yaml_reports_position(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+, column \d+"):
        load_config(write(tmp_path, "feature_store:\n  provider: local\n   bad: [x\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_enricher_and_monitor_sections(tmp_path: Path) -> None:
    text = (
        "feature_store:\n  provider: local\n  local:\n    data_path: f.json\n"
        "enricher:\n  max_feature_tokens: 120\n  enabled_task_types: [general, faq]\n"
        "monitor:\n  holdout_fraction: {general: 0.1}\n  persist_path: state/monitor.json\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.enricher.max_feature_tokens == 120
    assert config.enricher.enabled_task_types == ["general", "faq"]
    assert config.monitor.holdout_fraction == {"general": 0.1}
    assert config.monitor.persist_path == tmp_path.resolve() / "state" / "monitor.json"


def test_enricher_section_errors_name_their_path(tmp_path: Path) -> None:
    text = (
        "feature_store:\n  provider: local\n  local:\n    data_path: f.json\n"
        "enricher:\n  max_feature_tokens: -1\n"
    )
    with pytest.raises(ConfigError, match=r"enricher\.max_feature_tokens"):
        load_config(write(tmp_path, text))


def test_custom_section_uses_class_key() -> None:
    config = parse_config(
        {
            "feature_store": {
                "provider": "custom",
                "custom": {"class": "mypkg.stores:MyStore", "options": {"dsn": "x"}},
            }
        }
    )
    assert config.feature_store.custom is not None
    assert config.feature_store.custom.class_path == "mypkg.stores:MyStore"
    with pytest.raises(ConfigError, match=r"feature_store\.custom\.class"):
        parse_config(
            {"feature_store": {"provider": "custom", "custom": {"class": "no colon here"}}}
        )


def test_defaults_follow_the_spec() -> None:
    fs = FeatureStoreSettings(provider="local", local={"data_path": "x.json"})  # type: ignore[arg-type]
    assert fs.timeout_ms == 200
    assert fs.fallback_on_timeout is True
    enricher = EnricherConfig()
    assert enricher.max_feature_tokens == 200
    assert enricher.freshness_threshold_seconds == 3600
    assert enricher.enabled_task_types == ["general", "summarization", "faq"]


def test_secrets_are_only_named_in_config(tmp_path: Path) -> None:
    text = SPEC_BLOCK.replace("api_key_env: TECTON_API_KEY", "api_key: abc123")
    with pytest.raises(ConfigError, match=r"feature_store\.tecton\.api_key: unknown key"):
        load_config(write(tmp_path, text))


def test_client_from_config_builds_the_local_store(tmp_path: Path) -> None:
    data = write(tmp_path, '{"user": {}}', "features.json")
    text = f"feature_store:\n  provider: local\n  local:\n    data_path: {data.name}\n"
    config_path = write(tmp_path, text)
    backend = client_from_config(config_path, guarded=False)
    assert isinstance(backend, LocalFeatureStore)
    assert backend.data_path == tmp_path.resolve() / "features.json"
    assert isinstance(build_backend(load_config(config_path).feature_store), LocalFeatureStore)


def test_parse_config_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match="got list"):
        parse_config([1, 2])
