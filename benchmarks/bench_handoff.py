"""Why a guarded Feast read costs more than the wrapper's in-memory overhead suggests.

The guard enforces its deadline by running the read on a daemon worker thread. On an
in-memory backend that hand-off costs ~15-20 us, but a Feast read handed to a worker
costs 100-170 us more than the same read on the caller's thread: the worker usually
runs on the other core, where Feast's objects are cold in the CPU caches, and the GIL
moves between cores. This script measures, interleaved in one run on the sample repo:

* ``direct``: ``FeastClient.get_features`` on the calling thread;
* ``hand-off``: the same call handed to one daemon worker (SimpleQueue + lock), the
  cheapest possible hand-off, with no guard bookkeeping;
* ``guarded``: ``GuardedClient(FeastClient).get_features``.

Run it twice: as is, and pinned to one core (``taskset -c 0 python ...``). Pinned, the
hand-off costs only ~30 us: the difference is the cross-core effect, not the guard.

Usage: python benchmarks/bench_handoff.py [--users 1000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import queue
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Dict

from common import PRODUCT_FEATURES as NAMES
from common import interleave, percentile

from asahi_features import FeastClient, GuardedClient
from asahi_features.sample_repo import build_sample_repo


def handoff(fn: Callable[[str], Any]) -> Callable[[str], Any]:
    """``fn`` run on one daemon worker; the caller blocks on a lock until it is done."""
    jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def worker() -> None:
        while True:
            arg, done, box = jobs.get()
            box.append(fn(arg))
            done.release()

    threading.Thread(target=worker, daemon=True).start()

    def call(arg: str) -> Any:
        done = threading.Lock()
        done.acquire()
        box: list[Any] = []
        jobs.put((arg, done, box))
        done.acquire()
        return box[0]

    return call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    repo = build_sample_repo(Path(tempfile.mkdtemp()) / "repo", users=args.users)
    client = FeastClient(str(repo), "asahi")
    guarded = GuardedClient(client, timeout_ms=1000)

    def read(user: str) -> Any:
        return client.get_features(user, "user", NAMES)

    via_worker = handoff(read)
    variants: Dict[str, Callable[[int], Any]] = {
        "direct": lambda i: read(f"u_{i % args.users + 1:04d}"),
        "hand-off": lambda i: via_worker(f"u_{i % args.users + 1:04d}"),
        "guarded": lambda i: guarded.get_features(f"u_{i % args.users + 1:04d}", "user", NAMES),
    }
    times = interleave(variants, rounds=args.rounds, block=100)
    base = percentile(times["direct"], 0.5)
    print(f"{'variant':10s} {'p50 us':>9s} {'p99 us':>9s} {'vs direct':>10s}")
    for name, samples in times.items():
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        print(f"{name:10s} {p50 * 1e6:9.1f} {p99 * 1e6:9.1f} {p50 / base:9.2f}x")
    guarded.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
