"""The bundled sample Feast repository: definitions, a seeded data generator and a builder.

The public surface and the command line of the sample repository; the parts live in the
private package ``asahi_features._sample`` (``definitions``, ``data``, ``build``).

The repository is a Feast project named ``asahi`` whose feature views cover the task
feature table of the specification (``DEFAULT_TASK_FEATURES`` in
:mod:`asahi_features.settings`) and a few more features that a richer, user-configured
task map uses (:data:`SAMPLE_TASK_FEATURES`, the map of ``examples/config.yaml``):

=================  ============  ===========================================================
view               entity        features
=================  ============  ===========================================================
user_purchases     user          purchase_history (list, most recent first), browsing,
                                 budget_level
user_profile       user          preferences, demographics, tier, reading_level,
                                 preferred_language
user_support       user          recent_tickets (list), product_owned (list)
user_dev           user          language_preferences (list), framework_history (list)
org_brand          organization  brand_voice, tone, style_guide
=================  ============  ===========================================================

Ids are ``u_0001`` ... and ``org_001`` .... Event timestamps are relative to the build
time, so freshness is meaningful right after a build. Deliberate oddities (also returned
by :func:`stale_user_ids`, :func:`partial_user_ids` and :func:`stale_organization_ids`):

* **stale users**: every user whose number ends in ``07`` within a hundred (``u_0007``,
  ``u_0107``, ...): every view's event timestamp is 3 to 10 days old.
* **partial users**: every user whose number ends in ``13`` within a hundred (``u_0013``,
  ``u_0113``, ...): ``browsing``, ``budget_level``, ``demographics``, ``recent_tickets``
  and ``framework_history`` are null, and the user has no ``user_dev`` row at all.
* **stale organisations**: ``org_007``, ``org_032``, ... (every 25th from 7): 5 days old.
* Ids past the generated range (``u_9999`` with the default 1,000 users) do not exist.

Build it with ``python -m asahi_features.sample_repo build DIR`` or
:func:`build_sample_repo`; Feast's CLI is not needed. Feast is imported lazily.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

# the "X as X" names are public too, though not in __all__ (as before the move): the
# generated features.py imports feast_objects, tests import PARTIAL_NULL_FEATURES
from ._sample.build import OnlineStore as OnlineStore
from ._sample.build import Progress as Progress
from ._sample.build import apply_view, build_sample_repo, feature_store_yaml
from ._sample.build import definitions_source as definitions_source
from ._sample.build import feast_objects as feast_objects
from ._sample.data import generate_organization_rows, generate_user_rows
from ._sample.definitions import (
    ENTITIES,
    PROJECT,
    SAMPLE_TASK_FEATURES,
    SAMPLE_VIEWS,
    EntitySpec,
    FieldSpec,
    ViewSpec,
    organization_id,
    partial_user_ids,
    stale_organization_ids,
    stale_user_ids,
    user_id,
)
from ._sample.definitions import PARTIAL_NULL_FEATURES as PARTIAL_NULL_FEATURES
from ._sample.definitions import FieldKind as FieldKind

__all__ = [
    "ENTITIES",
    "PROJECT",
    "SAMPLE_TASK_FEATURES",
    "SAMPLE_VIEWS",
    "EntitySpec",
    "FieldSpec",
    "ViewSpec",
    "apply_view",
    "build_sample_repo",
    "feature_store_yaml",
    "generate_organization_rows",
    "generate_user_rows",
    "main",
    "organization_id",
    "partial_user_ids",
    "stale_organization_ids",
    "stale_user_ids",
    "user_id",
]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m asahi_features.sample_repo build DIR [--redis HOST:PORT] [--users N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m asahi_features.sample_repo",
        description="Build the asahi sample Feast repository (apply + load the online store).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the repository into DIR")
    build.add_argument("directory", type=Path)
    build.add_argument("--users", type=int, default=1000)
    build.add_argument("--organizations", type=int, default=50)
    build.add_argument("--seed", type=int, default=7)
    build.add_argument(
        "--redis",
        metavar="HOST:PORT",
        default=None,
        help="use a Redis online store at HOST:PORT instead of SQLite",
    )
    args = parser.parse_args(argv)
    try:
        repo = build_sample_repo(
            args.directory,
            users=args.users,
            organizations=args.organizations,
            seed=args.seed,
            online_store="redis" if args.redis else "sqlite",
            redis_connection=args.redis,
            progress=print,
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"sample repository ready: {repo} (project {PROJECT!r})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
