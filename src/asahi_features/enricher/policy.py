"""The feature policy: allow / deny / redact decisions for a feature name, whatever the
backend's naming scheme (:class:`_PolicyMatcher`)."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..settings import FeaturePolicy

# Policy decisions and line prefixes are cached per name; request-context keys come
# from callers, so these caches are cleared when full instead of growing without bound.
_NAME_CACHE_SIZE = 4_096


def _plain(name: str) -> str:
    return name.rsplit(":", 1)[-1]


_SEPARATORS = (":", ".", "__")
"""How backends join a view and a feature: Feast ``view:feature`` (``view__feature`` in
its full feature names), Tecton ``view.feature``."""


def _readings(name: str) -> List[Tuple[str, str]]:
    """Every ``(view, feature)`` that ``name`` may stand for: ``("", name)`` (a plain name,
    view unknown) and one reading per separator in it (views written with ``.``)."""
    out = [("", name)]
    for sep in _SEPARATORS:
        at = name.find(sep)
        while at >= 0:
            feature = name[at + len(sep) :]
            if feature:
                view = name[:at].replace("__", ".").replace(":", ".")
                out.append((view, feature))
            at = name.find(sep, at + 1)
    return out


def _same_name(name: str) -> str:
    return name


class _PolicyEntries:
    """One policy list, indexed by every feature part its entries may stand for."""

    __slots__ = ("_fold", "_views")

    def __init__(self, names: Sequence[str], fold: Callable[[str], str]) -> None:
        self._fold = fold
        self._views: Dict[str, set[str]] = {}
        """feature part -> the views named with it (``""``: any view)."""
        for entry in names:
            for view, feature in _readings(fold(entry)):
                self._views.setdefault(feature, set()).add(view)

    def matches(self, name: str, *, lenient: bool) -> bool:
        """Does ``name`` stand for a feature of this list?

        ``lenient`` (deny, redact): yes when it *may* (an unknown view, or one view a
        part of the other, as ``project.profile`` and ``profile``). Otherwise (allow):
        only when it surely does (the entry names no view, or the same one).
        """
        for view, feature in _readings(self._fold(name)):
            views = self._views.get(feature)
            if not views:
                continue
            if "" in views or view in views:
                return True
            if not lenient:
                continue
            if not view:
                return True
            for other in views:
                if view.endswith("." + other) or other.endswith("." + view):
                    return True
        return False


class _PolicyMatcher:
    """Answers allow / deny / redact for a feature name, whatever the backend's naming
    scheme: plain ``email``, Feast ``profile:email`` (``profile__email``), Tecton
    ``profile.email``; policy entries may be written in any of these forms.

    A plain entry (``email``) matches the feature ``email`` of every view. An entry with
    a view (``profile:email``) matches that view's ``email`` in every spelling. When it is
    not sure, the policy denies: ``deny`` and ``redact`` also match a name whose view is
    unknown (plain ``email``) or may be the same (``project.profile.email``), compare
    case-insensitively, and consider every way a name can be split; ``allow`` admits a
    name only when an entry surely names it (so the plain ``email`` is not admitted by
    ``allow: [profile:email]``).
    """

    def __init__(self, policy: FeaturePolicy) -> None:
        self.policy = policy
        self._allow = _PolicyEntries(policy.allow, _same_name)
        self._deny = _PolicyEntries(policy.deny, str.casefold)
        self._redact = _PolicyEntries(policy.redact, str.casefold)
        self._cache: Dict[str, Optional[str]] = {}

    def decide(self, name: str) -> Optional[str]:
        """``None`` (keep), ``"drop"`` or ``"redact"``."""
        try:
            return self._cache[name]
        except KeyError:
            pass
        decision: Optional[str] = None
        if (
            self.policy.allow and not self._allow.matches(name, lenient=False)
        ) or self._deny.matches(name, lenient=True):
            decision = "drop"
        elif self._redact.matches(name, lenient=True):
            decision = "redact"
        cache = self._cache
        if len(cache) >= _NAME_CACHE_SIZE:
            cache.clear()
        cache[name] = decision
        return decision
