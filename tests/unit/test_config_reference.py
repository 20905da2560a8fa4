"""The generated configuration reference documents every key."""

from __future__ import annotations

from pydantic import BaseModel

from asahi_features.config_reference import config_reference_markdown
from asahi_features.settings import AsahiConfig, nested_model


def _all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = f"{prefix}{field.alias or name}"
        keys.append(key)
        nested = nested_model(field.annotation)
        if nested is not None:
            keys.extend(_all_keys(nested, f"{key}."))
    return keys


def test_every_key_is_listed_with_a_meaning() -> None:
    table = config_reference_markdown()
    rows = {line.split("|")[1].strip(" `"): line for line in table.splitlines()[2:]}
    keys = _all_keys(AsahiConfig)
    assert len(keys) > 60
    for key in keys:
        assert key in rows, key
        meaning = rows[key].split("|")[3].strip()
        assert meaning, f"{key} has no description: add a docstring in settings.py"


def test_defaults_are_shown() -> None:
    table = config_reference_markdown()
    assert "| `feature_store.timeout_ms` | `200` |" in table
    assert "| `feature_store.provider` | **required** |" in table
    assert "| `enricher.task_features` | (built-in table) |" in table
    assert "| `enricher.policy` | section |" in table
    assert "| `source_path`" not in table
