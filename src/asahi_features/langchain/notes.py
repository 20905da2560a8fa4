"""Warn once per cause (outcome, task type) when a request ends without features because
of a wiring mistake; DEBUG after that, bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import (
    Any,
    Dict,
)

from ..models import EnrichmentReason, EnrichmentResult
from ..warn_once import WarnOnce

logger = logging.getLogger("asahi_features.langchain")

_WARN_REASONS: Dict[Any, str] = {
    EnrichmentReason.NO_IDENTITY: (
        "FeatureEnrichmentRunnable %r: no identity for task type %r, the prompt goes out "
        "without features. Pass one in config['configurable'] (asahi_user_id, "
        "asahi_organization_id, asahi_<entity_type>_id, or the plain keys) or in the input "
        "(later occurrences are logged at DEBUG)"
    ),
    EnrichmentReason.TASK_NOT_ENABLED: (
        "FeatureEnrichmentRunnable %r: task type %r is not in the enricher's "
        "enabled_task_types, the prompt goes out without features (later occurrences are "
        "logged at DEBUG)"
    ),
    EnrichmentReason.NO_FEATURES_MAPPED: (
        "FeatureEnrichmentRunnable %r: task type %r maps no features in the enricher's "
        "task_features, the prompt goes out without features (later occurrences are "
        "logged at DEBUG)"
    ),
}
"""Outcomes that usually mean a wiring mistake: WARNING once per (outcome, task type) and
runnable, DEBUG after that."""
_NO_IDENTITY = EnrichmentReason.NO_IDENTITY
_NOT_ENABLED = EnrichmentReason.TASK_NOT_ENABLED
_NOT_MAPPED = EnrichmentReason.NO_FEATURES_MAPPED


def note(state: WarnOnce, messages: Mapping[Any, str], name: Any, result: EnrichmentResult) -> None:
    """Log ``messages[result.reason]`` (with ``name`` and the task type): WARNING the
    first time a cause (outcome, task type) is seen by ``state``, DEBUG after that.
    Outcomes without a message are not logged."""
    template = messages.get(result.reason)
    if template is None:
        return
    task = str(result.task_type)[:80]
    if state.claim((result.reason, task)):
        logger.warning(template, name, task)
    else:
        logger.debug(template, name, task)
