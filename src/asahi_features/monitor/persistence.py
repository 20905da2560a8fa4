"""Saving and restoring a :class:`~asahi_features.monitor.FeatureMonitor`'s state.

A saved file is one JSON object ``{"schema", "stats", "state"}`` written atomically.
Loading checks the whole file before anything is restored: the schema version, every
counter, every task entry and every quality accumulator; the first field that fails is
named in the error.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, NamedTuple, Union

from ..errors import ConfigError
from ..settings import MonitorConfig
from .counters import (
    COUNTER_FIELDS,
    FLOAT_COUNTERS,
    GROUPS,
    Counters,
    Quality,
    TaskStats,
    reason_name,
)
from .per_model import read_models
from .stats import (
    LatencyReservoir,
    StateFieldError,
    Welford,
    check_count,
    check_object,
    field_path,
    read_count,
    read_finite,
)

logger = logging.getLogger("asahi_features.monitor")

SCHEMA = 1
"""The version of the saved format without per-model data (unchanged since version 1)."""
SCHEMA_MODELS = 2
"""Version 1 plus a ``models`` object in the tasks that hold per-model data. Written only
then, so that a library that reads only version 1 refuses such a file rather than
dropping its per-model data silently."""
SCHEMAS = (SCHEMA, SCHEMA_MODELS)
"""The versions this library reads."""


class Restored(NamedTuple):
    """A checked snapshot state, ready to replace a monitor's counters."""

    counters: Counters
    quality: Quality
    latency: LatencyReservoir
    tasks: Dict[str, TaskStats]


def state_of(
    counters: Counters, quality: Quality, latency: LatencyReservoir, tasks: Dict[str, TaskStats]
) -> Dict[str, Any]:
    """The ``state`` object of a snapshot (JSON-serialisable)."""
    return {
        "counters": counters.to_dict(),
        "quality": [acc.to_dict() for acc in quality],
        "latency": latency.to_dict(),
        "tasks": {name: _task_state(ts) for name, ts in tasks.items()},
    }


def _task_state(ts: TaskStats) -> Dict[str, Any]:
    state: Dict[str, Any] = {
        "total": ts.total,
        "tokens": ts.tokens,
        "groups": list(ts.groups),
        "reasons": {reason_name(k): v for k, v in ts.reasons.items()},
        "quality": [acc.to_dict() for acc in ts.quality],
        "quality_disabled": ts.disabled,
    }
    if ts.models:  # absent otherwise: such a file stays byte-identical to version 1
        state["models"] = {name: ms.to_dict() for name, ms in ts.models.items()}
    return state


def schema_of(state: Dict[str, Any]) -> int:
    """The version a ``state`` object is saved under (2 only with per-model data)."""
    has_models = any("models" in task for task in state["tasks"].values())
    return SCHEMA_MODELS if has_models else SCHEMA


def _read_quality(value: Any, path: str) -> Quality:
    if not isinstance(value, list) or len(value) != len(GROUPS):
        raise StateFieldError(
            path, f"a list of {len(GROUPS)} accumulators ({', '.join(GROUPS)})", value
        )
    return (
        Welford.from_dict(value[0], f"{path}[0]"),
        Welford.from_dict(value[1], f"{path}[1]"),
        Welford.from_dict(value[2], f"{path}[2]"),
    )


def _read_task(
    name: str, value: Any, path: str, known: Dict[str, Any], schema: int = SCHEMA_MODELS
) -> TaskStats:
    data = check_object(value, path)
    ts = TaskStats(name)
    ts.total = read_count(data, "total", path)
    ts.tokens = read_count(data, "tokens", path, 0)
    groups = data.get("groups")
    if not isinstance(groups, list) or len(groups) != len(GROUPS):
        raise StateFieldError(
            f"{path}.groups",
            f"a list of {len(GROUPS)} counts ({', '.join(GROUPS)})",
            groups,
            missing="groups" not in data,
        )
    ts.groups = [check_count(g, f"{path}.groups[{i}]") for i, g in enumerate(groups)]
    if sum(ts.groups) != ts.total:
        raise StateFieldError(f"{path}.groups", f"counts adding up to total ({ts.total})", groups)
    if "reasons" not in data:
        raise StateFieldError(f"{path}.reasons", "an object of counts", missing=True)
    reasons = check_object(data["reasons"], f"{path}.reasons")
    ts.reasons = {
        known.get(k, k): check_count(v, field_path(f"{path}.reasons", k))
        for k, v in reasons.items()
    }
    if sum(ts.reasons.values()) != ts.total:
        raise StateFieldError(f"{path}.reasons", f"counts adding up to total ({ts.total})", reasons)
    if "quality" not in data:
        raise StateFieldError(f"{path}.quality", "a list of 3 accumulators", missing=True)
    ts.quality = _read_quality(data["quality"], f"{path}.quality")
    for group, (acc, count) in enumerate(zip(ts.quality, ts.groups, strict=True)):
        if acc.n > count:  # at most one score per recorded enrichment
            raise StateFieldError(
                f"{path}.quality[{group}].n", f"at most groups[{group}] ({count})", acc.n
            )
    disabled = data.get("quality_disabled", False)  # absent in older files
    if type(disabled) is not bool:
        raise StateFieldError(f"{path}.quality_disabled", "true or false", disabled)
    ts.disabled = disabled
    if "models" in data:
        if schema < SCHEMA_MODELS:
            raise StateFieldError(
                f"{path}.models", f"absent in schema {schema} (per-model data is schema 2)"
            )
        ts.models = read_models(data["models"], f"{path}.models", ts.quality)
    return ts


def _read_counters(state: Dict[str, Any]) -> Counters:
    if "counters" not in state:
        raise StateFieldError("state.counters", "an object of counters", missing=True)
    raw = check_object(state["counters"], "state.counters")
    values: Dict[str, Any] = {}
    for key in COUNTER_FIELDS:
        if key in FLOAT_COUNTERS:
            values[key] = read_finite(raw, key, "state.counters", 0.0)
        else:
            values[key] = read_count(raw, key, "state.counters", 0)
    counters = Counters(**values)
    if counters.failures > counters.attempts:
        raise StateFieldError(
            "state.counters.failures",
            f"at most counters.attempts ({counters.attempts})",
            counters.failures,
        )
    if counters.successful + counters.held_out > counters.total:
        raise StateFieldError(
            "state.counters.successful",
            f"successful + held_out at most counters.total ({counters.total})",
            counters.successful,
        )
    return counters


def _read_state(state: Dict[str, Any], config: MonitorConfig, schema: int = SCHEMA) -> Restored:
    """Check a saved ``state`` object whole and build what it describes.

    Raises:
        StateFieldError: the first field that is missing or out of range.
    """
    from ..models import EnrichmentReason

    counters = _read_counters(state)
    if "quality" not in state:
        raise StateFieldError("state.quality", "a list of 3 accumulators", missing=True)
    quality = _read_quality(state["quality"], "state.quality")
    latency = LatencyReservoir(config.latency_reservoir_size, seed=config.seed)
    latency.load(state.get("latency", {}), "state.latency")
    known = {r.value: r for r in EnrichmentReason}
    tasks: Dict[str, TaskStats] = {}
    raw_tasks = check_object(state.get("tasks", {}), "state.tasks")
    for name, data in raw_tasks.items():
        tasks[name] = _read_task(name, data, field_path("state.tasks", name), known, schema)
    if tasks and sum(ts.total for ts in tasks.values()) != counters.total:
        raise StateFieldError(
            "state.tasks",
            f"task totals adding up to counters.total ({counters.total})",
            sum(ts.total for ts in tasks.values()),
        )
    return Restored(counters, quality, latency, tasks)


def read_counters(raw: Any) -> Counters:
    """Check a ``state.counters`` object and build the counters.

    Raises:
        StateFieldError: the first counter that is missing or out of range.
    """
    return _read_counters({"counters": raw})


def read_quality(value: Any, path: str) -> Quality:
    """Check a list of three quality accumulators (``path`` names it in errors).

    Raises:
        StateFieldError: the first accumulator field that is out of range.
    """
    return _read_quality(value, path)


def read_task(name: str, value: Any) -> TaskStats:
    """Check one ``state.tasks`` entry and build the task's counters.

    Raises:
        StateFieldError: the first field of the entry that is missing or out of range.
    """
    from ..models import EnrichmentReason

    known = {r.value: r for r in EnrichmentReason}
    return _read_task(name, value, field_path("state.tasks", name), known)


def read_state(state: Dict[str, Any], config: MonitorConfig) -> Restored:
    """Check a ``state`` object (the ``state`` of a snapshot, or one replica's state
    read from a shared backend) whole and build what it describes.

    Raises:
        StateFieldError: the first field that is missing or out of range.
    """
    return _read_state(state, config)


def _read_snapshot(raw: bytes, config: MonitorConfig) -> Restored:
    """Parse and check a whole saved snapshot.

    Raises:
        StateFieldError: a field is missing or out of range (the path names it).
        ValueError: the bytes are not UTF-8 JSON.
    """
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise StateFieldError("(top level)", "an object with schema, stats and state", data)
    if "schema" not in data:
        raise StateFieldError("schema", f"{SCHEMA}", missing=True)
    schema = data["schema"]
    if type(schema) is not int or schema not in SCHEMAS:
        raise StateFieldError(
            "schema", f"{SCHEMA} or {SCHEMA_MODELS} (the versions this library reads)", schema
        )
    if "stats" in data:  # informational: recomputed from the state
        check_object(data["stats"], "stats")
    if "state" not in data:
        raise StateFieldError("state", "an object", missing=True)
    return _read_state(check_object(data["state"], "state"), config, schema)


def parse_snapshot(raw: bytes, config: MonitorConfig) -> Union[Restored, str]:
    """The checked state of a saved file, or what is wrong with it (one line)."""
    try:
        return _read_snapshot(raw, config)
    except StateFieldError as exc:
        return str(exc)
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    except RecursionError:
        return "not a snapshot (JSON nested too deeply)"
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        # a case the checks above do not name: still refused here, never later
        return f"{type(exc).__name__}: {str(exc)[:120]}"


def read_saved(
    target: Path, config: MonitorConfig, *, missing_ok: bool
) -> Union[Restored, str, None]:
    """The checked state saved in ``target``; what is wrong with it (one line); or
    ``None`` when the file is missing and ``missing_ok`` (a first start).

    Raises:
        FileNotFoundError: the file is missing and not ``missing_ok``.
        OSError: the file cannot be read.
    """
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            logger.info("no saved monitor state at %s: starting empty", target)
            return None
        raise
    return parse_snapshot(raw, config)


def persist_target(path: Union[str, Path, None], config: MonitorConfig) -> Path:
    """``path``, or the configured ``persist_path``.

    Raises:
        ConfigError: neither is set.
    """
    if path is None:
        path = config.persist_path
    if path is None:
        raise ConfigError(
            "no path to save/load the monitor state: pass one or set monitor.persist_path",
            key_path="monitor.persist_path",
        )
    return Path(path)


def write_snapshot(target: Path, snapshot: Dict[str, Any]) -> Path:
    """Write ``snapshot`` as compact JSON next to ``target`` and rename it over it, so
    that a crash never leaves a half-written file."""
    data = json.dumps(snapshot, separators=(",", ":"))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.debug("monitor state saved to %s", target)
    return target


def not_a_snapshot(target: Path, problem: str) -> ConfigError:
    """The error :meth:`FeatureMonitor.restore` raises for a refused file."""
    return ConfigError(
        f"{target} is not a saved FeatureMonitor state (schema {SCHEMA} or {SCHEMA_MODELS}): "
        f"{problem}",
        key_path="monitor.persist_path",
    )
