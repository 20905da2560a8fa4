"""Timing helpers shared by the benchmark scripts (not part of the library)."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Sequence


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples`` (nearest rank, no interpolation)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def interleave(
    variants: Dict[str, Callable[[int], Any]], rounds: int, block: int, warmup: int = 20
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
