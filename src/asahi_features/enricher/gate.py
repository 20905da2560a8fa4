"""The monitor seam: :class:`EnrichmentGate`, what the enricher asks of a monitor
(hold a request out, pause a task type, record every result)."""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

from ..models import EnrichmentResult

__all__ = ["EnrichmentGate"]


@runtime_checkable
class EnrichmentGate(Protocol):
    """What the enricher needs from a monitor (:class:`~asahi_features.monitor.FeatureMonitor`
    implements it)."""

    def is_held_out(self, task_type: str, unit_id: Optional[str]) -> bool:
        """True when this request belongs to the control group (never enriched)."""
        ...

    def should_enrich(self, task_type: str) -> bool:
        """False when enrichment is paused for this task type."""
        ...

    def record_enrichment(
        self, result: EnrichmentResult, inference_quality: Optional[float] = None
    ) -> None:
        """Called with every result the enricher produces."""
        ...
