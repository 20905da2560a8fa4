"""Shared pieces of the burst tests (tests/reliability/test_burst.py and
tests/integration/test_burst_servers.py).

Every burst user ``n`` (1-based, the sample repository's ids ``u_0001``...) has a unique
marker value ``mk0001q``... in its features, in every store: a JSON file for
:class:`LocalFeatureStore`, and a ``user_marker`` feature view added to a real Feast
repository (SQLite or Redis, also served by ``feast serve``). A burst passes when at
least 99.9% of its requests are enriched, no prompt carries another user's marker (zero
crossings, checked on every row), every un-enriched prompt is exactly the original
prompt, and the guard's breaker is still closed.

Only public surfaces are used: top-level imports, ``guarded.breaker.state.value``,
``guarded.stats()`` and the :class:`EnrichmentResult` fields.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Literal, NamedTuple, Optional

from asahi_features import EnricherConfig, EnrichmentResult, FeatureEnricher, GuardedClient
from asahi_features.sample_repo import user_id

__all__ = [
    "BURST_TASK",
    "HEALTHY_TIMEOUT_MS",
    "MARKER",
    "MARKER_VIEW",
    "REQUIRED_SHARE",
    "USERS",
    "Burst",
    "Row",
    "async_burst",
    "build_marker_repo",
    "burst_config",
    "check_burst",
    "healthy_guard",
    "http_feature_views",
    "local_feature_data",
    "marker",
    "required",
    "spread",
    "thread_burst",
    "user_id",
]

USERS = 1000
"""Distinct users of a burst (ids ``u_0001`` .. ``u_1000``)."""

REQUIRED_SHARE = 0.999
"""Share of a healthy burst that must be enriched."""

HEALTHY_TIMEOUT_MS = 2000
"""The guard's deadline on the healthy paths: roomy, so a loaded machine cannot flake."""

BURST_TASK = "burst"
MARKER_VIEW = "user_marker"
MARKER = re.compile(r"mk\d{4}q")


def marker(n: int) -> str:
    """The value only user ``n`` has (``mk0042q``)."""
    return f"mk{n:04d}q"


def required(total: int) -> int:
    """How many of ``total`` requests must be enriched (99.9%, rounded up)."""
    return math.ceil(total * REQUIRED_SHARE - 1e-9)


def burst_config() -> EnricherConfig:
    """One task mapping the user's ``tier`` and ``marker``; freshness never rejects."""
    return EnricherConfig(
        enabled_task_types=[BURST_TASK],
        task_features={BURST_TASK: {"user": ["tier", "marker"]}},
        freshness_threshold_seconds=10**9,
        max_feature_tokens=200,
    )


def healthy_guard(client: Any) -> GuardedClient:
    """The guard every healthy burst uses: a 2 s deadline, every other setting default."""
    return GuardedClient(client, timeout_ms=HEALTHY_TIMEOUT_MS)


def local_feature_data(users: int = USERS) -> Dict[str, Any]:
    """Content for ``LocalFeatureStore.write``: users 1..``users`` with their markers."""
    return {
        "user": {
            user_id(n): {
                "updated_at": "2026-01-01T00:00:00Z",  # within the 10**9 s threshold
                "features": {"tier": ["gold", "silver", "bronze"][n % 3], "marker": marker(n)},
            }
            for n in range(1, users + 1)
        }
    }


def build_marker_repo(
    path: Path,
    users: int = USERS,
    *,
    online_store: Literal["sqlite", "redis"] = "sqlite",
    redis_connection: Optional[str] = None,
) -> Path:
    """The test Feast repository (tests/support/feast_helpers.py) plus a ``user_marker`` view
    holding each user's marker, loaded online. Returns the repository directory."""
    from tests.support.feast_helpers import add_feature_view, build_test_repo

    repo = build_test_repo(
        path,
        users=users,
        online_store=online_store,
        redis_connection=redis_connection,
        with_test_views=False,
    )
    now = datetime.now(timezone.utc)
    rows = [
        {"user_id": user_id(n), "event_timestamp": now, "marker": marker(n)}
        for n in range(1, users + 1)
    ]
    add_feature_view(repo, MARKER_VIEW, {"marker": "string"}, rows)
    return repo


def http_feature_views() -> Dict[str, List[str]]:
    """``feature_views`` for an :class:`HttpFeatureStore` serving the marker repository."""
    return {"user": ["user_profile:tier", f"{MARKER_VIEW}:marker"]}


class Row(NamedTuple):
    """One request of a burst: the marker its prompt must carry, the prompt, the result
    and how long the call took (seconds)."""

    own: str
    prompt: str
    result: EnrichmentResult
    elapsed: float


@dataclass
class Burst:
    """The rows of one burst and its wall time."""

    rows: List[Row]
    wall: float

    @property
    def enriched(self) -> int:
        return sum(1 for row in self.rows if row.result.features_available)

    def reasons(self) -> Dict[str, int]:
        return dict(Counter(row.result.reason.value for row in self.rows))

    def describe(self, guarded: Optional[GuardedClient] = None) -> str:
        """Counts, reasons, durations and (given the guard) its breaker and counters."""
        total = len(self.rows)
        slowest = max((row.elapsed for row in self.rows), default=0.0)
        text = (
            f"{self.enriched}/{total} enriched (need {required(total)}); "
            f"reasons {self.reasons()}; wall {self.wall:.2f}s, slowest call {slowest:.2f}s"
        )
        if guarded is not None:
            stats = guarded.stats()
            counters = {
                k: v
                for k, v in stats.items()
                if isinstance(v, int) and not isinstance(v, bool) and v
            }
            text += f"; breaker {guarded.breaker.state.value}; guard {counters}"
        return text


def check_burst(
    burst: Burst,
    guarded: Optional[GuardedClient],
    pattern: re.Pattern[str] = MARKER,
) -> None:
    """Assert the outcome of a healthy burst (see the module docstring).

    Every row: an enriched prompt carries exactly its own marker (``pattern`` finds every
    user's marker) and ends with the original prompt; an un-enriched prompt is exactly the
    original. Then: at least 99.9% enriched, and the guard's breaker closed.
    """
    crossings: List[str] = []
    altered: List[str] = []
    for row in burst.rows:
        result = row.result
        found = set(pattern.findall(result.enriched_prompt))
        if result.features_available:
            if found != {row.own} or not result.enriched_prompt.endswith(row.prompt):
                crossings.append(f"{row.own}: {sorted(found)}")
        elif result.enriched_prompt != row.prompt:
            altered.append(f"{row.own} ({result.reason.value})")
    summary = burst.describe(guarded)
    assert crossings == [], f"{len(crossings)} crossings, e.g. {crossings[:5]}; {summary}"
    assert altered == [], f"{len(altered)} un-enriched prompts altered {altered[:5]}; {summary}"
    assert burst.enriched >= required(len(burst.rows)), summary
    if guarded is not None:
        assert guarded.breaker.state.value == "closed", summary


async def async_burst(
    enricher: FeatureEnricher,
    users: Iterable[int],
    task_type: str = BURST_TASK,
) -> Burst:
    """One concurrent ``aenrich`` per user (``asyncio.gather``), each user's own prompt."""

    async def one(k: int, n: int) -> Row:
        prompt = f"Async question {k} from {user_id(n)}: what should I buy?"
        began = time.perf_counter()
        result = await enricher.aenrich(prompt, user_id=user_id(n), task_type=task_type)
        return Row(marker(n), prompt, result, time.perf_counter() - began)

    began = time.perf_counter()
    rows = await asyncio.gather(*(one(k, n) for k, n in enumerate(users)))
    return Burst(list(rows), time.perf_counter() - began)


def thread_burst(
    enricher: FeatureEnricher,
    threads: int,
    per_thread: int,
    user_for: Callable[[int, int], int],
    task_type: str = BURST_TASK,
) -> Burst:
    """``threads`` threads, started together, each making ``per_thread`` sync ``enrich``
    calls; request ``i`` of thread ``t`` is for user ``user_for(t, i)``."""
    start = threading.Barrier(threads)
    chunks: List[List[Row]] = [[] for _ in range(threads)]
    errors: List[BaseException] = []

    def worker(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                n = user_for(t, i)
                prompt = f"Thread {t} question {i} from {user_id(n)}"
                began = time.perf_counter()
                result = enricher.enrich(prompt, user_id=user_id(n), task_type=task_type)
                chunks[t].append(Row(marker(n), prompt, result, time.perf_counter() - began))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    workers = [
        threading.Thread(target=worker, args=(t,), name=f"burst-{t}") for t in range(threads)
    ]
    began = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    wall = time.perf_counter() - began
    if errors:
        raise errors[0]
    return Burst([row for chunk in chunks for row in chunk], wall)


def spread(count: int, users: int = USERS) -> Sequence[int]:
    """``count`` user numbers cycling through 1..``users`` (distinct when count <= users)."""
    return [k % users + 1 for k in range(count)]
