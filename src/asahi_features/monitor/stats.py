"""Small, bounded, lock-free accumulators used by :class:`~asahi_features.monitor.FeatureMonitor`.

None of these classes lock: the monitor holds its one lock while it updates them. Each
keeps O(1) (or fixed-size) memory however many values it sees, and can be written to
and read back from a JSON-compatible dict so that a restart keeps the history.
"""

from __future__ import annotations

import math
import random
from statistics import NormalDist
from typing import Any, Dict, List, Optional, Sequence

__all__ = [
    "MAX_COUNT",
    "AvailabilityWindow",
    "LatencyReservoir",
    "StateFieldError",
    "Welford",
    "student_t_quantile",
    "welch_upper_bound",
]

MAX_COUNT = 2**63 - 1
"""The largest count a saved state may hold (a signed 64-bit integer, as Prometheus and
most consumers of the numbers can represent)."""

_SHOWN_CHARS = 40


class StateFieldError(ValueError):
    """A field of a saved state is missing or holds something it never can.

    The message names the field's path and what is allowed, and shows at most a short
    excerpt of the value (never a whole list or a huge number).

    Args:
        path: dotted path of the field (``state.counters.total``).
        expected: what is allowed there.
        value: what was found (only described, never echoed in full).
        missing: the field is absent.
    """

    def __init__(
        self, path: str, expected: str, value: Any = None, *, missing: bool = False
    ) -> None:
        self.path = path
        self.expected = expected
        got = "nothing (the field is missing)" if missing else describe(value)
        super().__init__(f"{path}: expected {expected}, got {got}")


def describe(value: Any) -> str:
    """A short description of a JSON value for an error message (bounded length)."""
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, str):
        text = repr(value[:_SHOWN_CHARS])
        return f"the string {text}" + ("..." if len(value) > _SHOWN_CHARS else "")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        try:
            digits = len(str(abs(value)))
        except ValueError:  # beyond the interpreter's int-to-str limit
            digits = int(value.bit_length() * 0.30103) + 1
        return f"an integer of {digits} digits"
    try:
        text = repr(value)
    except Exception:  # pragma: no cover - repr of a JSON value does not fail
        text = f"a {type(value).__name__}"
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def field_path(path: str, key: str) -> str:
    """``path.key``, or ``path['key...']`` for a key that is long or not a plain name."""
    if len(key) <= _SHOWN_CHARS and key.replace("_", "a").isalnum() and key.isascii():
        return f"{path}.{key}"
    shown = repr(key[:_SHOWN_CHARS])
    return f"{path}[{shown}{'...' if len(key) > _SHOWN_CHARS else ''}]"


def read_count(data: Dict[str, Any], key: str, path: str, default: Optional[int] = None) -> int:
    """``data[key]`` as a count: an integer from 0 to :data:`MAX_COUNT` (not a bool).

    A missing key gives ``default``, or raises :class:`StateFieldError` without one.
    """
    if key not in data:
        if default is None:
            raise StateFieldError(
                f"{path}.{key}", f"an integer from 0 to {MAX_COUNT}", missing=True
            )
        return default
    return check_count(data[key], f"{path}.{key}")


def check_count(value: Any, path: str) -> int:
    """``value`` if it is an integer from 0 to :data:`MAX_COUNT`, else a StateFieldError."""
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise StateFieldError(path, f"an integer from 0 to {MAX_COUNT}", value)
    return value


def read_finite(
    data: Dict[str, Any],
    key: str,
    path: str,
    default: Optional[float] = None,
    *,
    minimum: Optional[float] = None,
) -> float:
    """``data[key]`` as a finite float (a JSON number, not a bool), at least ``minimum``.

    A missing key gives ``default``, or raises :class:`StateFieldError` without one.
    """
    if key not in data:
        if default is None:
            raise StateFieldError(f"{path}.{key}", _finite_text(minimum), missing=True)
        return default
    return check_finite(data[key], f"{path}.{key}", minimum=minimum)


def check_finite(value: Any, path: str, *, minimum: Optional[float] = None) -> float:
    """``value`` as a float if it is a finite number (at least ``minimum``), else a
    StateFieldError. Integers too large for a float are refused as well."""
    if type(value) is int:
        if value.bit_length() > 1000:
            raise StateFieldError(path, _finite_text(minimum), value)
        number = float(value)
    elif type(value) is float:
        number = value
    else:
        raise StateFieldError(path, _finite_text(minimum), value)
    if not math.isfinite(number) or (minimum is not None and number < minimum):
        raise StateFieldError(path, _finite_text(minimum), value)
    return number


def check_object(value: Any, path: str) -> Dict[str, Any]:
    """``value`` if it is a JSON object (a dict), else a StateFieldError."""
    if not isinstance(value, dict):
        raise StateFieldError(path, "an object", value)
    return value


def _finite_text(minimum: Optional[float]) -> str:
    return "a finite number" if minimum is None else f"a finite number >= {minimum:g}"


class Welford:
    """Running count, mean and variance (Welford's online algorithm), O(1) memory.

    Example:
        >>> acc = Welford()
        >>> for x in (1.0, 2.0, 3.0):
        ...     acc.add(x)
        >>> acc.n, acc.mean, acc.variance
        (3, 2.0, 1.0)
    """

    __slots__ = ("m2", "mean", "n")

    def __init__(self, n: int = 0, mean: float = 0.0, m2: float = 0.0) -> None:
        self.n = n
        self.mean = mean
        self.m2 = m2

    def add(self, x: float) -> None:
        """Add one value."""
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    @property
    def variance(self) -> float:
        """Sample variance (``n - 1`` denominator); 0.0 with fewer than two values."""
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0

    @classmethod
    def merged(cls, a: Welford, b: Welford) -> Welford:
        """The accumulator of both groups' values together (Chan, Golub & LeVeque's
        pairwise update); ``a`` and ``b`` are not changed.

        Example:
            >>> a, b = Welford(), Welford()
            >>> for x in (1.0, 2.0):
            ...     a.add(x)
            >>> b.add(6.0)
            >>> both = Welford.merged(a, b)
            >>> both.n, both.mean, both.variance
            (3, 3.0, 7.0)
        """
        if b.n == 0:
            return cls(a.n, a.mean, a.m2)
        if a.n == 0:
            return cls(b.n, b.mean, b.m2)
        n = a.n + b.n
        delta = b.mean - a.mean
        mean = a.mean + delta * (b.n / n)
        return cls(n, mean, a.m2 + b.m2 + delta * delta * (a.n * b.n / n))

    def summary(self) -> Dict[str, Any]:
        """``{"n", "mean", "stddev"}`` (``mean``/``stddev`` are ``None`` without data)."""
        if self.n == 0:
            return {"n": 0, "mean": None, "stddev": None}
        return {"n": self.n, "mean": self.mean, "stddev": math.sqrt(self.variance)}

    def to_dict(self) -> Dict[str, Any]:
        """The exact state, for persistence."""
        return {"n": self.n, "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_dict(cls, data: Any, path: str = "welford") -> Welford:
        """Rebuild from :meth:`to_dict` output, checking every field.

        ``n`` must be a count (0 to :data:`MAX_COUNT`), ``mean`` a finite number and
        ``m2`` a finite number >= 0; with no value ``mean`` and ``m2`` are 0, with one
        value ``m2`` is 0 (what the algorithm always gives).

        Raises:
            StateFieldError: a field is missing or out of range (``path`` names it).
        """
        data = check_object(data, path)
        n = read_count(data, "n", path)
        mean = read_finite(data, "mean", path)
        m2 = read_finite(data, "m2", path, minimum=0.0)
        if n == 0 and mean != 0.0:
            raise StateFieldError(f"{path}.mean", "0 when n is 0", mean)
        if n <= 1 and m2 != 0.0:
            raise StateFieldError(f"{path}.m2", f"0 when n is {n}", m2)
        return cls(n, mean, m2)


class LatencyReservoir:
    """A uniform random sample of at most ``size`` values (Vitter's algorithm R).

    Percentiles of the sample estimate the percentiles of everything seen; memory is
    fixed at ``size`` floats.

    Args:
        size: how many values to keep (>= 1).
        seed: seed of the private random generator that picks replacements.
    """

    __slots__ = ("_random", "seen", "size", "values")

    def __init__(self, size: int, seed: int = 0) -> None:
        if size < 1:
            raise ValueError(f"reservoir size must be >= 1, got {size}")
        self.size = size
        self.seen = 0
        self.values: List[float] = []
        self._random = random.Random(seed).random

    def add(self, x: float) -> None:
        """Offer one value to the sample."""
        self.seen += 1
        if self.seen <= self.size:
            self.values.append(x)
            return
        j = int(self._random() * self.seen)
        if j < self.size:
            self.values[j] = x

    def percentiles(self, qs: Sequence[float]) -> List[Optional[float]]:
        """Nearest-rank percentiles (``qs`` in 0..100) of the sample; ``None`` when empty."""
        return self.percentiles_of(self.values, qs)

    @staticmethod
    def percentiles_of(values: Sequence[float], qs: Sequence[float]) -> List[Optional[float]]:
        """Nearest-rank percentiles (``qs`` in 0..100) of ``values``; ``None`` when empty."""
        if not values:
            return [None for _ in qs]
        ordered = sorted(values)
        last = len(ordered) - 1
        return [ordered[min(last, max(0, math.ceil(q / 100.0 * len(ordered)) - 1))] for q in qs]

    def clear(self) -> None:
        """Forget everything."""
        self.seen = 0
        self.values = []

    def to_dict(self) -> Dict[str, Any]:
        """The sample and the count seen, for persistence."""
        return {"seen": self.seen, "values": list(self.values)}

    def load(self, data: Any, path: str = "latency") -> None:
        """Restore :meth:`to_dict` output (a larger saved sample is cut to ``size``).

        ``values`` must be a list of finite numbers and ``seen`` a count at least as
        large as that list (both may be missing: an empty sample). Nothing changes when
        the data is refused.

        Raises:
            StateFieldError: a field is missing or out of range (``path`` names it).
        """
        data = check_object(data, path)
        raw = data.get("values", [])
        if not isinstance(raw, list):
            raise StateFieldError(f"{path}.values", "a list of finite numbers", raw)
        values = [check_finite(v, f"{path}.values[{i}]") for i, v in enumerate(raw)]
        seen = read_count(data, "seen", path, len(values))
        if seen < len(values):
            raise StateFieldError(f"{path}.seen", f"at least {len(values)} (the sample size)", seen)
        self.values = values[: self.size]
        self.seen = seen


class AvailabilityWindow:
    """Outcome (ok / failed) of the last ``size`` fetch attempts, in a ring buffer.

    Args:
        size: how many recent attempts count (>= 1).
    """

    __slots__ = ("_ring", "count", "failures", "pos", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"window size must be >= 1, got {size}")
        self.size = size
        self._ring = bytearray(size)
        self.pos = 0
        self.count = 0
        self.failures = 0

    def add(self, failed: bool) -> None:
        """Record one attempt."""
        pos = self.pos
        bit = 1 if failed else 0
        if self.count == self.size:
            self.failures -= self._ring[pos]
        else:
            self.count += 1
        self._ring[pos] = bit
        self.failures += bit
        self.pos = pos + 1 if pos + 1 < self.size else 0

    def clear(self) -> None:
        """Forget every attempt (used when the store is known to have recovered)."""
        self._ring = bytearray(self.size)
        self.pos = 0
        self.count = 0
        self.failures = 0

    @property
    def availability_pct(self) -> Optional[float]:
        """Share of attempts in the window that did not fail, in percent (``None``: empty)."""
        if self.count == 0:
            return None
        return 100.0 * (self.count - self.failures) / self.count


_NORMAL = NormalDist()


_EXACT_DF_BELOW = 30


def _t_cdf_integer(t: float, nu: int) -> float:
    """P(T <= t) for Student's t with integer ``nu`` >= 1 (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(nu))
    c2 = math.cos(theta) ** 2
    s = math.sin(theta)
    if nu % 2 == 1:
        total, term = 0.0, math.cos(theta)
        for k in range(1, (nu - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        a = 2.0 / math.pi * (theta + s * total) if nu > 1 else 2.0 * theta / math.pi
    else:
        total, term = 0.0, 1.0
        for k in range(1, nu // 2 + 1):
            total += term
            term *= c2 * (2 * k - 1) / (2 * k)
        a = s * total
    return 0.5 + 0.5 * a


def student_t_quantile(p: float, df: float) -> float:
    """Quantile ``p`` (> 0.5) of Student's t distribution with ``df`` degrees of freedom.

    Below 30 degrees of freedom ``df`` is rounded down (a slightly wider, conservative
    bound) and the exact distribution function is inverted by bisection; from 30 on, the
    Cornish-Fisher expansion around the normal quantile (Abramowitz & Stegun 26.7.5) is
    accurate to better than 1e-4. No SciPy needed.

    Example:
        >>> round(student_t_quantile(0.975, 10), 3)
        2.228
    """
    z = _NORMAL.inv_cdf(p)
    if not math.isfinite(df) or df > 1e7:
        return z
    if df < _EXACT_DF_BELOW:
        nu = max(1, int(df))
        lo, hi = 0.0, max(1.0, 2.0 * z)
        while _t_cdf_integer(hi, nu) < p:
            lo, hi = hi, hi * 2.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if _t_cdf_integer(mid, nu) < p:
                lo = mid
            else:
                hi = mid
            if hi - lo <= 1e-9 * hi:
                break
        return hi
    z2 = z * z
    g1 = (z2 + 1.0) * z / 4.0
    g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0
    g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0
    g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def welch_upper_bound(a: Welford, b: Welford, confidence: float) -> Optional[float]:
    """One-sided upper confidence bound of ``mean(a) - mean(b)`` (Welch's t).

    A fixed-sample bound: valid for one look at a sample size chosen in advance. The
    monitor's decision, which is read after every score, uses the always-valid bounds
    of :mod:`asahi_features.monitor.sequential` instead.

    ``diff + t(confidence, df) * se`` with ``se = sqrt(var_a/n_a + var_b/n_b)`` and the
    Welch-Satterthwaite degrees of freedom. ``None`` when either group has fewer than two
    values. With zero variance in both groups the bound is the observed difference.
    """
    if a.n < 2 or b.n < 2:
        return None
    va = a.variance / a.n
    vb = b.variance / b.n
    diff = a.mean - b.mean
    se2 = va + vb
    if se2 <= 0.0:
        return diff
    denom = (va * va) / (a.n - 1) + (vb * vb) / (b.n - 1)
    df = se2 * se2 / denom if denom > 0 else float("inf")
    return diff + student_t_quantile(confidence, df) * math.sqrt(se2)
