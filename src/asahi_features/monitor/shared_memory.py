"""A shared-state backend in this process's memory (tests, threads of one process).

It keeps the contract of :class:`~asahi_features.monitor.shared.SharedStore` exactly as
the Redis backend does, so that monitors of one process share through it as separate
processes share through Redis.
"""

from __future__ import annotations

import threading
from typing import Dict, Iterable, Mapping

from .shared_store import NO_VERDICT, SEQ_FIELD, WRITTEN_AT_FIELD, Flip, ReplicaRetired, Verdict


class MemorySharedStore:
    """A backend in this process's memory.

    ``available = False`` makes every call raise ``ConnectionError`` (a backend that is
    down); :meth:`clear` forgets everything (a backend restarted empty).
    """

    name = "memory"

    def __init__(self) -> None:
        self.available = True
        self._lock = threading.Lock()
        self._records: Dict[str, Dict[str, str]] = {}
        self._verdicts: Dict[str, Verdict] = {}
        self._retired: set[str] = set()

    def _check(self) -> None:
        if not self.available:
            raise ConnectionError("the shared-state backend is unavailable")

    def write(self, replica: str, fields: Mapping[str, str], *, full: bool) -> bool:
        """See :meth:`SharedStore.write <asahi_features.monitor.shared.SharedStore.write>`."""
        with self._lock:
            self._check()
            if full:
                if replica in self._retired:
                    raise ReplicaRetired(replica)
                self._records[replica] = dict(fields)
                return True
            record = self._records.get(replica)
            if record is None:
                return False
            record.update(fields)
            return True

    def read_all(self) -> Dict[str, Dict[str, str]]:
        """See :meth:`SharedStore.read_all <asahi_features.monitor.shared.SharedStore.read_all>`."""
        with self._lock:
            self._check()
            return {rid: dict(fields) for rid, fields in self._records.items()}

    def sync_verdicts(
        self, known: Mapping[str, Verdict], flips: Mapping[str, Flip]
    ) -> Dict[str, Verdict]:
        """See :meth:`SharedStore.sync_verdicts
        <asahi_features.monitor.shared.SharedStore.sync_verdicts>`."""
        with self._lock:
            self._check()
            verdicts = self._verdicts
            for task, verdict in known.items():
                verdicts.setdefault(task, verdict)
            for task, (generation, disabled) in flips.items():
                if verdicts.get(task, NO_VERDICT)[1] == generation:
                    verdicts[task] = (disabled, generation + 1)
            return dict(verdicts)

    def fold(
        self,
        into: str,
        seq: int,
        fields: Mapping[str, str],
        stale: Mapping[str, str],
        remember: Iterable[str],
    ) -> bool:
        """See :meth:`SharedStore.fold <asahi_features.monitor.shared.SharedStore.fold>`."""
        with self._lock:
            self._check()
            current = self._records.get(into, {}).get(SEQ_FIELD, "0")
            if current != str(seq):
                return False
            for rid, stamp in stale.items():
                if self._records.get(rid, {}).get(WRITTEN_AT_FIELD) != stamp:
                    return False
            self._records[into] = {**fields, SEQ_FIELD: str(seq + 1)}
            for rid in stale:
                del self._records[rid]
            self._retired.update(remember)
            return True

    def after_fork(self) -> None:
        """A fresh lock (one taken by another thread at the fork stays taken)."""
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every record and verdict (like a Redis restarted without persistence)."""
        with self._lock:
            self._records.clear()
            self._verdicts.clear()
            self._retired.clear()

    def close(self) -> None:
        """Nothing to release."""
