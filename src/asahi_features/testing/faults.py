"""A fault-injection feature store for your tests: make the store hang, fail, flap or
answer garbage and check what your application does.

:class:`FaultyBackend` implements exactly the three sync methods of the
``FeatureStoreClient`` protocol (so it also exercises the "sync-only custom backend"
path); :class:`AsyncFaultyBackend` adds native ``aget_features`` /
``aget_batch_features`` coroutines. Both count their calls and can change behaviour
at any time with :meth:`FaultyBackend.set_mode`.

Modes (``Mode`` literal):

``ok``       answer at once: a FOUND vector per id with ``features`` and ``ages``.
``hang``     block until :meth:`FaultyBackend.release` (then answer like ``ok``). A
             hung async call waits cancellably; cancellations are counted.
``slow``     sleep ``delay`` seconds, then answer like ``ok``.
``raise``    raise ``error`` (an exception instance or a zero-argument factory;
             default :class:`FeatureStoreUnavailableError`).
``flap``     follow ``pattern`` cyclically, one entry per call: True answers, False
             raises ``error`` (default pattern: ok, fail).
``recover``  raise ``error`` for the first ``fail_count`` calls, then answer.
``garbage``  return the wrong thing: a string instead of a vector, and for a batch a
             list one element short.

Example::

    backend = FaultyBackend("hang")
    guarded = GuardedClient(backend, timeout_ms=50)  # from asahi_features.guard
    assert guarded.get_features("u1", "user", ["tier"]).status is FeatureStatus.UNAVAILABLE
    backend.release()  # let the stuck worker finish
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Union

from asahi_features.errors import FeatureStoreUnavailableError
from asahi_features.models import FeatureVector, utc_now

Mode = Literal["ok", "hang", "slow", "raise", "flap", "recover", "garbage"]
MODES: tuple[str, ...] = ("ok", "hang", "slow", "raise", "flap", "recover", "garbage")

ErrorSpec = Union[BaseException, Callable[[], BaseException]]

DEFAULT_FEATURES: Dict[str, Any] = {"tier": "gold", "preferences": "casual athletic"}


class FaultyBackend:
    """A sync-only backend whose behaviour tests choose (see the module docstring).

    Args:
        mode: one of :data:`MODES`.
        features: the features an answering call returns (only the requested names).
        ages: feature name -> age in seconds (default 10 s for each feature).
        delay: seconds a ``slow`` call sleeps.
        error: what ``raise`` / ``flap`` / ``recover`` raise.
        pattern: the ``flap`` sequence (True = answer, False = fail).
        fail_count: failures before ``recover`` answers.
        healthy: what ``health_check`` returns when it answers (it follows the mode:
            it hangs, sleeps or raises like a read).
        source: the ``source`` attribute (and of the vectors).
    """

    def __init__(
        self,
        mode: Mode = "ok",
        *,
        features: Optional[Dict[str, Any]] = None,
        ages: Optional[Dict[str, float]] = None,
        delay: float = 0.2,
        error: Optional[ErrorSpec] = None,
        pattern: Sequence[bool] = (True, False),
        fail_count: int = 3,
        healthy: bool = True,
        source: str = "faulty",
    ) -> None:
        self.features = dict(DEFAULT_FEATURES if features is None else features)
        self.ages = dict(ages) if ages is not None else dict.fromkeys(self.features, 10.0)
        self.delay = delay
        self.error: ErrorSpec = error or (lambda: FeatureStoreUnavailableError("injected failure"))
        self.pattern = list(pattern)
        self.fail_count = fail_count
        self.healthy = healthy
        self.source = source
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.calls = 0
        """Every read and health check that reached the backend."""
        self.calls_by_method: Dict[str, int] = {}
        self.batch_sizes: List[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.completed = 0
        self.cancelled = 0
        self.mode: Mode = "ok"
        self.set_mode(mode)

    # -- control -----------------------------------------------------------------------

    def set_mode(self, mode: Mode) -> None:
        """Switch behaviour; entering ``hang`` re-arms the hang."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; allowed: {', '.join(MODES)}")
        with self._lock:
            self.mode = mode
            self._seq = 0
            if mode == "hang":
                self._released.clear()

    def release(self) -> None:
        """End every current and future hang (until ``set_mode('hang')`` again)."""
        self._released.set()

    def reset_counts(self) -> None:
        """Zero the call counters."""
        with self._lock:
            self.calls = 0
            self.calls_by_method = {}
            self.batch_sizes = []
            self.completed = 0
            self.cancelled = 0
            self.max_in_flight = self.in_flight

    # -- behaviour ---------------------------------------------------------------------

    def _enter(self, method: str) -> tuple[str, bool]:
        """Count the call; returns (mode, should_fail) decided at entry."""
        with self._lock:
            self.calls += 1
            self.calls_by_method[method] = self.calls_by_method.get(method, 0) + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            seq = self._seq
            self._seq += 1
            mode = self.mode
        fail = (
            mode == "raise"
            or (mode == "flap" and not self.pattern[seq % len(self.pattern)])
            or (mode == "recover" and seq < self.fail_count)
        )
        return mode, fail

    def _exit(self, cancelled: bool = False) -> None:
        with self._lock:
            self.in_flight -= 1
            if cancelled:
                self.cancelled += 1
            else:
                self.completed += 1

    def _raise(self) -> None:
        error = self.error
        raise error if isinstance(error, BaseException) else error()

    def vector(self, entity_id: str, entity_type: str, names: Sequence[str]) -> FeatureVector:
        """The vector an answering call returns."""
        features = {n: self.features[n] for n in names if n in self.features}
        ages = {n: self.ages.get(n, 0.0) for n in features}
        if not features:
            return FeatureVector.empty(entity_id, entity_type, self.source)
        return FeatureVector.from_ages(
            entity_id, entity_type, self.source, features, ages, retrieved_at=utc_now()
        )

    def _behave(self, method: str) -> str:
        mode, fail = self._enter(method)
        try:
            if mode == "hang":
                self._released.wait()
            elif mode == "slow":
                time.sleep(self.delay)
            if fail:
                self._raise()
        finally:
            self._exit()
        return mode

    # -- the protocol ------------------------------------------------------------------

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        mode = self._behave("get_features")
        if mode == "garbage":
            return "garbage"  # type: ignore[return-value]
        return self.vector(entity_id, entity_type, feature_names)

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        with self._lock:
            self.batch_sizes.append(len(entity_ids))
        mode = self._behave("get_batch_features")
        vectors = [self.vector(eid, entity_type, feature_names) for eid in entity_ids]
        return vectors[:-1] if mode == "garbage" else vectors

    def health_check(self) -> bool:
        self._behave("health_check")
        return self.healthy


class AsyncFaultyBackend(FaultyBackend):
    """:class:`FaultyBackend` plus native async reads (``hang`` waits cancellably)."""

    async def _abehave(self, method: str) -> str:
        mode, fail = self._enter(method)
        cancelled = False
        try:
            if mode == "hang":
                while not self._released.is_set():
                    await asyncio.sleep(0.005)
            elif mode == "slow":
                await asyncio.sleep(self.delay)
            if fail:
                self._raise()
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._exit(cancelled)
        return mode

    async def aget_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        mode = await self._abehave("aget_features")
        if mode == "garbage":
            return "garbage"  # type: ignore[return-value]
        return self.vector(entity_id, entity_type, feature_names)

    async def aget_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        with self._lock:
            self.batch_sizes.append(len(entity_ids))
        mode = await self._abehave("aget_batch_features")
        vectors = [self.vector(eid, entity_type, feature_names) for eid in entity_ids]
        return vectors[:-1] if mode == "garbage" else vectors


__all__ = ["DEFAULT_FEATURES", "MODES", "AsyncFaultyBackend", "ErrorSpec", "FaultyBackend", "Mode"]
