"""Bounded threads under a hung backend, reuse of stuck workers, prompt interpreter exit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from asahi_features.guard import GuardedClient
from asahi_features.models import FeatureStatus
from tests.support.faults import FaultyBackend
from tests.support.servers import wait_until

NAMES = ["tier"]
ROOT = Path(__file__).resolve().parents[2]
NEVER_OPENS: dict[str, Any] = {"breaker_window": 10**6, "breaker_minimum_calls": 10**6}
"""Breaker arguments under which these few thousand reads are never judged."""


def test_thousands_of_calls_against_a_hung_backend_keep_threads_bounded() -> None:
    backend = FaultyBackend("hang")
    guard = GuardedClient(
        backend,
        timeout_ms=50,
        batch_timeout_ms=50,
        max_workers=4,
        **NEVER_OPENS,
    )
    callers, per_caller = 16, 200
    baseline = threading.active_count()
    peak = [0]
    statuses: list[FeatureStatus] = []
    lock = threading.Lock()
    start = threading.Barrier(callers)

    def caller(index: int) -> None:
        start.wait()
        for i in range(per_caller):
            if i % 2:
                got = [guard.get_features(f"u{index}", "user", NAMES)]
            else:
                got = guard.get_batch_features([f"u{index}", "x"], "user", NAMES)
            with lock:
                statuses.extend(v.status for v in got)
                peak[0] = max(peak[0], threading.active_count())

    try:
        threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert set(statuses) == {FeatureStatus.UNAVAILABLE}
        assert peak[0] <= baseline + callers + 4
        assert backend.max_in_flight <= 4
        stats = guard.stats()
        requests = callers * per_caller
        assert stats["requests"] == requests
        assert stats["fallbacks"] == len(statuses) == callers * (per_caller // 2) * 3
        assert stats["workers"] <= 4 and stats["busy_workers"] == 4
        # Only 4 reads reached the backend, one per worker, each abandoned at its deadline
        # (the callers that arrived meanwhile rode along or queued behind it and timed
        # out too); once all 4 workers were stuck, every later read failed at once.
        assert stats["reads"] == 4 and backend.calls == 4
        assert stats["timeouts"] >= 4
        assert stats["timeouts"] + stats["rejected_stuck"] <= requests
        assert stats["rejected_stuck"] >= requests * 0.9
        # A hung store is the store's fault, never this process's overload.
        assert stats["overloaded"] == 0 and stats["unavailable"] == 0
        assert stats["waiting"] == 0 and stats["queued_reads"] == 0
    finally:
        backend.release()
    # Stuck workers come back when their call returns, and are reused. (The healthy read
    # has this guard's 50 ms deadline: it is retried should a loaded machine make it late;
    # what is checked is that no new worker is made for it.)
    assert wait_until(lambda: guard.stats()["busy_workers"] == 0)
    backend.set_mode("ok")
    assert wait_until(
        lambda: guard.get_features("u1", "user", NAMES).status is FeatureStatus.FOUND,
        timeout=10,
    )
    assert guard.stats()["workers"] <= 4
    guard.close()
    assert wait_until(lambda: threading.active_count() <= baseline)


async def test_many_async_callers_keep_threads_bounded() -> None:
    backend = FaultyBackend("hang")
    guard = GuardedClient(backend, timeout_ms=50, max_workers=3, **NEVER_OPENS)
    baseline = threading.active_count()
    try:
        for _ in range(5):
            vectors = await asyncio.gather(
                *(guard.aget_features(f"u{i}", "user", NAMES) for i in range(200))
            )
            assert {v.status for v in vectors} == {FeatureStatus.UNAVAILABLE}
            assert threading.active_count() <= baseline + 3
        assert backend.max_in_flight <= 3 and backend.calls <= 3
        stats = guard.stats()
        assert stats["requests"] == 1000 and stats["overloaded"] == 0
    finally:
        backend.release()
    assert wait_until(lambda: guard.stats()["busy_workers"] == 0)
    guard.close()


def test_stuck_workers_are_reused_not_replaced() -> None:
    backend = FaultyBackend("hang")
    # single reads time out at 50 ms; the healthy batches below have a roomy deadline
    guard = GuardedClient(
        backend, timeout_ms=50, batch_timeout_ms=2000, max_workers=2, **NEVER_OPENS
    )
    try:
        guard.get_features("u1", "user", NAMES)
        guard.get_features("u2", "user", NAMES)
        vector = guard.get_features("u3", "user", NAMES)
        assert vector.error == (
            "all 2 guard workers are stuck in calls past their deadline (the store hangs)"
        )
        assert backend.calls == 2
        stats = guard.stats()
        assert stats["timeouts"] == 2 and stats["rejected_stuck"] == 1
        assert stats["breaker"]["window_failures"] == 3  # each counts against the store
    finally:
        backend.release()
    assert wait_until(lambda: guard.stats()["busy_workers"] == 0)
    backend.set_mode("ok")
    names_before = {t.name for t in threading.enumerate() if t.name.startswith("asahi-guard")}
    for i in range(10):
        batch = guard.get_batch_features([f"u{i}", f"v{i}"], "user", NAMES)
        assert [v.status for v in batch] == [FeatureStatus.FOUND] * 2
    names_after = {t.name for t in threading.enumerate() if t.name.startswith("asahi-guard")}
    assert names_after <= names_before and guard.stats()["workers"] == 2
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("asahi-guard"))
    guard.close()


def test_interpreter_with_a_forever_hung_backend_exits_promptly() -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        sys.path.insert(0, {root!r})
        from asahi_features.guard import GuardedClient
        from tests.support.faults import FaultyBackend

        guard = GuardedClient(FaultyBackend("hang"), timeout_ms=50, max_workers=4)
        print(guard.get_features("u1", "user", ["tier"]).status.value)
        print(guard.get_batch_features(["a"], "user", ["tier"])[0].status.value)
        print(asyncio.run(guard.aget_features("u1", "user", ["tier"])).status.value)
        print("busy", guard.stats()["busy_workers"])
        """
    ).format(root=str(ROOT))
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["unavailable"] * 3 + ["busy", "3"]
    # a liveness guard, not a timing claim: a correct run is an interpreter start and three
    # 50 ms deadlines; a worker thread that kept the interpreter alive would hang forever
    assert elapsed < 30
