"""Bounded threads under a hung backend, reuse of stuck workers, prompt interpreter exit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from asahi_features.guard import GuardedClient
from asahi_features.models import FeatureStatus
from tests.faults import FaultyBackend
from tests.servers import wait_until

NAMES = ["tier"]
ROOT = Path(__file__).resolve().parents[2]


def test_thousands_of_calls_against_a_hung_backend_keep_threads_bounded() -> None:
    backend = FaultyBackend("hang")
    guard = GuardedClient(
        backend,
        timeout_ms=50,
        batch_timeout_ms=50,
        max_workers=4,
        breaker_failure_threshold=10**9,
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
        assert stats["calls"] == callers * per_caller
        assert stats["workers"] <= 4 and stats["busy_workers"] == 4
        # Only the first 4 calls reached the backend; the callers that arrived together
        # with them waited (until their deadline or until all 4 were stuck), the rest
        # failed fast because every worker was stuck.
        assert stats["timeouts"] - stats["queue_timeouts"] == 4
        assert stats["rejected_saturated"] + stats["queue_timeouts"] == callers * per_caller - 4
        assert backend.calls == 4
        # (a caller whose first call gave up waiting just before the last worker became
        # stuck may wait once more; after that every call fails fast)
        assert stats["rejected_saturated"] >= callers * per_caller * 0.9
        assert stats["waiting"] == 0
    finally:
        backend.release()
    # Stuck workers come back when their call returns, and are reused.
    assert wait_until(lambda: guard.stats()["busy_workers"] == 0)
    backend.set_mode("ok")
    assert guard.get_features("u1", "user", NAMES).status is FeatureStatus.FOUND
    assert guard.stats()["workers"] <= 4
    guard.close()
    assert wait_until(lambda: threading.active_count() <= baseline)


async def test_many_async_callers_keep_threads_bounded() -> None:
    backend = FaultyBackend("hang")
    guard = GuardedClient(backend, timeout_ms=50, max_workers=3, breaker_failure_threshold=10**9)
    baseline = threading.active_count()
    try:
        for _ in range(5):
            vectors = await asyncio.gather(
                *(guard.aget_features(f"u{i}", "user", NAMES) for i in range(200))
            )
            assert {v.status for v in vectors} == {FeatureStatus.UNAVAILABLE}
            assert threading.active_count() <= baseline + 3
        assert backend.max_in_flight <= 3
    finally:
        backend.release()
    assert wait_until(lambda: guard.stats()["busy_workers"] == 0)
    guard.close()


def test_stuck_workers_are_reused_not_replaced() -> None:
    backend = FaultyBackend("hang")
    guard = GuardedClient(backend, timeout_ms=50, max_workers=2, breaker_failure_threshold=10**9)
    try:
        guard.get_features("u1", "user", NAMES)
        guard.get_features("u2", "user", NAMES)
        vector = guard.get_features("u3", "user", NAMES)
        assert vector.error == (
            "all 2 guard workers are busy, stuck past their deadline (backend hung)"
        )
        assert backend.calls == 2
    finally:
        backend.release()
    assert wait_until(lambda: guard.stats()["busy_workers"] == 0)
    backend.set_mode("ok")
    names_before = {t.name for t in threading.enumerate() if t.name.startswith("asahi-guard")}
    for i in range(10):
        assert guard.get_features(f"u{i}", "user", NAMES).status is FeatureStatus.FOUND
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
        from tests.faults import FaultyBackend

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
    assert elapsed < 30
