"""One replica's monitor state as flat string fields, and the merge of many replicas.

A replica's state is the ``state`` object that :meth:`FeatureMonitor.save` writes
(:func:`~asahi_features.monitor.persistence.state_of`), cut into fields so that a flush
rewrites only what changed: ``counters``, ``quality``, ``latency`` and one ``t:<task>``
field per task type. Every field holds the replica's *cumulative* value, never an
increment: writing the same fields twice changes nothing, and a backend that lost
everything (a restarted Redis) is repaired by writing them all again.

Reading checks each replica's fields with the same checks as loading a saved file
(:func:`~asahi_features.monitor.persistence.read_state`); a replica whose fields fail
them is left out of the view and named in the log, never trusted.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ..settings import MonitorConfig
from . import persistence
from .counters import COUNTER_FIELDS, Counters, Quality, TaskStats, new_quality
from .per_model import add_models
from .stats import LatencyReservoir, StateFieldError, Welford

SCHEMA_FIELD = "schema"
COUNTERS_FIELD = "counters"
QUALITY_FIELD = "quality"
LATENCY_FIELD = "latency"
TASK_PREFIX = "t:"

LATENCY_SHARED_SAMPLE = 256
"""Latency values a replica shares (a uniform subsample of its reservoir)."""

_MAX_FIELDS = ("freshness_max",)


def encode_state(
    state: Dict[str, Any], *, latency_sample: int = LATENCY_SHARED_SAMPLE, seed: int = 0
) -> Dict[str, str]:
    """The fields of ``state`` (a :func:`persistence.state_of` dict; its ``tasks`` may be
    only the tasks that changed). The latency sample is cut to ``latency_sample`` values."""
    latency = state["latency"]
    values = latency["values"]
    if len(values) > latency_sample:
        values = random.Random(seed ^ latency["seen"]).sample(values, latency_sample)
    fields = {
        SCHEMA_FIELD: str(persistence.SCHEMA),
        COUNTERS_FIELD: _dumps(state["counters"]),
        QUALITY_FIELD: _dumps(state["quality"]),
        LATENCY_FIELD: _dumps({"seen": latency["seen"], "values": values}),
    }
    for name, task in state["tasks"].items():
        fields[task_field(name)] = _dumps(task)
    return fields


def task_field(name: str) -> str:
    """The field of a task: ``t:`` and the name as a JSON string (ASCII, so that any task
    type, a lone surrogate included, is a valid key in every backend)."""
    return TASK_PREFIX + json.dumps(name)


def task_name(field: str) -> str:
    """The task type of a :func:`task_field`.

    Raises:
        ValueError: the field does not hold a JSON string after ``t:``.
    """
    name = json.loads(field[len(TASK_PREFIX) :])
    if not isinstance(name, str):
        raise ValueError(f"{field[:40]!r}: not a task field")
    return name


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


TaskCache = Dict[str, Tuple[str, TaskStats]]
"""One replica's checked task fields: field -> (the JSON read, the task it holds)."""


def decode_state(
    fields: Mapping[str, str], config: MonitorConfig, cache: Optional[TaskCache] = None
) -> persistence.Restored:
    """Check one replica's fields and build its state, with the checks of a saved
    snapshot (:func:`persistence.read_state`).

    With ``cache``, a task field whose JSON is the one checked last time is not parsed
    again (most of a busy replica's tasks do not change between two reads); the cache
    is updated when the whole record passes.

    Raises:
        ValueError: a field is missing, not JSON, or fails the saved-state checks
            (:class:`~asahi_features.monitor.stats.StateFieldError` names the field).
    """
    schema = fields.get(SCHEMA_FIELD)
    if schema != str(persistence.SCHEMA):
        raise ValueError(
            f"schema: expected {persistence.SCHEMA} (the only version this library reads), "
            f"got {schema!r:.40}"
        )
    for key in (COUNTERS_FIELD, QUALITY_FIELD, LATENCY_FIELD):
        if key not in fields:
            raise ValueError(f"{key}: missing")
    counters = persistence.read_counters(json.loads(fields[COUNTERS_FIELD]))
    quality = persistence.read_quality(json.loads(fields[QUALITY_FIELD]), "state.quality")
    latency = LatencyReservoir(config.latency_reservoir_size, seed=config.seed)
    latency.load(json.loads(fields[LATENCY_FIELD]), "state.latency")
    tasks: Dict[str, TaskStats] = {}
    checked: TaskCache = {}
    for key, raw in fields.items():
        if not key.startswith(TASK_PREFIX):
            continue
        hit = cache.get(key) if cache is not None else None
        if hit is not None and hit[0] == raw:
            ts = hit[1]
        else:
            ts = persistence.read_task(task_name(key), json.loads(raw))
        tasks[ts.name] = ts
        checked[key] = (raw, ts)
    total = sum(ts.total for ts in tasks.values())
    if tasks and total != counters.total:
        raise StateFieldError(
            "state.tasks", f"task totals adding up to counters.total ({counters.total})", total
        )
    if cache is not None:
        cache.clear()
        cache.update(checked)
    return persistence.Restored(counters, quality, latency, tasks)


def copy_quality(quality: Quality) -> Quality:
    """Independent copies of three accumulators."""
    a, b, c = quality
    return (Welford(a.n, a.mean, a.m2), Welford(b.n, b.mean, b.m2), Welford(c.n, c.mean, c.m2))


def copy_task(ts: TaskStats) -> TaskStats:
    """What :func:`merge_states` reads of a task, copied."""
    copy = TaskStats(ts.name)
    copy.total = ts.total
    copy.tokens = ts.tokens
    copy.groups = list(ts.groups)
    copy.reasons = dict(ts.reasons)
    copy.quality = copy_quality(ts.quality)
    copy.models = {name: stats.copy() for name, stats in ts.models.items()}
    copy.version = ts.version
    return copy


def merge_states(
    states: Iterable[persistence.Restored], config: MonitorConfig, *, latency: bool = True
) -> persistence.Restored:
    """The state of all replicas together: counts and sums added, the freshness maximum
    maximised, quality accumulators merged exactly (Chan et al.), latency samples
    combined in proportion to how many values each replica saw (an empty sample
    without ``latency``)."""
    counters = Counters()
    quality = new_quality()
    tasks: Dict[str, TaskStats] = {}
    samples: List[LatencyReservoir] = []
    for state in states:
        counters = _add_counters(counters, state.counters)
        quality = (
            Welford.merged(quality[0], state.quality[0]),
            Welford.merged(quality[1], state.quality[1]),
            Welford.merged(quality[2], state.quality[2]),
        )
        samples.append(state.latency)
        for name, ts in state.tasks.items():
            into = tasks.get(name)
            if into is None:
                into = tasks[name] = TaskStats(name)
            add_task(into, ts, config.max_models)
    size = config.latency_reservoir_size
    sample = merge_latency(samples, size, seed=config.seed) if latency else LatencyReservoir(size)
    return persistence.Restored(counters, quality, sample, tasks)


def _add_counters(a: Counters, b: Counters) -> Counters:
    values = {}
    for name in COUNTER_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        values[name] = max(x, y) if name in _MAX_FIELDS else x + y
    return dataclasses.replace(a, **values)


def add_task(into: TaskStats, ts: TaskStats, max_models: int) -> None:
    """Add the counts and scores of ``ts``, per-model ones included, to ``into`` (``ts``
    is not changed; models past ``max_models`` are pooled as when recording)."""
    into.total += ts.total
    into.tokens += ts.tokens
    into.groups = [a + b for a, b in zip(into.groups, ts.groups, strict=True)]
    for reason, count in ts.reasons.items():
        into.reasons[reason] = into.reasons.get(reason, 0) + count
    into.quality = (
        Welford.merged(into.quality[0], ts.quality[0]),
        Welford.merged(into.quality[1], ts.quality[1]),
        Welford.merged(into.quality[2], ts.quality[2]),
    )
    if ts.models:
        add_models(into.models, ts.models, max_models)
    into.version += 1


def merge_latency(samples: List[LatencyReservoir], size: int, *, seed: int = 0) -> LatencyReservoir:
    """One reservoir for several replicas' samples: each contributes a share of the
    values (at most ``size``, at most as many as they shared together) proportional to
    how many latencies it saw, drawn from its sample, so that a busy replica weighs as
    much as its traffic. ``seen`` is the sum."""
    merged = LatencyReservoir(size, seed=seed)
    seen = sum(s.seen for s in samples)
    if seen == 0:
        return merged
    total_values = sum(len(s.values) for s in samples)
    if total_values <= size and all(len(s.values) == s.seen for s in samples):
        # every replica kept every value: the union is the exact sample
        merged.values = [v for s in samples for v in s.values]
    else:
        # never more values than the replicas shared: a larger sample would only repeat
        target = min(size, total_values)
        rng = random.Random(seed)
        values: List[float] = []
        for s in samples:
            if s.values:
                k = max(1, round(target * s.seen / seen))
                values.extend(rng.choices(s.values, k=k))
        merged.values = values[:target]
    merged.seen = seen
    return merged
