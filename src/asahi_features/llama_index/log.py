"""A bounded memory of recent enrichments by query, for evaluation mapping."""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Deque, List, Optional, Tuple

from ..models import EnrichmentResult

if TYPE_CHECKING:
    pass


logger = logging.getLogger(__name__)


class EnrichmentLog:
    """A bounded, thread-safe memory of recent enrichments and the queries they enriched.

    The postprocessor and the event handler each keep one, so that evaluation results
    that carry only a query string can be mapped back to their enrichments. Adding is a
    single append to a ring buffer (lock-free, on the request path); lookups scan it,
    which is fine at evaluation time. When more than ``max_entries`` enrichments are
    remembered the oldest are forgotten.

    Args:
        max_entries: how many enrichments to remember (at least 1).
        keep_results: also keep the :class:`EnrichmentResult` objects (so that
            :func:`record_evaluation` can record an enrichment the monitor never saw).
            The postprocessor keeps ids only: holding thousands of results alive costs
            the request path measurably more than holding their ids.
    """

    def __init__(self, max_entries: int = 10_000, *, keep_results: bool = True) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._keep = keep_results
        self._ring: Deque[Tuple[str, str, Optional[EnrichmentResult]]] = deque(maxlen=max_entries)

    @property
    def keeps_results(self) -> bool:
        """Whether :meth:`get` can return the remembered results."""
        return self._keep

    def add(self, query: Optional[str], result: EnrichmentResult) -> None:
        """Remember ``result`` as the enrichment of ``query``."""
        # deque.append is atomic: no lock on the request path
        self._ring.append((query or "", result.enrichment_id, result if self._keep else None))

    def _entries(self) -> List[Tuple[str, str, Optional[EnrichmentResult]]]:
        while True:
            try:
                return list(self._ring)
            except RuntimeError:  # pragma: no cover - mutated during the copy: retry
                continue

    def get(self, enrichment_id: str) -> Optional[EnrichmentResult]:
        """The remembered result with this id (``None`` if forgotten or ids-only)."""
        for _, eid, result in reversed(self._entries()):
            if eid == enrichment_id:
                return result
        return None

    def ids_for_query(self, query: str) -> List[str]:
        """The ids of every remembered enrichment of ``query`` (each once), oldest first."""
        seen: set[str] = set()
        found: List[str] = []
        for key, eid, _ in self._entries():
            if key == query and eid not in seen:
                seen.add(eid)
                found.append(eid)
        return found

    def __len__(self) -> int:
        return len(self._ring)
