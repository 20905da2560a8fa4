"""Helpers shared by the benchmark scripts (not part of the library): timing, an
in-memory client, and the sample repository's feature lists and references."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

from asahi_features.models import FeatureVector
from asahi_features.sample_repo import SAMPLE_TASK_FEATURES, SAMPLE_VIEWS

TASK_MAP: Dict[str, Dict[str, List[str]]] = SAMPLE_TASK_FEATURES
"""The task map the benchmarks enrich with: the sample repository's (product_recommendation
has 5 features). The library's defaults are spec table 3.5 only (3 features), so every
benchmark passes ``task_features=TASK_MAP`` to its EnricherConfig."""


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples`` (nearest rank, no interpolation)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def interleave(
    variants: Mapping[str, Callable[[int], Any]], rounds: int, block: int, warmup: int = 20
) -> Dict[str, List[float]]:
    """Time every call of every variant, in blocks, alternating; seconds per call.

    Each round runs ``block`` calls of each variant in turn, starting from a rotated
    position so that no variant always runs first, and every variant sees the same call
    indices in a round (so they read the same entities). Blocks rather than single calls:
    Feast keeps a process-wide resolution cache that alternating callers can disturb.
    """
    times: Dict[str, List[float]] = {name: [] for name in variants}
    for fn in variants.values():
        for i in range(warmup):
            fn(i)
    order = list(variants.items())
    perf = time.perf_counter
    for r in range(rounds):
        shift = r % len(order)
        for name, fn in order[shift:] + order[:shift]:
            bucket = times[name]
            for i in range(r * block, (r + 1) * block):
                start = perf()
                fn(i)
                bucket.append(perf() - start)
    return times


def task_features(task_type: str, entity_type: str = "user") -> List[str]:
    """The features of a task in :data:`TASK_MAP`, in priority order."""
    return list(TASK_MAP[task_type][entity_type])


def sample_refs(names: Sequence[str]) -> List[str]:
    """Full ``view:feature`` references of sample-repository features, for raw Feast calls."""
    view_of = {name: view.name for view in SAMPLE_VIEWS for name in view.feature_names}
    return [f"{view_of[name]}:{name}" for name in names]


PRODUCT_FEATURES = task_features("product_recommendation")
PRODUCT_REFS = sample_refs(PRODUCT_FEATURES)


class MemoryClient:
    """Returns one prepared vector, as the answer for whichever entity was asked: the
    backend costs (almost) nothing. (Answers are matched by entity id, so each id gets its
    own copy, made once.)"""

    def __init__(self, vector: FeatureVector) -> None:
        self.vector = vector
        self._by_id: Dict[Tuple[str, str], FeatureVector] = {}

    def _for(self, entity_id: str, entity_type: str) -> FeatureVector:
        vector = self._by_id.get((entity_id, entity_type))
        if vector is None:
            vector = self._by_id[(entity_id, entity_type)] = self.vector.model_copy(
                update={"entity_id": entity_id, "entity_type": entity_type}
            )
        return vector

    def get_features(self, entity_id: str, entity_type: str, names: List[str]) -> FeatureVector:
        return self._for(entity_id, entity_type)

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, names: List[str]
    ) -> List[FeatureVector]:
        return [self._for(eid, entity_type) for eid in entity_ids]

    def health_check(self) -> bool:
        return True
