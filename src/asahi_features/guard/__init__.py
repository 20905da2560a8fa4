"""The guard: one deadline per request, coalesced reads, a circuit breaker and a cache.

:class:`GuardedClient` wraps any backend; its parts live in modules of their own:
``client`` (the public class and the steps its sync and async paths share),
``coalescer`` (concurrent lookups merged into backend batch reads), ``workers`` (bounded
daemon threads for blocking backends), ``breaker`` (failure-rate circuit breaker) and
``cache`` (TTL cache whose ages keep growing).
"""

from .breaker import BreakerState, CircuitBreaker, Permit
from .cache import FeatureCache
from .client import GuardedClient

__all__ = ["BreakerState", "CircuitBreaker", "FeatureCache", "GuardedClient", "Permit"]
