"""HttpFeatureStore overhead against a bare pooled httpx POST to the same ``feast serve``.

A sample Feast repository (SQLite online store) is built in a temporary directory and a
real ``feast serve`` is started on a free loopback port (``--max-requests 0``, so the
worker is not recycled mid-run). Two callers then read the same 5 features of the same
users, one entity per call, interleaved in blocks of 50 calls with alternating order:

* ``bare``: ``httpx.Client.post(url, json=body)`` + ``response.json()`` on a pooled client
  (the least any Python client must do to use the answer), and ``bare-nojson`` without
  the parse, for reference;
* ``HttpFeatureStore.get_features``: the same request plus name resolution, status
  and freshness handling, building the FeatureVector;
* ``bare+token`` / ``HttpFeatureStore+token``: the same with a bearer token (the store
  reads it from an environment variable on every request, so a rotated value is used
  at once; the bare client sends a fixed header).

Target: HttpFeatureStore p50 <= 1.2x the bare p50.

Usage: .venv/bin/python benchmarks/bench_http.py [--calls 2000] [--users 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Dict, List

from common import PRODUCT_FEATURES as FEATURES
from common import PRODUCT_REFS as REFS
from common import percentile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.servers import free_port, stop_process, wait_for  # noqa: E402

from asahi_features.sample_repo import SAMPLE_VIEWS, build_sample_repo, user_id  # noqa: E402
from asahi_features.stores.http import HttpFeatureStore  # noqa: E402
from asahi_features.stores.http_auth import TokenSource  # noqa: E402

TOKEN_ENV = "ASAHI_BENCH_TOKEN"

TARGET = 1.2
BLOCK = 50


def _start_server(repo: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    feast = Path(sys.executable).with_name("feast")
    if not feast.exists():
        raise SystemExit(f"feast binary not found at {feast}")
    import httpx

    port = free_port()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                str(feast),
                "serve",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "--no-access-log",
                "--max-requests",
                "0",
            ],
            cwd=repo,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "FEAST_USAGE": "False"},
        )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/health", timeout=1).status_code == 200, timeout=120)
    return proc, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per caller")
    parser.add_argument("--users", type=int, default=200)
    args = parser.parse_args()

    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="asahi-bench-http-"))
    proc = None
    try:
        print(f"building sample repo ({args.users} users) in {tmp} ...", flush=True)
        repo = build_sample_repo(tmp / "repo", users=args.users, organizations=5)
        proc, url = _start_server(repo, tmp / "feast.log")
        print(f"feast serve at {url}", flush=True)

        views: Dict[str, List[str]] = {}
        for view in SAMPLE_VIEWS:
            views.setdefault(view.entity, []).extend(f"{view.name}:{f}" for f in view.feature_names)
        store = HttpFeatureStore(url, feature_views=views, timeout_ms=5000)
        bare = httpx.Client(
            timeout=5.0, limits=httpx.Limits(max_connections=32, max_keepalive_connections=32)
        )
        os.environ[TOKEN_ENV] = "bench-token-0123456789"
        store_tok = HttpFeatureStore(
            url, feature_views=views, timeout_ms=5000, token=TokenSource(env=TOKEN_ENV)
        )
        bare_tok = httpx.Client(
            timeout=5.0,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
            headers={"Authorization": f"Bearer {os.environ[TOKEN_ENV]}"},
        )
        endpoint = f"{url}/get-online-features"
        users = [user_id(n) for n in range(1, args.users + 1)]

        def body(uid: str) -> dict[str, object]:
            return {"entities": {"user_id": [uid]}, "features": REFS, "full_feature_names": True}

        def run_bare(uid: str) -> None:
            bare.post(endpoint, json=body(uid)).json()

        def run_bare_nojson(uid: str) -> None:
            bare.post(endpoint, json=body(uid))

        def run_store(uid: str) -> None:
            store.get_features(uid, "user", FEATURES)

        def run_bare_tok(uid: str) -> None:
            bare_tok.post(endpoint, json=body(uid)).json()

        def run_store_tok(uid: str) -> None:
            store_tok.get_features(uid, "user", FEATURES)

        callers: Dict[str, Callable[[str], None]] = {
            "bare": run_bare,
            "bare-nojson": run_bare_nojson,
            "HttpFeatureStore": run_store,
            "bare+token": run_bare_tok,
            "HttpFeatureStore+token": run_store_tok,
        }
        samples: Dict[str, List[float]] = {name: [] for name in callers}
        for fn in callers.values():  # warm-up: connections, server caches
            for uid in users[:100]:
                fn(uid)
        assert store.get_features(users[0], "user", FEATURES).features, "no features read"

        blocks = max(1, args.calls // BLOCK)
        order = list(callers)
        for b in range(blocks):
            batch = [users[(b * BLOCK + i) % len(users)] for i in range(BLOCK)]
            for name in order if b % 2 == 0 else reversed(order):
                fn = callers[name]
                out = samples[name]
                for uid in batch:
                    t0 = time.perf_counter()
                    fn(uid)
                    out.append(time.perf_counter() - t0)

        print(f"\n{blocks * BLOCK} calls each, one entity, {len(FEATURES)} features, interleaved")
        print(f"{'caller':<24}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}")
        for name, vals in samples.items():
            print(
                f"{name:<24}{percentile(vals, 0.5) * 1e3:>10.3f}"
                f"{percentile(vals, 0.9) * 1e3:>10.3f}"
                f"{percentile(vals, 0.99) * 1e3:>10.3f}"
            )
        ratio = percentile(samples["HttpFeatureStore"], 0.5) / percentile(samples["bare"], 0.5)
        ratio_raw = percentile(samples["HttpFeatureStore"], 0.5) / percentile(
            samples["bare-nojson"], 0.5
        )
        verdict = "OK" if ratio <= TARGET else "ABOVE TARGET"
        print(
            f"\nHttpFeatureStore p50 / bare POST+json p50 = {ratio:.3f} "
            f"(target <= {TARGET}) {verdict}"
        )
        print(f"HttpFeatureStore p50 / bare POST (no parse) p50 = {ratio_raw:.3f}")
        ratio_tok = percentile(samples["HttpFeatureStore+token"], 0.5) / percentile(
            samples["bare+token"], 0.5
        )
        print(f"HttpFeatureStore+token p50 / bare+token POST+json p50 = {ratio_tok:.3f}")
        store.close()
        store_tok.close()
        bare.close()
        bare_tok.close()
        return 0 if ratio <= TARGET else 1
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
