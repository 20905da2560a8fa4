"""Quality and cost per task and model (issue 20, item 3): recording with ``model=``,
the per-model stats, ``FeatureMonitor.compare`` (exact numbers on constructed data),
``monitor.model_prices``, persistence and the CLI's ``stats --compare``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
from typer.testing import CliRunner

from asahi_features.cli import app
from asahi_features.config import load_config
from asahi_features.config_reference import config_reference_markdown
from asahi_features.errors import ConfigError
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import MonitorConfig

from .test_monitor import make_result

PRICES: Dict[str, Any] = {
    "small": {"input_per_1k_tokens": 0.15, "output_per_1k_tokens": 0.6},
    "big": {"input_per_1k_tokens": 2.5, "output_per_1k_tokens": 10.0},
}


def _config(**kwargs: Any) -> MonitorConfig:
    return MonitorConfig(model_prices=PRICES, **kwargs)


def constructed(
    monitor: FeatureMonitor, n: int = 100, cheap_mean: float = 0.85, expensive_mean: float = 0.86
) -> None:
    """``n`` scores of ``small`` with features (mean ``cheap_mean``) and ``n`` of ``big``
    without (mean ``expensive_mean``), each alternating -0.1 / +0.1 around its mean, so
    each group's sample variance is exactly n * 0.01 / (n - 1). Usage: small 1,200 in and
    200 out (200 of them feature tokens), big 1,000 in and 200 out."""
    for i in range(n):
        noise = 0.1 if i % 2 else -0.1
        cheap = make_result(task="faq", tokens=200)
        monitor.record_enrichment(
            cheap, cheap_mean + noise, model="small", input_tokens=1200, output_tokens=200
        )
        expensive = make_result(task="faq", enriched=False)
        # the model is known when the request ends, the score and its usage come later
        monitor.record_enrichment(expensive, model="big", input_tokens=1000)
        assert monitor.record_quality(
            expensive.enrichment_id, expensive_mean + noise, output_tokens=200
        )


# -------------------------------------------------------------- an independent reference


def _log_mixture(w: float, x: float) -> float:
    """log of the one-sided normal mixture, written out from its formula (not the library's)."""
    phi = 0.5 * math.erfc(-(w * math.sqrt(x / (1 + x))) / math.sqrt(2))
    return math.log(2 / math.sqrt(1 + x)) + x * w * w / (2 * (1 + x)) + math.log(phi)


def expected_half_width(var: float, n: int, alpha: float, min_samples: int) -> float:
    """Half-width of the always-valid bound for two groups of ``n`` scores of variance
    ``var`` each, from the formulas of monitor/sequential.py's docs, by bisection."""
    information = 1.0 / (var / n + var / n)
    k = 2 * math.log(1 / (2 * alpha))
    x_opt = k + math.log(1 + k)
    x = 2 * x_opt * var * information / (10 * min_samples)
    lo, hi = 0.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if _log_mixture(mid, x) < math.log(1 / alpha):
            lo = mid
        else:
            hi = mid
    return hi / math.sqrt(information)


# -------------------------------------------------------------- compare: exact numbers


def test_compare_gives_the_difference_with_its_always_valid_bound() -> None:
    monitor = FeatureMonitor(_config())
    constructed(monitor)
    report = monitor.compare("faq", cheap="small", expensive="big")
    assert report.cheap_quality == pytest.approx(0.85, abs=1e-12)
    assert report.expensive_quality == pytest.approx(0.86, abs=1e-12)
    assert (report.cheap_samples, report.expensive_samples) == (100, 100)
    assert report.difference == pytest.approx(-0.01, abs=1e-12)
    half = expected_half_width(100 * 0.01 / 99, 100, alpha=0.05, min_samples=30)
    assert half == pytest.approx(0.041401467, abs=1e-8)  # the figure, for the docs
    assert report.lower_bound == pytest.approx(-0.01 - half, abs=1e-9)
    assert report.upper_bound == pytest.approx(-0.01 + half, abs=1e-9)
    assert report.confidence == 0.95
    # margin 0: the bounds straddle 0, no verdict yet
    assert report.cheap_not_worse is None
    assert report.notes == ()
    # allowed to be 0.06 worse: the lower bound (-0.0514) clears -0.06
    assert monitor.compare("faq", cheap="small", expensive="big", margin=0.06).cheap_not_worse
    # allowed 0.05: -0.0514 < -0.05 and the upper bound is above it: still undecided
    assert (
        monitor.compare("faq", cheap="small", expensive="big", margin=0.05).cheap_not_worse is None
    )


def test_compare_says_worse_when_the_upper_bound_is_below_the_margin() -> None:
    monitor = FeatureMonitor(_config())
    constructed(monitor, cheap_mean=0.70, expensive_mean=0.86)
    report = monitor.compare("faq", cheap="small", expensive="big", margin=0.05)
    assert report.difference == pytest.approx(-0.16)
    assert report.upper_bound == pytest.approx(-0.16 + 0.041401467, abs=1e-8)
    assert report.cheap_not_worse is False
    assert "IS worse" in str(report)


def test_cost_per_request_and_saving_per_1000_requests() -> None:
    monitor = FeatureMonitor(_config())
    constructed(monitor)
    report = monitor.compare("faq", cheap="small", expensive="big")
    # small with features: 1200/1000 * 0.15 + 200/1000 * 0.6 = 0.18 + 0.12
    assert report.cheap_cost_per_request == pytest.approx(0.30)
    # big without: 1000/1000 * 2.5 + 200/1000 * 10 = 2.5 + 2.0
    assert report.expensive_cost_per_request == pytest.approx(4.50)
    # 1000 * (4.50 - 0.30)
    assert report.saving_per_1000_requests == pytest.approx(4200.0)
    assert report.feature_tokens_added == 200.0
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["saving_per_1000_requests"] == pytest.approx(4200.0)


def test_per_model_stats_report_quality_tokens_and_cost() -> None:
    monitor = FeatureMonitor(_config(min_samples=30))
    constructed(monitor)
    faq = monitor.get_stats()["task_types"]["faq"]
    small, big = faq["models"]["small"], faq["models"]["big"]
    assert small["quality_with_features"] == pytest.approx(0.85)
    assert small["quality_without_features"] is None
    assert small["scored"] == {"with_features": 100, "without_features": 0}
    assert big["quality_without_features"] == pytest.approx(0.86)
    assert small["feature_tokens_added_per_request"] == 200.0
    assert small["input_tokens_per_request"] == {"with_features": 1200.0, "without_features": None}
    assert big["output_tokens_per_request"] == {"with_features": None, "without_features": 200.0}
    assert small["cost_per_request"]["with_features"] == pytest.approx(0.30)
    assert big["cost_per_request"] == {
        "with_features": None,
        "without_features": pytest.approx(4.5),
    }
    # 200 feature tokens at 0.15 per 1k and at 2.5 per 1k
    assert small["feature_cost_per_request"] == pytest.approx(0.03)
    assert big["feature_cost_per_request"] == pytest.approx(0.5)
    assert big["price"] == PRICES["big"]
    # the task's figures are unchanged by the per-model view
    assert faq["quality"]["with_features"]["n"] == 100
    assert faq["quality_without_features"] == pytest.approx(0.86)
    json.dumps(monitor.get_stats())


def test_a_model_with_both_groups_gets_its_delta_and_bounds() -> None:
    monitor = FeatureMonitor(_config(min_samples=30))
    for i in range(100):
        noise = 0.1 if i % 2 else -0.1
        monitor.record_enrichment(make_result(), 0.85 + noise, model="small")
        monitor.record_enrichment(make_result(enriched=False), 0.86 + noise, model="small")
    small = monitor.get_stats()["task_types"]["faq"]["models"]["small"]
    assert small["quality_basis"] == "unenriched"
    assert small["quality_delta"] == pytest.approx(-0.01)
    half = expected_half_width(100 * 0.01 / 99, 100, alpha=0.05, min_samples=30)
    assert small["quality_gain_lower_bound"] == pytest.approx(-0.01 - half, abs=1e-9)
    assert small["quality_gain_upper_bound"] == pytest.approx(-0.01 + half, abs=1e-9)
    assert small["price"] == PRICES["small"]
    assert small["cost_per_request"] == {"with_features": None, "without_features": None}


def test_the_expensive_side_uses_its_control_group_once_it_has_min_samples() -> None:
    monitor = FeatureMonitor(_config(min_samples=30))
    for i in range(40):
        noise = 0.1 if i % 2 else -0.1
        monitor.record_enrichment(make_result(), 0.85 + noise, model="small")
        # fell back (store down): lower scores, shorter prompts; not the fair comparison
        fallback = make_result(enriched=False, failed=True)
        monitor.record_enrichment(
            fallback, 0.5 + noise, model="big", input_tokens=10, output_tokens=10
        )
    for _ in range(29):
        held = make_result(enriched=False, held_out=True)
        monitor.record_enrichment(held, 0.9, model="big", input_tokens=1000, output_tokens=200)
    report = monitor.compare("faq", cheap="small", expensive="big")
    assert report.expensive_basis == "unenriched"  # 29 held-out scores: not yet
    assert report.expensive_samples == 69
    held = make_result(enriched=False, held_out=True)
    monitor.record_enrichment(held, 0.9, model="big", input_tokens=1000, output_tokens=200)
    report = monitor.compare("faq", cheap="small", expensive="big")
    assert report.expensive_basis == "held_out"
    assert (report.expensive_quality, report.expensive_samples) == (pytest.approx(0.9), 30)
    assert report.expensive_cost_per_request == pytest.approx(1.0 * 2.5 + 0.2 * 10.0)
    assert "(n=30, basis held_out)" in str(report)


def test_bounds_wait_for_min_samples() -> None:
    monitor = FeatureMonitor(_config(min_samples=30))
    constructed(monitor, n=20)
    report = monitor.compare("faq", cheap="small", expensive="big")
    assert report.difference == pytest.approx(-0.01)
    assert report.lower_bound is None and report.upper_bound is None
    assert report.cheap_not_worse is None
    assert any("min_samples (30)" in note for note in report.notes)
    assert "undecided (not enough scores)" in str(report)


def test_constant_scores_give_no_bound() -> None:
    monitor = FeatureMonitor(_config(min_samples=2))
    for _ in range(5):
        monitor.record_enrichment(make_result(), 1.0, model="small")
        monitor.record_enrichment(make_result(enriched=False), 1.0, model="big")
    report = monitor.compare("faq", cheap="small", expensive="big")
    assert report.difference == 0.0 and report.lower_bound is None
    assert any("all equal" in note for note in report.notes)


# -------------------------------------------------------------- how the model is recorded


def test_the_model_can_come_with_the_record_or_with_the_late_score() -> None:
    monitor = FeatureMonitor(_config())
    at_record = make_result()
    monitor.record_enrichment(at_record, 0.9, model="small")
    late = make_result()
    monitor.record_enrichment(late)
    assert monitor.record_quality(late.enrichment_id, 0.7, model="small")
    remembered = make_result()
    monitor.record_enrichment(remembered, model="big")
    assert monitor.record_quality(remembered.enrichment_id, 0.5)
    overridden = make_result()
    monitor.record_enrichment(overridden, model="big")
    assert monitor.record_quality(overridden.enrichment_id, 0.3, model="small")
    no_model = make_result()
    monitor.record_enrichment(no_model, 0.1)
    models = monitor.get_stats()["task_types"]["faq"]["models"]
    assert models["small"]["quality"]["with_features"]["n"] == 3
    assert models["small"]["quality_with_features"] == pytest.approx((0.9 + 0.7 + 0.3) / 3)
    assert models["big"]["quality"]["with_features"]["n"] == 1
    assert models["big"]["quality_with_features"] == pytest.approx(0.5)
    # the task counts every score, with a model or not
    assert monitor.get_stats()["task_types"]["faq"]["quality"]["with_features"]["n"] == 5


def test_a_duplicate_record_brings_the_model_and_a_duplicate_score_counts_nothing() -> None:
    monitor = FeatureMonitor(_config())
    result = make_result()
    monitor.record_enrichment(result)
    monitor.record_enrichment(result, model="small", input_tokens=10, output_tokens=5)
    monitor.record_quality(result.enrichment_id, float("nan"))  # invalid: model kept
    assert monitor.record_quality(result.enrichment_id, 0.8)
    assert not monitor.record_quality(result.enrichment_id, 0.1, model="big")
    stats = monitor.get_stats()
    models = stats["task_types"]["faq"]["models"]
    assert list(models) == ["small"]
    assert models["small"]["quality_with_features"] == 0.8
    assert models["small"]["input_tokens_per_request"]["with_features"] == 10.0
    assert stats["duplicate_quality_scores"] == 1
    assert stats["invalid_quality_scores"] == 1


def test_an_invalid_score_with_a_model_keeps_it_for_the_next_score() -> None:
    monitor = FeatureMonitor(_config())
    result = make_result()
    monitor.record_enrichment(result, None)
    assert not monitor.record_quality(result.enrichment_id, "bad", model="small")
    assert monitor.record_quality(result.enrichment_id, 0.6)
    assert (
        monitor.get_stats()["task_types"]["faq"]["models"]["small"]["quality_with_features"] == 0.6
    )


def test_usage_without_any_model_counts_only_for_the_task() -> None:
    monitor = FeatureMonitor(_config())
    result = make_result()
    monitor.record_enrichment(result)
    assert monitor.record_quality(result.enrichment_id, 0.6, input_tokens=100, output_tokens=5)
    faq = monitor.get_stats()["task_types"]["faq"]
    assert "models" not in faq and faq["quality"]["with_features"]["n"] == 1


def test_an_evicted_enrichment_forgets_its_model() -> None:
    monitor = FeatureMonitor(_config(max_pending_quality=2))
    first = make_result()
    monitor.record_enrichment(first, model="small")
    for _ in range(2):  # pushes `first` out of the pending table
        monitor.record_enrichment(make_result())
    assert not monitor.record_quality(first.enrichment_id, 0.9)
    monitor.record_enrichment(first)  # recorded again: a new pending entry, no model
    assert monitor.record_quality(first.enrichment_id, 0.9)
    assert "models" not in monitor.get_stats()["task_types"]["faq"]


def test_models_past_max_models_are_pooled() -> None:
    monitor = FeatureMonitor(_config(max_models=2))
    for name in ("a", "b", "c", "d"):
        monitor.record_enrichment(make_result(), 0.5, model=name)
    models = monitor.get_stats()["task_types"]["faq"]["models"]
    assert sorted(models) == ["__other__", "a", "b"]
    assert models["__other__"]["quality"]["with_features"]["n"] == 2  # c and d


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"model": 3}, TypeError, r"model must be the model's name \(a str\), got int"),
        ({"model": "  "}, ValueError, "model must be a non-empty name"),
        ({"model": "m", "input_tokens": -1}, ValueError, "input_tokens must be a whole number"),
        ({"model": "m", "output_tokens": 1.5}, ValueError, "output_tokens must be a whole number"),
        ({"model": "m", "input_tokens": True}, ValueError, "input_tokens must be a whole number"),
    ],
)
def test_bad_model_arguments_are_refused_before_anything_is_counted(
    kwargs: Dict[str, Any], error: type, text: str
) -> None:
    monitor = FeatureMonitor(_config())
    result = make_result()
    with pytest.raises(error, match=text):
        monitor.record_enrichment(result, 0.5, **kwargs)
    assert monitor.get_stats()["total_enrichments"] == 0
    monitor.record_enrichment(result)
    with pytest.raises(error, match=text):
        monitor.record_quality(result.enrichment_id, 0.5, **kwargs)
    assert monitor.get_stats()["quality"]["with_features"]["n"] == 0


# -------------------------------------------------------------- compare: bad inputs, notes


def test_compare_names_what_is_wrong() -> None:
    monitor = FeatureMonitor(_config())
    constructed(monitor, n=4)
    with pytest.raises(
        ValueError, match=r"no enrichments recorded for task 'billing' \(task types: 'faq'\)"
    ):
        monitor.compare("billing", cheap="small", expensive="big")
    with pytest.raises(
        ValueError,
        match=r"cheap model 'tiny' has no scores recorded for task 'faq' "
        r"\(models with scores: 'big', 'small'",
    ):
        monitor.compare("faq", cheap="tiny", expensive="big")
    with pytest.raises(ValueError, match="expensive model 'huge'"):
        monitor.compare("faq", cheap="small", expensive="huge")
    with pytest.raises(ValueError, match="two different models, got 'small' twice"):
        monitor.compare("faq", cheap="small", expensive="small")
    for margin in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
            monitor.compare("faq", cheap="small", expensive="big", margin=margin)


def test_long_name_lists_in_errors_are_cut() -> None:
    monitor = FeatureMonitor(_config(max_task_types=50))
    for i in range(30):
        monitor.record_enrichment(make_result(task=f"t{i:02d}"), 0.5, model=f"m{i:02d}")
        monitor.record_enrichment(make_result(task="t00"), 0.5, model=f"m{i:02d}")
    with pytest.raises(ValueError, match=r"'t19' and 10 more\)$"):
        monitor.compare("nope", cheap="a", expensive="b")
    with pytest.raises(ValueError, match="'m19' and 10 more;"):
        monitor.compare("t00", cheap="a", expensive="m00")


def test_missing_prices_and_usage_are_explained_not_guessed() -> None:
    monitor = FeatureMonitor(MonitorConfig(model_prices={"small": PRICES["small"]}))
    for i in range(4):
        monitor.record_enrichment(make_result(), 0.8, model="small")  # no usage
        monitor.record_enrichment(make_result(enriched=False), 0.8 + i / 100, model="big")
    report = monitor.compare("faq", cheap="small", expensive="big")
    assert report.cheap_cost_per_request is None
    assert report.expensive_cost_per_request is None
    assert report.saving_per_1000_requests is None
    assert any("no token usage for 'small' with features" in n for n in report.notes)
    assert any("no price for 'big': add it to monitor.model_prices" in n for n in report.notes)
    assert "saving per 1,000 requests: unknown" in str(report)


# -------------------------------------------------------------- settings


def test_prices_are_validated_with_clear_errors(tmp_path: Path) -> None:
    base = "feature_store:\n  provider: local\n  local:\n    data_path: f.json\nmonitor:\n"
    cases = {
        "  model_prices:\n    gpt: {input_per_1k_tokens: -1, output_per_1k_tokens: 1}\n": (
            "monitor.model_prices.gpt.input_per_1k_tokens"
        ),
        "  model_prices:\n    gpt: 0.01\n": "monitor.model_prices.gpt",
        "  model_prices:\n    gpt: {input_per_1k_tokens: 1}\n": (
            "monitor.model_prices.gpt.output_per_1k_tokens"
        ),
        "  model_prices:\n    gpt: {input_per_1k_tokens: .nan, output_per_1k_tokens: 1}\n": (
            "monitor.model_prices.gpt.input_per_1k_tokens"
        ),
        "  model_prices:\n    gpt: {input: 1, output_per_1k_tokens: 1}\n": "input",
        "  model_prices:\n    ' ': {input_per_1k_tokens: 1, output_per_1k_tokens: 1}\n": (
            "must not be empty or blank"
        ),
    }
    for text, where in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(base + text, encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert where in str(info.value), (text, str(info.value))
    path.write_text(
        base
        + "  model_prices:\n    gpt-4o: {input_per_1k_tokens: 2.5, output_per_1k_tokens: 10}\n",
        encoding="utf-8",
    )
    price = load_config(path).monitor.model_prices["gpt-4o"]
    assert (price.input_per_1k_tokens, price.output_per_1k_tokens) == (2.5, 10.0)


def test_the_configuration_reference_documents_the_prices() -> None:
    table = config_reference_markdown()
    row = next(line for line in table.splitlines() if line.startswith("| `monitor.model_prices`"))
    assert "| `{}` |" in row and "input_per_1k_tokens" in row and "output_per_1k_tokens" in row
    assert "| `monitor.max_models` | `100` |" in table


# -------------------------------------------------------------- persistence


def test_per_model_data_survives_save_and_load(tmp_path: Path) -> None:
    monitor = FeatureMonitor(_config())
    constructed(monitor)
    path = monitor.save(tmp_path / "monitor.json")
    saved = json.loads(path.read_bytes())
    assert saved["schema"] == 2
    assert set(saved["state"]["tasks"]["faq"]["models"]) == {"small", "big"}
    loaded = FeatureMonitor.load(path, _config())
    assert loaded.get_stats()["task_types"] == monitor.get_stats()["task_types"]
    assert loaded.compare("faq", cheap="small", expensive="big") == monitor.compare(
        "faq", cheap="small", expensive="big"
    )
    again = loaded.save(tmp_path / "again.json")
    assert json.loads(again.read_bytes())["state"] == saved["state"]


def test_a_monitor_without_model_data_saves_schema_1(tmp_path: Path) -> None:
    monitor = FeatureMonitor(_config())
    monitor.record_enrichment(make_result(), 0.5)
    saved = json.loads(monitor.save(tmp_path / "m.json").read_bytes())
    assert saved["schema"] == 1 and "models" not in saved["state"]["tasks"]["faq"]
    assert "models" not in saved["stats"]["task_types"]["faq"]


def _saved(tmp_path: Path) -> Dict[str, Any]:
    monitor = FeatureMonitor(_config())
    constructed(monitor, n=4)
    data: Dict[str, Any] = json.loads(monitor.save(tmp_path / "m.json").read_bytes())
    return data


@pytest.mark.parametrize(
    "change, field, allowed",
    [
        (lambda d: d.update(schema=1), "state.tasks.faq.models", "absent in schema 1"),
        (
            lambda d: d["state"]["tasks"]["faq"]["models"]["small"]["usage"][0].__setitem__(0, 99),
            "state.tasks.faq.models.small.usage[0][0]",
            "input_n at most quality[0].n (4)",
        ),
        (
            lambda d: d["state"]["tasks"]["faq"]["models"]["small"].pop("usage"),
            "state.tasks.faq.models.small.usage",
            "the field is missing",
        ),
        (
            lambda d: d["state"]["tasks"]["faq"]["models"]["small"]["usage"].__setitem__(1, [1]),
            "state.tasks.faq.models.small.usage[1]",
            "a list of 4 counts",
        ),
        (
            lambda d: d["state"]["tasks"]["faq"]["models"]["small"].__setitem__("quality", {}),
            "state.tasks.faq.models.small.quality",
            "a list of 3 accumulators",
        ),
        (
            lambda d: d["state"]["tasks"]["faq"]["models"].__setitem__(
                "extra", d["state"]["tasks"]["faq"]["models"]["small"]
            ),
            "state.tasks.faq.models",
            "adding up to at most 4",
        ),
        (
            lambda d: d["state"]["tasks"]["faq"].__setitem__("models", []),
            "state.tasks.faq.models",
            "an object",
        ),
    ],
)
def test_bad_per_model_data_is_refused_naming_the_field(
    tmp_path: Path, change: Any, field: str, allowed: str
) -> None:
    data = _saved(tmp_path)
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        FeatureMonitor.load(path, _config())
    message = str(info.value)
    assert f"(schema 1 or 2): {field}" in message, message
    assert allowed in message, message


# -------------------------------------------------------------- CLI


runner = CliRunner()


def _cli_files(tmp_path: Path, prices: Optional[Dict[str, Any]] = None) -> Path:
    monitor = FeatureMonitor(MonitorConfig())
    constructed(monitor)
    monitor.save(tmp_path / "monitor.json")
    (tmp_path / "f.json").write_text("{}", encoding="utf-8")
    config = tmp_path / "asahi.yaml"
    lines = [
        "feature_store:\n  provider: local\n  local:\n    data_path: f.json\n",
        "monitor:\n  persist_path: monitor.json\n",
    ]
    if prices:
        lines.append("  model_prices:\n")
        for name, price in prices.items():
            lines.append(
                f"    {name}: {{input_per_1k_tokens: {price['input_per_1k_tokens']}, "
                f"output_per_1k_tokens: {price['output_per_1k_tokens']}}}\n"
            )
    config.write_text("".join(lines), encoding="utf-8")
    return config


def test_cli_stats_compare_prints_the_report(tmp_path: Path) -> None:
    config = _cli_files(tmp_path, PRICES)
    args = ["stats", "--config", str(config), "--compare", "faq", "--cheap", "small"]
    result = runner.invoke(app, [*args, "--expensive", "big"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "task 'faq': small with features vs big without" in out
    assert "quality small with features:    0.8500 (n=100)" in out
    assert "quality big without features: 0.8600 (n=100, basis unenriched)" in out
    assert "difference: -0.0100, always-valid bounds at confidence 0.95: [-0.0514, 0.0314]" in out
    assert "verdict (margin 0): undecided (the bounds include the margin)" in out
    assert "cost per request: small with features 0.300000, big without 4.500000" in out
    assert "saving per 1,000 requests: 4200.0000" in out
    margin = runner.invoke(app, [*args, "--expensive", "big", "--margin", "0.06"])
    assert "small with features is NOT worse than big without" in margin.stdout
    as_json = runner.invoke(app, [*args, "--expensive", "big", "--json"])
    assert json.loads(as_json.stdout)["saving_per_1000_requests"] == pytest.approx(4200.0)
    # an explicit --snapshot with --config: the snapshot, priced by the config
    snap = tmp_path / "elsewhere.json"
    (tmp_path / "monitor.json").rename(snap)
    both = runner.invoke(app, [*args, "--expensive", "big", "--snapshot", str(snap)])
    assert both.exit_code == 0, both.output
    assert "saving per 1,000 requests: 4200.0000" in both.stdout


def test_cli_stats_compare_without_prices_and_from_a_snapshot(tmp_path: Path) -> None:
    _cli_files(tmp_path)
    result = runner.invoke(
        app,
        [
            "stats",
            "--snapshot",
            str(tmp_path / "monitor.json"),
            "--compare",
            "faq",
            "--cheap",
            "small",
            "--expensive",
            "big",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "saving per 1,000 requests: unknown" in result.stdout
    assert "note: no price for 'small': add it to monitor.model_prices" in result.stdout


def test_cli_stats_compare_errors(tmp_path: Path) -> None:
    config = _cli_files(tmp_path, PRICES)
    base = ["stats", "--config", str(config)]
    half = runner.invoke(app, [*base, "--compare", "faq", "--cheap", "small"])
    assert half.exit_code == 2
    assert "--compare TASK needs both --cheap MODEL and --expensive MODEL" in half.stderr
    stray = runner.invoke(app, [*base, "--cheap", "small"])
    assert stray.exit_code == 2 and "go with --compare TASK" in stray.stderr
    unknown = runner.invoke(
        app, [*base, "--compare", "faq", "--cheap", "tiny", "--expensive", "big"]
    )
    assert unknown.exit_code == 1
    assert "cheap model 'tiny' has no scores recorded for task 'faq'" in unknown.stderr
    plain = runner.invoke(app, base)
    assert plain.exit_code == 0 and "models" in json.loads(plain.stdout)["task_types"]["faq"]
