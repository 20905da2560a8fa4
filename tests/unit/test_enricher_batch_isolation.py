"""Large enricher batches: every row gets its own entity's features and nobody else's.

A batch of 1,000 requests, each user (and each organisation) with a unique marker value:
every result must carry exactly its own markers, through every read path (a plain
backend, the guard, the guard around a native async backend, concurrent batches merged
into shared backend reads), sync and async. Small batches cannot notice a mix-up past
row 50 or at the boundary of a merged read.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Dict, List

import pytest

from asahi_features.enricher import FeatureEnricher
from asahi_features.guard import GuardedClient
from asahi_features.models import (
    EnrichmentReason,
    EnrichmentRequest,
    EnrichmentResult,
    FeatureStatus,
    FeatureVector,
)
from asahi_features.settings import EnricherConfig

USERS = 1000
ORGS = 37
NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)
USER_MARK = re.compile(r"UMARK\d{4}")
ORG_MARK = re.compile(r"OMARK\d{4}")


def user_mark(n: int) -> str:
    return f"UMARK{n:04d}"


def org_mark(n: int) -> str:
    return f"OMARK{n:04d}"


class MarkerStore:
    """Every entity has one feature, ``tier``, whose value names the entity (sync only)."""

    source = "markers"

    def __init__(self) -> None:
        self.batch_sizes: List[int] = []

    def vector(self, entity_id: str, entity_type: str, names: List[str]) -> FeatureVector:
        n = int(entity_id[1:])
        value = user_mark(n) if entity_type == "user" else org_mark(n)
        features = {"tier": value} if "tier" in names else {}
        return FeatureVector(
            entity_id=entity_id,
            entity_type=entity_type,
            features=features,
            retrieved_at=NOW,
            freshness_seconds=1.0,
            source=self.source,
            status=FeatureStatus.FOUND,
            feature_freshness=dict.fromkeys(features, 1.0),
        )

    def get_features(self, entity_id: str, entity_type: str, names: List[str]) -> FeatureVector:
        self.batch_sizes.append(1)
        return self.vector(entity_id, entity_type, names)

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, names: List[str]
    ) -> List[FeatureVector]:
        self.batch_sizes.append(len(entity_ids))
        return [self.vector(eid, entity_type, names) for eid in entity_ids]

    def health_check(self) -> bool:
        return True


class AsyncMarkerStore(MarkerStore):
    """The same store with native ``aget_*`` coroutines (the guard awaits them)."""

    async def aget_features(
        self, entity_id: str, entity_type: str, names: List[str]
    ) -> FeatureVector:
        return self.get_features(entity_id, entity_type, names)

    async def aget_batch_features(
        self, entity_ids: List[str], entity_type: str, names: List[str]
    ) -> List[FeatureVector]:
        return self.get_batch_features(entity_ids, entity_type, names)


def requests() -> List[EnrichmentRequest]:
    """1,000 requests: user ``u{n}`` for row n, organisations shared (``o{n % 37}``)."""
    return [
        EnrichmentRequest(
            prompt=f"q{n}", user_id=f"u{n}", organization_id=f"o{n % ORGS}", task_type="t"
        )
        for n in range(USERS)
    ]


def make_enricher(path: str, max_batch_size: int = 1000) -> FeatureEnricher:
    store: MarkerStore = AsyncMarkerStore() if path == "guard-native" else MarkerStore()
    client: Any = store
    if path != "plain":
        client = GuardedClient(
            store, timeout_ms=10_000, batch_timeout_ms=60_000, max_batch_size=max_batch_size
        )
    config = EnricherConfig(
        task_features={"t": {"user": ["tier"], "organization": ["tier"]}},
        enabled_task_types=["t"],
        freshness_threshold_seconds=3600,
    )
    return FeatureEnricher(client, config)


def check_rows(results: List[EnrichmentResult]) -> None:
    """Every row: its own prompt, its user's marker and its organisation's, no other."""
    assert len(results) == USERS
    wrong: Dict[int, Any] = {}
    for n, result in enumerate(results):
        users = USER_MARK.findall(result.enriched_prompt)
        orgs = ORG_MARK.findall(result.enriched_prompt)
        if (
            result.original_prompt != f"q{n}"
            or result.reason is not EnrichmentReason.ENRICHED
            or users != [user_mark(n)]
            or orgs != [org_mark(n % ORGS)]
        ):
            wrong[n] = (result.original_prompt, result.reason, users, orgs)
    assert not wrong, (
        f"{len(wrong)} rows with another entity's data, e.g. {list(wrong.items())[:3]}"
    )


@pytest.mark.parametrize("path", ["plain", "guard"])
def test_enrich_batch_of_1000_gives_every_row_its_own_features(path: str) -> None:
    check_rows(make_enricher(path).enrich_batch(requests()))


@pytest.mark.parametrize("path", ["plain", "guard", "guard-native"])
async def test_aenrich_batch_of_1000_gives_every_row_its_own_features(path: str) -> None:
    check_rows(await make_enricher(path).aenrich_batch(requests()))


def test_batch_rows_in_reverse_order_still_get_their_own_features() -> None:
    """The same 1,000 requests, last user first: matching never depends on position."""
    results = make_enricher("guard").enrich_batch(requests()[::-1])
    check_rows(results[::-1])


@pytest.mark.parametrize("path", ["guard", "guard-native"])
async def test_concurrent_batches_coalesced_into_shared_reads_keep_rows_apart(path: str) -> None:
    """Ten batches of 100 at once: the guard merges their lookups into reads of up to 250
    ids, several batches per read), and each row still gets only its own."""
    enricher = make_enricher(path, max_batch_size=250)
    rows = requests()
    parts = await asyncio.gather(
        *(enricher.aenrich_batch(rows[k : k + 100]) for k in range(0, USERS, 100))
    )
    check_rows([result for part in parts for result in part])


def test_concurrent_sync_batches_keep_rows_apart() -> None:
    """The same from ten threads (the guard's thread coalescer)."""
    enricher = make_enricher("guard", max_batch_size=250)
    rows = requests()
    with ThreadPoolExecutor(max_workers=10) as pool:
        parts = list(
            pool.map(enricher.enrich_batch, [rows[k : k + 100] for k in range(0, USERS, 100)])
        )
    check_rows([result for part in parts for result in part])
