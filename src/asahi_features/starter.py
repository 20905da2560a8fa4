"""A starter configuration written from an existing Feast repository's registry
(``asahi-features init --feast-repo PATH``).

The registry says what a working configuration needs: the project, each entity's join
key, the feature views with their features and time-to-live. From them the starter
config maps one task per feature view (named after the view) plus ``general`` (the first
view of each entity type), uses full references (``view:feature``) so names two views
share are never ambiguous, labels every feature (its description when short, else its
name humanised) and sets the freshness limit to the longest view TTL. What it cannot map
(feature services, on-demand views that need request data, views keyed on several
entities, label views, bytes features) is listed in comments at the top.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import ConfigError, FeatureStoreUnavailableError
from .rendering import humanize

__all__ = ["RepoSummary", "read_repo", "starter_config"]

_MAX_DESCRIPTION_LABEL = 24
"""A field description at most this long (and on one line) becomes the feature's label."""
_UNRENDERABLE = ("Bytes",)
"""Feast types whose values make no sense in a prompt (base64 noise): not mapped."""


@dataclass
class _View:
    name: str
    entity: str
    features: List[Tuple[str, str, str]]
    """(feature name, Feast type, description)."""
    ttl_seconds: Optional[float]


@dataclass
class RepoSummary:
    """What :func:`read_repo` found in the registry."""

    project: str
    repo_path: Path
    join_keys: Dict[str, str] = field(default_factory=dict)
    """Entity name -> join key."""
    views: List[_View] = field(default_factory=list)
    """Feature views keyed on one entity (the ones a task can map)."""
    services: List[Tuple[str, List[str]]] = field(default_factory=list)
    """(feature service, ["view[feature, ...]", ...])."""
    skipped: List[str] = field(default_factory=list)
    """One line per thing not mapped, with why."""


def _ttl(view: Any) -> Optional[float]:
    ttl = getattr(view, "ttl", None)
    if isinstance(ttl, timedelta) and ttl.total_seconds() > 0:
        return ttl.total_seconds()
    return None


def read_repo(repo_path: Path) -> RepoSummary:
    """Read the registry of the Feast repository at ``repo_path``.

    Raises:
        ConfigError: no ``feature_store.yaml`` there, or the repository defines no
            entity or no feature view a task could use (run ``feast apply`` first).
        FeatureStoreUnavailableError: Feast cannot load the repository or its registry.
    """
    path = Path(repo_path).expanduser().resolve()
    if not (path / "feature_store.yaml").is_file():
        raise ConfigError(
            f"--feast-repo: no feature_store.yaml in {path} (give the directory that holds "
            f"it, e.g. the feature_repo folder `feast init` made)"
        )
    try:
        from feast import FeatureStore
    except ImportError:
        raise ConfigError(
            "init --feast-repo needs the 'feast' package (pip install 'asahi-features[feast]')"
        ) from None
    try:
        store = FeatureStore(repo_path=str(path))
        entities = store.list_entities()
        views = store.list_feature_views()
        odfvs = store.list_on_demand_feature_views()
        services = store.list_feature_services()
        label_views = _optional_list(store, "list_label_views")
    except Exception as exc:
        raise FeatureStoreUnavailableError(
            f"cannot read the Feast registry of {path}: {type(exc).__name__}: {exc}"
        ) from None
    summary = RepoSummary(project=store.project, repo_path=path)
    summary.join_keys = {e.name: e.join_key for e in entities}
    for view in sorted(views, key=lambda v: v.name):
        if len(view.entities) != 1 or view.entities[0] not in summary.join_keys:
            keys = ", ".join(view.entities) or "none"
            summary.skipped.append(f"feature view {view.name}: keyed on entities [{keys}]")
            continue
        features = []
        for f in view.features:
            dtype = str(f.dtype)
            if dtype.startswith(_UNRENDERABLE):
                summary.skipped.append(f"{view.name}:{f.name}: {dtype} values do not fit a prompt")
                continue
            features.append((f.name, dtype, (getattr(f, "description", "") or "").strip()))
        if features:
            summary.views.append(_View(view.name, view.entities[0], features, _ttl(view)))
    for odfv in sorted(odfvs, key=lambda v: v.name):
        requests = sorted(
            field_.name
            for source in (getattr(odfv, "source_request_sources", None) or {}).values()
            for field_ in source.schema
        )
        why = f"needs request data ({', '.join(requests)})" if requests else "on-demand view"
        summary.skipped.append(f"on-demand view {odfv.name}: {why}")
    for lv in sorted(label_views, key=lambda v: v.name):
        summary.skipped.append(f"label view {lv.name}: training labels, not prompt context")
    for service in sorted(services, key=lambda s: s.name):
        parts = [
            f"{p.name}[{', '.join(f.name for f in p.features)}]"
            for p in service.feature_view_projections
        ]
        summary.services.append((service.name, parts))
    if not summary.views:
        raise ConfigError(
            f"the Feast repository at {path} (project {summary.project!r}) has no feature "
            f"view keyed on one entity that a task could map; run `feast apply` there first"
            + (f" (not mappable: {'; '.join(summary.skipped)})" if summary.skipped else "")
        )
    return summary


def _optional_list(store: Any, method: str) -> List[Any]:
    lister = getattr(store, method, None)
    return list(lister()) if lister is not None else []


def _label(name: str, description: str) -> str:
    if description and len(description) <= _MAX_DESCRIPTION_LABEL and "\n" not in description:
        return description
    return humanize(name)


def _config_data(summary: RepoSummary, repo_ref: str) -> Dict[str, Any]:
    tasks: Dict[str, Dict[str, List[str]]] = {"general": {}}
    labels: Dict[str, str] = {}
    for view in summary.views:
        refs = [f"{view.name}:{name}" for name, _, _ in view.features]
        tasks["general"].setdefault(view.entity, list(refs))  # the entity's first view
        tasks[view.name] = {view.entity: refs}
        for name, _, description in view.features:
            labels.setdefault(name, _label(name, description))
    ttls = [v.ttl_seconds for v in summary.views if v.ttl_seconds is not None]
    used = {v.entity for v in summary.views}
    return {
        "feature_store": {
            "provider": "feast",
            "feast": {
                "repo_path": repo_ref,
                "project": summary.project,
                "entity_join_keys": {e: k for e, k in summary.join_keys.items() if e in used},
            },
            "timeout_ms": 200,
            "fallback_on_timeout": True,
        },
        "enricher": {
            # the longest view TTL: Feast serves nothing older anyway
            "freshness_threshold_seconds": math.ceil(max(ttls)) if ttls else 3600,
            "enabled_task_types": list(tasks),
            "task_features": tasks,
            "feature_labels": labels,
        },
    }


def _header(summary: RepoSummary, command: str) -> List[str]:
    entity = summary.views[0].entity
    lines = [
        f"# Written by `{command}`",
        f"# from the registry of Feast project {summary.project!r}. Every task below works",
        "# as written; edit freely. Tasks: `general` (the first view of each entity type)",
        "# and one per feature view. Entity ids come with each request:",
        f"#   enricher.enrich(prompt, task_type='general', context={{'{entity}_id': ...}})",
        f"#   asahi-features enrich 'PROMPT' --entity {entity}=ID --config THIS_FILE",
    ]
    if summary.services:
        lines.append("#")
        lines.append("# Feature services in this repository (not mapped: list their views'")
        lines.append("# features in task_features, or map a task to a service where supported):")
        for name, parts in summary.services:
            lines.append(f"#   {name}: {'; '.join(parts)}")
    if summary.skipped:
        lines.append("#")
        lines.append("# Not mapped:")
        lines.extend(f"#   {line}" for line in summary.skipped)
    return lines


def _no_aliases_dumper() -> Any:
    import yaml

    class NoAliases(yaml.SafeDumper):
        """Repeated lists written out, not as ``&id001`` anchors (people edit this file)."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    return NoAliases


def starter_config(
    repo_path: Path, output: Optional[Path] = None, command: str = "asahi-features init"
) -> str:
    """The text of a starter configuration for the Feast repository at ``repo_path``.

    Args:
        repo_path: the directory holding ``feature_store.yaml`` (already applied).
        output: where the text will be written: ``repo_path`` is then written relative
            to its directory (the config keeps working when both move together).
        command: named in the header comment.

    Raises:
        ConfigError, FeatureStoreUnavailableError: see :func:`read_repo`.
    """
    import yaml

    dumper = _no_aliases_dumper()
    summary = read_repo(repo_path)
    repo_ref = str(summary.repo_path)
    if output is not None:
        base = Path(output).expanduser().resolve().parent
        with contextlib.suppress(ValueError):  # another drive (Windows): keep it absolute
            repo_ref = os.path.relpath(summary.repo_path, base)
    body = yaml.dump(
        _config_data(summary, repo_ref),
        Dumper=dumper,
        sort_keys=False,
        width=100,
        allow_unicode=True,
    )
    return "\n".join(_header(summary, command)) + "\n" + body
