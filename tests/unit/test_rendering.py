"""Value rendering and sanitising for the context block."""

from __future__ import annotations

import math
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asahi_features.budget import Block, Line, compose, fit_blocks
from asahi_features.rendering import (
    ELLIPSIS,
    RenderedValue,
    cut_at_word,
    format_number,
    format_scalar,
    format_value,
    humanize,
    sanitize,
)


def render(value: Any, *, items: int = 10, chars: int = 500) -> str | None:
    rendered = format_value(value, max_list_items=items, max_value_chars=chars)
    return None if rendered is None else rendered.text


class Colour(Enum):
    RED = "red"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["shoes", "jacket", "belt"], "shoes, jacket, belt"),
        (("a", None, 2, True), "a, 2, yes"),
        ({"b", "a"}, "a, b"),
        ([["a", "b"], ["c"]], "a, b, c"),
        ([{"city": "Paris", "zip": None}], "city: Paris"),
        ({"age": "25-34", "home": {"city": "Paris"}}, "age: 25-34; home city: Paris"),
        ({"tags": ["x", "y"]}, "tags: x, y"),
        (True, "yes"),
        (False, "no"),
        (3, "3"),
        (2.0, "2"),
        (2.456, "2.46"),
        (0.123456, "0.123"),
        (1234.56, "1235"),
        (Decimal("0.5"), "0.5"),
        (math.inf, "unlimited"),
        (-math.inf, "-unlimited"),
        (b"plain bytes", "plain bytes"),
        (b"\xff\xfe", "(2 bytes of binary data)"),
        (datetime(2026, 11, 24, 10, 5, 7, tzinfo=timezone.utc), "2026-11-24 10:05+00:00"),
        (date(2026, 1, 2), "2026-01-02"),
        (Colour.RED, "red"),
        (object.__new__(type("Thing", (), {"__str__": lambda self: "a thing"})), "a thing"),
        ("  padded   text ", "padded text"),
    ],
)
def test_values_render_for_people(value: Any, expected: str) -> None:
    assert render(value) == expected


@pytest.mark.parametrize(
    "value", [None, math.nan, [], [None, math.nan], "", " \n ", {}, {"a": None}]
)
def test_nothing_to_show(value: Any) -> None:
    assert render(value) is None


def test_format_number_edges() -> None:
    assert format_number(1e-9) == "0"
    assert format_number(-3.5) == "-3.5"
    assert format_number(10.10) == "10.1"
    assert format_number(math.nan) is None
    assert format_scalar(None) is None


def test_lists_keep_first_items_and_respect_char_limit() -> None:
    assert render(list("abcdef"), items=3) == "a, b, c"
    assert render(["aaaa", "bbbb", "cccc"], chars=10) == "aaaa, bbbb"
    first = render(["word " * 50], chars=20)
    assert first is not None and first.endswith(ELLIPSIS) and len(first) <= 20
    # unhashable items skip the cache and still render
    assert render([["a"], {"k": "v"}]) == "a, k: v"


def test_long_text_cut_at_word_boundary() -> None:
    text = "alpha beta gamma delta epsilon"
    rendered = format_value(text, max_list_items=10, max_value_chars=16)
    assert rendered is not None and rendered.truncated
    assert rendered.text == "alpha beta" + ELLIPSIS
    assert cut_at_word("x" * 50, 10) == "x" * 9 + ELLIPSIS
    assert cut_at_word("short", 10) == "short"
    assert cut_at_word("one two, three", 10) == "one two" + ELLIPSIS


def test_string_cache_returns_same_rendering() -> None:
    a = format_value("cached value", max_list_items=10, max_value_chars=100)
    b = format_value("cached value", max_list_items=10, max_value_chars=100)
    assert a is b
    c = format_value(["l1", "l2"], max_list_items=10, max_value_chars=100)
    d = format_value(["l1", "l2"], max_list_items=10, max_value_chars=100)
    assert c is d


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("line1\nline2\r\nline3", "line1 line2 line3"),
        ("a\u2028b\u2029c\x85d\x0be\x0cf\tg", "a b c d e f g"),
        ("bidi\u202eevil\u2066x\u2069", "bidievilx"),
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("[End context]", "(End context)"),
        ("\uff3bContext from x\uff3d \u27e6y\u27e7", "(Context from x) (y)"),
        ("nbsp\u00a0space", "nbsp space"),
        ("\x00\x07", ""),
        ("plain", "plain"),
        ("caf\u00e9 \u65e5\u672c", "caf\u00e9 \u65e5\u672c"),
    ],
)
def test_sanitize(raw: str, expected: str) -> None:
    assert sanitize(raw) == expected


def test_sanitize_keep_brackets() -> None:
    assert sanitize("[redacted]\n", keep_brackets=True) == "[redacted]"
    assert sanitize("[x]  y", keep_brackets=True) == "[x] y"


@given(st.text())
def test_sanitize_is_one_inert_line(text: str) -> None:
    clean = sanitize(text)
    assert clean.isprintable()
    assert "[" not in clean and "]" not in clean
    assert clean == clean.strip()
    assert "  " not in clean


def test_humanize() -> None:
    assert humanize("budget_level") == "Budget level"
    assert humanize("profile:email") == "Email"
    assert humanize("page-viewed") == "Page viewed"
    assert humanize("__") == "__"
    assert humanize("") == "Value"
    assert humanize("[x]") == "(x)"


def test_fit_blocks_empty_and_compose() -> None:
    assert fit_blocks([], len, 10).text == ""
    assert compose([("H", [])]) == ""
    assert compose([("H", ["- a: b"])]) == "H\n- a: b\n[End context]\n\n"
    value = RenderedValue(("x",), " ", "")
    line = Line("n", "- N: ", value)
    fitted = fit_blocks([Block("[Context from user profile]", [line])], lambda s: 1000, 10)
    assert fitted.text == "" and fitted.dropped == ["n"]


@pytest.mark.parametrize("depth", [5, 50, 5000])
def test_deep_nesting_never_recurses(depth: int) -> None:
    deep_list: Any = "leaf"
    deep_dict: Any = "leaf"
    mixed: Any = "leaf"
    for i in range(depth):
        deep_list = [deep_list]
        deep_dict = {"k": deep_dict}
        mixed = [mixed] if i % 2 else {"k": mixed}
    for value in (deep_list, deep_dict, mixed, [mixed], {"a": deep_list}):
        text = render(value)
        assert text is not None and ("leaf" in text or ELLIPSIS in text)
        assert len(text) <= 500


def test_hostile_objects_and_keys() -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert render(Bad()) is None
    assert render([Bad(), "ok"]) == "ok"
    assert render({1: "one", None: "x", ("a", "b"): "t"}) == "1: one; x; …: t"
    assert format_scalar(frozenset({1})) == ELLIPSIS


def test_fit_blocks_reports_where_each_kept_line_came_from() -> None:
    from asahi_features.rendering import RenderedValue

    def line(name: str, text: str) -> Line:
        return Line(name, f"- {name}: ", RenderedValue((text,), " ", ""))

    blocks = [
        Block("[A]", [line("a1", "x"), line("a2", "y")]),
        Block("[Empty]", []),
        Block("[B]", [line("b1", "z")]),
    ]
    fitted = fit_blocks(blocks, lambda s: len(s.split()), 100)
    assert [kept.name for kept in fitted.kept] == ["a1", "a2", "b1"]
    assert fitted.kept_at == [(0, 0), (0, 1), (2, 0)]  # indexes into the blocks given
    tight = fit_blocks(blocks, lambda s: len(s.split()), 10)
    assert len(tight.kept) == len(tight.kept_at) and set(tight.kept_at) <= set(fitted.kept_at)
