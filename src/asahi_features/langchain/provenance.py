"""Which results this library produced (a weak registry by ``enrichment_id``), so that
only genuine enrichments ever reach a monitor.
"""

from __future__ import annotations

import weakref
from typing import (
    Any,
    Optional,
)

from ..models import EnrichmentResult

_PRODUCED: weakref.WeakValueDictionary[str, EnrichmentResult] = weakref.WeakValueDictionary()
"""Every result a :class:`FeatureEnrichmentRunnable` returned in an observed run, by
``enrichment_id``, for as long as the result object lives. The monitor handler and the
evaluation helpers record only these: an output of another step that merely looks like
an enrichment result (a dict, a copy, a hand-made ``EnrichmentResult``) is ignored."""


def _mark_produced(result: Any) -> None:
    try:  # noqa: SIM105 - try/except is cheaper than contextlib.suppress per result
        _PRODUCED[result.enrichment_id] = result
    except (AttributeError, TypeError):  # not a result object: nothing to vouch for
        pass


def _produced(candidate: Any) -> Optional[EnrichmentResult]:
    """The result a FeatureEnrichmentRunnable produced that ``candidate`` is (or is an
    exact copy of, e.g. a serialised output read back), else ``None``.

    What is returned is always the runnable's own object, never ``candidate``: a
    look-alike can at most point at a real result, never put its content in a monitor.
    """
    eid = getattr(candidate, "enrichment_id", None)
    if type(eid) is not str:
        return None
    genuine = _PRODUCED.get(eid)
    if genuine is None:
        return None
    if candidate is not genuine:
        try:
            same = type(candidate) is type(genuine) and bool(candidate == genuine)
        except Exception:
            same = False
        if not same:
            return None
    return genuine
