"""Test-only helpers around the fault-injection backend, which ships as
:mod:`asahi_features.testing` (``FaultyBackend``, ``AsyncFaultyBackend``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
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


@contextlib.contextmanager
def answers_at(backend: FaultyBackend, seconds: float) -> Iterator[None]:
    """The hung ``backend`` answers every read still in it ``seconds`` from now, unless
    the block has ended by then. A caller still waiting at that moment is answered, so a
    fallback shows that it had left before: a deadline checked by its outcome."""
    timer = threading.Timer(seconds, backend.release)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


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
    "answers_at",
    "hold_worker",
    "tracked",
]
