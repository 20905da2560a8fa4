"""Assembling context blocks inside a token budget.

The whole added text (every block plus the blank line before the prompt) is counted
with the configured tiktoken encoding. In the common case it fits and is counted once.
Otherwise lines are placed greedily in priority order (blocks in mapping order, lines
in priority order within a block, the request-context block last): a line that fits is
kept whole, a long list is shortened to its first (most recent) items that fit, a long
text to its first words plus ``…``, and a line of which not even one unit fits is
dropped. Every candidate text is counted exactly, so the result never exceeds the
budget, whatever the tokenizer does at line boundaries.

The seam. What counts is what the enrichment adds to the prompt:
``len(encode(feature_context + prompt)) - len(encode(prompt))``. That is the count of the
added text alone plus :meth:`Seam.delta`, which is 0 for most prompts: tiktoken cuts text
into pieces with a regular expression before BPE, and the piece holding the closing
``]`` and the blank line runs on into a prompt that starts with a newline (every
encoding), or with ``/`` (``o200k_base``); BPE then merges across the seam (one token
fewer or more). :class:`Seam` finds that out exactly by splitting only the few
characters around the seam with the encoding's own pattern, and the budget is applied
to the sum.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .rendering import RenderedValue

__all__ = [
    "END_LINE",
    "LAST_BLOCK_END",
    "Block",
    "Fitted",
    "Line",
    "Seam",
    "compose",
    "fit_blocks",
]

END_LINE = "[End context]"
BLOCK_SEPARATOR = "\n\n"
PROMPT_SEPARATOR = "\n\n"
_END_INNER = END_LINE + BLOCK_SEPARATOR
_END_LAST = END_LINE + PROMPT_SEPARATOR
LAST_BLOCK_END = _END_LAST
"""The last segment of the added text: the end line and the blank line before the prompt."""


class Line:
    """One ``- Label: value`` line of a block.

    Args:
        name: what the line shows (a feature name, or ``context.<key>``).
        prefix: ``- Label: ``.
        value: the rendered value.
    """

    __slots__ = ("name", "prefix", "text", "text_nl", "tokens", "value")

    def __init__(
        self, name: str, prefix: str, value: RenderedValue, tokens: Optional[int] = None
    ) -> None:
        self.name = name
        self.prefix = prefix
        self.value = value
        self.text = prefix + value.text
        """The full line."""
        self.text_nl = self.text + "\n"
        self.tokens = tokens
        """The line's token count as :func:`segments` cuts it (``- Label:`` plus
        `` value`` and its newline), when the caller already knows it; only read by
        :func:`fit_blocks` together with ``count_segment``, which it must agree with."""


class Block:
    """A ``[Context from ...]`` block and its candidate lines, in priority order."""

    __slots__ = ("head", "head_tokens", "header", "lines")

    def __init__(
        self, header: str, lines: Optional[List[Line]] = None, head_tokens: Optional[int] = None
    ) -> None:
        self.header = header
        self.head = header + "\n"
        """The header line with its newline (the first segment of the block)."""
        self.lines: List[Line] = [] if lines is None else lines
        self.head_tokens = head_tokens
        """The token count of ``head``, when the caller already knows it (read like
        :attr:`Line.tokens`)."""


class Fitted(NamedTuple):
    """What made it into the prompt."""

    text: str
    """Everything added before the prompt (``""`` when nothing fits)."""
    tokens: int
    kept: List[Line]
    dropped: List[str]
    kept_at: List[Tuple[int, int]]
    """For each kept line, (block index, line index in that block) of its candidate (a
    shortened line keeps the place of the line it shortens)."""


def compose(blocks: Sequence[Tuple[str, Sequence[str]]]) -> str:
    """The added text for ``(header, line texts)`` pairs; blocks without lines are skipped."""
    parts = [
        f"{header}\n" + "\n".join(lines) + f"\n{END_LINE}" for header, lines in blocks if lines
    ]
    if not parts:
        return ""
    return BLOCK_SEPARATOR.join(parts) + PROMPT_SEPARATOR


def segments(blocks: Sequence[Block]) -> List[str]:
    """The added text cut where tiktoken's pre-tokenizer always cuts.

    cl100k_base, o200k_base and the GPT-2 family split text into pieces with a regular
    expression before BPE, and a piece never runs from a newline into the following
    non-blank character, nor from a ``:`` across the space after it. Every line here
    starts with ``[`` or ``-`` and every bullet is ``- Label: value``, so the token count
    of the whole text is exactly the sum of the counts of these segments: the header
    line, ``- Label:``, `` value`` plus its newline, and the end line plus the blank line.
    ``"".join(segments(blocks)) == compose(...)`` for the same lines.
    """
    out: List[str] = []
    last = len(blocks) - 1
    for index, block in enumerate(blocks):
        out.append(block.head)
        for line in block.lines:
            out.append(line.prefix[:-1])
            out.append(" " + line.value.text + "\n")
        out.append(_END_INNER if index < last else _END_LAST)
    return out


def fit_blocks(
    blocks: Sequence[Block],
    count: Callable[[str], int],
    max_tokens: int,
    *,
    count_segment: Optional[Callable[[str], int]] = None,
) -> Fitted:
    """Choose and shorten lines so that ``count(text) <= max_tokens``.

    Args:
        blocks: candidate blocks in priority order (blocks without lines are skipped).
        count: the exact token counter.
        max_tokens: the budget for the whole added text.
        count_segment: a (cached) counter for the pieces of :func:`segments`; when given,
            the common case sums segment counts instead of encoding the whole text.
    """
    if not all(b.lines for b in blocks):  # blocks without lines add nothing
        where = [i for i, b in enumerate(blocks) if b.lines]
        if not where:
            return Fitted("", 0, [], [], [])
        fitted = fit_blocks(
            [blocks[i] for i in where], count, max_tokens, count_segment=count_segment
        )
        return fitted._replace(kept_at=[(where[b], j) for b, j in fitted.kept_at])
    if count_segment is not None:
        full, tokens = _join_counted(blocks, count_segment)
    else:
        full = compose([(b.header, [line.text for line in b.lines]) for b in blocks])
        tokens = count(full)
    if tokens <= max_tokens:
        kept_at = [(i, j) for i, b in enumerate(blocks) for j in range(len(b.lines))]
        return Fitted(full, tokens, [line for b in blocks for line in b.lines], [], kept_at)
    return _fit_greedy(blocks, count, max_tokens)


def _join_counted(blocks: Sequence[Block], count_segment: Callable[[str], int]) -> Tuple[str, int]:
    """``"".join(segments(blocks))`` and the sum of the segment counts, in one pass
    (a line's own ``tokens`` is used when set)."""
    parts: List[str] = []
    append = parts.append
    tokens = 0
    last = len(blocks) - 1
    for index, block in enumerate(blocks):
        head = block.head
        append(head)
        counted = block.head_tokens
        tokens += count_segment(head) if counted is None else counted
        for line in block.lines:
            counted = line.tokens
            if counted is None:
                counted = count_segment(line.prefix[:-1]) + count_segment(
                    " " + line.value.text + "\n"
                )
            tokens += counted
            append(line.text_nl)
        end = _END_LAST if index == last else _END_INNER
        append(end)
        tokens += count_segment(end)
    return "".join(parts), tokens


def _fit_greedy(blocks: Sequence[Block], count: Callable[[str], int], max_tokens: int) -> Fitted:
    chosen: List[List[str]] = [[] for _ in blocks]
    kept: List[Line] = []
    kept_at: List[Tuple[int, int]] = []
    dropped: List[str] = []
    best_text, best_tokens = "", 0

    def trial(index: int, text: str) -> Tuple[str, int]:
        texts = [
            (b.header, chosen[i] + [text] if i == index else chosen[i])
            for i, b in enumerate(blocks)
        ]
        candidate = compose(texts)
        return candidate, count(candidate)

    for index, block in enumerate(blocks):
        for position, line in enumerate(block.lines):
            candidate, tokens = trial(index, line.text)
            if tokens <= max_tokens:
                chosen[index].append(line.text)
                kept.append(line)
                kept_at.append((index, position))
                best_text, best_tokens = candidate, tokens
                continue
            fitted = _shorten(line, index, trial, max_tokens)
            if fitted is None:
                dropped.append(line.name)
                continue
            short_line, candidate, tokens = fitted
            chosen[index].append(short_line.text)
            kept.append(short_line)
            kept_at.append((index, position))
            best_text, best_tokens = candidate, tokens
    return Fitted(best_text, best_tokens, kept, dropped, kept_at)


def _shorten(
    line: Line, index: int, trial: Callable[[int, str], Tuple[str, int]], max_tokens: int
) -> Optional[Tuple[Line, str, int]]:
    """The longest prefix (in whole units) of ``line`` that still fits, or ``None``."""
    units = len(line.value.units)
    low, high = 1, units - 1
    best: Optional[Tuple[Line, str, int]] = None
    while low <= high:
        mid = (low + high) // 2
        value = line.value
        short = RenderedValue(value.units[:mid], value.separator, value.shortened_suffix, True)
        short_line = Line(line.name, line.prefix, short)
        candidate, tokens = trial(index, short_line.text)
        if tokens <= max_tokens:
            best = (short_line, candidate, tokens)
            low = mid + 1
        else:
            high = mid - 1
    return best


_PROBE = 16
"""Prompt characters looked at to decide that the seam is clean."""
_CLEAN_CACHE_SIZE = 4096


class Seam:
    """The tokens that joining the added text to a prompt costs or saves, for one encoding.

    ``delta(prompt) == count(tail + prompt) - count(tail) - count(prompt)`` exactly, where
    ``tail`` (:data:`LAST_BLOCK_END`) ends every added text and starts where the
    encoding's pre-tokenizer starts a piece (every line of the added text starts with
    ``[`` or ``-`` after a newline; see :func:`segments`). Only the last piece of ``tail``
    can run on into the prompt, so only the pieces around the seam are looked at: the
    common case (the piece stops at the seam) costs one regular-expression match on a
    few characters, the rest walks the pieces of both texts only until they line up
    again, whatever the prompt's length.

    Args:
        encoding: a ``tiktoken.Encoding``.
        tail: the end of every added text.
    """

    def __init__(self, encoding: Any, tail: str = LAST_BLOCK_END) -> None:
        import regex  # type: ignore[import-untyped]  # tiktoken needs it; same syntax

        # tiktoken's engine reads "$" as the end of the text only ("\Z" here)
        pattern = encoding._pat_str.replace("\\$", "\x00").replace("$", r"\Z")
        self._pieces = regex.compile(pattern.replace("\x00", "\\$"))
        self._encoding = encoding
        single = getattr(encoding, "_encode_single_piece", None)
        self._bpe: Callable[[str], int] = (
            (lambda piece: len(single(piece)))
            if single is not None
            else (lambda piece: len(encoding.encode_ordinary(piece)))
        )
        last = list(self._pieces.finditer(tail))[-1]
        self._tail = tail
        self._last = last.group()
        """The last piece of ``tail``: the only one that a prompt can extend."""
        self._last_tokens = self._bpe(self._last)
        self._clean: Dict[str, bool] = {}
        """Prompt beginnings (``_PROBE`` characters) -> the seam is clean."""

    def delta(self, prompt: str) -> int:
        """``count(tail + prompt) - count(tail) - count(prompt)`` (see the class docs)."""
        probe = prompt[:_PROBE]
        clean = self._clean.get(probe)
        if clean is None:
            last = self._last
            head = self._pieces.match(last + probe)
            clean = head is not None and head.end() == len(last)
            if len(self._clean) >= _CLEAN_CACHE_SIZE:
                self._clean.clear()
            self._clean[probe] = clean
        return 0 if clean else self._walk(prompt)

    def _walk(self, prompt: str) -> int:
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:  # what tiktoken itself does with lone surrogates
            prompt = prompt.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        last = self._last
        offset = len(last)
        bpe = self._bpe
        joined = self._pieces.finditer(last + prompt)
        alone = self._pieces.finditer(prompt)
        joined_end = alone_end = joined_tokens = alone_tokens = 0
        # advance whichever split is behind until both end at the same prompt position
        while joined_end <= offset or joined_end - offset != alone_end:
            if joined_end - offset <= alone_end:
                piece = next(joined)
                joined_tokens += bpe(piece.group())
                joined_end = piece.end()
            else:
                piece = next(alone)
                alone_tokens += bpe(piece.group())
                alone_end = piece.end()
        return joined_tokens - self._last_tokens - alone_tokens

    def exact(self, prompt: str) -> int:
        """The same number by encoding everything (for tests and checks)."""
        encode = self._encoding.encode_ordinary
        tail = self._tail
        return len(encode(tail + prompt)) - len(encode(tail)) - len(encode(prompt))
