"""FeatureEnrichmentRunnable cost against its references, on the sample Feast repo.

A sample Feast repository (SQLite online store) is built in a temporary directory and
ONE ``feast.FeatureStore`` is shared by every side (Feast's resolution cache is per
process, see DESIGN.md). Sides are interleaved in blocks, never call by call.

Part 1 (invoke): ``FeatureEnrichmentRunnable(enricher).invoke`` against
``RunnableLambda(enricher.enrich).invoke`` on the same input, so LangChain's own
per-call overhead is on both sides. Three inputs: a prompt string without identity
(the literal ``RunnableLambda(enricher.enrich)``), and a dict with a user id over
FeastClient and over an in-memory client (CPU only; the harshest ratio).
Target: p50 ratio <= 1.1.

Part 2 (batch): ``runnable.batch`` of 1,000 distinct users (one backend call; with
no handler listening the per-input runs are skipped, a second side attaches a
FeatureMonitorCallbackHandler so that every input gets its run) against the raw
``get_online_features`` of the same 1,000 entities and the same features;
``enricher.enrich_batch`` is shown for reference.
Target: p50 ratio <= 1.5.

Usage: .venv/bin/python benchmarks/bench_langchain.py [--users 2000] [--rounds 15]
[--batch-rounds 25]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List

from common import TASK_MAP, MemoryClient, interleave, percentile, sample_refs, task_features

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asahi_features.enricher import FeatureEnricher  # noqa: E402
from asahi_features.models import EnrichmentRequest, FeatureVector  # noqa: E402
from asahi_features.settings import EnricherConfig  # noqa: E402

TASK = "general"
FEATURES = task_features("general")
REFS = sample_refs(FEATURES)
INVOKE_TARGET = 1.1
BATCH_TARGET = 1.5
PROMPT = "Which plan suits me best?"


def _report(label: str, times: Dict[str, List[float]], ref: str, side: str, target: float) -> bool:
    ref50 = percentile(times[ref], 0.5) * 1e3
    p50 = percentile(times[side], 0.5) * 1e3
    ratio = p50 / ref50
    ok = ratio <= target
    print(
        f"{label:<34} {side:<10} p50 {p50:8.3f} ms | {ref:<10} p50 {ref50:8.3f} ms | "
        f"ratio {ratio:5.2f} (target <= {target:g}) {'ok' if ok else 'MISSED'}"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--batch-rounds", type=int, default=25, help="blocks of 4 batch calls per side"
    )
    args = parser.parse_args()

    from feast import FeatureStore
    from langchain_core.runnables import RunnableLambda

    from asahi_features.langchain import FeatureEnrichmentRunnable, FeatureMonitorCallbackHandler
    from asahi_features.monitor import FeatureMonitor
    from asahi_features.sample_repo import build_sample_repo, user_id
    from asahi_features.stores.feast_store import FeastClient

    config = EnricherConfig(
        enabled_task_types=[TASK], task_features=TASK_MAP, freshness_threshold_seconds=10**9
    )
    workdir = Path(tempfile.mkdtemp(prefix="asahi_bench_langchain_"))
    ok = True
    try:
        start = time.perf_counter()
        repo = build_sample_repo(workdir / "repo", users=args.users)
        print(f"built a {args.users}-user SQLite repo in {time.perf_counter() - start:.1f} s")
        store = FeatureStore(repo_path=str(repo))
        client = FeastClient(str(repo), "asahi", feature_store=store)
        enricher = FeatureEnricher(client, config)
        runnable = FeatureEnrichmentRunnable(enricher)
        ids = [user_id(n) for n in range(1, args.users + 1)]
        check = enricher.enrich(PROMPT, user_id=ids[0], task_type=TASK)
        if check.features_used != FEATURES:
            print(f"unexpected enrichment: {check.reason} {check.features_used}")
            return 1

        # -- part 1: invoke ---------------------------------------------------------
        lam_str = RunnableLambda(enricher.enrich)
        lam_dict: RunnableLambda[Dict[str, Any], Any] = RunnableLambda(
            lambda d: enricher.enrich(**d)
        )
        times = interleave(
            {
                "runnable": lambda i: runnable.invoke(PROMPT),
                "lambda": lambda i: lam_str.invoke(PROMPT),
            },
            args.rounds * 2,
            200,
        )
        ok &= _report("invoke str, no identity", times, "lambda", "runnable", INVOKE_TARGET)

        def row(i: int) -> Dict[str, Any]:
            return {"prompt": PROMPT, "user_id": ids[i % len(ids)], "task_type": TASK}

        times = interleave(
            {
                "runnable": lambda i: runnable.invoke(row(i)),
                "lambda": lambda i: lam_dict.invoke(row(i)),
            },
            args.rounds * 2,
            200,
        )
        ok &= _report("invoke dict + user over Feast", times, "lambda", "runnable", INVOKE_TARGET)

        vector = client.get_features(ids[0], "user", FEATURES)
        memory = FeatureEnricher(
            MemoryClient(
                FeatureVector.from_ages(
                    "u",
                    "user",
                    "memory",
                    vector.features,
                    vector.feature_freshness,
                    datetime.now(timezone.utc),
                )
            ),
            config,
        )
        mem_runnable = FeatureEnrichmentRunnable(memory)
        mem_lambda: RunnableLambda[Dict[str, Any], Any] = RunnableLambda(
            lambda d: memory.enrich(**d)
        )
        times = interleave(
            {
                "runnable": lambda i: mem_runnable.invoke(row(i)),
                "lambda": lambda i: mem_lambda.invoke(row(i)),
            },
            args.rounds * 2,
            200,
        )
        ok &= _report(
            "invoke dict + user, memory client", times, "lambda", "runnable", INVOKE_TARGET
        )

        # -- part 2: batch of 1,000 -------------------------------------------------
        n = min(args.batch, len(ids))
        batch_ids = ids[:n]
        inputs = [{"prompt": PROMPT, "user_id": u, "task_type": TASK} for u in batch_ids]
        requests = [EnrichmentRequest(prompt=PROMPT, user_id=u, task_type=TASK) for u in batch_ids]
        rows = [{"user_id": u} for u in batch_ids]
        handler = FeatureMonitorCallbackHandler(FeatureMonitor(), keep_finished_runs=0)
        outs = runnable.batch(inputs)
        assert all(o.enrichment.features_available for o in outs[:50])
        raw = lambda i: store.get_online_features(features=REFS, entity_rows=rows).proto  # noqa: E731
        times = interleave(
            {
                "raw": raw,
                "batch": lambda i: runnable.batch(inputs),
                "enrich_bat": lambda i: enricher.enrich_batch(requests),
            },
            args.batch_rounds,
            4,
            warmup=3,
        )
        ok &= _report(f"batch of {n} vs raw Feast", times, "raw", "batch", BATCH_TARGET)
        _report(f"enrich_batch of {n} vs raw Feast", times, "raw", "enrich_bat", BATCH_TARGET)
        _report("runnable.batch vs enrich_batch", times, "enrich_bat", "batch", BATCH_TARGET)
        # Measured apart: 1,000 callback runs leave much garbage, and the collections it
        # triggers would land on whichever side runs next.
        print("(informational: with a FeatureMonitorCallbackHandler, i.e. 1,000 callback runs)")
        times = interleave(
            {"raw": raw, "batch+cb": lambda i: runnable.batch(inputs, {"callbacks": [handler]})},
            max(3, args.rounds // 3),
            4,
            warmup=2,
        )
        _report(f"batch of {n} + handler vs raw", times, "raw", "batch+cb", BATCH_TARGET)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
