"""Folding the records of stopped replicas into one (``retire_after_seconds``).

The default replica id is unique per process, so every process start adds a record. A
record that has not been written for ``retire_after_seconds`` belongs to a stopped
replica: any replica folds it into the ``__retired__`` record (merged like any other
replicas, :mod:`~asahi_features.monitor.shared_merge`) and deletes it, in one
compare-and-set (:meth:`~asahi_features.monitor.shared_store.SharedStore.fold`): a
replica that wrote meanwhile, or another replica folding at the same time, makes the
fold change nothing. Its counts stay in every total; the number of records follows the
number of live replicas.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Mapping

from ..settings import MonitorConfig
from . import persistence
from .shared_merge import encode_state, merge_states
from .shared_store import (
    RETIRED_ID,
    SEQ_FIELD,
    STABLE_FIELD,
    WRITTEN_AT_FIELD,
    SharedStore,
)

logger = logging.getLogger("asahi_features.monitor")


def stale_records(
    records: Mapping[str, Mapping[str, str]],
    states: Mapping[str, persistence.Restored],
    *,
    own_id: str,
    limit: float,
) -> Dict[str, str]:
    """Replica id -> ``written_at`` of the readable records last written before
    ``limit`` (never this replica's own, never the retired record)."""
    stale: Dict[str, str] = {}
    for rid, fields in records.items():
        stamp = fields.get(WRITTEN_AT_FIELD)
        if rid in (own_id, RETIRED_ID) or rid not in states or stamp is None:
            continue
        try:
            if float(stamp) < limit:
                stale[rid] = stamp
        except ValueError:
            continue
    return stale


def fold_stale(
    store: SharedStore,
    records: Mapping[str, Mapping[str, str]],
    states: Mapping[str, persistence.Restored],
    config: MonitorConfig,
    *,
    own_id: str,
    limit: float,
) -> int:
    """Fold the records written before ``limit`` into the retired record; returns how
    many were folded (0 when there were none or the compare-and-set failed)."""
    stale = stale_records(records, states, own_id=own_id, limit=limit)
    if not stale:
        return 0
    retired = records.get(RETIRED_ID)
    if retired is not None and RETIRED_ID not in states:
        return 0  # the retired record itself is refused: never overwrite it
    folded: List[persistence.Restored] = [states[rid] for rid in stale]
    if RETIRED_ID in states:
        folded.append(states[RETIRED_ID])
    merged = merge_states(folded, config)
    state = persistence.state_of(merged.counters, merged.quality, merged.latency, merged.tasks)
    seq = int(retired.get(SEQ_FIELD, "0")) if retired is not None else 0
    remember = [rid for rid in stale if records[rid].get(STABLE_FIELD) == "1"]
    if not store.fold(RETIRED_ID, seq, encode_state(state), stale, remember):
        return 0
    logger.info(
        "monitor shared state: %d replica record(s) not written since %.0f folded into %r",
        len(stale),
        limit,
        RETIRED_ID,
    )
    return len(stale)


def restore_retired(store: SharedStore, fields: Mapping[str, str]) -> bool:
    """Write back the retired record from a copy (``fields`` as read). Folds replace it,
    never delete it, so a missing retired record means the backend lost its data; it
    existed nowhere else. A fold with seq 0: whoever is first restores it."""
    restored = store.fold(
        RETIRED_ID, 0, {k: v for k, v in fields.items() if k != SEQ_FIELD}, {}, []
    )
    if restored:
        logger.info("monitor shared state: the retired record was restored")
    return restored
