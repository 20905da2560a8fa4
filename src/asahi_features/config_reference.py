"""The configuration reference, generated from the settings models.

The README's reference table is this function's output, and a test keeps the two equal,
so the documentation cannot drift from what the code accepts.
"""

from __future__ import annotations

from typing import Any, List, Type

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .settings import AsahiConfig, nested_model

__all__ = ["config_reference_markdown"]


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(section)"
        if isinstance(value, dict) and len(value) > 3:
            return "(built-in table)"
        return f"`{value!r}`"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{field.default!r}`"


def _text(doc: str) -> str:
    return " ".join(doc.replace("``", "`").split())


def _rows(model: Type[BaseModel], prefix: str) -> List[str]:
    rows: List[str] = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = f"{prefix}{field.alias or name}"
        nested = nested_model(field.annotation)
        description = _text(field.description or "")
        if nested is not None:
            summary = description or _text((nested.__doc__ or "").split("\n\n")[0])
            rows.append(f"| `{key}` | section | {summary} |")
            rows.extend(_rows(nested, f"{key}."))
        else:
            rows.append(f"| `{key}` | {_default(field)} | {description} |")
    return rows


def config_reference_markdown() -> str:
    """Every configuration key with its default and meaning, as a Markdown table."""
    lines = ["| key | default | meaning |", "| --- | --- | --- |", *_rows(AsahiConfig, "")]
    return "\n".join(lines) + "\n"
