"""GuardedClient coalescing: concurrent lookups of one key leave together, answers by id.

Every test runs three ways: sync callers on threads (blocking backend on the guard's
workers), asyncio callers with a blocking backend (still the workers), and asyncio
callers with a native ``aget_*`` backend (reads are tasks of the callers' loop). The
concurrency is made deterministic with gates: the first read of a key is held in the
backend (``hang``) until the other callers are seen queued in ``stats()["waiting"]``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import pytest

from asahi_features.guard import GuardedClient
from asahi_features.models import FeatureStatus, FeatureVector, utc_now
from tests.support.faults import AsyncFaultyBackend, FaultyBackend
from tests.support.servers import wait_until

NAMES = ["marker"]
ROOMY_MS = 10_000
"""Healthy paths: a deadline no gated test comes near."""
SETTLE = 20.0
"""Bound of every wait for a condition (seconds); reached only when a rule is broken."""


def marked(entity_type: str, entity_id: str, names: Sequence[str]) -> dict[str, str]:
    """The features an answer carries: unique to (entity type, entity id, feature)."""
    return {name: f"{name}|{entity_type}|{entity_id}" for name in names}


class Read(NamedTuple):
    """One call that reached the backend."""

    method: str
    entity_type: str
    names: Tuple[str, ...]
    ids: List[str]


Tamper = Callable[[List[FeatureVector]], Any]


class MarkedBackend(FaultyBackend):
    """A FaultyBackend whose vectors carry a per-entity marker and that records each read
    (method, key, ids); ``tamper`` rewrites the answers of batch reads."""

    def __init__(self, mode: Any = "ok", **kwargs: Any) -> None:
        super().__init__(mode, **kwargs)
        self.reads: List[Read] = []
        self.tamper: Optional[Tamper] = None
        self.answer_as: Optional[str] = None
        """When set, every vector claims to be this entity's."""

    def vector(self, entity_id: str, entity_type: str, names: Sequence[str]) -> FeatureVector:
        if self.answer_as is not None:
            entity_id = self.answer_as
        return FeatureVector.from_ages(
            entity_id,
            entity_type,
            self.source,
            marked(entity_type, entity_id, names),
            dict.fromkeys(names, 1.0),
            retrieved_at=utc_now(),
        )

    def record(self, method: str, entity_type: str, names: Sequence[str], ids: List[str]) -> None:
        with self._lock:
            self.reads.append(Read(method, entity_type, tuple(names), list(ids)))

    def tampered(self, vectors: List[FeatureVector]) -> Any:
        return vectors if self.tamper is None else self.tamper(vectors)

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        self.record("get_features", entity_type, feature_names, [entity_id])
        return super().get_features(entity_id, entity_type, feature_names)

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        self.record("get_batch_features", entity_type, feature_names, entity_ids)
        result: List[FeatureVector] = self.tampered(
            super().get_batch_features(entity_ids, entity_type, feature_names)
        )
        return result


class AsyncMarkedBackend(MarkedBackend, AsyncFaultyBackend):
    """:class:`MarkedBackend` with native ``aget_*`` coroutines."""

    async def aget_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        self.record("aget_features", entity_type, feature_names, [entity_id])
        return await super().aget_features(entity_id, entity_type, feature_names)

    async def aget_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        self.record("aget_batch_features", entity_type, feature_names, entity_ids)
        result: List[FeatureVector] = self.tampered(
            await super().aget_batch_features(entity_ids, entity_type, feature_names)
        )
        return result


async def _cancel_the_rest() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Harness:
    """Starts guarded calls from threads, or as tasks of one event loop (in a thread of
    its own, so that the test can orchestrate them synchronously)."""

    def __init__(self, mode: str, backends: List[FaultyBackend]) -> None:
        self.mode = mode
        self.native = mode == "asyncio-native"
        self._backends = backends
        self._threads: List[threading.Thread] = []
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        if mode != "threads":
            loop = self.loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
            self._loop_thread.start()

    @property
    def single(self) -> str:
        """The backend method a lone read of one id must use."""
        return "aget_features" if self.native else "get_features"

    @property
    def batch(self) -> str:
        """The backend method a read of several ids must use."""
        return "aget_batch_features" if self.native else "get_batch_features"

    def backend(self, mode: Any = "ok") -> MarkedBackend:
        backend = AsyncMarkedBackend(mode) if self.native else MarkedBackend(mode)
        self._backends.append(backend)
        return backend

    def call(self, guard: GuardedClient, method: str, *args: Any) -> concurrent.futures.Future[Any]:
        """Start ``guard.<method>(*args)`` (``a<method>`` for asyncio callers)."""
        if self.loop is not None:
            coro = getattr(guard, "a" + method)(*args)
            return asyncio.run_coroutine_threadsafe(coro, self.loop)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(getattr(guard, method)(*args))
            except BaseException as exc:
                future.set_exception(exc)

        thread = threading.Thread(target=run, daemon=True)
        self._threads.append(thread)
        thread.start()
        return future

    def close(self) -> None:
        for backend in self._backends:
            backend.release()
        for thread in self._threads:
            thread.join(SETTLE)
        loop = self.loop
        if loop is not None and self._loop_thread is not None:
            asyncio.run_coroutine_threadsafe(_cancel_the_rest(), loop).result(SETTLE)
            loop.call_soon_threadsafe(loop.stop)
            self._loop_thread.join(SETTLE)
            loop.close()


@pytest.fixture(params=["threads", "asyncio-threads", "asyncio-native"])
def h(request: pytest.FixtureRequest, backends: List[FaultyBackend]) -> Iterator[Harness]:
    harness = Harness(request.param, backends)
    yield harness
    harness.close()


def settle(check: Callable[[], bool], what: str) -> None:
    assert wait_until(check, timeout=SETTLE), f"timed out waiting for {what}"


Call = Tuple[str, Tuple[Any, ...]]


def _reads_are(backend: MarkedBackend, n: int) -> Callable[[], bool]:
    return lambda: len(backend.reads) == n


def _waiting_is(guard: GuardedClient, n: int) -> Callable[[], bool]:
    return lambda: bool(guard.stats()["waiting"] == n)


def hold_then_queue(
    h: Harness,
    guard: GuardedClient,
    backend: MarkedBackend,
    queued: Sequence[Call],
    holders: Sequence[Call] = (("get_features", ("h0", "user", NAMES)),),
    one_by_one: bool = False,
) -> Tuple[List[Any], List[Any]]:
    """Hold each holder's read in the backend, queue ``queued`` behind them, then let
    everything through; (holder results, queued results) in call order."""
    backend.set_mode("hang")
    held = []
    for method, args in holders:
        held.append(h.call(guard, method, *args))
        settle(_reads_are(backend, len(held)), f"holder read {len(held)} in the backend")
    futures = []
    for method, args in queued:
        futures.append(h.call(guard, method, *args))
        if one_by_one:
            settle(_waiting_is(guard, len(futures)), f"{len(futures)} lookups queued")
    settle(lambda: guard.stats()["waiting"] == len(queued), f"{len(queued)} lookups queued")
    assert len(backend.reads) == len(holders), "a queued lookup left while a read was in flight"
    backend.release()
    return [f.result(SETTLE) for f in held], [f.result(SETTLE) for f in futures]


def assert_own(vector: Any, entity_id: str, entity_type: str = "user", names: Any = None) -> None:
    names = NAMES if names is None else names
    assert isinstance(vector, FeatureVector)
    assert vector.status is FeatureStatus.FOUND, (entity_id, vector.status, vector.error)
    assert (vector.entity_id, vector.entity_type) == (entity_id, entity_type)
    assert vector.features == marked(entity_type, entity_id, names)


def guarded(backend: MarkedBackend, **kwargs: Any) -> GuardedClient:
    kwargs.setdefault("timeout_ms", ROOMY_MS)
    return GuardedClient(backend, **kwargs)


# -- rule 1: coalescing -----------------------------------------------------------------


def test_thousand_queued_lookups_leave_together_as_one_read(h: Harness) -> None:
    backend = h.backend()
    guard = guarded(backend)
    ids = [f"u{i}" for i in range(1000)]
    (first,), results = hold_then_queue(
        h, guard, backend, [("get_features", (eid, "user", NAMES)) for eid in ids]
    )
    assert_own(first, "h0")
    for eid, vector in zip(ids, results, strict=True):
        assert_own(vector, eid)
    assert [(r.method, len(r.ids)) for r in backend.reads] == [(h.single, 1), (h.batch, 1000)]
    assert backend.reads[0].ids == ["h0"]
    assert sorted(backend.reads[1].ids) == sorted(ids)
    stats = guard.stats()
    assert (stats["requests"], stats["reads"], stats["lookups_coalesced"]) == (1001, 2, 999)
    assert stats["fallbacks"] == 0 and stats["waiting"] == 0


def test_queued_duplicate_ids_are_read_once(h: Harness) -> None:
    backend = h.backend()
    guard = guarded(backend)
    ids = [f"u{i}" for i in range(10)]
    queued: List[Call] = [("get_features", (eid, "user", NAMES)) for eid in ids + ids]
    queued.append(("get_batch_features", (["u3", "u7", "u3", "h0"], "user", NAMES)))
    (first,), results = hold_then_queue(h, guard, backend, queued)
    assert_own(first, "h0")
    for eid, vector in zip(ids + ids, results[:-1], strict=True):
        assert_own(vector, eid)
    batch = results[-1]
    assert [v.entity_id for v in batch] == ["u3", "u7", "u3", "h0"]
    for eid, vector in zip(["u3", "u7", "u3", "h0"], batch, strict=True):
        assert_own(vector, eid)
    assert len(backend.reads) == 2
    second = backend.reads[1]
    assert second.method == h.batch
    assert sorted(second.ids) == sorted([*ids, "h0"]), "each id once in the coalesced read"


def test_other_feature_lists_and_entity_types_are_other_reads(h: Harness) -> None:
    backend = h.backend()
    guard = guarded(backend)
    keys = [("user", ["marker"]), ("user", ["marker", "extra"]), ("organization", ["marker"])]
    holders: List[Call] = [
        ("get_features", (f"h{k}", et, names)) for k, (et, names) in enumerate(keys)
    ]
    queued: List[Call] = [
        ("get_features", (f"q{k}{i}", et, names))
        for i in range(3)
        for k, (et, names) in enumerate(keys)
    ]
    held, results = hold_then_queue(h, guard, backend, queued, holders=holders)
    for k, ((et, names), vector) in enumerate(zip(keys, held, strict=True)):
        assert_own(vector, f"h{k}", et, names)
    for (_, (eid, et, names)), vector in zip(queued, results, strict=True):
        assert_own(vector, eid, et, names)
    assert len(backend.reads) == 6
    seen = {(r.entity_type, r.names): sorted(r.ids) for r in backend.reads[3:]}
    assert seen == {
        (et, tuple(names)): sorted(f"q{k}{i}" for i in range(3))
        for k, (et, names) in enumerate(keys)
    }
    assert all(r.method == h.batch for r in backend.reads[3:])


def test_lone_request_is_one_read_of_one_id(h: Harness) -> None:
    backend = h.backend()
    guard = guarded(backend)
    assert_own(h.call(guard, "get_features", "u1", "user", NAMES).result(SETTLE), "u1")
    assert backend.reads == [Read(h.single, "user", tuple(NAMES), ["u1"])]
    (vector,) = h.call(guard, "get_batch_features", ["u2"], "user", NAMES).result(SETTLE)
    assert_own(vector, "u2")
    assert [(r.method, r.ids) for r in backend.reads] == [(h.single, ["u1"]), (h.single, ["u2"])]
    assert backend.batch_sizes == []
    assert guard.stats()["lookups_coalesced"] == 0


def test_max_batch_size_caps_a_coalesced_read(h: Harness) -> None:
    backend = h.backend()
    guard = guarded(backend, max_batch_size=10)
    ids = [f"u{i}" for i in range(25)]
    _, results = hold_then_queue(
        h, guard, backend, [("get_features", (eid, "user", NAMES)) for eid in ids]
    )
    for eid, vector in zip(ids, results, strict=True):
        assert_own(vector, eid)
    assert [len(r.ids) for r in backend.reads] == [1, 10, 10, 5]
    assert sorted(eid for r in backend.reads[1:] for eid in r.ids) == sorted(ids)


def test_lookup_larger_than_the_cap_leaves_whole(h: Harness) -> None:
    backend = h.backend()
    guard = guarded(backend, max_batch_size=10)
    big = [f"b{i}" for i in range(25)]
    lone = h.call(guard, "get_batch_features", big, "user", NAMES).result(SETTLE)
    for eid, vector in zip(big, lone, strict=True):
        assert_own(vector, eid)
    assert [(r.method, r.ids) for r in backend.reads] == [(h.batch, big)]
    backend.reads.clear()
    small_x, small_z = ["x1", "x2", "x3"], ["z1", "z2", "z3"]
    queued: List[Call] = [
        ("get_batch_features", (small_x, "user", NAMES)),
        ("get_batch_features", (big, "user", NAMES)),
        ("get_batch_features", (small_z, "user", NAMES)),
    ]
    _, results = hold_then_queue(h, guard, backend, queued, one_by_one=True)
    for ids, vectors in zip([small_x, big, small_z], results, strict=True):
        for eid, vector in zip(ids, vectors, strict=True):
            assert_own(vector, eid)
    assert [r.ids for r in backend.reads] == [["h0"], small_x, big, small_z]


# -- rule 2: answers are matched by entity id -------------------------------------------


def test_reversed_answers_reach_their_callers(h: Harness) -> None:
    backend = h.backend()
    backend.tamper = lambda vectors: list(reversed(vectors))
    guard = guarded(backend)
    ids = [f"u{i}" for i in range(50)]
    _, results = hold_then_queue(
        h, guard, backend, [("get_features", (eid, "user", NAMES)) for eid in ids]
    )
    for eid, vector in zip(ids, results, strict=True):
        assert_own(vector, eid)
    batch = h.call(guard, "get_batch_features", ids, "user", NAMES).result(SETTLE)
    for eid, vector in zip(ids, batch, strict=True):
        assert_own(vector, eid)
    assert guard.stats()["bad_vectors"] == 0


def _stranger(vectors: List[FeatureVector]) -> List[FeatureVector]:
    return [*vectors, vectors[0].model_copy(update={"entity_id": "zz"})]


def _other_type(vectors: List[FeatureVector]) -> List[FeatureVector]:
    return [
        v.model_copy(update={"entity_type": "organization"}) if v.entity_id == "e" else v
        for v in vectors
    ]


TAMPERS: dict[str, Tuple[Tamper, set[str], Optional[int]]] = {
    # name: (rewrite of the batch answer, ids that must come back UNAVAILABLE,
    #        exact bad_vectors count or None for "at least one per spoiled id")
    "omits_b": (lambda vs: [v for v in vs if v.entity_id != "b"], {"b"}, 1),
    "repeats_c": (lambda vs: vs + [v for v in vs if v.entity_id == "c"], {"c"}, 1),
    "adds_unasked_id": (_stranger, set(), 1),
    "e_of_another_entity_type": (_other_type, {"e"}, None),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_bad_vectors_spoil_only_their_entities(h: Harness, name: str) -> None:
    tamper, spoiled, bad = TAMPERS[name]
    backend = h.backend()
    backend.tamper = tamper
    guard = guarded(backend)
    ids = ["a", "b", "c", "d", "e"]
    _, results = hold_then_queue(
        h, guard, backend, [("get_features", (eid, "user", NAMES)) for eid in ids]
    )
    assert [r.ids for r in backend.reads][1] == ids
    for eid, vector in zip(ids, results, strict=True):
        if eid in spoiled:
            assert vector.status is FeatureStatus.UNAVAILABLE, eid
            assert (vector.entity_id, vector.entity_type, vector.features) == (eid, "user", {})
        else:
            assert_own(vector, eid)
    stats = guard.stats()
    if bad is None:
        assert stats["bad_vectors"] >= len(spoiled)
    else:
        assert stats["bad_vectors"] == bad
    assert stats["fallbacks"] == len(spoiled)


def test_lone_answer_for_another_entity_is_unavailable(h: Harness) -> None:
    backend = h.backend()
    guard = guarded(backend)
    backend.answer_as = "someone-else"
    vector = h.call(guard, "get_features", "u1", "user", NAMES).result(SETTLE)
    assert vector.status is FeatureStatus.UNAVAILABLE
    assert (vector.entity_id, vector.features) == ("u1", {})
    assert guard.stats()["bad_vectors"] >= 1


def test_non_list_answer_fails_the_whole_read(h: Harness) -> None:
    backend = h.backend()
    backend.tamper = lambda vectors: {v.entity_id: v for v in vectors}
    guard = guarded(backend)
    ids = ["a", "b", "c"]
    _, results = hold_then_queue(
        h, guard, backend, [("get_features", (eid, "user", NAMES)) for eid in ids]
    )
    for eid, vector in zip(ids, results, strict=True):
        assert vector.status is FeatureStatus.UNAVAILABLE
        assert (vector.entity_id, vector.features) == (eid, {})
    stats = guard.stats()
    assert stats["unavailable"] == 1 and stats["fallbacks"] == 3
    breaker = stats["breaker"]
    # the holder's single read answered; the batch read's garbage is one backend failure
    assert (breaker["window_calls"], breaker["window_failures"]) == (2, 1)


# -- rule 6 (part): time queued in this process never counts against the backend --------


def test_time_queued_behind_a_slow_read_is_not_judged(h: Harness) -> None:
    backend = h.backend()
    guard = guarded(backend, timeout_ms=3000, breaker_minimum_calls=1, breaker_window=50)
    ids = [f"u{i}" for i in range(50)]
    (first,), results = hold_then_queue(
        h, guard, backend, [("get_features", (eid, "user", NAMES)) for eid in ids]
    )
    assert_own(first, "h0")
    for eid, vector in zip(ids, results, strict=True):
        assert_own(vector, eid)
    breaker = guard.stats()["breaker"]
    assert breaker["state"] == "closed"
    assert (breaker["window_calls"], breaker["window_failures"]) == (2, 0)
    assert breaker["window_slow_calls"] == 0


def test_time_queued_past_the_reads_own_budget_is_not_slow(h: Harness) -> None:
    """A request of 2 ids has the batch deadline (5 s); with one of them cached, its read
    carries 1 id and has the budget of 1 id (300 ms). That read waits in the queue behind
    another caller's read for longer than its budget, then answers at once: a fast backend
    call, however long it sat in this process."""
    backend = h.backend()
    guard = guarded(
        backend,
        timeout_ms=300,
        batch_timeout_ms=5000,
        cache_ttl_seconds=600,
        breaker_minimum_calls=1,
        breaker_slow_call_rate=0.3,
    )
    assert_own(h.call(guard, "get_features", "c1", "user", NAMES).result(SETTLE), "c1")
    backend.set_mode("hang")
    holder = h.call(guard, "get_batch_features", ["h1", "h2"], "user", NAMES)
    settle(_reads_are(backend, 2), "the holder's read in the backend")
    request = h.call(guard, "get_batch_features", ["u1", "c1"], "user", NAMES)
    settle(_waiting_is(guard, 1), "the lookup of u1 queued behind the holder")
    time.sleep(0.6)  # a lower bound on the time queued: twice the read's budget
    backend.release()
    for eid, vector in zip(["h1", "h2"], holder.result(SETTLE), strict=True):
        assert_own(vector, eid)
    for eid, vector in zip(["u1", "c1"], request.result(SETTLE), strict=True):
        assert_own(vector, eid)
    assert [r.ids for r in backend.reads] == [["c1"], ["h1", "h2"], ["u1"]]
    breaker = guard.stats()["breaker"]
    assert breaker["state"] == "closed"
    assert (breaker["window_calls"], breaker["window_failures"]) == (3, 0)
    assert breaker["window_slow_calls"] == 0
