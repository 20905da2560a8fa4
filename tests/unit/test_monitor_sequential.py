"""The always-valid quality decision: its statistics, and simulations with the decision
read after every score.

The simulations are seeded (deterministic) and run the real :class:`FeatureMonitor` the
way the enricher drives it. Figures for the report, new rule and the previous rule (a
one-sided Welch t-test re-run on every look, as ``FeatureMonitor`` did before) on the
same streams (200 by default; the docs quote 1,000)::

    .venv/bin/python -m tests.unit.test_monitor_sequential [streams]
"""

from __future__ import annotations

import math
import random
import sys
from typing import Callable, List, Optional, Tuple

import pytest

from asahi_features.models import EnrichmentReason, EnrichmentResult
from asahi_features.monitor import DecisionReason, FeatureMonitor
from asahi_features.monitor.sequential import (
    GainEvidence,
    compare_gain,
    mixture_log_value,
    mixture_radius,
    optimal_mixture,
)
from asahi_features.monitor.stats import Welford, welch_upper_bound
from asahi_features.settings import MonitorConfig

# ---------------------------------------------------------------- the statistics


def _accumulate(values: List[float]) -> Welford:
    acc = Welford()
    for v in values:
        acc.add(v)
    return acc


def _groups(
    n_a: int, n_b: int, mean_a: float, mean_b: float, sd: float, seed: int = 1
) -> Tuple[Welford, Welford]:
    rnd = random.Random(seed)
    a = _accumulate([mean_a + rnd.gauss(0, sd) for _ in range(n_a)])
    b = _accumulate([mean_b + rnd.gauss(0, sd) for _ in range(n_b)])
    return a, b


@pytest.mark.parametrize("alpha", [0.2, 0.05, 0.01, 0.001])
@pytest.mark.parametrize("x", [1e-6, 0.01, 1.0, 6.33, 100.0, 1e6])
def test_radius_solves_the_boundary(alpha: float, x: float) -> None:
    w = mixture_radius(x, alpha)
    assert mixture_log_value(w, x) == pytest.approx(math.log(1 / alpha), abs=1e-9)
    # between the closed-form two-sided radii at 2 alpha and at alpha
    two_sided = [
        math.sqrt((1 + x) / x * (2 * math.log(1 / a) + math.log1p(x))) for a in (2 * alpha, alpha)
    ]
    assert two_sided[0] - 1e-9 <= w <= two_sided[1] + 1e-9


def test_mixture_value_is_increasing_and_tightest_near_the_optimum() -> None:
    values = [mixture_log_value(w / 10, 6.0) for w in range(-50, 60)]
    assert values == sorted(values)
    assert mixture_log_value(0.0, 6.0) == pytest.approx(-0.5 * math.log(7.0))
    assert mixture_log_value(5.0, 0.0) == -math.inf  # no information, no evidence
    assert math.isfinite(mixture_log_value(-60.0, 6.0))  # far tail, no log(0)
    assert mixture_radius(0.0, 0.05) == math.inf
    best = min((10 ** (k / 50) for k in range(-50, 150)), key=lambda x: mixture_radius(x, 0.05))
    assert mixture_radius(optimal_mixture(0.05), 0.05) <= 1.001 * mixture_radius(best, 0.05)


def test_compare_gain_needs_two_varied_scores_in_each_group() -> None:
    a, b = _groups(40, 40, 0.7, 0.6, 0.1)
    assert compare_gain(a, Welford(), 0.0, 0.05) is None
    assert compare_gain(a, _accumulate([0.5]), 0.0, 0.05) is None
    # all scores equal: the variance is unknown, not zero (30 passes out of 30)
    assert compare_gain(a, _accumulate([1.0] * 30), 0.0, 0.05) is None
    assert compare_gain(_accumulate([1.0] * 30), _accumulate([1.0] * 30), 0.0, 0.05) is None
    assert isinstance(compare_gain(a, b, 0.0, 0.05), GainEvidence)


def test_decisions_agree_with_the_bounds() -> None:
    for seed in range(40):
        rnd = random.Random(seed)
        n = rnd.randint(10, 400)
        a, b = _groups(n, rnd.randint(10, 400), 0.6 + rnd.uniform(-0.1, 0.1), 0.6, 0.2, seed)
        margin = rnd.choice([0.0, 0.05])
        evidence = compare_gain(a, b, margin, 0.05)
        assert evidence is not None
        lower, upper = evidence.bounds()
        assert evidence.estimate == pytest.approx(a.mean - b.mean)
        assert lower < evidence.estimate < upper
        assert evidence.no_gain == (upper < margin)
        assert evidence.gain == (lower > margin)
        assert not (evidence.no_gain and evidence.gain)


def test_always_valid_bounds_are_wider_than_a_one_look_test() -> None:
    a, b = _groups(300, 300, 0.62, 0.6, 0.2)
    evidence = compare_gain(a, b, 0.0, 0.05)
    welch = welch_upper_bound(a, b, 0.95)
    assert evidence is not None and welch is not None
    _, upper = evidence.bounds()
    assert upper > welch  # the price of being valid at every look
    assert upper - evidence.estimate < 2.5 * (welch - evidence.estimate)


def test_compare_gain_is_scale_free() -> None:
    a, b = _groups(200, 80, 0.7, 0.65, 0.15)
    base = compare_gain(a, b, 0.02, 0.05)
    scaled_a = Welford(a.n, 1 + 4 * a.mean, 16 * a.m2)  # a 1-5 scale instead of 0-1
    scaled_b = Welford(b.n, 1 + 4 * b.mean, 16 * b.m2)
    scaled = compare_gain(scaled_a, scaled_b, 4 * 0.02, 0.05)
    assert base is not None and scaled is not None
    assert (scaled.no_gain, scaled.gain) == (base.no_gain, base.gain)
    assert scaled.mixture == pytest.approx(base.mixture)
    lower, upper = base.bounds()
    assert scaled.bounds() == pytest.approx((4 * lower, 4 * upper))


def test_a_small_group_that_happens_to_agree_claims_no_precision() -> None:
    # 29 passes out of 30 held out vs 90 % passes with features: the held-out variance
    # is taken at least as large as the pooled one
    rnd = random.Random(2)
    a = _accumulate([1.0 if rnd.random() < 0.9 else 0.0 for _ in range(300)])
    b = _accumulate([1.0] * 29 + [0.0])
    evidence = compare_gain(a, b, 0.0, 0.05)
    assert evidence is not None
    pooled = (a.m2 + b.m2) / (a.n + b.n - 2)
    assert 1 / evidence.information == pytest.approx(a.variance / a.n + pooled / b.n)
    assert not evidence.no_gain


# ---------------------------------------------------------------- simulations

ALPHA = 0.05
MARGIN = 0.05
SD = 0.2  # score noise
HOLDOUT = 0.5
LENGTH = 1_500  # scores per stream
STREAMS = 200
ZERO_GAIN_WITHIN = 1_500  # zero-gain streams are disabled within this many scores ...
ZERO_GAIN_SHARE = 0.95  # ... in at least this share of them
TASK = "faq"


def binomial_allowance(n: int, p: float, tail: float = 0.01) -> int:
    """The largest count a rule whose true rate is exactly ``p`` exceeds with
    probability at most ``tail``: more than this many wrong streams out of ``n`` means
    the rule's rate is above ``p`` (one-sided exact binomial test at level ``tail``)."""
    below = 0.0
    for k in range(n + 1):
        below += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if 1.0 - below <= tail:
            return k
    return n


def _templates() -> Tuple[EnrichmentResult, EnrichmentResult, EnrichmentResult]:
    common = {"original_prompt": "q", "enrichment_latency_ms": 1.0, "task_type": TASK}
    enriched = EnrichmentResult(
        enriched_prompt="[ctx] q",
        features_used=["tier"],
        feature_tokens_added=5,
        features_available=True,
        store_attempted=True,
        **common,  # type: ignore[arg-type]
    )
    held = EnrichmentResult(
        enriched_prompt="q",
        features_used=[],
        feature_tokens_added=0,
        features_available=False,
        held_out=True,
        reason=EnrichmentReason.HELD_OUT,
        **common,  # type: ignore[arg-type]
    )
    declined = held.model_copy(
        update={"held_out": False, "reason": EnrichmentReason.DISABLED_BY_MONITOR}
    )
    return enriched, held, declined


_DISABLED = (DecisionReason.QUALITY_NO_GAIN, DecisionReason.EXPLORATION)


def run_stream(
    gain: float, seed: int, length: int, exploration: float = 0.0, stop_at_disable: bool = True
) -> Tuple[Optional[int], bool]:
    """One stream through a real monitor, driven as the enricher drives it: a request is
    held out (50 %) or asks ``decision``; it is scored ``0.5 + gain (if enriched) +
    N(0, 0.2)``; the decision is read again after every score.

    Returns:
        (the number of scores after which the decision first read "disabled for
        quality", or None; whether it read "enabled" again later).
    """
    monitor = FeatureMonitor(
        MonitorConfig(
            min_quality_gain=MARGIN,
            confidence=1 - ALPHA,
            exploration_fraction=exploration,
            seed=seed,
        )
    )
    enriched, held, declined = _templates()
    ids = [r.__dict__ for r in (enriched, held, declined)]
    rnd = random.Random(seed)
    record, decide = monitor.record_enrichment, monitor.decision
    first: Optional[int] = None
    for i in range(length):
        if rnd.random() < HOLDOUT:
            result, fields = held, ids[1]
        elif decide(TASK).enrich:
            result, fields = enriched, ids[0]
        else:
            result, fields = declined, ids[2]
        fields["enrichment_id"] = f"{seed}-{i}"
        mean = 0.5 + gain if result is enriched else 0.5
        record(result, mean + rnd.gauss(0.0, SD))
        disabled = decide(TASK).reason in _DISABLED
        if first is None and disabled:
            first = i + 1
            if stop_at_disable:
                return first, False
        elif first is not None and not disabled:
            return first, True
    return first, False


def welch_reference_stream(gain: float, seed: int, length: int) -> Optional[int]:
    """The previous rule on the same stream: once both groups have ``min_samples`` (30)
    scores, disabled when the one-sided Welch upper bound at ``confidence`` is
    ``<= min_quality_gain`` (the logic of ``FeatureMonitor._quality_verdict`` before the
    sequential test). Returns the first score count at which it read "disabled"."""
    rnd = random.Random(seed)
    with_q, held_q = Welford(), Welford()
    for i in range(length):
        if rnd.random() < HOLDOUT:
            held_q.add(0.5 + rnd.gauss(0.0, SD))
        else:
            with_q.add(0.5 + gain + rnd.gauss(0.0, SD))
        if with_q.n >= 30 and held_q.n >= 30:
            upper = welch_upper_bound(with_q, held_q, 1 - ALPHA)
            if upper is not None and upper <= MARGIN:
                return i + 1
    return None


def _first_disables(
    stream: Callable[[float, int, int], Optional[int]], gain: float, seeds: range, length: int
) -> List[Optional[int]]:
    return [stream(gain, seed, length) for seed in seeds]


def test_enrichment_that_helps_by_the_margin_is_rarely_disabled() -> None:
    """True gain exactly at ``min_quality_gain`` (the hardest case for this error),
    decision read after every one of 1,500 scores, 200 streams."""
    firsts = _first_disables(lambda g, s, n: run_stream(g, s, n)[0], MARGIN, range(STREAMS), LENGTH)
    wrong = sum(f is not None for f in firsts)
    allowed = binomial_allowance(STREAMS, ALPHA)
    assert allowed == 18  # 9 % of 200: a rule whose rate is 5 % exceeds it 1 % of the time
    assert wrong <= allowed, f"{wrong} of {STREAMS} streams wrongly disabled"


def test_enrichment_that_does_not_help_is_disabled_and_stays_disabled() -> None:
    """Zero true gain with ``min_quality_gain = 0.05``: disabled within 1,500 scores
    (both groups together) in at least 95 % of 200 streams; afterwards, with the default
    exploration share, it is not wrongly enabled again."""
    outcomes = [run_stream(0.0, 1000 + s, LENGTH, 0.05, False) for s in range(STREAMS)]
    disabled = [first for first, _ in outcomes if first is not None and first <= ZERO_GAIN_WITHIN]
    assert len(disabled) >= ZERO_GAIN_SHARE * STREAMS, len(disabled)
    reenabled = sum(again for _, again in outcomes)
    assert reenabled <= binomial_allowance(STREAMS, ALPHA), reenabled


def test_both_one_sided_bounds_keep_their_rate_at_every_look() -> None:
    """The statistic alone, gain exactly at the margin, checked after every score: the
    upper bound ever below the margin (a wrong "no gain") and the lower bound ever above
    it (a wrong "gain") each happen in at most alpha of the streams."""
    no_gain = gain = 0
    for seed in range(STREAMS):
        rnd = random.Random(5000 + seed)
        with_q, held_q = Welford(), Welford()
        seen_no_gain = seen_gain = False
        for _ in range(LENGTH):
            if rnd.random() < HOLDOUT:
                held_q.add(0.5 + rnd.gauss(0.0, SD))
            else:
                with_q.add(0.5 + MARGIN + rnd.gauss(0.0, SD))
            if with_q.n >= 30 and held_q.n >= 30:
                evidence = compare_gain(with_q, held_q, MARGIN, ALPHA)
                if evidence is not None:
                    seen_no_gain |= evidence.no_gain
                    seen_gain |= evidence.gain
        no_gain += seen_no_gain
        gain += seen_gain
    allowed = binomial_allowance(STREAMS, ALPHA)
    assert no_gain <= allowed and gain <= allowed, (no_gain, gain)


# ---------------------------------------------------------------- the report


def _percentile(values: List[Optional[int]], q: float) -> str:
    """Nearest-rank percentile; a stream never disabled counts as later than any."""
    ordered = sorted(math.inf if v is None else v for v in values)
    value = ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
    return f"> {LENGTH}" if value == math.inf else str(int(value))


def main() -> None:  # pragma: no cover - prints the figures quoted in the docs and reports
    streams = int(sys.argv[1]) if len(sys.argv) > 1 else STREAMS
    rules: List[Tuple[str, Callable[[float, int, int], Optional[int]]]] = [
        ("always-valid (this monitor)", lambda g, s, n: run_stream(g, s, n)[0]),
        ("Welch t-test every look (before)", welch_reference_stream),
    ]
    print(
        f"{streams} streams of {LENGTH} scores, noise sd {SD}, holdout {HOLDOUT:.0%}, "
        f"min_quality_gain {MARGIN}, confidence {1 - ALPHA}, decision read after every score"
    )
    for name, stream in rules:
        helps = _first_disables(stream, MARGIN, range(streams), LENGTH)
        wrong = sum(f is not None for f in helps)
        zero = _first_disables(stream, 0.0, range(1000, 1000 + streams), LENGTH)
        found = sum(f is not None for f in zero)
        print(
            f"{name:34s} gain = margin: {wrong}/{streams} ({wrong / streams:.1%}) wrongly "
            f"disabled | zero gain: {found}/{streams} disabled within {LENGTH} scores, "
            f"median {_percentile(zero, 0.5)}, 95th percentile {_percentile(zero, 0.95)}"
        )


if __name__ == "__main__":  # pragma: no cover
    main()
