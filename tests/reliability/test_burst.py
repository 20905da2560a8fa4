"""Bursts through the guard: what a loaded service sends at once, healthy and hung.

Healthy store, roomy deadline (2 s), default guard settings otherwise: 1,000 concurrent
``aenrich`` for 1,000 distinct users, 64 threads x 50 ``enrich``, a LangChain burst and
a LlamaIndex burst. At least 99.9% must be enriched, every prompt carries only its own
user's marker (zero crossings, every row checked), un-enriched prompts are exactly the
original prompt, and the breaker stays closed: a burst against a healthy store is not a
store failure.

Store far past the deadline (100 ms deadline, every read answered only after ten
deadlines): every call is un-enriched with ``store_unavailable`` (a call still waiting
when the late answer comes would be enriched), with a bounded number of threads. One
request has ONE deadline: a task with user and organisation features, an
``enrich_batch`` of four task types and a two-id batch read fall back although the hung
store answers just after that one deadline (a deadline per part would still be waiting).
No elapsed-time bound anywhere: outcomes only.

Flapping store: the breaker opens on failures and closes again by itself once the store
answers (short cool-down, no ``reset()``).

Only public surfaces are used (top-level imports, ``guarded.breaker.state.value``,
``guarded.stats()``, the result fields), so the tests hold across the guard's rewrite.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, List, Type

import pytest

from asahi_features import (
    EnricherConfig,
    EnrichmentResult,
    FeastClient,
    FeatureEnricher,
    GuardedClient,
    LocalFeatureStore,
)
from asahi_features.langchain import FeatureEnrichmentRunnable
from tests.support.burst_helpers import (
    HEALTHY_TIMEOUT_MS,
    USERS,
    Burst,
    Row,
    async_burst,
    build_marker_repo,
    burst_config,
    check_burst,
    healthy_guard,
    local_feature_data,
    required,
    spread,
    thread_burst,
)
from tests.support.faults import AsyncFaultyBackend, FaultyBackend, answers_at
from tests.support.servers import wait_until

THREADS = 64
PER_THREAD = 50


# --------------------------------------------------------------------------- stores


@pytest.fixture(scope="module")
def local_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("burst_local") / "features.json"
    LocalFeatureStore.write(path, local_feature_data(USERS))
    return path


@pytest.fixture(scope="module")
def feast_client(tmp_path_factory: pytest.TempPathFactory) -> FeastClient:
    """One FeastClient for the module (two FeatureStore objects evict each other's
    caches, DESIGN.md): the test repository plus the marker view, SQLite online store."""
    repo = build_marker_repo(tmp_path_factory.mktemp("burst_feast"), USERS)
    return FeastClient(str(repo), "asahi")


@pytest.fixture(params=["local", "feast_sqlite"])
def healthy_guarded(request: pytest.FixtureRequest) -> Iterator[GuardedClient]:
    """A healthy store behind the burst guard (2 s deadline, defaults otherwise)."""
    if request.param == "local":
        client: Any = LocalFeatureStore(request.getfixturevalue("local_file"))
    else:
        client = request.getfixturevalue("feast_client")
    guarded = healthy_guard(client)
    yield guarded
    guarded.close()


# --------------------------------------------------------------------------- healthy


async def test_thousand_concurrent_aenrich_for_distinct_users(
    healthy_guarded: GuardedClient,
) -> None:
    enricher = FeatureEnricher(healthy_guarded, burst_config())
    burst = await async_burst(enricher, range(1, USERS + 1))
    assert len(burst.rows) == USERS
    check_burst(burst, healthy_guarded)


async def test_thousand_concurrent_aenrich_with_default_settings(local_file: Path) -> None:
    """The situation the guard issue opened with: a healthy store, the spec's default
    200 ms deadline and every other default, 1,000 requests at once. The local store's
    reads cost microseconds, so only the guard (queueing counted as failure, one backend
    call per request) could make these fall back; coalesced, the burst is one read."""
    guarded = GuardedClient(LocalFeatureStore(local_file))
    try:
        enricher = FeatureEnricher(guarded, burst_config())
        burst = await async_burst(enricher, range(1, USERS + 1))
        check_burst(burst, guarded)
        assert guarded.stats()["reads"] < USERS // 10, guarded.stats()
    finally:
        guarded.close()


def test_64_threads_x_50_enrich(healthy_guarded: GuardedClient) -> None:
    enricher = FeatureEnricher(healthy_guarded, burst_config())
    burst = thread_burst(
        enricher, THREADS, PER_THREAD, lambda t, i: (t * PER_THREAD + i) % USERS + 1
    )
    assert len(burst.rows) == THREADS * PER_THREAD
    check_burst(burst, healthy_guarded)


async def test_langchain_thousand_concurrent_ainvoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.langchain_helpers import clear_tracing_env, marker, write_features

    clear_tracing_env(monkeypatch)
    store = LocalFeatureStore(write_features(tmp_path / "features.json", users=USERS))
    guarded = healthy_guard(store)
    config = EnricherConfig(enabled_task_types=["general"], freshness_threshold_seconds=10**8)
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(guarded, config))

    async def one(n: int) -> Row:
        prompt = f"Question {n} about my order"
        began = time.perf_counter()
        out = await runnable.ainvoke(prompt, {"configurable": {"user_id": f"u_{n:03d}"}})
        result: EnrichmentResult = out.enrichment
        assert str(out) == result.enriched_prompt
        return Row(marker(n), prompt, result, time.perf_counter() - began)

    try:
        began = time.perf_counter()
        rows = await asyncio.gather(*(one(n) for n in range(USERS)))
        burst = Burst(list(rows), time.perf_counter() - began)
        check_burst(burst, guarded, pattern=re.compile(r"pref-\d{3}-zz"))
    finally:
        guarded.close()


LLAMA_QUERIES = 200


async def test_llama_index_concurrent_aquery(tmp_path: Path) -> None:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    from asahi_features.llama_index import FeatureContextPostprocessor, feature_context
    from tests.unit.llama_index_helpers import (
        RecordingLLM,
        offline_settings,
        user_id,
        user_marker,
        write_features,
    )

    store = LocalFeatureStore(write_features(tmp_path / "features.json", users=LLAMA_QUERIES))
    guarded = healthy_guard(store)
    enricher = FeatureEnricher(
        guarded, EnricherConfig(enabled_task_types=["general"], freshness_threshold_seconds=10**8)
    )
    pattern = re.compile(r"flavour\d{3}x")
    with offline_settings():
        index = VectorStoreIndex.from_documents(
            [Document(text="The store sells jackets, shoes and belts.")],
            embed_model=MockEmbedding(embed_dim=8),
        )
        llm = RecordingLLM()
        engine = index.as_query_engine(
            llm=llm, node_postprocessors=[FeatureContextPostprocessor(enricher)]
        )

        async def ask(i: int) -> List[EnrichmentResult]:
            with feature_context(user_id=user_id(i)) as request:
                await engine.aquery(f"question {i:04d}?")
                return list(request.results)

        try:
            began = time.perf_counter()
            results = await asyncio.gather(*(ask(i) for i in range(LLAMA_QUERIES)))
            wall = time.perf_counter() - began
        finally:
            guarded.close()

    prompts = llm.prompts
    assert len(prompts) == LLAMA_QUERIES
    own = 0
    crossings: List[str] = []
    for i in range(LLAMA_QUERIES):
        (prompt,) = [p for p in prompts if f"question {i:04d}?" in p]
        found = set(pattern.findall(prompt))
        own += found == {user_marker(i)}
        if found - {user_marker(i)}:
            crossings.append(f"{i}: {sorted(found)}")
    reasons: dict[str, int] = {}
    for chunk in results:
        for result in chunk:
            reasons[result.reason.value] = reasons.get(result.reason.value, 0) + 1
    summary = (
        f"{own}/{LLAMA_QUERIES} prompts carry their own marker (need "
        f"{required(LLAMA_QUERIES)}); reasons {reasons}; wall {wall:.2f}s; "
        f"breaker {guarded.breaker.state.value}"
    )
    assert crossings == [], f"crossings {crossings[:5]}; {summary}"
    assert own >= required(LLAMA_QUERIES), summary
    assert guarded.breaker.state.value == "closed", summary


# --------------------------------------------------------------------------- hung store

HANG_TIMEOUT_MS = 100
LATE_S = 10 * HANG_TIMEOUT_MS / 1000
"""When the "hung" store of the burst tests answers each read: ten deadlines late."""
MAX_WORKERS = 8
SPARE_THREADS = 4
"""Threads allowed beyond the guard's ``max_workers`` (event-loop helpers and the like)."""

HUNG_BACKENDS = [
    pytest.param(FaultyBackend, id="sync_backend"),
    pytest.param(AsyncFaultyBackend, id="async_backend"),
]


def _general_config() -> EnricherConfig:
    return EnricherConfig(enabled_task_types=["general"], freshness_threshold_seconds=10**9)


def _check_hung(burst: Burst, guarded: GuardedClient) -> None:
    """Every call fell back: none waited for the store's late answer (it would have been
    enriched), and each prompt is left as it was."""
    summary = burst.describe(guarded)
    assert burst.enriched == 0, f"calls waited past their deadline; {summary}"
    assert all(row.result.enriched_prompt == row.prompt for row in burst.rows), summary
    assert burst.reasons() == {"store_unavailable": len(burst.rows)}, summary


def _release(backend: FaultyBackend, guarded: GuardedClient) -> None:
    backend.release()
    released = wait_until(lambda: backend.in_flight == 0, timeout=5.0)
    guarded.close()
    assert released, f"{backend.in_flight} backend calls still stuck after release()"


@pytest.mark.parametrize("backend_class", HUNG_BACKENDS)
async def test_hung_store_200_concurrent_aenrich(backend_class: Type[FaultyBackend]) -> None:
    threads_before = threading.active_count()
    backend = backend_class("slow", delay=LATE_S)
    guarded = GuardedClient(backend, timeout_ms=HANG_TIMEOUT_MS, max_workers=MAX_WORKERS)
    enricher = FeatureEnricher(guarded, _general_config())
    try:
        burst = await async_burst(enricher, spread(200), task_type="general")
        threads_after = threading.active_count()
        _check_hung(burst, guarded)
        assert threads_after <= threads_before + MAX_WORKERS + SPARE_THREADS, (
            threads_before,
            threads_after,
        )
    finally:
        backend.release()
        for _ in range(500):  # a native read ends on this loop: let it run (5 s at most)
            if backend.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        _release(backend, guarded)


@pytest.mark.parametrize("backend_class", HUNG_BACKENDS)
def test_hung_store_32_threads_x_5_enrich(backend_class: Type[FaultyBackend]) -> None:
    threads_before = threading.active_count()
    backend = backend_class("slow", delay=LATE_S)
    guarded = GuardedClient(backend, timeout_ms=HANG_TIMEOUT_MS, max_workers=MAX_WORKERS)
    enricher = FeatureEnricher(guarded, _general_config())
    try:
        burst = thread_burst(enricher, 32, 5, lambda t, i: t * 5 + i + 1, task_type="general")
        threads_after = threading.active_count()  # the 32 callers have been joined
        assert len(burst.rows) == 160
        _check_hung(burst, guarded)
        assert threads_after <= threads_before + MAX_WORKERS + SPARE_THREADS, (
            threads_before,
            threads_after,
        )
    finally:
        _release(backend, guarded)


def test_user_and_organization_task_on_hung_store_costs_one_timeout() -> None:
    """The store hangs until one and a half deadlines have passed: the two parts of the
    request, read under one deadline, have fallen back by then (with a deadline each, one
    after the other or added up, at least one part would have been enriched)."""
    timeout_ms = 400
    backend = FaultyBackend("hang", features={"tier": "gold", "tone": "warm"})
    guarded = GuardedClient(backend, timeout_ms=timeout_ms)
    config = EnricherConfig(
        enabled_task_types=["account"],
        task_features={"account": {"user": ["tier"], "organization": ["tone"]}},
        freshness_threshold_seconds=10**9,
    )
    enricher = FeatureEnricher(guarded, config)
    try:
        with answers_at(backend, 1.5 * timeout_ms / 1000):
            result = enricher.enrich(
                "Help me", user_id="u_1", organization_id="acme", task_type="account"
            )
        assert guarded.stats()["requests"] == 1 and backend.calls == 2
        assert not result.features_available
        assert result.reason.value == "store_unavailable"
        assert result.enriched_prompt == "Help me"
    finally:
        _release(backend, guarded)


def test_enrich_batch_of_four_task_types_on_hung_store_is_bounded() -> None:
    """Four task types (four feature sets) in one batch: one deadline. The store hangs
    until two deadlines have passed; the batch has fallen back by then."""
    timeout_ms = 300
    backend = FaultyBackend("hang")
    guarded = GuardedClient(backend, timeout_ms=timeout_ms)
    tasks = ["general", "summarization", "faq", "customer_support"]  # four feature sets
    config = EnricherConfig(enabled_task_types=tasks, freshness_threshold_seconds=10**9)
    enricher = FeatureEnricher(guarded, config)
    requests = [
        {"prompt": f"prompt {k}", "user_id": f"u_{k}", "task_type": task}
        for k, task in enumerate(tasks)
    ]
    try:
        with answers_at(backend, 2 * timeout_ms / 1000):
            results = enricher.enrich_batch(requests)
        assert guarded.stats()["requests"] == 1
        assert [r.enriched_prompt for r in results] == [f"prompt {k}" for k in range(4)]
        assert {r.reason.value for r in results} == {"store_unavailable"}
    finally:
        _release(backend, guarded)


def test_get_batch_features_on_hung_store_is_bounded() -> None:
    """A batch of two ids gets about one deadline (200 ms), not seconds: the store hangs
    until 400 ms have passed, and the batch has fallen back by then."""
    backend = FaultyBackend("hang")
    guarded = GuardedClient(backend, timeout_ms=200)
    try:
        with answers_at(backend, 0.4):
            vectors = guarded.get_batch_features(["u_1", "u_2"], "user", ["tier"])
        assert [v.entity_id for v in vectors] == ["u_1", "u_2"]
        assert [v.status.value for v in vectors] == ["unavailable", "unavailable"]
    finally:
        _release(backend, guarded)


# --------------------------------------------------------------------------- flapping


def test_breaker_opens_on_failures_and_closes_by_itself() -> None:
    backend = FaultyBackend("raise")
    guarded = GuardedClient(backend, timeout_ms=HEALTHY_TIMEOUT_MS, breaker_reset_seconds=0.2)
    enricher = FeatureEnricher(guarded, _general_config())
    try:
        failed: List[EnrichmentResult] = []
        for k in range(200):
            failed.append(enricher.enrich(f"failing {k}", user_id=f"u_{k}"))
            if guarded.breaker.state.value == "open":
                break
        assert guarded.breaker.state.value == "open", guarded.stats()
        assert {r.reason.value for r in failed} == {"store_unavailable"}

        backend.set_mode("ok")
        calls_when_healthy = backend.calls
        recovered_after = None
        deadline = time.monotonic() + 10.0
        k = 0
        while time.monotonic() < deadline:
            time.sleep(0.02)
            result = enricher.enrich(f"healing {k}", user_id=f"u_{k}")
            k += 1
            if result.features_available and guarded.breaker.state.value == "closed":
                recovered_after = k
                break
        assert recovered_after is not None, (
            f"breaker {guarded.breaker.state.value} after {k} requests; {guarded.stats()}"
        )
        assert backend.calls > calls_when_healthy  # probes reached the store again
        after = [enricher.enrich(f"healthy {j}", user_id=f"u_{j}") for j in range(20)]
        assert all(r.features_available for r in after), [r.reason.value for r in after]
        assert guarded.breaker.state.value == "closed"
    finally:
        guarded.close()
