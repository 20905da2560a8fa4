"""Load benchmark: bursts of concurrent requests through the guard against raw Feast, one run.

Builds the sample repository (SQLite, ``--users`` users, default 2,000) in a temporary
directory and shares ONE ``feast.FeatureStore`` between the raw calls and every
``FeastClient(..., feature_store=store)`` (Feast keeps a process-wide resolution cache:
two stores used alternately evict each other). The enricher is built as a user builds it:
``FeatureEnricher(GuardedClient(FeastClient(...)), EnricherConfig(...))``, every name
imported from the top-level ``asahi_features`` package. Four parts:

1. **Async burst**: ``--burst`` (1,000) concurrent ``aenrich`` (``asyncio.gather``,
   distinct users, task ``product_recommendation``, healthy store) against ONE raw
   ``store.get_online_features`` batch of the same entities and refs; wall time of the
   whole burst. Once with the default ``timeout_ms=200`` and once with a roomy
   ``timeout_ms=5000``. Target <= 2.0x (stretch 1.5x).
2. **Threads**: ``--threads`` (50) threads x ``--calls`` (20) sync ``enrich`` against the
   same threads making raw single ``get_online_features`` calls for the same users; wall
   time. Target <= 1.0x (stretch 0.5x).
3. **Lone request**: guarded ``enrich`` of one user against a raw single read, interleaved
   blocks of 100 calls; p50 ratio. Target <= 1.5x.
4. **Hung store**: sequential lone ``enrich`` calls (each a fresh user) against a backend
   whose reads block until released at the end, ``timeout_ms=50``. Target p99 <= 60 ms.

Parts 1 and 2 alternate raw and guarded rounds (the starting variant rotates) and build a
fresh guard, enricher and ``FeastClient`` for every round (warmed with one direct read of
a user outside the measured set), so that one round's breaker state or worker threads
never leak into the next; their ratio is median guarded / median raw wall time over the
rounds. A burst or thread round counts as met only when its ratio is within the target
AND no request fell back (reason ``store_unavailable`` or ``overloaded``): a fallback
returns early and would make the guard look cheaper than it is.

Usage: .venv/bin/python benchmarks/bench_burst.py [--users 2000] [--burst 1000]
       [--burst-rounds 15] [--threads 50] [--calls 20] [--thread-rounds 9]
       [--lone-rounds 20] [--hung-calls 200]
Exit status 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from common import PRODUCT_FEATURES as FEATURES
from common import PRODUCT_REFS as REFS
from common import TASK_MAP, interleave, percentile

import asahi_features
from asahi_features import (
    EnricherConfig,
    EnrichmentResult,
    FeastClient,
    FeatureEnricher,
    FeatureVector,
    GuardedClient,
)
from asahi_features.models import utc_now

TASK = "product_recommendation"
PROMPT = "Recommend a product for this customer."
PROJECT = "asahi"
ROOMY_TIMEOUT_MS = 5_000.0
HUNG_TIMEOUT_MS = 50.0
DEADLINE_SLACK_MS = 10.0
FALLBACK_REASONS = frozenset({"store_unavailable", "overloaded"})
"""Reasons that mean the guard gave up on the read (the store was healthy throughout)."""


@dataclass
class Outcome:
    """What one round of guarded requests gave back."""

    enriched: int
    reasons: Counter[str]
    breaker: str

    @property
    def fell_back(self) -> int:
        return sum(n for reason, n in self.reasons.items() if reason in FALLBACK_REASONS)


def outcome_of(results: Sequence[EnrichmentResult], guarded: GuardedClient) -> Outcome:
    enriched = sum(1 for r in results if r.features_available)
    reasons = Counter(r.reason.value for r in results if not r.features_available)
    return Outcome(enriched, reasons, guarded.breaker.state.value)


@dataclass
class Row:
    """One line of the table: guarded against raw, with its target."""

    name: str
    guarded: List[float]  # seconds: per round (wall) or per call (latency)
    raw: List[float]
    target: float
    stretch: Optional[float] = None
    outcomes: List[Outcome] = field(default_factory=list)
    latency: bool = False  # per-call samples: compare p50s instead of round medians
    absolute: bool = False  # the target bounds the guarded p99 in ms, not a ratio

    def ratio(self) -> float:
        if self.latency:
            return percentile(self.guarded, 0.5) / percentile(self.raw, 0.5)
        return statistics.median(self.guarded) / statistics.median(self.raw)

    def round_ratios(self) -> List[float]:
        return [g / r for g, r in zip(self.guarded, self.raw, strict=True)]

    def fell_back(self) -> int:
        """Requests that fell back in the worst round."""
        return max((o.fell_back for o in self.outcomes), default=0)


def build_repo(workdir: Path, users: int) -> Path:
    from asahi_features.sample_repo import build_sample_repo

    began = time.perf_counter()
    repo = build_sample_repo(workdir / "sqlite", users=users, online_store="sqlite")
    print(f"built the {users}-user sqlite repo in {time.perf_counter() - began:.1f} s")
    return repo


class Fixture:
    """The shared FeatureStore and a factory of guarded enrichers over it."""

    def __init__(self, repo: Path, warm_user: str) -> None:
        from feast import FeatureStore

        self.repo = repo
        self.store: Any = FeatureStore(repo_path=str(repo))
        self.warm_user = warm_user
        self.config = EnricherConfig(
            enabled_task_types=[TASK], task_features=TASK_MAP, freshness_threshold_seconds=10**9
        )

    def enricher(self, **guard: Any) -> Tuple[FeatureEnricher, GuardedClient]:
        """A fresh ``FeastClient`` (warmed outside the guard), guard and enricher."""
        client = FeastClient(str(self.repo), PROJECT, feature_store=self.store)
        client.get_features(self.warm_user, "user", list(FEATURES))
        guarded = GuardedClient(client, **guard)
        return FeatureEnricher(guarded, self.config), guarded

    def raw_batch(self, users: Sequence[str]) -> Any:
        rows = [{"user_id": u} for u in users]
        return self.store.get_online_features(features=REFS, entity_rows=rows).proto

    def raw_single(self, user: str) -> Any:
        return self.store.get_online_features(features=REFS, entity_rows=[{"user_id": user}]).proto


def rotated(variants: List[Tuple[str, Callable[[], None]]], r: int) -> List[Callable[[], None]]:
    shift = r % len(variants)
    return [fn for _, fn in variants[shift:] + variants[:shift]]


# -- 1. async burst ---------------------------------------------------------------------


async def _burst(enricher: FeatureEnricher, users: Sequence[str]) -> Tuple[float, List[Any]]:
    began = time.perf_counter()
    results = await asyncio.gather(
        *(enricher.aenrich(PROMPT, user_id=u, task_type=TASK) for u in users)
    )
    return time.perf_counter() - began, list(results)


def burst_phase(fx: Fixture, users: List[str], rounds: int) -> List[Row]:
    loop = asyncio.new_event_loop()
    timeouts = {"default": None, "roomy": ROOMY_TIMEOUT_MS}
    walls: Dict[str, List[float]] = {"raw": [], "default": [], "roomy": []}
    outcomes: Dict[str, List[Outcome]] = {"default": [], "roomy": []}

    def guarded_round(name: str, record: bool) -> None:
        timeout = timeouts[name]
        enricher, guarded = fx.enricher() if timeout is None else fx.enricher(timeout_ms=timeout)
        gc.collect()
        wall, results = loop.run_until_complete(_burst(enricher, users))
        out = outcome_of(results, guarded)
        guarded.close()
        if record:
            walls[name].append(wall)
            outcomes[name].append(out)
            print(
                f"  burst {name:<7} ({timeout or 200:g} ms): {wall * 1e3:7.1f} ms, enriched "
                f"{out.enriched}/{len(users)}, breaker {out.breaker}, others {dict(out.reasons)}"
            )

    def raw_round(record: bool) -> None:
        gc.collect()
        began = time.perf_counter()
        fx.raw_batch(users)
        wall = time.perf_counter() - began
        if record:
            walls["raw"].append(wall)
            print(f"  raw batch of {len(users)}: {wall * 1e3:7.1f} ms")

    try:
        raw_round(False)  # warm-up, untimed
        guarded_round("default", False)
        guarded_round("roomy", False)
        variants: List[Tuple[str, Callable[[], None]]] = [
            ("raw", lambda: raw_round(True)),
            ("default", lambda: guarded_round("default", True)),
            ("roomy", lambda: guarded_round("roomy", True)),
        ]
        for r in range(rounds):
            for fn in rotated(variants, r):
                fn()
    finally:
        loop.close()
    n = len(users)
    return [
        Row(
            f"{n} x aenrich, timeout 200 ms (default) vs raw batch",
            walls["default"],
            walls["raw"],
            2.0,
            1.5,
            outcomes["default"],
        ),
        Row(
            f"{n} x aenrich, timeout {ROOMY_TIMEOUT_MS:g} ms vs raw batch",
            walls["roomy"],
            walls["raw"],
            2.0,
            1.5,
            outcomes["roomy"],
        ),
    ]


# -- 2. threads -------------------------------------------------------------------------


def _run_threads(work: Callable[[int], None], threads: int) -> float:
    """Wall time of ``work(t)`` on ``threads`` threads released together (start excluded)."""
    go = threading.Event()
    ready = threading.Barrier(threads + 1)

    def body(t: int) -> None:
        ready.wait()
        go.wait()
        work(t)

    pool = [threading.Thread(target=body, args=(t,), daemon=True) for t in range(threads)]
    for thread in pool:
        thread.start()
    ready.wait()
    gc.collect()
    began = time.perf_counter()
    go.set()
    for thread in pool:
        thread.join()
    return time.perf_counter() - began


def threads_phase(fx: Fixture, users: List[str], threads: int, calls: int, rounds: int) -> Row:
    share = [users[(t * calls + k) % len(users)] for t in range(threads) for k in range(calls)]
    guarded_walls: List[float] = []
    raw_walls: List[float] = []
    outcomes: List[Outcome] = []

    def guarded_round(record: bool) -> None:
        enricher, guarded = fx.enricher()
        results: List[Any] = [None] * len(share)

        def work(t: int) -> None:
            for k in range(t * calls, (t + 1) * calls):
                results[k] = enricher.enrich(PROMPT, user_id=share[k], task_type=TASK)

        wall = _run_threads(work, threads)
        out = outcome_of(results, guarded)
        guarded.close()
        if record:
            guarded_walls.append(wall)
            outcomes.append(out)
            print(
                f"  threads enrich: {wall * 1e3:7.1f} ms, enriched {out.enriched}/{len(share)}, "
                f"breaker {out.breaker}, others {dict(out.reasons)}"
            )

    def raw_round(record: bool) -> None:
        def work(t: int) -> None:
            for k in range(t * calls, (t + 1) * calls):
                fx.raw_single(share[k])

        wall = _run_threads(work, threads)
        if record:
            raw_walls.append(wall)
            print(f"  threads raw single reads: {wall * 1e3:7.1f} ms")

    raw_round(False)
    guarded_round(False)
    variants: List[Tuple[str, Callable[[], None]]] = [
        ("raw", lambda: raw_round(True)),
        ("guarded", lambda: guarded_round(True)),
    ]
    for r in range(rounds):
        for fn in rotated(variants, r):
            fn()
    return Row(
        f"{threads} threads x {calls} enrich vs raw single reads",
        guarded_walls,
        raw_walls,
        1.0,
        0.5,
        outcomes,
    )


# -- 3. lone request --------------------------------------------------------------------


def lone_phase(fx: Fixture, users: List[str], rounds: int) -> Row:
    enricher, guarded = fx.enricher()
    results: Dict[int, EnrichmentResult] = {}

    def raw(i: int) -> Any:
        return fx.raw_single(users[i % len(users)])

    def enrich(i: int) -> Any:
        results[i] = enricher.enrich(PROMPT, user_id=users[i % len(users)], task_type=TASK)

    times = interleave({"raw": raw, "enrich": enrich}, rounds, 100)
    out = outcome_of(list(results.values()), guarded)
    guarded.close()
    print(
        f"  lone enrich: {len(times['enrich'])} calls, enriched {out.enriched}/{len(results)}, "
        f"breaker {out.breaker}, others {dict(out.reasons)}"
    )
    return Row(
        "lone enrich vs raw single read (p50, blocks of 100)",
        times["enrich"],
        times["raw"],
        1.5,
        None,
        [out],
        latency=True,
    )


# -- 4. hung store ----------------------------------------------------------------------


class HungBackend:
    """A backend whose reads block until :meth:`release` (then answer normally)."""

    source = "hung"

    def __init__(self, names: Sequence[str]) -> None:
        self.released = threading.Event()
        self.values = {name: "x" for name in names}
        self.calls = 0

    def _vector(self, entity_id: str, entity_type: str, names: List[str]) -> FeatureVector:
        return FeatureVector(
            entity_id=entity_id,
            entity_type=entity_type,
            features={n: self.values.get(n, "x") for n in names},
            retrieved_at=utc_now(),
            freshness_seconds=0.0,
            source=self.source,
        )

    def get_features(self, entity_id: str, entity_type: str, names: List[str]) -> FeatureVector:
        self.calls += 1
        self.released.wait()
        return self._vector(entity_id, entity_type, names)

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, names: List[str]
    ) -> List[FeatureVector]:
        self.calls += 1
        self.released.wait()
        return [self._vector(e, entity_type, names) for e in entity_ids]

    def health_check(self) -> bool:
        return self.released.is_set()  # unhealthy while hung (does not block)

    def release(self) -> None:
        self.released.set()


def hung_phase(fx: Fixture, calls: int) -> Row:
    backend = HungBackend(FEATURES)
    guarded = GuardedClient(backend, timeout_ms=HUNG_TIMEOUT_MS)
    enricher = FeatureEnricher(guarded, fx.config)
    threads_before = threading.active_count()
    samples: List[float] = []
    results: List[EnrichmentResult] = []
    perf = time.perf_counter
    for k in range(calls):
        began = perf()
        result = enricher.enrich(PROMPT, user_id=f"hung_{k:05d}", task_type=TASK)
        samples.append(perf() - began)
        results.append(result)
    stuck = threading.active_count() - threads_before
    out = outcome_of(results, guarded)
    backend.release()
    guarded.close()
    slow = sum(1 for s in samples if s * 1e3 > HUNG_TIMEOUT_MS + DEADLINE_SLACK_MS)
    print(
        f"  hung store: {calls} lone calls, backend reads started {backend.calls}, threads "
        f"added {stuck}, enriched {out.enriched}, breaker {out.breaker}, reasons "
        f"{dict(out.reasons)}; p50 {percentile(samples, 0.5) * 1e3:.1f} ms, p99 "
        f"{percentile(samples, 0.99) * 1e3:.1f} ms, max {max(samples) * 1e3:.1f} ms; "
        "first 10 latencies ms "
        f"{[round(s * 1e3, 1) for s in samples[:10]]}; calls over "
        f"{HUNG_TIMEOUT_MS + DEADLINE_SLACK_MS:g} ms: {slow}"
    )
    return Row(
        f"lone enrich, hung store, timeout {HUNG_TIMEOUT_MS:g} ms (p99 ms)",
        samples,
        [],
        HUNG_TIMEOUT_MS + DEADLINE_SLACK_MS,
        None,
        [out],
        latency=True,
        absolute=True,
    )


# -- report -----------------------------------------------------------------------------


def verdict(
    value: float, target: float, stretch: Optional[float], fell_back: int
) -> Tuple[bool, str]:
    note = f" (worst round: {fell_back} fell back)" if fell_back else ""
    if value > target or fell_back:
        return False, "MISSED" + note
    if stretch is not None and value <= stretch:
        return True, "ok (stretch met)"
    return True, "ok"


def outcome_columns(outcomes: List[Outcome]) -> Tuple[str, str]:
    """The enriched count (min-max over rounds) and the breaker states after the rounds."""
    if not outcomes:
        return "", ""
    enriched = [o.enriched for o in outcomes]
    total = outcomes[0].enriched + sum(outcomes[0].reasons.values())
    low, high = min(enriched), max(enriched)
    enriched_text = f"{low}/{total}" if low == high else f"{low}-{high}/{total}"
    states = Counter(o.breaker for o in outcomes)
    breaker_text = ",".join(f"{s}x{n}" if n > 1 else s for s, n in states.items())
    return enriched_text, breaker_text


def print_table(rows: List[Row]) -> bool:
    ok = True
    header = (
        f"{'scenario':<58} {'guarded ms':>11} {'raw ms':>9} {'ratio':>6} {'rounds':>11} "
        f"{'target':>13} {'enriched':>16} {'breaker':>14}  verdict"
    )
    print(header)
    print("-" * (len(header) + 12))
    for row in rows:
        enriched_text, breaker_text = outcome_columns(row.outcomes)
        if row.absolute:  # an absolute bound on the guarded p99; falling back is expected
            p99 = percentile(row.guarded, 0.99) * 1e3
            met, text = verdict(p99, row.target, None, 0)
            ok &= met
            p50_text = f"p50 {percentile(row.guarded, 0.5) * 1e3:.1f}"
            print(
                f"{row.name:<58} {p99:>11.1f} {'':>9} {'':>6} {p50_text:>11} "
                f"{f'p99<={row.target:g}ms':>13} {enriched_text:>16} {breaker_text:>14}  {text}"
            )
            continue
        ratio = row.ratio()
        if row.latency:
            guarded_text = f"{percentile(row.guarded, 0.5) * 1e3:.3f}"
            raw_text = f"{percentile(row.raw, 0.5) * 1e3:.3f}"
            rounds_text = "p50/p50"
        else:
            guarded_text = f"{statistics.median(row.guarded) * 1e3:.1f}"
            raw_text = f"{statistics.median(row.raw) * 1e3:.1f}"
            spread = row.round_ratios()
            rounds_text = f"{min(spread):.2f}-{max(spread):.2f}"
        target_text = f"<={row.target:g}x" + (f" ({row.stretch:g}x)" if row.stretch else "")
        met, text = verdict(ratio, row.target, row.stretch, row.fell_back())
        ok &= met
        print(
            f"{row.name:<58} {guarded_text:>11} {raw_text:>9} {ratio:>6.2f} {rounds_text:>11} "
            f"{target_text:>13} {enriched_text:>16} {breaker_text:>14}  {text}"
        )
    return ok


def load_text() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def describe_code() -> str:
    src = Path(asahi_features.__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(src)
    return f"{src} (git {rev}{', modified' if dirty else ''})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2_000, help="users in the sample repo")
    parser.add_argument("--burst", type=int, default=1_000, help="concurrent aenrich calls")
    parser.add_argument("--burst-rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--calls", type=int, default=20, help="enrich calls per thread")
    parser.add_argument("--thread-rounds", type=int, default=9)
    parser.add_argument("--lone-rounds", type=int, default=20, help="blocks of 100 calls")
    parser.add_argument("--hung-calls", type=int, default=200)
    args = parser.parse_args()
    if args.users <= args.burst:
        parser.error("--users must exceed --burst (one user outside the burst warms clients)")

    from asahi_features.sample_repo import user_id

    print(f"asahi_features from {describe_code()}; python {sys.version.split()[0]}")
    print(f"load average before: {load_text()} ({os.cpu_count()} CPUs)")
    ids = [user_id(n) for n in range(1, args.users + 1)]
    burst_users = ids[: args.burst]
    workdir = Path(tempfile.mkdtemp(prefix="asahi_bench_burst_"))
    rows: List[Row] = []
    began = time.perf_counter()
    try:
        fx = Fixture(build_repo(workdir, args.users), warm_user=ids[-1])
        print("1. async burst")
        rows += burst_phase(fx, burst_users, args.burst_rounds)
        print("2. threads")
        rows.append(threads_phase(fx, burst_users, args.threads, args.calls, args.thread_rounds))
        print("3. lone request")
        rows.append(lone_phase(fx, ids, args.lone_rounds))
        print("4. hung store")
        rows.append(hung_phase(fx, args.hung_calls))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\nmeasured in {time.perf_counter() - began:.0f} s; load average after: {load_text()} "
        "(other processes on this machine share its CPUs)\n"
    )
    ok = print_table(rows)
    print(
        "\nratio: median guarded / median raw wall time over the rounds (lone: p50/p50); "
        "rounds: min-max of the per-round ratios; enriched: min-max over the rounds; a round "
        "that fell back counts as missed."
    )
    print(f"all targets met: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
