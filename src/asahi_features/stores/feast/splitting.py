"""Entity ids of a read split into join-key values and INVALID_ID answers (an id that
is no value of the key's type, or a composite key that lacks something): only the
valid ids are read, the others keep their places in the answer."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ...models import FeatureStatus, FeatureVector
from .keys import BAD_ID_ERRORS, KeyProblem
from .registry import Plan

__all__ = ["IdSplitter"]

logger = logging.getLogger(__name__)


class IdSplitter:
    """Id handling for :class:`~.client.FeastClient`."""

    source: str

    def _invalid(
        self, plan: Plan, entity_id: Any, entity_type: str, exc: Exception
    ) -> FeatureVector:
        """The answer for an id that is no value of the join key's type."""
        logger.debug(
            "invalid %s id %r for join key %s: %s", entity_type, entity_id, plan.join_key, exc
        )
        shown = repr(entity_id)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        if isinstance(exc, KeyProblem):
            error = f"entity key {shown}: {exc}"
        else:
            error = (
                f"entity id {shown} is not a valid {plan.key_type} value of join key "
                f"{plan.join_key!r} ({type(exc).__name__})"
            )
        return FeatureVector.empty(
            entity_id, entity_type, self.source, FeatureStatus.INVALID_ID, error=error
        )

    def _split(
        self, plan: Plan, entity_ids: Sequence[Any], entity_type: str
    ) -> Tuple[List[Any], Optional[Dict[int, FeatureVector]]]:
        """The join key values of the ids, and None, when every id converts; otherwise
        the values of the valid ids and position -> INVALID_ID vector of the others."""
        convert = plan.convert
        try:
            return [convert(eid) for eid in entity_ids], None
        except BAD_ID_ERRORS:
            pass
        keys: List[Any] = []
        invalid: Dict[int, FeatureVector] = {}
        for i, eid in enumerate(entity_ids):
            try:
                keys.append(convert(eid))
            except BAD_ID_ERRORS as exc:
                invalid[i] = self._invalid(plan, eid, entity_type, exc)
        return keys, invalid

    @staticmethod
    def _merge(
        entity_ids: Sequence[Any],
        read: List[FeatureVector],
        invalid: Dict[int, FeatureVector],
    ) -> List[FeatureVector]:
        """The vectors of the valid ids (in order) with the invalid ones at their places."""
        valid = iter(read)
        return [invalid[i] if i in invalid else next(valid) for i in range(len(entity_ids))]
