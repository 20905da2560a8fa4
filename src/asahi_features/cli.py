"""The ``asahi-features`` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import __version__

app = typer.Typer(
    name="asahi-features",
    help="Enrich LLM prompts with real-time context from feature stores.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SAMPLE_FEATURES = Path(__file__).resolve().parents[2] / "examples" / "sample_features.json"


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


@app.command()
def demo(
    data: Optional[Path] = typer.Option(None, help="JSON feature file (default: the sample)."),
) -> None:
    """Show the features of the bundled sample users."""
    from .stores.local import LocalFeatureStore

    store = LocalFeatureStore(data or SAMPLE_FEATURES)
    catalog = store.list_features()
    for entity_type, names in catalog.items():
        ids = sorted(store._load().entities[entity_type])
        for vector in store.get_batch_features(ids, entity_type, names):
            typer.echo(f"{entity_type} {vector.entity_id} (age {vector.freshness_seconds:.0f}s)")
            typer.echo(json.dumps(vector.features, indent=2, default=str))


def main() -> None:
    """Entry point of the console script."""
    app()
