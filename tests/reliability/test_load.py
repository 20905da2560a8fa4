"""Load: many threads and many concurrent coroutines enriching for mixed users at once.

Checked for every request: the prompt carries only its own user's features (each user
has a unique marker value; zero crossings), un-enriched prompts are exactly the original
prompt, the monitor counted every request exactly once, and every request got what a
healthy store must give: enriched, unless the monitor's holdout (a deterministic hash of
the user) put it in the control group. Deadlines are roomy (2 s; 5 s for Feast) and no
elapsed time is asserted: a read past its deadline shows as a fallback, which fails.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from asahi_features.enricher import FeatureEnricher
from asahi_features.guard import GuardedClient
from asahi_features.models import EnrichmentReason, EnrichmentResult
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import EnricherConfig, MonitorConfig
from asahi_features.stores.local import LocalFeatureStore

USERS = 500
THREADS = 32
THREAD_REQUESTS = 10_000
ASYNC_REQUESTS = 1_000
TIMEOUT_MS = 2_000
MARKER = re.compile(r"MK\d{5}[A-Z]")
NEVER_OPENS: Dict[str, Any] = {"breaker_window": 10_000, "breaker_minimum_calls": 10_000}
"""A breaker that never judges a load test's reads (a slow moment must not open it)."""


def marker(n: int, kind: str) -> str:
    return f"MK{n:05d}{kind}"


def uid(n: int) -> str:
    return f"user-{n:05d}"


@pytest.fixture(scope="module")
def feature_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("load") / "features.json"
    LocalFeatureStore.write(
        path,
        {
            "user": {
                uid(n): {
                    "updated_at": "2026-01-01T00:00:00Z",  # within the 10**9 s threshold
                    "features": {
                        "tier": marker(n, "T"),
                        "preferences": [marker(n, "P"), "casual"],
                        "preferred_language": f"lang {marker(n, 'L')}",
                    },
                }
                for n in range(USERS)
            }
        },
    )
    return path


def _enricher(path: Path, holdout: float = 0.1) -> Tuple[FeatureEnricher, GuardedClient]:
    guarded = GuardedClient(
        LocalFeatureStore(path),
        timeout_ms=TIMEOUT_MS,
        max_workers=THREADS,
        **NEVER_OPENS,
    )
    monitor = FeatureMonitor(MonitorConfig(holdout_fraction={"general": holdout}), breaker=guarded)
    config = EnricherConfig(
        freshness_threshold_seconds=10**9,
        max_feature_tokens=200,
        # explicit: the default general map (spec-table features only) has no language
        task_features={"general": {"user": ["tier", "preferences", "preferred_language"]}},
    )
    return FeatureEnricher(guarded, config, monitor=monitor), guarded


def _verify(
    enricher: FeatureEnricher, results: List[Tuple[int, str, EnrichmentResult]]
) -> Counter[str]:
    """Zero crossings, and every request enriched unless held out (the monitor's holdout
    is a deterministic hash of the task type and user); returns the count of outcomes
    by reason."""
    monitor = enricher.monitor
    assert isinstance(monitor, FeatureMonitor)
    reasons: Counter[str] = Counter()
    for n, prompt, result in results:
        held = monitor.is_held_out(result.task_type, uid(n))
        expected = EnrichmentReason.HELD_OUT if held else EnrichmentReason.ENRICHED
        assert result.reason is expected, (n, result.reason, result.entity_status)
        assert result.original_prompt == prompt
        assert result.enriched_prompt.endswith(prompt)
        found = set(MARKER.findall(result.feature_context))
        if result.features_available:
            assert found == {marker(n, "T"), marker(n, "P"), marker(n, "L")}, (n, found)
        else:
            assert result.enriched_prompt == prompt and found == set()
        # the prompt itself names its user; no other user's marker anywhere
        assert set(MARKER.findall(result.enriched_prompt)) == found
        reasons[result.reason.value] += 1
    return reasons


def _check_monitor(enricher: FeatureEnricher, results: List[Any], reasons: Counter[str]) -> None:
    monitor = enricher.monitor
    assert isinstance(monitor, FeatureMonitor)
    stats = monitor.get_stats()
    total = len(results)
    assert stats["total_enrichments"] == total
    assert stats["successful_enrichments"] == reasons[EnrichmentReason.ENRICHED.value]
    assert stats["held_out_enrichments"] == reasons[EnrichmentReason.HELD_OUT.value]
    assert stats["reasons"] == dict(reasons)
    assert stats["latency_ms"]["sample_size"] == min(total, 4096)


def _check_reads(stats: Dict[str, Any]) -> None:
    """Every lookup of a healthy store reached it, alone or coalesced into another's read."""
    assert stats["timeouts"] == stats["overloaded"] == stats["unavailable"] == 0
    assert stats["bad_vectors"] == 0 and stats["waiting"] == 0
    assert stats["reads"] + stats["lookups_coalesced"] == stats["requests"] > 0
    assert stats["breaker"]["state"] == "closed"


def test_ten_thousand_enrichments_from_32_threads(feature_file: Path) -> None:
    enricher, guarded = _enricher(feature_file)
    start = threading.Barrier(THREADS)
    per_thread = THREAD_REQUESTS // THREADS
    remainder = THREAD_REQUESTS - per_thread * THREADS

    def worker(t: int) -> List[Tuple[int, str, EnrichmentResult]]:
        out = []
        start.wait()
        for i in range(per_thread + (1 if t < remainder else 0)):
            n = (t * 7919 + i * 31) % USERS
            prompt = f"Question {t}/{i} from {uid(n)}: what should I buy?"
            result = enricher.enrich(prompt, user_id=uid(n), task_type="general")
            out.append((n, prompt, result))
        return out

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            results = [r for chunk in pool.map(worker, range(THREADS)) for r in chunk]
        assert len(results) == THREAD_REQUESTS
        reasons = _verify(enricher, results)
        _check_monitor(enricher, results, reasons)
        held_out = reasons[EnrichmentReason.HELD_OUT.value]
        assert 0 < held_out < THREAD_REQUESTS  # the control group exists, and is not all
        assert reasons == {"enriched": THREAD_REQUESTS - held_out, "held_out": held_out}
        assert len({r.enrichment_id for _, _, r in results}) == THREAD_REQUESTS
        stats = guarded.stats()
        assert stats["fallbacks"] == 0  # nothing fell back
        assert stats["requests"] == THREAD_REQUESTS - held_out  # one per enriched request
        _check_reads(stats)
    finally:
        guarded.close()


async def test_thousand_concurrent_async_enrichments(feature_file: Path) -> None:
    enricher, guarded = _enricher(feature_file)

    async def one(i: int) -> Tuple[int, str, EnrichmentResult]:
        n = (i * 37) % USERS
        prompt = f"Async question {i} from {uid(n)}"
        result = await enricher.aenrich(prompt, user_id=uid(n), task_type="general")
        return n, prompt, result

    try:
        results = await asyncio.gather(*(one(i) for i in range(ASYNC_REQUESTS)))
        reasons = _verify(enricher, list(results))
        _check_monitor(enricher, list(results), reasons)
        held_out = reasons[EnrichmentReason.HELD_OUT.value]
        assert reasons == {"enriched": ASYNC_REQUESTS - held_out, "held_out": held_out}
        stats = guarded.stats()
        assert stats["fallbacks"] == 0 and stats["requests"] == ASYNC_REQUESTS - held_out
        _check_reads(stats)
        # a thousand coroutines at once: lookups that found a read in flight rode the next
        assert stats["lookups_coalesced"] > 0 and stats["workers"] <= THREADS
    finally:
        guarded.close()


async def test_concurrent_async_batches_keep_users_apart(feature_file: Path) -> None:
    from asahi_features.models import EnrichmentRequest

    enricher, guarded = _enricher(feature_file, holdout=0.0)

    async def batch(b: int) -> List[Tuple[int, str, EnrichmentResult]]:
        ns = [(b * 13 + k * 7) % USERS for k in range(50)]
        requests = [
            EnrichmentRequest(prompt=f"batch {b} item {k} {uid(n)}", user_id=uid(n))
            for k, n in enumerate(ns)
        ]
        results = await enricher.aenrich_batch(requests)
        return [(n, r.prompt, res) for n, r, res in zip(ns, requests, results, strict=True)]

    try:
        chunks = await asyncio.gather(*(batch(b) for b in range(40)))
        results = [r for chunk in chunks for r in chunk]
        reasons = _verify(enricher, results)
        _check_monitor(enricher, results, reasons)
        assert reasons == {"enriched": 40 * 50}  # no holdout here: every request
        stats = guarded.stats()
        assert stats["fallbacks"] == 0 and stats["requests"] == 40  # one per batch
        _check_reads(stats)
    finally:
        guarded.close()


# --------------------------------------------------------------------------- Feast

FEAST_USERS = 200
FEAST_THREAD_REQUESTS = 2_000
FEAST_ASYNC_REQUESTS = 300


@pytest.fixture(scope="module")
def feast_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.feast_helpers import build_test_repo

    return build_test_repo(tmp_path_factory.mktemp("feast_load"), users=FEAST_USERS)


def _feast_enricher(repo: Path) -> Tuple[FeatureEnricher, GuardedClient]:
    from asahi_features.stores.feast_store import FeastClient

    guarded = GuardedClient(
        FeastClient(str(repo), "asahi"),
        timeout_ms=5_000,
        max_workers=THREADS,
        **NEVER_OPENS,
    )
    config = EnricherConfig(
        freshness_threshold_seconds=10**9,
        max_feature_tokens=400,
        enabled_task_types=["support"],
        task_features={"support": {"user": ["tier", "preferences", "purchase_history"]}},
    )
    return FeatureEnricher(guarded, config, monitor=FeatureMonitor()), guarded


def test_feast_sqlite_under_threads_and_coroutines(feast_repo: Path) -> None:
    from asahi_features.sample_repo import user_id

    enricher, guarded = _feast_enricher(feast_repo)
    try:
        users = [user_id(n) for n in range(1, FEAST_USERS + 1)]
        # Ground truth: each user's block, fetched one by one before the load starts.
        expected: Dict[str, str] = {}
        for u in users:
            result = enricher.enrich(f"warm {u}", user_id=u, task_type="support")
            expected[u] = result.feature_context
        distinct = {ctx for ctx in expected.values() if ctx}
        assert len(distinct) > FEAST_USERS * 0.9, "the sample users must be tell-apart-able"

        def check(u: str, prompt: str, result: EnrichmentResult) -> None:
            assert result.enriched_prompt.endswith(prompt)
            # Healthy local SQLite, generous timeout, no holdout: every user with a
            # non-empty expected block must be enriched with exactly that block.
            assert result.features_available == bool(expected[u]), (u, result.reason)
            if result.features_available:
                assert result.feature_context == expected[u], u
            else:
                assert result.enriched_prompt == prompt

        def thread_user(t: int, i: int) -> str:
            return users[(t * 31 + i * 7) % FEAST_USERS]

        def async_user(i: int) -> str:
            return users[(i * 11) % FEAST_USERS]

        per_thread = FEAST_THREAD_REQUESTS // THREADS

        def worker(t: int) -> int:
            enriched = 0
            for i in range(per_thread):
                u = thread_user(t, i)
                prompt = f"t{t} i{i} {u}"
                result = enricher.enrich(prompt, user_id=u, task_type="support")
                check(u, prompt, result)
                enriched += result.features_available
            return enriched

        with ThreadPoolExecutor(THREADS) as pool:
            enriched = sum(pool.map(worker, range(THREADS)))
        thread_total = per_thread * THREADS
        assert enriched == sum(
            bool(expected[thread_user(t, i)]) for t in range(THREADS) for i in range(per_thread)
        )

        async def run_async() -> int:
            async def one(i: int) -> bool:
                u = async_user(i)
                prompt = f"async {i} {u}"
                result = await enricher.aenrich(prompt, user_id=u, task_type="support")
                check(u, prompt, result)
                return result.features_available

            return sum(await asyncio.gather(*(one(i) for i in range(FEAST_ASYNC_REQUESTS))))

        async_enriched = asyncio.run(run_async())
        assert async_enriched == sum(
            bool(expected[async_user(i)]) for i in range(FEAST_ASYNC_REQUESTS)
        )
        monitor = enricher.monitor
        assert isinstance(monitor, FeatureMonitor)
        total = FEAST_USERS + thread_total + FEAST_ASYNC_REQUESTS
        assert monitor.get_stats()["total_enrichments"] == total
    finally:
        guarded.close()
