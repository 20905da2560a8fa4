"""Rendering: the lines of a context block (labels, headers, cached rendered values with
their token counts), the request-context block and the stale note line."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..budget import Block, Line, segments
from ..rendering import RenderedValue, humanize, render_value, value_key
from ..sanitizing import sanitize
from ..settings import EnricherConfig
from .planning import _Plan
from .policy import _NAME_CACHE_SIZE, _plain, _PolicyMatcher

logger = logging.getLogger("asahi_features.enricher")
"""Every part logs as ``asahi_features.enricher`` (the name the module had before it was
split: log configuration and filters keep working)."""

CONTEXT_HEADER = "[Context from request]"
CONTEXT_PREFIX = "context."
"""Names of request-context lines start with this; such lines are never feature lines."""
_SEGMENT_CACHE_SIZE = 65_536
_LINE_CACHE_SIZE = 16_384
_NO_LINE = Line("", "", RenderedValue((), "", ""))
"""Cached answer for a value that renders as nothing (an empty string or list)."""
_BAD_LINE = Line("", "", RenderedValue((), "", ""))
"""Answer for a value that cannot be rendered (the line is left out; never cached)."""
_STALE_NOTE = "left_out_as_stale"
"""The name of the ``stale_note`` line of a block (never a feature line)."""


_value_key = value_key
"""The line cache's value key (:func:`asahi_features.rendering.value_key`): equal only
for values of identical types that render identically; a plain ``str`` is its own key."""


class _Blocks:
    """The rendering part of :class:`~asahi_features.enricher.FeatureEnricher`."""

    config: EnricherConfig
    _policy: _PolicyMatcher
    _prefixes: Dict[str, str]
    _headers: Dict[str, str]
    _header_tokens: Dict[str, Tuple[str, Optional[int]]]
    _segment_cache: Dict[str, int]
    _line_cache: Dict[Tuple[str, Any], Line]
    _count_tokens: Callable[[str], int]
    _segments_exact: bool
    _invalid_warned: set[str]
    _redacted: RenderedValue

    def _prefix(self, name: str) -> str:
        prefix = self._prefixes.get(name)
        if prefix is None:
            label = self.config.feature_labels.get(name) or self.config.feature_labels.get(
                _plain(name)
            )
            text = sanitize(label) if label else humanize(name)
            prefix = f"- {text or humanize(name)}: "
            if len(self._prefixes) >= _NAME_CACHE_SIZE:
                self._prefixes.clear()
            self._prefixes[name] = prefix
        return prefix

    def _header(self, entity_type: str) -> str:
        header = self._headers.get(entity_type)
        if header is None:
            kind = sanitize(entity_type.replace("_", " ")) or "entity"
            header = f"[Context from {kind} profile]"
            self._headers[entity_type] = header
        return header

    def _header_counted(self, entity_type: str) -> Tuple[str, Optional[int]]:
        """The header and, when segment counts are exact, the tokens of its line."""
        known = self._header_tokens.get(entity_type)
        if known is None:
            header = self._header(entity_type)
            tokens = self._segment_tokens(header + "\n") if self._segments_exact else None
            known = self._header_tokens[entity_type] = (header, tokens)
        return known

    def _line(self, name: str, value: Any, decision: Optional[str]) -> Line:
        """The context line of ``name`` showing ``value``; :data:`_NO_LINE` when there is
        nothing to show, :data:`_BAD_LINE` when the value cannot be rendered.

        Lines of plain values are cached per (name, value key), with their token count
        when segment counting is exact: the same value renders the same for every
        request. The key (:func:`~asahi_features.rendering.value_key`) tells values of
        different types or renderings apart and is never large.
        """
        if decision == "redact":
            return Line(name, self._prefix(name), self._redacted)
        key = _value_key(value)
        cache = self._line_cache
        if key is not None:
            line = cache.get((name, key))
            if line is not None:
                return line
        config = self.config
        try:
            rendered = render_value(
                value,
                max_list_items=config.max_list_items,
                max_value_chars=config.max_value_chars,
                key=key,
            )
        except Exception as exc:  # this value cannot be shown: its line is left out
            self._invalid(exc, "feature value")
            return _BAD_LINE
        if rendered is None:
            line = _NO_LINE
        else:
            prefix = self._prefix(name)
            tokens = None
            if self._segments_exact:
                count = self._segment_tokens
                tokens = count(prefix[:-1]) + count(" " + rendered.text + "\n")
            line = Line(name, prefix, rendered, tokens)
        if key is not None:
            if len(cache) >= _LINE_CACHE_SIZE:
                cache.clear()
            cache[(name, key)] = line
        return line

    def _render(self, value: Any) -> Optional[RenderedValue]:
        """The rendered value (raises when it cannot be rendered)."""
        config = self.config
        return render_value(
            value, max_list_items=config.max_list_items, max_value_chars=config.max_value_chars
        )

    def _invalid(self, exc: BaseException, what: str) -> None:
        """Log an input that could not be used: the first of each kind at WARNING, later
        ones at DEBUG. Never the value itself (it may be personal, or huge)."""
        kind = f"{what}/{type(exc).__name__}"
        if kind in self._invalid_warned:
            logger.debug("unusable %s left out (%s)", what, type(exc).__name__, exc_info=True)
            return
        self._invalid_warned.add(kind)
        logger.warning(
            "unusable %s left out (%s); the rest of the request goes on "
            "(later ones of this kind are logged at DEBUG)",
            what,
            type(exc).__name__,
        )

    def _stale_line(self, plan: _Plan, names: Sequence[str]) -> Optional[Line]:
        """The ``- Left out as stale: ...`` line of an entity block (``stale_note``)."""
        reasons = plan.stale_reasons or {}
        text = "; ".join(
            f"{self._prefix(name)[2:-2]} ({reasons.get(name, 'stale')})" for name in names
        )
        line = self._line(_STALE_NOTE, text, None)
        return None if line is _NO_LINE or line is _BAD_LINE else line

    def _segment_tokens(self, text: str) -> int:
        cache = self._segment_cache
        tokens = cache.get(text)
        if tokens is None:
            tokens = self._count_tokens(text)
            if len(text) <= 512:
                if len(cache) >= _SEGMENT_CACHE_SIZE:
                    cache.clear()
                cache[text] = tokens
        return tokens

    def _check_segments(self) -> bool:
        """True when summing segment counts is exact for this encoding (see
        :func:`asahi_features.budget.segments`); checked once on awkward samples."""
        samples = {
            "user": [
                "shoes, jacket",
                "25-34, urban",
                "x\u2019s (y)\u2026",
                "日本語 テキスト",
                "3.5",
            ],
            "organization": ["!!", "a-b", "\u00e9lan", "4 \U0001f600", "http://x.y/z?q=1"],
        }
        blocks = [
            Block(
                self._header(entity_type),
                [
                    Line(
                        f"f{i}", self._prefix(f"feature_{i}_{v[:2]}"), RenderedValue((v,), " ", "")
                    )
                    for i, v in enumerate(values)
                ],
            )
            for entity_type, values in samples.items()
        ]
        text = "".join(segments(blocks))
        count = self._count_tokens
        return count(text) == sum(count(p) for p in segments(blocks))

    def _context_block(self, plan: _Plan, dropped_policy: List[str]) -> Optional[Block]:
        context = plan.request.context
        if not context or not isinstance(context, Mapping):
            return None
        # Identity keys of the task's entity types are identities, not context.
        consumed = {f"{et}_id" for et in plan.features.mapping}
        block = Block(CONTEXT_HEADER)
        for key, value in context.items():
            try:
                key = key if type(key) is str else str(key)
                if key in consumed:
                    continue
                name = CONTEXT_PREFIX + key
                decision = self._policy.decide(key)
                if decision == "drop":
                    dropped_policy.append(name)
                    continue
                rendered = self._redacted if decision == "redact" else self._render(value)
                if rendered is None:
                    continue
                block.lines.append(Line(name, self._prefix(key), rendered))
            except Exception as exc:  # this entry cannot be shown: left out
                self._invalid(exc, "context entry")
        return block if block.lines else None
