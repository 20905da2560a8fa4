"""The asahi-features command: exit codes, JSON output, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from asahi_features.cli import app
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import MonitorConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    shutil.copy(EXAMPLES / "sample_features.json", tmp_path / "features.json")
    path = tmp_path / "asahi.yaml"
    path.write_text(
        "feature_store:\n  provider: local\n  local:\n    data_path: features.json\n"
        "enricher:\n  enabled_task_types: [general, product_recommendation]\n"
        "  freshness_threshold_seconds: 100000000\n"
        "monitor:\n  persist_path: monitor.json\n",
        encoding="utf-8",
    )
    return path


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.stdout.strip() == "0.1.0"


def test_enrich_prints_the_enriched_prompt(config: Path) -> None:
    result = runner.invoke(
        app,
        [
            "enrich",
            "Recommend a product",
            "--user-id",
            "u_1001",
            "--task",
            "product_recommendation",
            "--config",
            str(config),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("[Context from user profile]\n- Recent activity: shoes")
    assert result.stdout.rstrip().endswith("Recommend a product")


def test_enrich_json_parses(config: Path) -> None:
    result = runner.invoke(
        app, ["enrich", "hi", "--user-id", "u_1001", "--config", str(config), "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["original_prompt"] == "hi"
    assert payload["features_available"] is True
    assert payload["enriched_prompt"].endswith("hi")


def test_enrich_not_enriched_says_why(config: Path) -> None:
    result = runner.invoke(app, ["enrich", "hi", "--task", "faq", "--config", str(config)])
    assert result.exit_code == 0
    assert result.stdout.strip() == "hi"
    assert "not enriched: task_not_enabled" in result.stderr


def test_config_from_environment(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASAHI_FEATURES_CONFIG", str(config))
    result = runner.invoke(app, ["features", "--entity-type", "organization"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "organization: brand_voice, style_guide, tone"


def test_features_lists_everything(config: Path) -> None:
    result = runner.invoke(app, ["features", "--config", str(config)])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].startswith("user: browsing, budget_level")


def test_missing_config_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASAHI_FEATURES_CONFIG", raising=False)
    result = runner.invoke(app, ["health"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "pass --config FILE or set ASAHI_FEATURES_CONFIG" in result.stderr


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("feature_store:\n  provider: feest\n", encoding="utf-8")
    result = runner.invoke(app, ["health", "--config", str(bad)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "'feest' is not one of feast, tecton, http, custom, local" in lines[0]
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("feature_store:\n  provider: feest\n", encoding="utf-8")
    result = runner.invoke(app, ["--debug", "health", "--config", str(bad)])
    assert result.exit_code != 0
    assert result.exception is not None and "feest" in str(result.exception)


def test_unknown_entity_type_is_one_line(config: Path) -> None:
    result = runner.invoke(app, ["features", "--entity-type", "product", "--config", str(config)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: FeatureConfigError: unknown entity type 'product'")


def test_health(config: Path, tmp_path: Path) -> None:
    ok = runner.invoke(app, ["health", "--config", str(config)])
    assert ok.exit_code == 0 and ok.stdout.strip() == "healthy"
    (tmp_path / "features.json").write_text("{broken", encoding="utf-8")
    bad = runner.invoke(app, ["health", "--config", str(config)])
    assert bad.exit_code == 1 and bad.stdout.strip() == "unhealthy"


def test_stats_from_a_persisted_snapshot(config: Path, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["stats", "--config", str(config)])
    assert missing.exit_code == 2 and "no monitor snapshot" in missing.stderr
    FeatureMonitor(MonitorConfig()).save(tmp_path / "monitor.json")
    result = runner.invoke(app, ["stats", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total_enrichments"] == 0
    direct = runner.invoke(app, ["stats", "--snapshot", str(tmp_path / "monitor.json")])
    assert direct.exit_code == 0


def test_stats_needs_a_persist_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("feature_store:\n  provider: local\n  local:\n    data_path: f.json\n")
    result = runner.invoke(app, ["stats", "--config", str(path)])
    assert result.exit_code == 2 and "persist_path is not set" in result.stderr


def test_demo_builds_the_sample_repo_and_shows_prompts(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "demo"), "--users", "20"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "[Context from user profile]" in out
    assert "[Context from organization profile]" in out
    assert "tokens added:" in out and "latency:" in out
    assert "dropped (stale:" in out  # the deliberately stale sample user
    assert (tmp_path / "demo" / "feast_repo" / "feature_store.yaml").exists()
    # a second run reuses the repo and the written config works with `enrich`
    again = runner.invoke(
        app,
        [
            "enrich",
            "Recommend a product",
            "--user-id",
            "u_0001",
            "--task",
            "product_recommendation",
            "--config",
            str(tmp_path / "demo" / "asahi.yaml"),
        ],
    )
    assert again.exit_code == 0, again.output
    assert "- Recent activity:" in again.stdout


def test_build_sample_repo_command(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["build-sample-repo", str(tmp_path / "repo"), "--users", "5", "--organizations", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "sample Feast repository ready" in result.stdout


def test_console_script_entry_point(config: Path) -> None:
    exe = Path(sys.executable).parent / "asahi-features"
    proc = subprocess.run(
        [str(exe), "enrich", "hi", "--user-id", "u_1001", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["task_type"] == "general"
    bad = subprocess.run(
        [str(exe), "health", "--config", str(config.parent / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
