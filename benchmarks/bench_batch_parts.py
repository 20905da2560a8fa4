"""Where a batch of 1,000 spends its time beyond the raw Feast read (no target).

On the sample repository (SQLite, one shared ``feast.FeatureStore``), alternating a raw
columnar ``get_online_features`` with ``FeatureEnrichmentRunnable.batch`` whose enricher
phases are timed in place (the same steps as ``FeatureEnricher.enrich_requests``):

* ``plan``: one plan per request (task, monitor gate, identities);
* ``groups``: the distinct ids per (entity type, feature set);
* ``fetch``: ``FeastClient.get_batch_features`` (Feast's read plus the conversion);
* ``assign``: the vectors handed to their plans;
* ``finish``: rendering, fitting and the result objects;
* ``adapter``: the rest of ``runnable.batch`` (request parsing and outputs).

Every phase is printed with its p50 and as a share of the raw read, measured in the same
run. Each phase runs right after Feast's read, on caches Feast has just used, so these
figures are larger than the same code timed alone.

Usage: .venv/bin/python benchmarks/bench_batch_parts.py [--users 2000] [--rounds 40]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Sequence

from common import TASK_MAP, percentile, sample_refs, task_features

from asahi_features.enricher import EnrichmentTuple, FeatureEnricher
from asahi_features.models import EnrichmentResult
from asahi_features.settings import EnricherConfig

TASK = "general"
PROMPT = "Which plan suits me best?"


class TimedEnricher(FeatureEnricher):
    """``enrich_requests`` with each phase timed into ``phases``."""

    phases: Dict[str, List[float]]

    def enrich_requests(self, requests: Sequence[EnrichmentTuple]) -> List[EnrichmentResult]:
        now = time.perf_counter
        t0 = now()
        started = self._clock()
        plans = [self._plan(r, started) for r in requests]
        t1 = now()
        groups = self._groups(plans)
        t2 = now()
        fetch = assign = 0.0
        for entity_type, names, ids in groups:
            t3 = now()
            vectors = self.client.get_batch_features(ids, entity_type, list(names))
            t4 = now()
            self._assign(plans, entity_type, names, ids, vectors)
            del vectors
            fetch += t4 - t3
            assign += now() - t4
        t5 = now()
        results = self._finish_all(plans)
        t6 = now()
        for name, seconds in (
            ("plan", t1 - t0),
            ("groups", t2 - t1),
            ("fetch", fetch),
            ("assign", assign),
            ("finish", t6 - t5),
            ("enrich_requests", t6 - t0),
        ):
            self.phases[name].append(seconds)
        return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()

    from feast import FeatureStore

    from asahi_features.langchain import FeatureEnrichmentRunnable
    from asahi_features.sample_repo import build_sample_repo, user_id
    from asahi_features.stores.feast_store import FeastClient

    features = task_features(TASK)
    refs = sample_refs(features)
    workdir = Path(tempfile.mkdtemp(prefix="asahi_bench_parts_"))
    try:
        repo = build_sample_repo(workdir / "repo", users=args.users)
        store = FeatureStore(repo_path=str(repo))
        client = FeastClient(str(repo), "asahi", feature_store=store)
        config = EnricherConfig(
            enabled_task_types=[TASK], task_features=TASK_MAP, freshness_threshold_seconds=10**9
        )
        enricher = TimedEnricher(client, config)
        phases: Dict[str, List[float]] = defaultdict(list)
        enricher.phases = phases
        runnable = FeatureEnrichmentRunnable(enricher)
        ids = [user_id(n) for n in range(1, min(1000, args.users) + 1)]
        inputs: List[Any] = [{"prompt": PROMPT, "user_id": u, "task_type": TASK} for u in ids]
        columns = {"user_id": ids}

        def raw() -> None:
            start = time.perf_counter()
            response = store.get_online_features(
                features=refs, entity_rows=columns, full_feature_names=True
            )
            assert response.proto.results  # the cheapest raw read: the proto itself
            phases["raw"].append(time.perf_counter() - start)

        def batch() -> None:
            start = time.perf_counter()
            runnable.batch(inputs)
            phases["batch"].append(time.perf_counter() - start)

        for _ in range(3):
            raw()
            batch()
        phases.clear()
        for _ in range(args.rounds):
            raw()
            batch()
        p50 = {name: percentile(samples, 0.5) * 1e3 for name, samples in phases.items()}
        p50["adapter"] = p50["batch"] - p50["enrich_requests"]
        p50["fetch beyond raw"] = p50["fetch"] - p50["raw"]
        base = p50["raw"]
        print(f"{len(ids)} users, task {TASK!r} ({len(features)} features), {args.rounds} rounds")
        order = ["raw", "fetch", "fetch beyond raw", "plan", "groups", "assign", "finish"]
        for name in [*order, "enrich_requests", "adapter", "batch"]:
            print(f"{name:<18} p50 {p50[name]:8.2f} ms  {p50[name] / base:6.3f} x raw")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
