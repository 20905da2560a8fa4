"""The repository ``feast init`` makes, made by ``feast init`` itself (offline: it copies
a bundled template and writes its own parquet files), applied and materialised by the
``feast`` CLI. The realistic test repo: an INT64 join key (``driver_id``), two views
serving the same feature names, on-demand views with a request source, a LabelView and
three feature services.

Drivers ``1001``..``1005``; ``driver_hourly_stats`` and ``driver_hourly_stats_fresh``
have a 1-day ttl; ``transformed_conv_rate`` needs request data ``val_to_add`` and
``val_to_add_2``.

Example::

    repo = make_feast_init_repo(tmp_path_factory.mktemp("init"))
    FeastClient(str(repo), PROJECT)
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import List

__all__ = ["DRIVERS", "FEAST_INIT_DRIVERS", "PROJECT", "feast_cli", "make_feast_init_repo"]

FEAST = Path(sys.executable).with_name("feast")
PROJECT = "driverdemo"
DRIVERS = ["1001", "1002", "1003", "1004", "1005"]
FEAST_INIT_DRIVERS = tuple(int(d) for d in DRIVERS)
"""The template's driver ids as its INT64 join key holds them."""


def feast_cli(args: List[str], cwd: Path, timeout: float = 180.0) -> str:
    """Run the venv's ``feast`` CLI in ``cwd``; its output, or AssertionError with it."""
    proc = subprocess.run(
        [str(FEAST), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "FEAST_USAGE": "False"},  # no telemetry: tests stay offline
    )
    assert proc.returncode == 0, f"feast {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def make_feast_init_repo(parent: Path, online_store_yaml: str = "") -> Path:
    """``feast init``, ``feast apply`` and ``feast materialize-incremental`` in ``parent``;
    the feature repository directory (holding ``feature_store.yaml``).

    ``online_store_yaml`` replaces the template's ``online_store:`` section (e.g. a Redis
    store) before the apply.
    """
    feast_cli(["init", PROJECT], cwd=parent)
    repo = parent / PROJECT / "feature_repo"
    assert (repo / "feature_store.yaml").exists(), "feast init made no feature_store.yaml"
    if online_store_yaml:
        text = (repo / "feature_store.yaml").read_text()
        head, _, rest = text.partition("online_store:")
        tail = rest.split("\n")
        # drop the indented lines of the template's section
        kept = [line for line in tail[1:] if not line.startswith((" ", "\t"))]
        (repo / "feature_store.yaml").write_text(
            head + online_store_yaml.rstrip("\n") + "\n" + "\n".join(kept)
        )
    feast_cli(["apply"], cwd=repo)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    feast_cli(["materialize-incremental", now], cwd=repo)
    return repo
