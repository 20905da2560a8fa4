"""The contract of a shared monitor-state backend (:mod:`asahi_features.monitor.shared`).

Backends: Redis (:mod:`~asahi_features.monitor.shared_redis`) and this process's memory
(:mod:`~asahi_features.monitor.shared_memory`).
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Protocol, Tuple

WRITTEN_AT_FIELD = "written_at"
"""Field of a replica record: when the replica last wrote it (epoch seconds, wall clock)."""
STABLE_FIELD = "stable"
"""Field of a replica record: ``"1"`` when its id was configured (it may come back)."""
SEQ_FIELD = "seq"
"""Field of the retired record: how many folds it went through (the compare-and-set)."""
RETIRED_ID = "__retired__"
"""The record that holds the folded state of replicas gone for ``retire_after_seconds``."""


class ReplicaRetired(Exception):
    """The backend refused a full write: this replica id was retired (its counts were
    folded into the retired record), so writing them again would count them twice."""


Verdict = Tuple[bool, int]
"""A shared quality verdict: (disabled for quality, generation)."""
Flip = Tuple[int, bool]
"""A proposed change of a verdict: (the generation it was decided on, disabled)."""
NO_VERDICT: Verdict = (False, 0)


class SharedStore(Protocol):
    """What a shared-state backend does (Redis: :class:`~.shared_redis.RedisSharedStore`).

    Every method may raise on a backend failure; :class:`SharedState` catches it.
    """

    name: str
    """The backend's name, for ``get_stats()["shared_state"]["backend"]``."""

    def write(self, replica: str, fields: Mapping[str, str], *, full: bool) -> bool:
        """Store ``fields`` in ``replica``'s record, atomically.

        With ``full``, the record is replaced by ``fields``. Without, the fields are
        updated in place, unless the record does not exist (the backend lost it):
        then nothing is written and the result is False, so that the caller writes
        everything.

        Raises:
            ReplicaRetired: a full write of a retired replica id.
        """

    def read_all(self) -> Dict[str, Dict[str, str]]:
        """Every replica's record: replica id -> fields."""

    def sync_verdicts(
        self, known: Mapping[str, Verdict], flips: Mapping[str, Flip]
    ) -> Dict[str, Verdict]:
        """Update the shared per-task verdicts, atomically, and return them all.

        A verdict is ``(disabled, generation)``; a task without one is
        ``(False, 0)``. ``known`` verdicts are set only where the backend has none (a
        backend that lost its data learns them back). A flip ``(generation, disabled)``
        is applied only while the task's generation is still the one it was decided
        on, and moves the generation by one: a replica deciding on an outdated verdict
        changes nothing (a compare-and-set).
        """

    def fold(
        self,
        into: str,
        seq: int,
        fields: Mapping[str, str],
        stale: Mapping[str, str],
        remember: Iterable[str],
    ) -> bool:
        """Retire replicas, atomically: replace record ``into`` (whose ``seq`` field must
        still be ``seq``, ``0`` when absent) by ``fields`` with ``seq + 1``, delete the
        ``stale`` records (id -> the ``written_at`` they must still have) and remember
        the ids in ``remember`` as retired (a later full write of them raises
        :class:`ReplicaRetired`). False, changing nothing, when any check fails.
        """

    def after_fork(self) -> None:
        """In a forked child process: fresh connections and locks."""

    def close(self) -> None:
        """Release connections."""
