"""FeatureEnricher: task -> features -> a context block within a token budget (spec section 3).

One request flows like this:

1. the task type must be in ``enabled_task_types`` and have a feature mapping;
2. the monitor (if any) may hold the request out (control group) or pause enrichment;
3. each entity type the task uses needs an identity (``user_id``, ``organization_id``,
   ``entity_ids["<entity_type>"]`` or ``context["<entity_type>_id"]``; a compound type
   such as ``merchant+user`` needs each of its entities', see :mod:`.identities`); the
   features of each entity are fetched with one call per entity type;
4. stale features (older than ``freshness_threshold_seconds``, or their view's ttl when
   shorter, or their ``freshness_overrides`` limit) are left out one by one, with the
   reason in ``stale_reasons``, then the feature policy (allow / deny / redact) is applied;
5. the values are rendered as inert single lines and the blocks are fitted into
   ``max_feature_tokens`` (see :mod:`asahi_features.budget`).

Whatever happens, the original prompt is the exact suffix of ``enriched_prompt``; when
nothing is added they are equal and :attr:`EnrichmentResult.reason` says why.
"""

from __future__ import annotations

# The package splits the enricher by job (each module's docstring says which): planning,
# fetching, rendering (``blocks``), results, the monitor seam (``gate``), the feature
# policy, the :class:`FeatureEnricher` class (``core``) and :func:`build_enricher`
# (``factory``). Every name the module defined is still importable from here, except the
# cache-size tunables: each is read by the module that uses it, so patch
# ``asahi_features.enricher.blocks._SEGMENT_CACHE_SIZE`` / ``_LINE_CACHE_SIZE`` /
# ``_NAME_CACHE_SIZE`` and ``asahi_features.enricher.policy._NAME_CACHE_SIZE`` (left out
# here so that patching this package fails loudly instead of silently doing nothing).
from ..observers import EnrichmentObserver as EnrichmentObserver
from ..observers import EnrichmentTrace as EnrichmentTrace
from ..observers import FailedCall as FailedCall
from ..settings import EnricherConfig as EnricherConfig
from .blocks import _BAD_LINE as _BAD_LINE
from .blocks import _NO_LINE as _NO_LINE
from .blocks import _STALE_NOTE as _STALE_NOTE
from .blocks import CONTEXT_HEADER as CONTEXT_HEADER
from .blocks import CONTEXT_PREFIX as CONTEXT_PREFIX
from .blocks import _value_key as _value_key
from .blocks import logger as logger
from .core import FeatureEnricher as FeatureEnricher
from .factory import build_enricher as build_enricher
from .fetching import _by_entity_id as _by_entity_id
from .gate import EnrichmentGate as EnrichmentGate
from .planning import _INVALID as _INVALID
from .planning import _NO_TASK as _NO_TASK
from .planning import EnrichmentTuple as EnrichmentTuple
from .planning import _Group as _Group
from .planning import _make_tuple as _make_tuple
from .planning import _Plan as _Plan
from .planning import _TaskFeatures as _TaskFeatures
from .planning import _tuple_new as _tuple_new
from .policy import _SEPARATORS as _SEPARATORS
from .policy import _plain as _plain
from .policy import _PolicyEntries as _PolicyEntries
from .policy import _PolicyMatcher as _PolicyMatcher
from .policy import _readings as _readings
from .policy import _same_name as _same_name
from .results import _ENRICHED as _ENRICHED
from .results import _FOUND as _FOUND
from .results import _INVALID_ID as _INVALID_ID
from .results import _NO_LIMITS as _NO_LIMITS
from .results import _NO_VECTORS as _NO_VECTORS
from .results import _OVERLOADED as _OVERLOADED
from .results import _UNAVAILABLE as _UNAVAILABLE
from .results import _new_result as _new_result

# CONTEXT_PREFIX and EnrichmentTuple were documented module members before the split:
# listed here so the API reference (which shows re-exports only when listed) keeps them.
__all__ = [
    "CONTEXT_PREFIX",
    "EnricherConfig",
    "EnrichmentGate",
    "EnrichmentObserver",
    "EnrichmentTrace",
    "EnrichmentTuple",
    "FailedCall",
    "FeatureEnricher",
    "build_enricher",
]
