"""The per-task quality decision on the merged scores, redone only where something moved.

Every sync, :class:`~asahi_features.monitor.shared.SharedState` asks whether any task's
shared verdict should change. With many task types, merging every task of every
replica each time is the whole cost of a sync; here a task is merged again only when
one of its parts changed (another replica's JSON for it, or this replica's counts), and
decided again only when its merged scores or its current verdict changed.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..settings import MonitorConfig
from .counters import TaskStats
from .quality import quality_disabled
from .shared_merge import add_task, copy_task
from .shared_store import NO_VERDICT, Flip, Verdict

OwnSignature = Tuple[int, int]
Part = Tuple[str, str, TaskStats]
"""Another replica's share of a task: (replica id, the JSON read, the checked task)."""


class _Entry:
    __slots__ = ("current", "result", "signature", "task")

    def __init__(self, signature: object, task: TaskStats) -> None:
        self.signature = signature
        self.task = task
        self.current: Optional[bool] = None  # the verdict the result was decided from
        self.result = False


class TaskDecider:
    """Merged tasks and their quality results, kept between syncs (one per replica)."""

    def __init__(self, config: MonitorConfig) -> None:
        self._config = config
        self._own: Dict[str, Tuple[OwnSignature, TaskStats]] = {}
        self._entries: Dict[str, _Entry] = {}

    def reset(self) -> None:
        """Forget everything (the monitor's state was replaced)."""
        self._own = {}
        self._entries = {}

    def own_copies(
        self, tasks: Mapping[str, TaskStats]
    ) -> Dict[str, Tuple[OwnSignature, TaskStats]]:
        """Copies of this replica's tasks, new only for tasks that recorded or scored
        since the last call (call it under the monitor's lock)."""
        own: Dict[str, Tuple[OwnSignature, TaskStats]] = {}
        previous = self._own
        for name, ts in tasks.items():
            signature = (ts.total, ts.version)
            kept = previous.get(name)
            own[name] = (
                kept if kept is not None and kept[0] == signature else (signature, copy_task(ts))
            )
        self._own = own
        return own

    def decide(
        self,
        parts: Mapping[str, Sequence[Part]],
        own: Mapping[str, Tuple[OwnSignature, TaskStats]],
        known: Mapping[str, Verdict],
    ) -> Tuple[Dict[str, Flip], List[str]]:
        """The verdict changes the merged scores call for, and every task's name.

        Args:
            parts: task -> the other replicas' shares of it (in a stable order).
            own: :meth:`own_copies`.
            known: the current verdicts.
        """
        flips: Dict[str, Flip] = {}
        entries: Dict[str, _Entry] = {}
        for name in parts.keys() | own.keys():
            shares = parts.get(name, ())
            mine = own.get(name)
            signature = (
                tuple((rid, raw) for rid, raw, _ in shares),
                None if mine is None else mine[0],
            )
            entry = self._entries.get(name)
            if entry is None or entry.signature != signature:
                merged = TaskStats(name)
                for _, _, share in shares:
                    add_task(merged, share, self._config.max_models)
                if mine is not None:
                    add_task(merged, mine[1], self._config.max_models)
                entry = _Entry(signature, merged)
            current, generation = known.get(name, NO_VERDICT)
            if entry.current is not current:
                ts = entry.task
                ts.disabled = current
                ts.verdict_version = -1
                entry.result = quality_disabled(ts, self._config)
                entry.current = current
            if entry.result != current:
                flips[name] = (generation, entry.result)
            entries[name] = entry
        self._entries = entries
        return flips, sorted(entries)
