"""Test-only helpers around the fault-injection backend, which ships as
:mod:`asahi_features.testing` (``FaultyBackend``, ``AsyncFaultyBackend``)."""

from __future__ import annotations

import threading
from typing import Any, List

from asahi_features.testing import (
    DEFAULT_FEATURES,
    MODES,
    AsyncFaultyBackend,
    FaultyBackend,
    ManualClock,
    Mode,
)
from tests.support.servers import wait_until


def hold_worker(guard: Any, backend: FaultyBackend) -> tuple[threading.Thread, List[BaseException]]:
    """Occupy one worker of ``guard`` (a GuardedClient without fallback around the hung
    ``backend``): a thread's call that has reached the backend and will time out.

    Returns the thread and the list its timeout error lands in (join the thread first).
    """
    from asahi_features.errors import FeatureStoreTimeoutError

    calls = backend.calls
    errors: List[BaseException] = []

    def hold() -> None:
        try:
            guard.get_features("holder", "user", list(DEFAULT_FEATURES))
        except FeatureStoreTimeoutError as exc:
            errors.append(exc)

    holder = threading.Thread(target=hold, name="test-worker-holder")
    holder.start()
    if not wait_until(lambda: backend.calls > calls):
        raise AssertionError("the holder's call never reached the backend")
    return holder, errors


def tracked(backends: List[FaultyBackend], mode: Mode, delay: float = 0.002) -> FaultyBackend:
    """A FaultyBackend registered in ``backends`` (the unit tests' fixture releases it)."""
    backend = FaultyBackend(mode, delay=delay)
    backends.append(backend)
    return backend


__all__ = [
    "DEFAULT_FEATURES",
    "MODES",
    "AsyncFaultyBackend",
    "FaultyBackend",
    "ManualClock",
    "Mode",
    "hold_worker",
    "tracked",
]
