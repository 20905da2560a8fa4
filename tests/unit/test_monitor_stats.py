"""The monitor's bounded accumulators and its statistical test."""

from __future__ import annotations

import random
import statistics

import pytest

from asahi_features.monitor.stats import (
    AvailabilityWindow,
    LatencyReservoir,
    Welford,
    student_t_quantile,
    welch_upper_bound,
)


def test_welford_matches_statistics_and_round_trips() -> None:
    rnd = random.Random(3)
    values = [rnd.gauss(10, 3) for _ in range(1000)]
    acc = Welford()
    assert acc.summary() == {"n": 0, "mean": None, "stddev": None}
    assert acc.variance == 0.0
    for v in values:
        acc.add(v)
    assert acc.mean == pytest.approx(statistics.fmean(values))
    assert acc.variance == pytest.approx(statistics.variance(values))
    assert acc.summary()["stddev"] == pytest.approx(statistics.stdev(values))
    copy = Welford.from_dict(acc.to_dict())
    assert (copy.n, copy.mean, copy.m2) == (acc.n, acc.mean, acc.m2)


def test_welford_merged_equals_one_accumulator_over_both() -> None:
    rnd = random.Random(4)
    first = [rnd.gauss(0.5, 0.2) for _ in range(37)]
    second = [rnd.gauss(0.9, 0.1) for _ in range(11)]
    a, b, both = Welford(), Welford(), Welford()
    for v in first:
        a.add(v)
        both.add(v)
    for v in second:
        b.add(v)
        both.add(v)
    merged = Welford.merged(a, b)
    assert merged.n == both.n
    assert merged.mean == pytest.approx(both.mean)
    assert merged.m2 == pytest.approx(both.m2)
    assert (a.n, b.n) == (37, 11)  # the inputs are not changed
    empty = Welford()
    assert Welford.merged(a, empty).to_dict() == a.to_dict()
    assert Welford.merged(empty, b).to_dict() == b.to_dict()
    assert Welford.merged(empty, empty).summary() == {"n": 0, "mean": None, "stddev": None}


def test_reservoir_is_bounded_and_estimates_percentiles() -> None:
    reservoir = LatencyReservoir(size=2000, seed=1)
    assert reservoir.percentiles([50]) == [None]
    for i in range(100_000):
        reservoir.add(float(i % 1000))
    assert len(reservoir.values) == 2000
    assert reservoir.seen == 100_000
    p50, p99 = reservoir.percentiles([50, 99])
    assert p50 == pytest.approx(500, abs=50)
    assert p99 == pytest.approx(990, abs=15)
    other = LatencyReservoir(size=10)
    other.load(reservoir.to_dict())
    assert len(other.values) == 10 and other.seen == 100_000
    other.clear()
    assert other.values == [] and other.seen == 0
    with pytest.raises(ValueError):
        LatencyReservoir(size=0)


def test_percentiles_nearest_rank() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert LatencyReservoir.percentiles_of(values, [0, 20, 50, 100]) == [1.0, 1.0, 3.0, 5.0]


def test_availability_window_ring() -> None:
    window = AvailabilityWindow(4)
    assert window.availability_pct is None
    for failed in (True, True, False, False):
        window.add(failed)
    assert window.availability_pct == 50.0
    window.add(False)
    window.add(False)  # the two failures left the window
    assert (window.count, window.failures, window.availability_pct) == (4, 0, 100.0)
    window.add(True)
    assert window.availability_pct == 75.0
    window.clear()
    assert window.count == 0 and window.availability_pct is None
    with pytest.raises(ValueError):
        AvailabilityWindow(0)


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        (0.95, 1, 6.314),
        (0.99, 1.7, 31.821),  # fractional df rounds down: conservative
        (0.95, 2, 2.920),
        (0.99, 2.5, 6.965),
        (0.95, 3, 2.353),
        (0.99, 3, 4.541),
        (0.999, 3, 10.215),
        (0.95, 10, 1.812),
        (0.975, 10, 2.228),
        (0.999, 5, 5.893),
        (0.95, 29, 1.699),
        (0.95, 30, 1.697),
        (0.999, 30, 3.385),
        (0.9999, 1, 3183.099),
        (0.95, float("inf"), 1.645),
    ],
)
def test_student_t_quantile_matches_tables(p: float, df: float, expected: float) -> None:
    assert student_t_quantile(p, df) == pytest.approx(expected, abs=0.005)


def test_welch_upper_bound() -> None:
    a, b = Welford(), Welford()
    assert welch_upper_bound(a, b, 0.95) is None
    for x in (1.0, 1.0, 1.0):
        a.add(x)
    for x in (0.5, 0.5):
        b.add(x)
    assert welch_upper_bound(a, b, 0.95) == pytest.approx(0.5)  # no variance: the difference
    rnd = random.Random(9)
    c, d = Welford(), Welford()
    for _ in range(200):
        c.add(rnd.gauss(0.5, 0.1))
        d.add(rnd.gauss(0.7, 0.1))
    upper = welch_upper_bound(c, d, 0.95)
    assert upper is not None
    assert c.mean - d.mean < upper < 0  # clearly worse: the whole bound is below zero
