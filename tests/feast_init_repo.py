"""The repository ``feast init`` makes, made by the real CLI in a temporary directory.

``feast init NAME`` copies Feast's bundled template (driver stats: an int64 join key, two
views serving the same feature names, Map / Json / Struct features, on-demand views with
a request source, a LabelView and three feature services) and writes generated parquet
data ending at the current hour; it needs no network. ``feast apply`` registers it, and
the data is materialized into the SQLite online store in this process.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from tests.feast_server import FEAST, FeastServeMissing

__all__ = ["FEAST_INIT_DRIVERS", "make_feast_init_repo"]

FEAST_INIT_DRIVERS = (1001, 1002, 1003, 1004, 1005)
"""The driver ids the template's data holds."""


def _feast(args: list[str], cwd: Path) -> None:
    if not FEAST.exists():
        raise FeastServeMissing(f"feast binary not found at {FEAST}")
    done = subprocess.run(
        [str(FEAST), *args],
        cwd=cwd,
        env={**os.environ, "FEAST_USAGE": "False"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"feast {' '.join(args)} failed ({done.returncode}): "
            f"{(done.stdout + done.stderr)[-2000:]}"
        )


def make_feast_init_repo(parent: Path, name: str = "driver_repo") -> Path:
    """Run ``feast init NAME`` in ``parent``, ``feast apply`` and a materialization up to
    now; the ``feature_repo`` directory (holding ``feature_store.yaml``)."""
    _feast(["init", name], parent)
    repo = parent / name / "feature_repo"
    _feast(["apply"], repo)
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    views = [v.name for v in store.list_feature_views()]
    store.materialize_incremental(end_date=datetime.now(timezone.utc), feature_views=views)
    return repo
