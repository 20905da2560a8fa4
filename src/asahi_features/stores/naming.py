"""Resolution of plain and fully qualified feature names, shared by Feast-like backends.

Feast calls a feature ``view:feature``; Tecton calls it ``view.feature``. Users may ask
for either the full reference or the plain name; a plain name must be served by exactly
one view of the entity type.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Dict, List, Tuple

from ..errors import FeatureConfigError

__all__ = ["FeatureNameResolver", "close_matches"]


def close_matches(unknown: Iterable[str], candidates: Iterable[str], limit: int = 3) -> List[str]:
    """The candidates closest to each unknown name, best first ("did you mean").

    A case-insensitive equal name is the match; otherwise ``difflib``'s close matches
    (ratio >= 0.75, and within 0.1 of the best one); at most ``limit`` per unknown name,
    without duplicates.
    """
    pool = list(dict.fromkeys(candidates))
    lowered: Dict[str, List[str]] = {}
    for name in pool:
        lowered.setdefault(name.lower(), []).append(name)
    out: List[str] = []
    for name in unknown:
        found = lowered.get(name.lower(), [])
        if not found:
            matcher = difflib.SequenceMatcher(b=name)
            scored: List[Tuple[float, str]] = []
            for candidate in pool:
                matcher.set_seq1(candidate)
                if matcher.real_quick_ratio() >= 0.75 and matcher.quick_ratio() >= 0.75:
                    ratio = matcher.ratio()
                    if ratio >= 0.75:
                        scored.append((ratio, candidate))
            scored.sort(key=lambda item: -item[0])
            found = [c for r, c in scored if r >= scored[0][0] - 0.1] if scored else []
        for match in found[:limit]:
            if match not in out and match != name:
                out.append(match)
    return out


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
        self._views: Dict[str, List[str]] = {v: list(n) for v, n in sorted(views.items())}
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

    def unknown_error(self, unknown: Sequence[str], note: str = "") -> FeatureConfigError:
        """The error for names that no view of the entity type serves: close matches
        first ("did you mean"), then every feature by view."""
        suggestions: List[str] = []
        for name in unknown:  # a full reference is compared with full references
            pool = self._full if self.separator in name else self._by_plain
            suggestions += [m for m in close_matches([name], pool) if m not in suggestions]
        return FeatureConfigError(
            f"unknown feature(s) {', '.join(map(repr, unknown))} for entity type "
            f"{self.entity_type!r}{note}",
            self.available,
            suggestions=suggestions,
            groups=self._views,
        )
