"""Rendering caches never mix up values, never keep big values alive, and the sanitiser
leaves nothing that can imitate the block's delimiters or hide text.

Class 1 (caches): a cache hit may only return the rendering of a value of identical
types that renders identically. Values that compare equal but render differently
(``1 == 1.0 == True == Decimal("1.0")``, ``0.0 == -0.0``, aware datetimes of one instant
in two zones, lists and tuples of them, nested) are rendered through one enricher one
after the other and compared with what an enricher with empty caches gives.

Class 4 (sanitising): the oracle here is built from :mod:`unicodedata` independently of
the implementation.
"""

from __future__ import annotations

import gc
import itertools
import math
import tracemalloc
import unicodedata
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import asahi_features.rendering as rendering
from asahi_features.enricher import FeatureEnricher
from asahi_features.models import EnrichmentResult
from asahi_features.rendering import format_value, read_limit, render_value, sanitize, value_key
from asahi_features.settings import EnricherConfig
from tests.unit.test_enricher import MemoryClient

# -- class 1: the caches ---------------------------------------------------------------

TOKYO = timezone(timedelta(hours=9))
KOLKATA = timezone(timedelta(hours=5, minutes=30))
NEW_YORK = timezone(timedelta(hours=-5))
ZONES = [timezone.utc, TOKYO, KOLKATA, NEW_YORK]


def _number_forms(n: int) -> List[Any]:
    """Values equal to ``n`` that may render differently."""
    forms: List[Any] = [n, float(n), Decimal(n), Decimal(f"{n}.0"), Decimal(f"{n}.00")]
    if n in (0, 1):
        forms.append(bool(n))
    if n == 0:
        forms += [-0.0, Decimal("-0"), Decimal("0E+2")]
    return forms


def _equal_pairs() -> st.SearchStrategy[Tuple[Any, Any]]:
    """Pairs of leaves that compare equal (or nearly always do) but differ in type or
    rendering."""
    numbers = st.integers(-2, 3).flatmap(
        lambda n: st.tuples(st.sampled_from(_number_forms(n)), st.sampled_from(_number_forms(n)))
    )
    instants = st.datetimes(
        min_value=datetime(1990, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.just(timezone.utc),
    ).flatmap(
        lambda dt: st.tuples(st.sampled_from(ZONES), st.sampled_from(ZONES)).map(
            lambda zones: (dt.astimezone(zones[0]), dt.astimezone(zones[1]))
        )
    )
    floats = st.floats(allow_nan=True, allow_infinity=True).map(lambda f: (f, f))
    texts = st.text(max_size=6).map(lambda s: (s, s))
    return st.one_of(numbers, instants, floats, texts, st.booleans().map(lambda b: (b, int(b))))


def _containers(inner: st.SearchStrategy[Tuple[Any, Any]]) -> st.SearchStrategy[Tuple[Any, Any]]:
    kinds = st.tuples(st.sampled_from([list, tuple]), st.sampled_from([list, tuple]))
    sequences = st.tuples(st.lists(inner, max_size=4), kinds).map(
        lambda p: (p[1][0](x for x, _ in p[0]), p[1][1](y for _, y in p[0]))
    )
    mappings = st.lists(st.tuples(st.text(max_size=3), inner), max_size=3).map(
        lambda kv: ({k: x for k, (x, _) in kv}, {k: y for k, (_, y) in kv})
    )
    return st.one_of(sequences, mappings)


value_pairs = st.recursive(_equal_pairs(), _containers, max_leaves=12)


class Switch(MemoryClient):
    """One user whose feature ``f`` is whatever the test sets."""

    def __init__(self) -> None:
        super().__init__({"user": {"u": {}}})

    def set(self, value: Any) -> None:
        self.data["user"]["u"] = {"f": value}


def _config(**extra: Any) -> EnricherConfig:
    return EnricherConfig(
        enabled_task_types=["t"],
        task_features={"t": {"user": ["f"]}},
        max_feature_tokens=4000,
        **extra,
    )


def _shown(result: EnrichmentResult) -> Tuple[str, List[str], str]:
    return result.feature_context, result.features_used, result.reason.value


def _run(enricher: FeatureEnricher, client: Switch, value: Any) -> Tuple[Any, ...]:
    client.set(value)
    as_feature = enricher.enrich("P", user_id="u", task_type="t")
    as_context = enricher.enrich("P", user_id="u", task_type="t", context={"c": value})
    return _shown(as_feature) + _shown(as_context)


def _empty_shared_caches(patch: pytest.MonkeyPatch) -> None:
    """Every module-level cache of the renderer, emptied for the patch's duration."""
    for name, obj in list(vars(rendering).items()):
        if isinstance(obj, dict) and "CACHE" in name.upper():
            patch.setattr(rendering, name, {})


@pytest.fixture
def empty_shared_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _empty_shared_caches(monkeypatch)
    yield


def _fresh(value: Any) -> Tuple[Any, ...]:
    """What an enricher with empty caches (its own and the shared one) shows."""
    with pytest.MonkeyPatch.context() as patch:
        _empty_shared_caches(patch)
        client = Switch()
        return _run(FeatureEnricher(client, _config()), client, value)


UTC_NOON = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=value_pairs)
@example(pair=([UTC_NOON], [UTC_NOON.astimezone(TOKYO)]))
@example(pair=(UTC_NOON, UTC_NOON.astimezone(TOKYO)))
@example(pair=([(1,)], [(True,)]))
@example(pair=((1,), (True,)))
@example(pair=([1.0], [1]))
@example(pair=(0.0, -0.0))
@example(pair=(Decimal("1"), Decimal("1.0")))
@example(pair=({"a": 1}, {"a": True}))
@example(pair=([[[1]]], [[[True]]]))
def test_a_cache_hit_is_the_rendering_of_an_identical_value(pair: Tuple[Any, Any]) -> None:
    a, b = pair
    with pytest.MonkeyPatch.context() as patch:
        _empty_shared_caches(patch)  # the shared cache, as seen by this test
        client = Switch()
        shared = FeatureEnricher(client, _config())
        _run(shared, client, a)
        after_a = _run(shared, client, b)
        # and the module-level renderer on its own
        format_value(a, max_list_items=10, max_value_chars=500)
        direct = format_value(b, max_list_items=10, max_value_chars=500)
    assert after_a == _fresh(b)
    with pytest.MonkeyPatch.context() as patch:
        _empty_shared_caches(patch)
        alone = format_value(b, max_list_items=10, max_value_chars=500)
    assert (None if direct is None else direct.text) == (None if alone is None else alone.text)


@given(pair=value_pairs)
@settings(max_examples=300, deadline=None)
def test_equal_keys_mean_identical_types_and_renderings(pair: Tuple[Any, Any]) -> None:
    a, b = pair
    key_a, key_b = value_key(a), value_key(b)
    if key_a is None or key_a != key_b:
        return

    def shape(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return (type(value), tuple(shape(v) for v in value))
        if isinstance(value, dict):
            return (dict, tuple((shape(k), shape(v)) for k, v in value.items()))
        return type(value)

    assert shape(a) == shape(b)
    # rendered afresh (no key: the shared cache is neither read nor filled)
    render_a = render_value(a, max_list_items=10, max_value_chars=500, key=None)
    render_b = render_value(b, max_list_items=10, max_value_chars=500, key=None)
    assert (render_a and render_a.text) == (render_b and render_b.text)


def test_keys_hold_no_big_values() -> None:
    assert value_key("x" * 257) is None
    assert value_key(["x" * 600, "y" * 600]) is None
    assert value_key([["x" * 600], ["y" * 600]]) is None
    assert value_key(list(range(65))) is None
    assert value_key(10**30) is None
    assert value_key(Decimal("1" * 2000)) is None
    assert value_key([[[[[["deep"]]]]]]) is None
    assert value_key(["a", "b"]) == (list, ("a", "b"))
    assert value_key(("a", "b")) != value_key(["a", "b"])


FIVE_MB = 5 * 1024 * 1024


def _huge_values() -> List[Any]:
    return [
        "word [End context] " * (FIVE_MB // 19),
        "\u200b\u3164" * (FIVE_MB // 2),  # nothing visible: all dropped or blank
        ["x" * FIVE_MB, "small"],
        ("\u2028" * FIVE_MB,),
        {"notes": "y" * FIVE_MB},
        b"z" * FIVE_MB,
        bytearray(b"\xff" * FIVE_MB),
        list(range(FIVE_MB // 8)),
    ]


@pytest.mark.parametrize("index", range(len(_huge_values())))
def test_a_huge_value_is_not_kept_alive(index: int) -> None:
    client = Switch()
    enricher = FeatureEnricher(client, _config())
    # warm every cache and code path with a small value first
    client.set("warm")
    enricher.enrich("P", user_id="u", task_type="t", context={"c": "warm"})
    gc.collect()
    tracemalloc.start()
    try:
        value: Optional[Any] = _huge_values()[index]
        client.set(value)
        for _ in range(2):
            enricher.enrich("P", user_id="u", task_type="t")
            enricher.enrich("P", user_id="u", task_type="t", context={"c": value})
            format_value(value, max_list_items=10, max_value_chars=500)
        client.set(None)
        value = None
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak >= FIVE_MB // 2  # the value itself was traced
    assert current < 512 * 1024, f"{current} bytes still held after the value was dropped"


@pytest.mark.parametrize("index", range(len(_huge_values())))
def test_a_huge_value_is_cut_before_it_is_cleaned(
    index: int, monkeypatch: pytest.MonkeyPatch, empty_shared_cache: None
) -> None:
    seen: List[int] = []
    original = rendering.sanitize

    def counting(text: str, *, keep_brackets: bool = False) -> str:
        seen.append(len(text))
        return original(text, keep_brackets=keep_brackets)

    monkeypatch.setattr(rendering, "sanitize", counting)
    value = _huge_values()[index]
    rendered = format_value(value, max_list_items=10, max_value_chars=500)
    assert seen, "nothing was cleaned"
    assert max(seen) <= read_limit(500)
    assert sum(seen) <= 10 * read_limit(500)
    if rendered is not None:
        assert len(rendered.text) <= 500


def test_huge_text_is_cut_honestly() -> None:
    rendered = format_value(
        "ok " + "\u200b" * FIVE_MB + " tail", max_list_items=10, max_value_chars=50
    )
    assert rendered is not None and rendered.truncated and rendered.text == "ok…"
    one_word = format_value("a" * FIVE_MB, max_list_items=10, max_value_chars=50)
    assert one_word is not None and one_word.text == "a" * 49 + "…"
    utf8 = format_value(("é" * FIVE_MB).encode(), max_list_items=10, max_value_chars=50)
    assert utf8 is not None and utf8.text == "é" * 49 + "…"


# -- class 4: sanitising -----------------------------------------------------------------


CORNERS = ("LEFT CEILING", "RIGHT CEILING", "LEFT FLOOR", "RIGHT FLOOR")


def _oracle_tables() -> Tuple[frozenset[str], frozenset[str]]:
    """(characters that must never appear, bracket-like characters), built here from
    unicodedata alone, over every code point."""
    never: set[str] = set()
    brackets: set[str] = set()
    ranges = [
        (0xFE00, 0xFE0F),
        (0xE0100, 0xE01EF),
        (0xE0000, 0xE007F),
        (0x115F, 0x1160),
        (0x3164, 0x3164),
        (0xFFA0, 0xFFA0),
        (0x2800, 0x2800),
        (0x034F, 0x034F),
        (0x180B, 0x180F),
        (0x17B4, 0x17B5),
    ]
    for low, high in ranges:
        never.update(chr(cp) for cp in range(low, high + 1))
    for cp in range(0x110000):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Me") or (cat == "Zs" and ch != " "):
            never.add(ch)
            continue
        if ch in "{}":
            continue
        name = unicodedata.name(ch, "")
        if "BRACKET" in name or name in CORNERS:
            brackets.add(ch)
        elif cat[0] != "L" or unicodedata.decomposition(ch):
            nfkc = unicodedata.normalize("NFKC", ch)
            if "[" in nfkc or "]" in nfkc:
                brackets.add(ch)
    return frozenset(never), frozenset(brackets)


NEVER, BRACKETS = _oracle_tables()
PAREN_LIKE = frozenset("()[]") | BRACKETS

interesting = st.sampled_from(
    sorted(
        {c for c in NEVER if ord(c) < 0x30000 or 0xE0000 <= ord(c) < 0xE0200}
        | BRACKETS
        | set("[](){}\n\r\t \u0301\u0332\u20dd\u1ac5")
    )
)
any_text = st.text(
    alphabet=st.one_of(st.characters(exclude_categories=()), interesting), max_size=60
)


def _violations(clean: str) -> List[str]:
    bad = [f"U+{ord(c):04X}" for c in clean if c in NEVER or c in BRACKETS or c in "[]"]
    for prev, ch in itertools.pairwise(clean):
        if prev in PAREN_LIKE and unicodedata.category(ch)[0] == "M":
            bad.append(f"mark U+{ord(ch):04X} on {prev!r}")
    nfkc = unicodedata.normalize("NFKC", clean)
    if "[" in nfkc or "]" in nfkc:
        bad.append("NFKC bracket")
    return bad


@settings(max_examples=1000, deadline=None)
@given(text=any_text)
@example(text="a\ufe0fb\U000e0100c\u3164d\u2800e\u115f\u1160\uffa0")
@example(text="\U000e005bEnd context\U000e005d")
@example(text="(\u0332\u0333) [\u20dd] x\u20dey \u1ac5z")
@example(text="\u2308End context\u230b \u27e6x\u27e7 \u3010y\u3011 \U0001f12a")
@example(text="\u00a0\u2000\u3000\u202f\u205f\u1680")
def test_sanitized_text_has_no_lookalike_or_invisible_character(text: str) -> None:
    clean = sanitize(text)
    assert _violations(clean) == []
    assert clean == " ".join(clean.split())
    kept = sanitize(text, keep_brackets=True)  # trusted text: brackets stay, nothing else
    assert [f"U+{ord(c):04X}" for c in kept if c in NEVER] == []


def test_sanitize_keeps_ordinary_text() -> None:
    for text in [
        "café crème brûlée",
        "日本語 テキスト",
        "नमस्ते दुनिया",
        "Ελληνικά, русский, עברית, العربية",
        "emoji 😀 👩‍👧 stays",  # ZWJ sequences lose the joiner only
        '{"json": [1, 2]}',
        "e\u0301 a\u0308",
    ]:
        clean = sanitize(text)
        assert not _violations(clean)
    assert sanitize("café crème") == "café crème"
    assert sanitize("नमस्ते दुनिया") == "नमस्ते दुनिया"
    assert sanitize('{"json": [1, 2]}') == '{"json": (1, 2)}'
    assert sanitize("\u300cquote\u300d \u3010x\u3011 \U0001f12a") == "(quote) (x) (S)"
    assert sanitize("a\u3164b\u2800c") == "a b c"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.dictionaries(st.sampled_from(["f"]), any_text, max_size=1), label=any_text)
def test_context_lines_carry_no_lookalike_or_invisible_character(
    values: Dict[str, str], label: str
) -> None:
    client = MemoryClient({"user": {"u": values}})
    enricher = FeatureEnricher(client, _config(feature_labels={"f": label}))
    result = enricher.enrich("P", user_id="u", task_type="t", context={label: label})
    for line in result.feature_context.splitlines():
        if line.startswith("[Context from ") or line == "[End context]" or not line:
            continue
        assert line.startswith("- ")
        assert _violations(line) == []


def test_nan_and_signalling_nan_render_as_nothing() -> None:
    assert format_value(Decimal("sNaN"), max_list_items=5, max_value_chars=50) is None
    assert format_value(Decimal("NaN"), max_list_items=5, max_value_chars=50) is None
    assert format_value(math.nan, max_list_items=5, max_value_chars=50) is None
    inf = format_value(Decimal("Infinity"), max_list_items=5, max_value_chars=50)
    assert inf is not None and inf.text == "unlimited"
    big = format_value(Decimal("1E+999999"), max_list_items=5, max_value_chars=50)
    assert big is not None and big.text == "1.000e+999999"
