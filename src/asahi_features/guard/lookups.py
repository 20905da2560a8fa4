"""The caller's side of a guarded read: waiters, their lookups, waking them, matching answers.

A :class:`Waiter` is one caller with one deadline for all its :class:`Lookup` s (the user
and organisation parts of one request, the groups of one batch). Sync callers wait on a
held lock, async callers on a future of their event loop; both are woken, never polled.
A backend's answer reaches lookups through :func:`match`, by ``entity_id``, never by
position.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import FeatureStoreDataError
from ..models import FeatureVector

if TYPE_CHECKING:
    from .coalescer import Read

__all__ = ["DONE", "QUEUED", "RUNNING", "Key", "Lookup", "Waiter", "match", "wait_async", "wake"]

_now = time.monotonic

Key = Tuple[str, Tuple[str, ...]]
"""(entity type, feature names)."""

QUEUED, RUNNING, DONE = 0, 1, 2
"""A lookup's states: in this process, in a read the backend is running, ended."""


class Waiter:
    """One caller waiting for its lookups until one deadline.

    Woken, never polled: a sync caller through a held lock, an async caller through a
    future of its event loop.
    """

    __slots__ = ("deadline", "future", "left", "lock", "lookups", "loop", "timeout")

    def __init__(
        self, deadline: float, timeout: float, loop: Optional[asyncio.AbstractEventLoop] = None
    ) -> None:
        self.deadline = deadline
        self.timeout = timeout  # seconds: what the deadline allowed, for messages
        self.lookups: List[Lookup] = []
        self.left = 0
        self.loop = loop
        self.lock: Optional[threading.Lock] = None
        self.future: Optional[asyncio.Future[None]] = None
        if loop is None:
            self.lock = threading.Lock()
            self.lock.acquire()
        else:
            self.future = loop.create_future()

    def add(self, key: Key, ids: List[str]) -> Lookup:
        """A lookup of ``ids`` (unique) under ``key`` for this caller."""
        lookup = Lookup(key, ids, self)
        self.lookups.append(lookup)
        self.left += 1
        return lookup


class Lookup:
    """Some entity ids of one key, for one caller; ends with ``vectors`` or ``error``.

    ``vectors`` is aligned with ``ids``; an entry is ``None`` when the backend's answer
    had no vector for that id (or two, or one of another entity type).
    """

    __slots__ = ("error", "ids", "key", "read", "state", "vectors", "waiter")

    def __init__(self, key: Key, ids: List[str], waiter: Waiter) -> None:
        self.key = key
        self.ids = ids
        self.waiter = waiter
        self.state = QUEUED
        self.read: Optional[Read] = None
        self.vectors: Optional[List[Optional[FeatureVector]]] = None
        self.error: Optional[BaseException] = None


def _wake_futures(futures: List[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def wake(waiters: List[Waiter], on_loop: Optional[asyncio.AbstractEventLoop]) -> None:
    """Wake finished callers: sync ones directly, async ones on their own loop."""
    by_loop: Dict[asyncio.AbstractEventLoop, List[asyncio.Future[None]]] = {}
    for waiter in waiters:
        lock = waiter.lock
        if lock is not None:
            with contextlib.suppress(RuntimeError):  # already released by a racing path
                lock.release()
            continue
        loop = waiter.loop
        assert loop is not None and waiter.future is not None
        by_loop.setdefault(loop, []).append(waiter.future)
    for loop, futures in by_loop.items():
        if loop is on_loop:
            _wake_futures(futures)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_wake_futures, futures)


def match(
    ids: Sequence[str], entity_type: str, result: Any
) -> Tuple[Dict[str, FeatureVector], int]:
    """Index a backend answer by entity id; also how many answers were bad: asked ids left
    without a usable vector (missing, repeated, of another entity type) plus vectors for
    ids nobody asked.

    Raises:
        FeatureStoreDataError: the answer is not a list of FeatureVectors.
    """
    if len(ids) == 1 and type(result) is list and len(result) == 1:  # the lone read
        vector = result[0]
        if (
            type(vector) is FeatureVector
            and vector.entity_id == ids[0]
            and vector.entity_type == entity_type
        ):
            return {ids[0]: vector}, 0
    if isinstance(result, FeatureVector) and len(ids) == 1:
        result = [result]
    if not isinstance(result, (list, tuple)):
        raise FeatureStoreDataError(
            f"backend returned {type(result).__name__} for a read, expected a list of "
            "FeatureVectors"
        )
    by_id: Dict[str, FeatureVector] = {}
    repeated: set[str] = set()
    wanted = set(ids)
    unasked = 0
    for vector in result:
        if not isinstance(vector, FeatureVector):
            raise FeatureStoreDataError(
                f"backend returned a {type(vector).__name__} in a read, expected FeatureVectors"
            )
        eid = vector.entity_id
        if eid not in wanted:
            unasked += 1  # nobody asked for it: it gives nobody anything
            continue
        if vector.entity_type != entity_type:
            continue  # of another entity type: its id stays unanswered
        if eid in by_id:
            repeated.add(eid)
        else:
            by_id[eid] = vector
    for eid in repeated:  # two answers for one entity: trust neither
        del by_id[eid]
    return by_id, unasked + sum(1 for eid in wanted if eid not in by_id)


async def wait_async(waiter: Waiter, give_up: Callable[..., None]) -> None:
    """Await the end of ``waiter``'s lookups (never blocking the loop), until its deadline;
    then ``give_up(waiter, cancelled=...)`` ends whatever is left."""
    if waiter.left:
        future = waiter.future
        loop = waiter.loop
        assert future is not None and loop is not None
        timer = loop.call_later(max(waiter.deadline - _now(), 0.0), _expire, future)
        try:
            await future
        except asyncio.CancelledError:  # the caller was cancelled, not the backend
            give_up(waiter, cancelled=True)
            raise
        finally:
            timer.cancel()
    if waiter.left:
        give_up(waiter)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
