"""Always-valid comparison of two groups of quality scores (a sequential test).

:class:`~asahi_features.monitor.FeatureMonitor` asks, after any number of scores and as
often as it likes, whether enrichment improves quality by at least a margin ``delta``.
A fixed-sample test (a t-test) re-run on every look answers wrongly far more often than
its nominal rate: every look is another chance for noise to cross the line. This module
gives bounds that hold **at every sample size at once** (a *confidence sequence*), so a
decision read after every score keeps its stated error rate.

The statistic
-------------
Two groups, *with* features (``a``) and *without* (``b``), with running counts, means
and sums of squared deviations (:class:`~asahi_features.monitor.stats.Welford`)::

    gain     = mean_a - mean_b                      (the estimate of Delta)
    s2_pool  = (m2_a + m2_b) / (n_a + n_b - 2)     (pooled within-group variance)
    v_g      = max(m2_g / (n_g - 1), s2_pool)       (per group, g in {a, b})
    I        = 1 / (v_a / n_a + v_b / n_b)          (information about Delta)

``S = (gain - theta) * I`` behaves, in "information time" ``I``, like a Brownian motion
with drift ``Delta - theta`` (the canonical joint distribution of sequential two-sample
means, Jennison & Turnbull 2000, ch. 3), so for every ``lambda``,
``exp(lambda * S - lambda**2 * I / 2)`` is a martingale when ``theta = Delta``. Mixing
``lambda`` over a half-normal distribution of scale ``tau`` on the side of the
alternative gives the one-sided *normal mixture* martingale (Robbins 1970; Howard,
Ramdas, McAuliffe & Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic confidence
sequences", Ann. Statist. 49(2), section 3.2; the mSPRT of Johari, Koomen, Pekelis &
Walsh 2017/2022 used by Optimizely is its two-sided form). With ``x = tau**2 * I`` and
the standardised distance ``w = |gain - theta| * sqrt(I)`` on the tested side::

    M(w; x) = 2 / sqrt(1 + x) * exp(x * w**2 / (2 * (1 + x))) * Phi(w * sqrt(x / (1 + x)))

By Ville's inequality, ``P(M ever reaches 1/alpha) <= alpha`` under the null, however
often it is looked at. Inverting it gives the always-valid one-sided bounds::

    upper = gain + w*(x, alpha) / sqrt(I)          lower = gain - w*(x, alpha) / sqrt(I)

where ``w*`` solves ``M(w*; x) = 1/alpha`` (:func:`mixture_radius`). The decisions:

* **no gain** (the monitor disables enrichment): ``upper < delta``. Null hypothesis
  ``Delta >= delta``; when enrichment truly helps by the margin or more, the chance
  that this ever happens is at most ``alpha``.
* **gain** (the monitor enables enrichment again): ``lower > delta``. Null hypothesis
  ``Delta <= delta``; when enrichment truly does not beat the margin, the chance that
  this ever happens is at most ``alpha``.

Tuning: the mixture scale is ``tau**2 = 2 * x_opt * s2_pool / tuning_samples`` with
``x_opt = 2 log(1/(2 alpha)) + log(1 + 2 log(1/(2 alpha)))`` (Howard et al.'s choice,
with the one-sided ``2 alpha``), which makes the bounds tightest when each group holds
about ``tuning_samples`` scores (at ``alpha = 0.05``: 8 % wider than the best possible
at ten times as many, 31 % wider at a tenth). At its best, an always-valid bound is
about 1.7 times as wide as a fixed-sample one-sided bound read once: that is the price
of looking after every score. Everything is scale-free: multiplying every score (and
the margin) by a constant gives the same decisions.

Assumptions (read them before relying on the error rate)
--------------------------------------------------------
* Scores of one group are independent and identically distributed while the test runs
  (a drifting model or judge is a different question), and which group a request falls
  in does not depend on its score. The held-out control group satisfies this by
  construction; other requests without features (store down, entity missing...) only
  approximately.
* The variances are estimated (plug-in), so the guarantee is *asymptotic*: it is the
  Gaussian-mixture asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy
  & Ramdas (2024, "Time-uniform central limit theory and asymptotic confidence
  sequences", Ann. Statist.), exact for normal scores of known variance. Scores need a
  finite variance; no bound on their range is assumed (the monitor does not clamp them).
* Small-sample safeguards: no evidence at all while either group has fewer than two
  scores or all of its scores are equal (its variance is unknown, not zero), and no
  group's variance is taken below the pooled within-group variance (a small group that
  happens to agree, e.g. 29 passes out of 30, would otherwise claim a precision it does
  not have).
* Measured with the decision read after every score, a true gain exactly at the margin
  and ``alpha = 0.05`` (the monitor's defaults, ``min_samples = 30``; a vectorised
  simulation of this statistic, and the normal case through the monitor itself in
  tests/unit/test_monitor_sequential.py): normal scores, 50 % holdout, 1,500 scores:
  2.1-2.9 % of streams ever wrongly disabled (2,000 and 1,000 streams; 3.0 % over
  10,000 scores); 10 % holdout: 2.0 %; 5-point scores: 1.8 %; pass/fail scores at
  50-90 % pass rates with a 50 % holdout: 2.0-3.2 %. The approximation is weakest when
  the smaller group sees few of a pass/fail score's rarer outcome: 6.2 % at a 90 % pass
  rate with a 10 % holdout (3 failures expected in 30 held-out scores), 9.3 % at 97 %.
  Choose ``min_samples`` so that the smaller group expects about ten of the rarer
  outcome before deciding (100 and 330 there: 3.3 % and 3.8 %).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

from .stats import Welford

__all__ = [
    "DEFAULT_TUNING_SAMPLES",
    "GainEvidence",
    "compare_gain",
    "mixture_log_value",
    "mixture_radius",
    "optimal_mixture",
]

DEFAULT_TUNING_SAMPLES = 300
"""Scores per group at which the bounds are tightest by default (the monitor uses ten
times its ``min_samples``, 300 with the default settings)."""

_SQRT2 = math.sqrt(2.0)
_LOG2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _log_phi(u: float) -> float:
    """``log Phi(u)`` of the standard normal distribution, accurate in the far left tail."""
    if u > -30.0:
        return math.log(0.5 * math.erfc(-u / _SQRT2))
    # Mills ratio expansion: Phi(u) ~ phi(u) / -u * (1 - 1/u**2 + 3/u**4)
    u2 = u * u
    return -0.5 * u2 - math.log(-u) - _HALF_LOG_2PI + math.log1p(-1.0 / u2 + 3.0 / (u2 * u2))


def mixture_log_value(w: float, x: float) -> float:
    """``log M(w; x)``: the one-sided normal-mixture martingale (see the module docs).

    Args:
        w: standardised distance ``(observed - hypothesised) * sqrt(I)`` on the side of
            the alternative (positive: the data lean towards the alternative).
        x: ``tau**2 * I``, the mixture variance in units of the information (> 0).

    Returns:
        The log of the evidence against the null; reject at level ``alpha`` when it is at
        least ``log(1 / alpha)``. ``-inf`` when ``x <= 0`` (no information, no evidence).

    Example:
        >>> round(mixture_log_value(0.0, 8.0), 4)  # no lean: M = 1 / sqrt(1 + x) < 1
        -1.0986
    """
    if not x > 0.0:
        return -math.inf
    r = x / (1.0 + x)
    return _LOG2 - 0.5 * math.log1p(x) + 0.5 * r * w * w + _log_phi(w * math.sqrt(r))


def _two_sided_radius(x: float, alpha: float) -> float:
    """Radius of the two-sided normal mixture (closed form) at level ``alpha``."""
    return math.sqrt((1.0 + x) / x * (2.0 * math.log(1.0 / alpha) + math.log1p(x)))


def mixture_radius(x: float, alpha: float) -> float:
    """``w*``: the standardised distance at which the one-sided mixture reaches ``1/alpha``.

    The bound is then ``estimate +/- w* / sqrt(I)``. ``log M`` is convex and increasing
    in ``w`` for ``w > 0``; the root lies between the closed-form two-sided radii at
    ``2 alpha`` and at ``alpha``, and Newton's method started at the upper one converges
    monotonically.

    Args:
        x: ``tau**2 * I`` (> 0; ``inf`` is returned for ``x <= 0``).
        alpha: the error rate, in ``(0, 0.5)``.

    Example:
        >>> w = mixture_radius(8.0, 0.05)
        >>> abs(mixture_log_value(w, 8.0) - math.log(20.0)) < 1e-9
        True
    """
    if not x > 0.0:
        return math.inf
    target = math.log(1.0 / alpha)
    lo = _two_sided_radius(x, min(2.0 * alpha, 0.999))
    w = _two_sided_radius(x, alpha)
    r = x / (1.0 + x)
    c = math.sqrt(r)
    for _ in range(50):
        f = mixture_log_value(w, x) - target
        u = c * w
        # d/dw log Phi(c w) = c phi(u) / Phi(u)
        dlogphi = c * math.exp(-0.5 * u * u - _HALF_LOG_2PI - _log_phi(u))
        step = f / (r * w + dlogphi)
        w_next = max(lo, w - step)
        if abs(w - w_next) <= 1e-12 * w:
            return w_next
        w = w_next
    return w  # pragma: no cover - Newton on this convex function converges in < 10 steps


def optimal_mixture(alpha: float) -> float:
    """``x_opt``: the ``tau**2 * I`` at which the one-sided bound is (nearly) tightest.

    Howard et al. (2021, eq. 3.8 and the discussion after it) give
    ``2 log(1/a) + log(1 + 2 log(1/a))`` for the two-sided mixture at level ``a``; the
    one-sided mixture behaves like the two-sided one at ``2 alpha``.

    Example:
        >>> round(optimal_mixture(0.05), 2)
        6.33
    """
    k = 2.0 * math.log(1.0 / min(2.0 * alpha, 0.999))
    return k + math.log1p(k)


class GainEvidence(NamedTuple):
    """What the scores so far say about ``gain = mean(with) - mean(without)``."""

    estimate: float
    """The observed gain (difference of the group means)."""
    information: float
    """``I = 1 / (v_a / n_a + v_b / n_b)``: one over the variance of the estimate."""
    mixture: float
    """``x = tau**2 * I``."""
    margin: float
    """The margin ``delta`` the gain is compared with."""
    alpha: float
    """The error rate of each one-sided decision."""
    no_gain: bool
    """The always-valid upper bound is below the margin: enrichment does not beat it."""
    gain: bool
    """The always-valid lower bound is above the margin: enrichment beats it."""

    def bounds(self) -> Tuple[float, float]:
        """``(lower, upper)``: the always-valid one-sided bounds at level ``alpha`` each."""
        half = mixture_radius(self.mixture, self.alpha) / math.sqrt(self.information)
        return self.estimate - half, self.estimate + half


def compare_gain(
    with_features: Welford,
    without_features: Welford,
    margin: float,
    alpha: float,
    tuning_samples: int = DEFAULT_TUNING_SAMPLES,
) -> Optional[GainEvidence]:
    """Compare the groups; ``None`` while the data cannot say anything yet.

    ``None`` when a group has fewer than two scores, when all scores of a group are
    equal (its variance is unknown, not zero), or when the numbers are not finite.
    The caller decides how many samples it wants before it listens (``min_samples``).

    Args:
        with_features: the scores of requests whose prompt received features.
        without_features: the comparison group (the held-out control group, or every
            scored request that got no features).
        margin: ``delta``, the gain enrichment must beat.
        alpha: the error rate of each one-sided decision (``1 - confidence``), in
            ``(0, 0.5)``.
        tuning_samples: scores per group at which the bounds are tightest.

    Example:
        >>> import random
        >>> rnd = random.Random(1)
        >>> a, b = Welford(), Welford()
        >>> for _ in range(500):
        ...     a.add(0.70 + rnd.gauss(0, 0.1))
        ...     b.add(0.69 + rnd.gauss(0, 0.1))
        >>> evidence = compare_gain(a, b, margin=0.05, alpha=0.05)
        >>> evidence.no_gain, evidence.gain
        (True, False)
        >>> lower, upper = evidence.bounds()
        >>> lower < evidence.estimate < upper < 0.05
        True
    """
    na, nb = with_features.n, without_features.n
    m2a, m2b = with_features.m2, without_features.m2
    if na < 2 or nb < 2 or not (m2a > 0.0 and m2b > 0.0):
        return None
    pooled = (m2a + m2b) / (na + nb - 2)
    va = max(m2a / (na - 1), pooled)
    vb = max(m2b / (nb - 1), pooled)
    variance = va / na + vb / nb
    estimate = with_features.mean - without_features.mean
    if not (math.isfinite(variance) and variance > 0.0 and math.isfinite(estimate)):
        return None
    information = 1.0 / variance
    x = 2.0 * optimal_mixture(alpha) * pooled * information / tuning_samples
    if not (math.isfinite(x) and x > 0.0):
        return None
    threshold = math.log(1.0 / alpha)
    w = (estimate - margin) * math.sqrt(information)
    # only the side the data lean to can hold evidence: M <= 1 < 1/alpha on the other
    no_gain = w < 0.0 and mixture_log_value(-w, x) >= threshold
    gain = w > 0.0 and mixture_log_value(w, x) >= threshold
    return GainEvidence(estimate, information, x, margin, alpha, no_gain, gain)
