"""Resolution of plain and fully qualified feature names, shared by Feast-like backends.

Feast calls a feature ``view:feature``; Tecton calls it ``view.feature``. Users may ask
for either the full reference or the plain name; a plain name must be served by exactly
one view of the entity type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Dict, List, Tuple

from ..errors import FeatureConfigError

__all__ = ["FeatureNameResolver"]


class FeatureNameResolver:
    """Maps requested names to full references for one entity type.

    Args:
        entity_type: the entity type the views serve (for messages).
        views: view name -> feature names that view serves for this entity type.
        separator: ``":"`` for Feast, ``"."`` for Tecton.
    """

    def __init__(
        self, entity_type: str, views: Mapping[str, Sequence[str]], separator: str = ":"
    ) -> None:
        self.entity_type = entity_type
        self.separator = separator
        self._full: Dict[str, str] = {}
        self._by_plain: Dict[str, List[str]] = {}
        for view, names in views.items():
            for name in names:
                ref = f"{view}{separator}{name}"
                self._full[ref] = name
                self._by_plain.setdefault(name, []).append(ref)

    @property
    def available(self) -> List[str]:
        """Every name accepted: plain names and full references, sorted."""
        return sorted(set(self._by_plain) | set(self._full))

    @property
    def plain_names(self) -> List[str]:
        """Plain feature names served for the entity type, sorted."""
        return sorted(self._by_plain)

    def try_resolve(self, names: Sequence[str]) -> Tuple[List[Tuple[str, str]], List[str]]:
        """Resolve what can be resolved: ``([(requested, ref)], unknown_names)``.

        Ambiguous plain names raise :class:`FeatureConfigError` at once, listing every
        reference that serves them.
        """
        resolved: List[Tuple[str, str]] = []
        unknown: List[str] = []
        for name in names:
            if name in self._full:
                resolved.append((name, name))
                continue
            refs = self._by_plain.get(name)
            if not refs:
                unknown.append(name)
            elif len(refs) > 1:
                raise FeatureConfigError(
                    f"feature {name!r} of entity type {self.entity_type!r} is served by "
                    f"{len(refs)} views; ask for one of them by its full name",
                    refs,
                    kind="references",
                )
            else:
                resolved.append((name, refs[0]))
        return resolved, unknown

    def resolve(self, names: Sequence[str]) -> List[Tuple[str, str]]:
        """Resolve every name or raise :class:`FeatureConfigError` listing what exists."""
        resolved, unknown = self.try_resolve(names)
        if unknown:
            raise self.unknown_error(unknown)
        return resolved

    def unknown_error(self, unknown: Sequence[str]) -> FeatureConfigError:
        """The error for names that no view of the entity type serves."""
        return FeatureConfigError(
            f"unknown feature(s) {', '.join(map(repr, unknown))} for entity type "
            f"{self.entity_type!r}",
            self.available,
        )
