"""Reading every replica's record of the shared monitor state, checked, with caches.

A record that did not change since the last read is not parsed again, and in a record
that did, only the task fields that changed are (:func:`~.shared_merge.decode_state`).
A record that fails the checks of a saved snapshot is left out of the view and named
(once per problem, in the log and in :attr:`ReplicaReader.bad`).
"""

from __future__ import annotations

import logging
from typing import Dict, Mapping, Tuple

from ..settings import MonitorConfig
from . import persistence
from .shared_merge import TaskCache, decode_state
from .shared_retire import restore_retired
from .shared_store import RETIRED_ID, SharedStore

logger = logging.getLogger("asahi_features.monitor")


class ReplicaReader:
    """The other replicas' states, as last read (one reader per replica).

    Args:
        config: the monitor's configuration (for the checks).
    """

    def __init__(self, config: MonitorConfig) -> None:
        self._config = config
        self._decoded: Dict[str, Tuple[Dict[str, str], persistence.Restored]] = {}
        self.task_caches: Dict[str, TaskCache] = {}
        """Replica id -> its checked task fields (what a task is made of, per replica)."""
        self.bad: Dict[str, str] = {}
        """Replica id -> why its record is left out of the view."""
        self.changed = True
        """Something was read that differs from the previous read (cleared by the caller)."""

    def read(
        self, store: SharedStore, records: Mapping[str, Dict[str, str]], own_id: str
    ) -> Dict[str, persistence.Restored]:
        """The checked states of every record but ``own_id``'s (``records``: what
        ``store.read_all()`` returned). The retired record, if the backend lost it, is
        written back from the copy read last."""
        others: Dict[str, persistence.Restored] = {}
        decoded: Dict[str, Tuple[Dict[str, str], persistence.Restored]] = {}
        for rid, fields in records.items():
            if rid == own_id:
                continue
            cached = self._decoded.get(rid)
            if cached is not None and cached[0] == fields:  # unchanged: not parsed again
                state = cached[1]
            else:
                self.changed = True
                try:
                    cache = self.task_caches.setdefault(rid, {})
                    state = decode_state(fields, self._config, cache)
                except (ValueError, TypeError, KeyError, RecursionError) as exc:
                    self._refuse(rid, str(exc)[:200])
                    continue
            self.bad.pop(rid, None)
            others[rid] = state
            decoded[rid] = (fields, state)
        retired = self._decoded.get(RETIRED_ID)
        if retired is not None and RETIRED_ID not in records:  # the backend lost its data
            restore_retired(store, retired[0])
            others[RETIRED_ID] = retired[1]
            decoded[RETIRED_ID] = retired
        if decoded.keys() != self._decoded.keys():
            self.changed = True
            for rid in set(self.task_caches) - set(decoded):
                del self.task_caches[rid]
        self._decoded = decoded
        return others

    def _refuse(self, rid: str, problem: str) -> None:
        if self.bad.get(rid) != problem:
            logger.warning(
                "monitor shared state: replica %r left out of the view, its record is not "
                "a monitor state: %s",
                rid,
                problem,
            )
        self.bad[rid] = problem
