"""FeastClient against the raw Feast call, interleaved in one process.

Builds a sample repository of 10,000 users (SQLite, and Redis when ``redis-server`` is on
PATH: started on a free 127.0.0.1 port and stopped by its pid afterwards), shares ONE
``FeatureStore`` between the raw calls and FeastClient, and alternates them in blocks of
100 calls (batches of 1,000 ids: blocks of 5, so load drift on a shared machine hits both
sides alike). Prints p50/p99 in milliseconds and the FeastClient/raw ratio.

Usage: .venv/bin/python benchmarks/bench_feast.py [--users 10000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from common import PRODUCT_FEATURES as SINGLE_FEATURES
from common import PRODUCT_REFS as SINGLE_REFS
from common import interleave, percentile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.redis_server import RedisServer  # noqa: E402

from asahi_features.sample_repo import build_sample_repo, user_id  # noqa: E402
from asahi_features.stores.feast_store import FeastClient  # noqa: E402

TARGETS = {"single": 1.15, "batch": 1.2}


def _report(label: str, kind: str, times: Dict[str, List[float]]) -> bool:
    raw50, raw99 = percentile(times["raw"], 0.5) * 1e3, percentile(times["raw"], 0.99) * 1e3
    cl50, cl99 = percentile(times["client"], 0.5) * 1e3, percentile(times["client"], 0.99) * 1e3
    ratio = cl50 / raw50
    ok = ratio <= TARGETS[kind]
    print(
        f"{label:<8} {kind:<7} raw p50 {raw50:8.3f} ms p99 {raw99:8.3f} ms | "
        f"FeastClient p50 {cl50:8.3f} ms p99 {cl99:8.3f} ms | ratio p50 {ratio:5.3f} "
        f"(target <= {TARGETS[kind]}) {'ok' if ok else 'MISSED'}"
    )
    return ok


def bench(label: str, repo: Path, users: int, rounds: int, batch_rounds: int) -> bool:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    client = FeastClient(str(repo), "asahi", feature_store=store)
    ids = [user_id(n) for n in range(1, users + 1)]

    def raw_single(i: int) -> Any:
        resp = store.get_online_features(
            features=SINGLE_REFS, entity_rows=[{"user_id": ids[i % users]}]
        )
        return resp.proto

    def client_single(i: int) -> Any:
        return client.get_features(ids[i % users], "user", SINGLE_FEATURES)

    batches = [ids[k : k + 1000] for k in range(0, users, 1000)]

    def raw_batch(i: int) -> Any:
        resp = store.get_online_features(
            features=SINGLE_REFS, entity_rows={"user_id": batches[i % len(batches)]}
        )
        return resp.proto

    def client_batch(i: int) -> Any:
        return client.get_batch_features(batches[i % len(batches)], "user", SINGLE_FEATURES)

    ok = _report(
        label,
        "single",
        interleave({"raw": raw_single, "client": client_single}, rounds, 100, warmup=3),
    )
    ok &= _report(
        label,
        "batch",
        interleave({"raw": raw_batch, "client": client_batch}, batch_rounds, 5, warmup=3),
    )
    print(
        f"{label:<8} note: the raw side reads resp.proto only; to_dict() would add "
        f"{_to_dict_cost(store, batches[0]):.2f} ms to a raw batch"
    )
    return ok


def _to_dict_cost(store: Any, ids: List[str]) -> float:
    resp = store.get_online_features(features=SINGLE_REFS, entity_rows={"user_id": ids})
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        resp.to_dict(include_event_timestamps=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20, help="blocks of 100 single calls")
    parser.add_argument(
        "--batch-rounds", type=int, default=12, help="blocks of 5 batch calls (1,000 ids each)"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="asahi_bench_feast_"))
    ok = True
    try:
        start = time.perf_counter()
        repo = build_sample_repo(workdir / "sqlite", users=args.users)
        print(f"built a {args.users}-user SQLite repo in {time.perf_counter() - start:.1f} s")
        ok &= bench("sqlite", repo, args.users, args.rounds, args.batch_rounds)
        if shutil.which("redis-server"):
            with RedisServer() as redis:
                start = time.perf_counter()
                repo = build_sample_repo(
                    workdir / "redis",
                    users=args.users,
                    online_store="redis",
                    redis_connection=redis.connection_string,
                )
                print(
                    f"built a {args.users}-user Redis repo in {time.perf_counter() - start:.1f} s"
                )
                ok &= bench("redis", repo, args.users, args.rounds, args.batch_rounds)
        else:
            print("redis-server not on PATH: Redis skipped")
    except subprocess.SubprocessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
