"""FeatureContextPostprocessor overhead over a direct ``FeatureEnricher.enrich`` call.

Measured in one process and one run, interleaved in blocks (so that drift and Feast's
process-wide cache affect both sides alike):

* ``enrich``: ``enricher.enrich(query, user_id=...)``, the baseline;
* ``postprocess``: ``postprocess_nodes(nodes, query_bundle)`` inside
  ``feature_context(user_id=...)``, i.e. everything LlamaIndex does around it (the
  instrumentation span, the FeatureEnrichmentEvent, the injected TextNode);
* the same pair on the async path (``aenrich`` vs ``apostprocess_nodes``);
* one agent turn's memory read: ``FeatureMemoryBlock.aget(messages)`` (the block with its
  own identity, as ``Memory`` calls it for every LLM call) vs ``aenrich`` (target: p50
  ratio <= 1.1).

Backends, from the configuration users get to the cheapest possible store:

1. the sample Feast repository (SQLite online store) behind ``GuardedClient``, as
   ``client_from_config`` builds it (target: p50 ratio <= 1.1);
2. the same ``FeastClient`` without the guard (reported against the same target);
3. ``LocalFeatureStore`` (a JSON file held in memory): the enricher is so cheap there
   that the ratio shows the postprocessor's fixed cost in isolation (no target).

Usage: .venv/bin/python benchmarks/bench_llama_index.py [--rounds 20] [--block 200] [--no-feast]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List

from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from asahi_features.enricher import FeatureEnricher
from asahi_features.llama_index import (
    FeatureContextPostprocessor,
    FeatureMemoryBlock,
    feature_context,
)
from asahi_features.stores.local import LocalFeatureStore

TARGET_RATIO = 1.1
QUERY = "What should I buy next?"


def _p50(samples: List[float]) -> float:
    return statistics.median(samples)


def _measure_sync(
    pairs: Dict[str, Callable[[], Any]], rounds: int, block: int
) -> Dict[str, List[float]]:
    out: Dict[str, List[float]] = {name: [] for name in pairs}
    for fn in pairs.values():  # warm-up
        for _ in range(50):
            fn()
    items = list(pairs.items())
    for round_ in range(rounds):
        for name, fn in items if round_ % 2 == 0 else items[::-1]:  # alternate the order
            samples = out[name]
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
    return out


async def _measure_async(
    pairs: Dict[str, Callable[[], Awaitable[Any]]], rounds: int, block: int
) -> Dict[str, List[float]]:
    out: Dict[str, List[float]] = {name: [] for name in pairs}
    for fn in pairs.values():
        for _ in range(50):
            await fn()
    items = list(pairs.items())
    for round_ in range(rounds):
        for name, fn in items if round_ % 2 == 0 else items[::-1]:
            samples = out[name]
            for _ in range(block):
                t0 = time.perf_counter()
                await fn()
                samples.append(time.perf_counter() - t0)
    return out


def _report(title: str, sync: Dict[str, List[float]], asyn: Dict[str, List[float]]) -> float:
    print(f"\n== {title}")
    worst = 0.0
    for label, data, base, ours in (
        ("sync ", sync, "enrich", "postprocess"),
        ("async", asyn, "aenrich", "apostprocess"),
    ):
        b, o = _p50(data[base]) * 1e6, _p50(data[ours]) * 1e6
        ratio = o / b
        worst = max(worst, ratio)
        print(
            f"  {label}: {base} p50 {b:8.1f} us | {ours} p50 {o:8.1f} us | "
            f"ratio {ratio:.3f} | overhead {o - b:6.1f} us"
        )
    return worst


def _bench(enricher: FeatureEnricher, user: str, rounds: int, block: int) -> tuple[Any, Any]:
    post = FeatureContextPostprocessor(enricher)
    nodes = [NodeWithScore(node=TextNode(text=f"document {i}"), score=0.8) for i in range(3)]
    bundle = QueryBundle(QUERY)

    def direct() -> Any:
        return enricher.enrich(QUERY, user_id=user)

    def via_post() -> Any:
        with feature_context(user_id=user):
            return post.postprocess_nodes(nodes, query_bundle=bundle)

    async def adirect() -> Any:
        return await enricher.aenrich(QUERY, user_id=user)

    async def avia_post() -> Any:
        with feature_context(user_id=user):
            return await post.apostprocess_nodes(nodes, query_bundle=bundle)

    assert len(via_post()) == 4, "the benchmark user must be enriched"
    sync = _measure_sync({"enrich": direct, "postprocess": via_post}, rounds, block)
    asyn = asyncio.run(
        _measure_async({"aenrich": adirect, "apostprocess": avia_post}, rounds, block)
    )
    return sync, asyn


def _bench_memory(
    enricher: FeatureEnricher, user: str, rounds: int, block: int
) -> Dict[str, List[float]]:
    from llama_index.core.base.llms.types import ChatMessage

    memory_block = FeatureMemoryBlock(enricher, user_id=user)
    messages = [
        ChatMessage(role="user", content="Hello"),
        ChatMessage(role="assistant", content="Hi! How can I help?"),
        ChatMessage(role="user", content=QUERY),
    ]

    async def adirect() -> Any:
        return await enricher.aenrich(QUERY, user_id=user)

    async def amemory() -> Any:
        return await memory_block.aget(messages, session_id="s1")

    async def run() -> Dict[str, List[float]]:
        assert "[Context from" in await amemory(), "the benchmark user must be enriched"
        return await _measure_async({"aenrich": adirect, "memory": amemory}, rounds, block)

    return asyncio.run(run())


def _report_memory(data: Dict[str, List[float]]) -> float:
    b, o = _p50(data["aenrich"]) * 1e6, _p50(data["memory"]) * 1e6
    print(
        f"  memory: aenrich p50 {b:8.1f} us | FeatureMemoryBlock.aget p50 {o:8.1f} us | "
        f"ratio {o / b:.3f} | overhead {o - b:6.1f} us"
    )
    return o / b


def _local_store(directory: Path) -> LocalFeatureStore:
    now = datetime.now(timezone.utc).isoformat()
    data = {
        "user": {
            "u_0001": {
                "updated_at": now,
                "features": {"tier": "gold", "preferences": "casual", "preferred_language": "en"},
            }
        }
    }
    path = directory / "features.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return LocalFeatureStore(path)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=200)
    parser.add_argument("--no-feast", action="store_true", help="skip the Feast backend")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ok = True
        if not args.no_feast:
            from asahi_features.guard import GuardedClient
            from asahi_features.sample_repo import build_sample_repo
            from asahi_features.stores.feast_store import FeastClient

            repo = build_sample_repo(tmp_path / "repo", users=100, organizations=5)
            feast_client = FeastClient(str(repo), "asahi")
            guarded = GuardedClient(feast_client, timeout_ms=1000)
            for title, client in (
                ("Feast (SQLite) behind GuardedClient, task 'general'", guarded),
                ("Feast (SQLite), raw FeastClient, task 'general'", feast_client),
            ):
                enricher = FeatureEnricher(client)
                sync, asyn = _bench(enricher, "u_0001", args.rounds, args.block)
                worst = _report(title, sync, asyn)
                worst = max(
                    worst,
                    _report_memory(_bench_memory(enricher, "u_0001", args.rounds, args.block)),
                )
                verdict = "PASS" if worst <= TARGET_RATIO else "FAIL"
                print(f"  target p50 ratio <= {TARGET_RATIO}: {verdict} (worst {worst:.3f})")
                ok = ok and worst <= TARGET_RATIO
            guarded.close()
        enricher = FeatureEnricher(_local_store(tmp_path))
        sync, asyn = _bench(enricher, "u_0001", args.rounds, args.block)
        _report("LocalFeatureStore (in memory; fixed cost in isolation, no target)", sync, asyn)
        _report_memory(_bench_memory(enricher, "u_0001", args.rounds, args.block))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
