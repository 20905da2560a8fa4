"""FeastClient against the raw Feast call, interleaved in one process.

Builds a sample repository of 10,000 users (SQLite, and Redis when ``redis-server`` is on
PATH: started on a free 127.0.0.1 port and stopped by its pid afterwards), shares ONE
``FeatureStore`` between the raw calls and FeastClient, and alternates them in blocks of
100 calls (batches of 1,000 ids: blocks of 5, so load drift on a shared machine hits both
sides alike). Prints p50/p99 in milliseconds and the FeastClient/raw ratio.

Then the repository ``feast init`` makes (``--init``, default on; built by the feast CLI):
a feature service with an on-demand view fed by request data, and that on-demand view
alone, single reads and batches of 1,000 (the raw side passes the FeatureService object
and the request columns in ``entity_rows``, as a Feast user would).

Usage: .venv/bin/python benchmarks/bench_feast.py [--users 10000] [--rounds 20] [--no-init]
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

from tests.support.feast_init_repo import PROJECT as INIT_PROJECT  # noqa: E402
from tests.support.feast_init_repo import make_feast_init_repo  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

from asahi_features.sample_repo import build_sample_repo, user_id  # noqa: E402
from asahi_features.stores.entity_keys import compose_key  # noqa: E402
from asahi_features.stores.feast_store import FeastClient  # noqa: E402

TARGETS = {"single": 1.15, "batch": 1.15}


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


def bench_init(repo: Path, rounds: int, batch_rounds: int) -> bool:
    """Feature service (with request data) and an on-demand view alone, raw vs client."""
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    client = FeastClient(str(repo), INIT_PROJECT, feature_store=store)
    service = store.get_feature_service("driver_activity_v1")
    drivers = [1001, 1002, 1003, 1004, 1005]
    rows = [
        {"driver_id": drivers[i % 5], "val_to_add": i, "val_to_add_2": 2 * i} for i in range(5000)
    ]
    keys = [
        compose_key(
            {"driver": str(r["driver_id"])},
            {"val_to_add": r["val_to_add"], "val_to_add_2": r["val_to_add_2"]},
        )
        for r in rows
    ]
    batches = [(rows[k : k + 1000], keys[k : k + 1000]) for k in range(0, 5000, 1000)]
    columns = [
        {name: [row[name] for row in part] for name in ("driver_id", "val_to_add", "val_to_add_2")}
        for part, _ in batches
    ]
    odfv = [
        "transformed_conv_rate:conv_rate_plus_val1",
        "transformed_conv_rate:conv_rate_plus_val2",
    ]
    ok = True
    for label, raw_features, asked in (
        ("service", service, ["@driver_activity_v1"]),
        ("request", odfv, odfv),
    ):

        def raw_single(i: int, features: Any = raw_features) -> Any:
            return store.get_online_features(features=features, entity_rows=[rows[i % 5000]]).proto

        def client_single(i: int, names: List[str] = asked) -> Any:
            return client.get_features(keys[i % 5000], "driver", names)

        def raw_batch(i: int, features: Any = raw_features) -> Any:
            return store.get_online_features(features=features, entity_rows=columns[i % 5]).proto

        def client_batch(i: int, names: List[str] = asked) -> Any:
            return client.get_batch_features(batches[i % 5][1], "driver", names)

        ok &= _report(
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
        "request  note: the client also reads one feature of the on-demand view's source "
        "view (its event time is the on-demand features' age)"
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
    parser.add_argument("--no-init", action="store_true", help="skip the feast init repo rows")
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
        if not args.no_init:
            (workdir / "init").mkdir()
            start = time.perf_counter()
            init_repo = make_feast_init_repo(workdir / "init")
            print(f"built the feast init repo (CLI) in {time.perf_counter() - start:.1f} s")
            ok &= bench_init(init_repo, args.rounds, args.batch_rounds)
    except subprocess.SubprocessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
