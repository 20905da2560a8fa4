"""What a :class:`~asahi_features.monitor.FeatureMonitor` counts and persists.

:class:`Counters` holds the monitor-wide counters and :class:`TaskStats` those of one
task type. Both are mutated only under the monitor's lock. The order of the fields of
:class:`Counters` is the order of the saved ``state.counters`` object (see
:mod:`asahi_features.monitor.persistence`): do not reorder them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from .sequential import GainEvidence
from .stats import Welford

if TYPE_CHECKING:
    from .per_model import ModelStats

GROUPS: Tuple[str, str, str] = ("with_features", "held_out", "fallback")
"""Names of the quality groups, in the order of the internal group index."""
WITH, HELD_OUT, FALLBACK = 0, 1, 2
QUALITY_BASES: Tuple[str, str] = ("held_out", "unenriched")
"""What the "with features" group is compared with (``quality_basis``): the held-out
control group once it has ``min_samples`` scores, otherwise every scored request that
got no features (held out and fallback together)."""
BASIS_HELD_OUT, BASIS_UNENRICHED = QUALITY_BASES
OTHER_TASK = "__other__"

Quality = Tuple[Welford, Welford, Welford]


@dataclass(slots=True)
class Counters:
    """The persisted monitor-wide counters (``state.counters`` of a saved snapshot).

    Integers count events; ``latency_sum``, ``freshness_sum`` and ``freshness_max`` are
    sums and a maximum of seconds or milliseconds (floats).
    """

    total: int = 0
    successful: int = 0
    held_out: int = 0
    features_used: int = 0
    latency_sum: float = 0.0
    tokens: int = 0
    stale_dropped: int = 0
    stale_records: int = 0
    freshness_sum: float = 0.0
    freshness_max: float = 0.0
    attempts: int = 0
    failures: int = 0
    evicted: int = 0
    unmatched: int = 0
    duplicate_scores: int = 0
    invalid_scores: int = 0
    duplicate_records: int = 0
    pauses: int = 0
    probes: int = 0

    def to_dict(self) -> Dict[str, Any]:
        """The saved ``counters`` object: every field, in declaration order."""
        return {name: getattr(self, name) for name in COUNTER_FIELDS}


COUNTER_FIELDS: Tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Counters))
"""The counter names, in the order they are written."""
FLOAT_COUNTERS = frozenset(
    f.name for f in dataclasses.fields(Counters) if isinstance(f.default, float)
)
"""The counters that are finite numbers rather than counts."""


def new_quality() -> Quality:
    """Empty accumulators for the three groups."""
    return (Welford(), Welford(), Welford())


class TaskStats:
    """Counters of one task type (mutated only under the monitor's lock)."""

    __slots__ = (
        "basis",
        "bounds",
        "disabled",
        "entries",
        "evidence",
        "groups",
        "models",
        "name",
        "quality",
        "reasons",
        "tokens",
        "total",
        "verdict_version",
        "version",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0
        self.tokens = 0
        self.groups = [0, 0, 0]
        self.reasons: Dict[Any, int] = {}
        self.quality = new_quality()
        self.models: Dict[str, ModelStats] = {}  # per model (scores recorded with model=)
        # Shared pending-table values: (task, group, scored). No allocation per record.
        self.entries = tuple((self, g, scored) for scored in (False, True) for g in range(3))
        self.version = 0  # moves with every quality score of this task
        # The quality decision: a state (disabled or not) that only strong evidence
        # changes, and what the scores said when they were last looked at.
        self.disabled = False
        self.verdict_version = -1
        self.basis = BASIS_UNENRICHED
        self.evidence: Optional[GainEvidence] = None
        self.bounds: Optional[Tuple[float, float]] = None


Entry = Tuple[TaskStats, int, bool]
"""A pending-table value: the task, the group index and whether it was scored."""


def reason_name(reason: Any) -> str:
    """The saved and reported name of a reason (an enum's value, or the string)."""
    return str(getattr(reason, "value", reason))
