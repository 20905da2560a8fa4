"""Many replicas, one view: a :class:`~asahi_features.monitor.FeatureMonitor` state shared
through a backend (Redis, :mod:`~asahi_features.monitor.shared_redis`).

One module on purpose (about 530 lines): the replica's side of sharing, one background
thread and the state it guards under one lock (the last merged view, the decision cache,
the outage counters); the stateless parts are already in their own modules (listed
below).

How it works
------------
* **Recording stays in process.** ``record_enrichment`` and ``record_quality`` change
  only the replica's own counters, as without sharing: no network call, no new lock.
* **A background thread** (one per monitor, every ``flush_interval_ms``) writes the
  replica's *cumulative* state to the backend (only the fields that changed, in one
  atomic write), reads every replica's state, merges them
  (:mod:`~asahi_features.monitor.shared_merge`) and re-evaluates the quality decision
  of each task on the merged scores.
* **One decision.** The per-task verdict (disabled for quality or not) lives in the
  backend. A replica whose merged evidence says the verdict should change proposes the
  change as a compare-and-set: when two replicas race, one wins and all read the same
  verdict. ``should_enrich`` reads the verdict from an in-memory dict (no I/O).
* **Backend down.** Writes and reads fail in the background thread only (logged once
  per outage, counted in ``get_stats()["shared_state"]``); recording and decisions go
  on with the last merged view plus this replica's live counts. Because every write
  holds cumulative values, the first write after the backend comes back (empty or
  not) makes the totals exact again: nothing is lost and nothing is counted twice.

The breaker and the recent-availability window stay per replica: they describe this
process's connection to the feature store.

Modules: this one (the replica's side: thread, sync, decision cache, merged stats),
:mod:`~.shared_store` (the backend contract), :mod:`~.shared_redis` and
:mod:`~.shared_memory` (backends), :mod:`~.shared_merge` (record fields and merging),
:mod:`~.shared_read` (reading and checking the records), :mod:`~.shared_tasks`
(incremental per-task decisions) and :mod:`~.shared_retire` (folding stopped replicas).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import secrets
import socket
import threading
import time
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Tuple,
)

from ..errors import ConfigError
from ..settings import SharedStateConfig
from . import persistence
from .shared_merge import (
    copy_quality,
    copy_task,
    encode_state,
    merge_states,
)
from .shared_read import ReplicaReader
from .shared_retire import fold_stale
from .shared_store import (
    NO_VERDICT,
    RETIRED_ID,
    STABLE_FIELD,
    WRITTEN_AT_FIELD,
    Flip,
    ReplicaRetired,
    SharedStore,
    Verdict,
)
from .shared_tasks import Part, TaskDecider
from .stats import LatencyReservoir

if TYPE_CHECKING:
    from .core import FeatureMonitor

logger = logging.getLogger("asahi_features.monitor")

LOCAL_KEYS = (
    "pending_quality",
    "availability_paused",
    "feature_store_availability_pct_recent",
    "feature_store_window_attempts",
    "breaker_state",
)
"""``get_stats`` keys that describe this replica (its pending table, its connection to
the feature store), reported from the replica even when the rest is merged."""


def default_replica_id() -> str:
    """``host:pid:random``: unique per process, also across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def open_store(config: SharedStateConfig) -> SharedStore:
    """The backend ``config`` names (Redis is imported here, not before).

    Raises:
        ConfigError: no URL (neither ``url`` nor the ``url_env`` variable), or a URL
            the Redis client refuses.
    """
    url = config.url or os.environ.get(config.url_env)
    if not url:
        raise ConfigError(
            "monitor.shared_state needs a Redis URL: set monitor.shared_state.url or the "
            f"environment variable {config.url_env} (monitor.shared_state.url_env), e.g. "
            "redis://localhost:6379/0",
            key_path="monitor.shared_state.url",
        )
    from .shared_redis import RedisSharedStore

    return RedisSharedStore(
        url, key_prefix=config.key_prefix, socket_timeout=config.socket_timeout_ms / 1000.0
    )


class SharedState:
    """Shares one :class:`FeatureMonitor`'s state through ``store`` (see the module docs).

    Created by the monitor when ``monitor.shared_state`` is configured; tests and
    applications with their own backend create it directly. It attaches itself to the
    monitor: from then on ``monitor.should_enrich`` reads the shared verdicts and
    ``monitor.get_stats()`` returns the merged view.

    Args:
        monitor: the replica's monitor.
        store: the backend.
        replica_id: this replica's name (default: :func:`default_replica_id`).
        interval_ms: period of the background thread.
        retire_after_seconds: fold the records of replicas that have not written for
            this long into one retired record (``None``: keep every record).
        wall_clock: epoch seconds, for the ``written_at`` stamps (tests pass a fake).
        start: sync once now and start the background thread (``False``: call
            :meth:`sync` yourself).
    """

    def __init__(
        self,
        monitor: FeatureMonitor,
        store: SharedStore,
        *,
        replica_id: Optional[str] = None,
        interval_ms: int = 1000,
        retire_after_seconds: Optional[float] = None,
        wall_clock: Callable[[], float] = time.time,
        start: bool = True,
    ) -> None:
        if replica_id == RETIRED_ID:
            raise ConfigError(
                f"monitor.shared_state.replica_id {RETIRED_ID!r} is reserved (the record of "
                "retired replicas); choose another id",
                key_path="monitor.shared_state.replica_id",
            )
        self.monitor = monitor
        self.store = store
        self.replica_id = replica_id or default_replica_id()
        self._retire_after = retire_after_seconds
        self._wall = wall_clock
        self._heartbeat = math.inf if retire_after_seconds is None else retire_after_seconds / 4
        self._last_write = 0.0
        self._lost = False
        self._decide_key: Any = None
        self._task_names: List[str] = []
        self._restores = 0
        self._decider = TaskDecider(monitor.config)
        self.retired = 0
        self._interval = interval_ms / 1000.0
        self._config = monitor.config
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._full = True
        self._flushed: Dict[str, Tuple[int, int]] = {}
        self._flushed_counters: Optional[Dict[str, Any]] = None
        self._others: Dict[str, persistence.Restored] = {}
        self._reader = ReplicaReader(monitor.config)
        self._verdicts: Dict[str, Verdict] = {}
        self._connected: Optional[bool] = None
        self._last_ok: Optional[float] = None
        self.flushes = 0
        self.errors = 0
        self._given_id = replica_id
        monitor._attach_shared(self)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))
        if start:
            # the first sync here, in the creating thread: a new replica reads the shared
            # verdicts at once, and the imports the backend does on first use happen now,
            # not in the background thread at the moment a pre-fork server forks (a
            # forked child would inherit a half-imported module)
            self.sync()
            self.start()

    def _after_fork(self) -> None:
        """In a forked child (a pre-fork server's worker): a replica of its own.

        The child gets its own replica id (the parent keeps writing under the parent's),
        fresh locks (one held by another thread at the fork would stay held forever in
        the child) and, if the parent's thread ran, a thread of its own. Counts
        recorded before the fork are in the parent's record and in the child's: create
        the monitor after forking, or record nothing before it.
        """
        was_running = self._thread is not None and not self._stop.is_set()
        self.monitor._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self.store.after_fork()
        given = self._given_id
        self.replica_id = f"{given}:{os.getpid()}" if given else default_replica_id()
        self._full = True
        self._flushed = {}
        self._flushed_counters = None
        self.flushes = 0
        if was_running:
            self.start()

    def __repr__(self) -> str:
        return (
            f"SharedState(backend={self.store.name!r}, replica_id={self.replica_id!r}, "
            f"replicas={len(self._others) + 1}, connected={self._connected})"
        )

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        """Start the background thread (no-op when it runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"asahi-monitor-shared-{self.replica_id}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sync()

    def close(self, *, flush: bool = True) -> None:
        """Stop the background thread, write this replica's state one last time (when
        ``flush``; a backend that is down is only logged) and release the backend."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(5.0, 2 * self._interval))
        if flush:
            self.sync()
        try:
            self.store.close()
        except Exception:  # closing a broken connection must not fail the shutdown
            logger.debug("closing the shared-state backend failed", exc_info=True)

    # ------------------------------------------------------------------ sync

    def sync(self) -> bool:
        """Write this replica's changes, read everyone's and update the verdicts, now.

        Never raises: a backend failure is logged (once per outage) and counted, and the
        next sync tries again. Returns True when both the write and the read succeeded.
        """
        with self._sync_lock:
            try:
                self._flush()
                others = self._read()
                if self._lost:  # an idle replica's record vanished (Redis restarted empty)
                    self._full = True
                    self._flush()
                ok = True
            except Exception as exc:
                ok = False
                others = None
                self.errors += 1
                if self._connected is not False:
                    logger.warning(
                        "monitor shared state (%s) unavailable, counting locally until it "
                        "is back: %s: %s",
                        self.store.name,
                        type(exc).__name__,
                        exc,
                    )
                self._full = True  # the backend may come back empty
            if ok and self._connected is False:
                logger.info("monitor shared state (%s) reachable again", self.store.name)
            self._connected = ok
            if others is None:
                others = self._others
            # verdicts first: whoever reads the new totals also reads their verdicts
            try:
                self._verdicts = self._decide(others, write=ok)
            except Exception:  # a bug here must not stop the thread: keep the last ones
                logger.warning("monitor shared state: deciding failed", exc_info=True)
                self.errors += 1
                ok = False
            self._others = others
            if ok:
                self._last_ok = time.monotonic()
            return ok

    def invalidate(self) -> None:
        """Write every field at the next sync (the monitor's state was replaced)."""
        self._full = True
        self._restores += 1
        self._decider.reset()

    def _flush(self) -> None:
        monitor = self.monitor
        full = self._full
        with monitor._lock:
            tally = monitor._tally
            counters = tally.counters.to_dict()
            tasks = tally.tasks
            if full:
                dirty = dict(tasks)
            else:
                flushed = self._flushed
                dirty = {
                    n: ts for n, ts in tasks.items() if flushed.get(n) != (ts.total, ts.version)
                }
                if not dirty and counters == self._flushed_counters:
                    dirty = None
            if dirty is not None:
                state = persistence.state_of(tally.counters, tally.quality, tally.latency, dirty)
                signatures = {n: (ts.total, ts.version) for n, ts in dirty.items()}
        if dirty is None:  # nothing new (and no network call under the monitor's lock)
            if self._wall() - self._last_write >= self._heartbeat:
                self._write(self._stamp(), full=False)  # still alive: not to be retired
            return
        fields = encode_state(state, seed=self._config.seed)
        fields.update(self._stamp())
        try:
            written = self._write(fields, full=full)
        except ReplicaRetired:
            self._renew()
            self._flush()
            return
        if not written:
            # the backend lost this replica's record: write all of it
            self._full = True
            self._flush()
            return
        self._flushed = signatures if full else {**self._flushed, **signatures}
        self._flushed_counters = counters
        self._full = False
        self.flushes += 1

    def _stamp(self) -> Dict[str, str]:
        stable = self.replica_id == self._given_id
        return {WRITTEN_AT_FIELD: repr(self._wall()), STABLE_FIELD: "1" if stable else "0"}

    def _write(self, fields: Mapping[str, str], *, full: bool) -> bool:
        written = self.store.write(self.replica_id, fields, full=full)
        if written:
            self._last_write = self._wall()
        return written

    def _renew(self) -> None:
        """This (configured) id was retired while the replica was away: its counts up to
        then are in the retired record. Start again from zero under a new id, so that
        nothing is counted twice."""
        old = self.replica_id
        self.replica_id = f"{self._given_id or old}:{secrets.token_hex(3)}"
        monitor = self.monitor
        with monitor._lock:
            monitor._init_state()
        self._full = True
        self._flushed = {}
        self._flushed_counters = None
        logger.warning(
            "monitor shared state: replica %r was retired while it was away (its counts "
            "are in the retired record); counting from zero as %r",
            old,
            self.replica_id,
        )

    def _read(self) -> Dict[str, persistence.Restored]:
        records = self.store.read_all()
        self._lost = self.replica_id not in records
        others = self._reader.read(self.store, records, self.replica_id)
        if self._retire_after is not None:
            limit = self._wall() - self._retire_after
            self.retired += fold_stale(
                self.store, records, others, self._config, own_id=self.replica_id, limit=limit
            )
        return others

    def _own_state(self) -> persistence.Restored:
        """A copy of this replica's live state (taken under its lock, no checks needed)."""
        monitor = self.monitor
        with monitor._lock:
            tally = monitor._tally
            counters = dataclasses.replace(tally.counters)
            quality = copy_quality(tally.quality)
            latency = LatencyReservoir(tally.latency.size)
            latency.seen = tally.latency.seen
            latency.values = list(tally.latency.values)
            tasks = {name: copy_task(ts) for name, ts in tally.tasks.items()}
        return persistence.Restored(counters, quality, latency, tasks)

    def merged(
        self,
        others: Optional[Mapping[str, persistence.Restored]] = None,
        *,
        latency: bool = True,
    ) -> persistence.Restored:
        """Every replica's state as last read (or ``others``), with this replica's live
        counts (without ``latency``, the latency samples are not merged).

        Replicas are merged in the order of their ids, so that every replica's view
        pools the same models past ``monitor.max_models``."""
        by_id = dict(self._others if others is None else others)
        by_id[self.replica_id] = self._own_state()
        states = [by_id[rid] for rid in sorted(by_id)]
        return merge_states(states, self._config, latency=latency)

    def view(self, *, latency: bool = True) -> FeatureMonitor:
        """A monitor of its own (sharing nothing) holding :meth:`merged`: every
        replica's state, read as one monitor's."""
        from .core import FeatureMonitor

        view = FeatureMonitor(self._config.model_copy(update={"shared_state": None}))
        view._restore(self.merged(latency=latency))
        return view

    def _decide(
        self, others: Mapping[str, persistence.Restored], *, write: bool
    ) -> Dict[str, Verdict]:
        known = dict(self._verdicts)
        flips: Dict[str, Flip] = {}
        key = (self._own_key(), frozenset(known.items()))
        if self._reader.changed or key != self._decide_key:
            # something moved: decide again on the merged scores (idle syncs skip this)
            monitor = self.monitor
            with monitor._lock:
                own = self._decider.own_copies(monitor._tally.tasks)
            parts: Dict[str, List[Part]] = {}
            for rid in sorted(others):
                for raw, ts in self._reader.task_caches.get(rid, {}).values():
                    parts.setdefault(ts.name, []).append((rid, raw, ts))
            flips, self._task_names = self._decider.decide(parts, own, known)
            self._reader.changed = False
            self._decide_key = key
        verdicts: Optional[Dict[str, Verdict]] = None
        if write:
            try:
                verdicts = self.store.sync_verdicts(known, flips)
            except Exception:
                logger.debug("writing the shared verdicts failed", exc_info=True)
                self._connected = False
                self._full = True
                self.errors += 1
        if verdicts is None:  # backend down: decide on what this replica knows
            verdicts = dict(known)
            for name, (generation, disabled) in flips.items():
                verdicts[name] = (disabled, generation + 1)
        for name in self._task_names:  # no verdict yet: enabled, for every replica alike
            verdicts.setdefault(name, NO_VERDICT)
        return verdicts

    def _own_key(self) -> Tuple[int, int, int, int]:
        """Moves whenever this replica records or scores (or its state is replaced)."""
        monitor = self.monitor
        with monitor._lock:
            tally = monitor._tally
            versions = sum(ts.version for ts in tally.tasks.values())
            return (tally.counters.total, versions, len(tally.tasks), self._restores)

    # ------------------------------------------------------------------ reading

    def disabled(self, task_type: str) -> Optional[bool]:
        """The shared verdict for ``task_type`` (True: disabled for quality), ``None``
        when no replica has enough scores of it yet. A dict read, no I/O."""
        verdict = self._verdicts.get(task_type)
        return None if verdict is None else verdict[0]

    def status(self) -> Dict[str, Any]:
        """``get_stats()["shared_state"]``: backend, replica id, replicas in the view,
        whether the last sync reached the backend, seconds since the last good read,
        writes done, backend errors met (each failed sync counts one) and replica
        records this replica folded into the retired record."""
        last = self._last_ok
        return {
            "backend": self.store.name,
            "replica_id": self.replica_id,
            "replicas": len(self._others) + 1,
            "connected": bool(self._connected),
            "seconds_since_sync": None if last is None else time.monotonic() - last,
            "flushes": self.flushes,
            "errors": self.errors,
            "retired_replicas": self.retired,
            "invalid_replicas": sorted(self._reader.bad),
        }

    def cluster_stats(self, local: Dict[str, Any]) -> Dict[str, Any]:
        """``get_stats()`` of every replica together (``local``: this replica's stats).

        Counts, sums and quality are merged; the keys in :data:`LOCAL_KEYS` describe
        this replica and come from ``local``; ``shared_state`` is :meth:`status` and
        ``replica_total_enrichments`` this replica's own total.
        """
        stats = self.view().get_stats()
        for key in LOCAL_KEYS:
            stats[key] = local[key]
        verdicts = self._verdicts
        for name, data in stats["task_types"].items():
            if name in verdicts:
                data["disabled_for_quality"] = verdicts[name][0]
            data["holdout_fraction"] = self.monitor.holdout_fraction(name)
        stats["replica_total_enrichments"] = local["total_enrichments"]
        stats["shared_state"] = self.status()
        return stats


def _after_fork(ref: weakref.ref[SharedState]) -> None:
    shared = ref()
    if shared is not None:
        shared._after_fork()


def attach(monitor: FeatureMonitor, config: SharedStateConfig) -> SharedState:
    """The :class:`SharedState` that ``monitor.shared_state`` describes, started."""
    return SharedState(
        monitor,
        open_store(config),
        replica_id=config.replica_id,
        interval_ms=config.flush_interval_ms,
        retire_after_seconds=config.retire_after_seconds,
    )
