"""Malformed local JSON stores: always FeatureStoreDataError naming the file and position.

An integer with more digits than Python converts (a raw ``ValueError``) and nesting
deeper than the JSON parser handles (a raw ``RecursionError``) used to escape; any text
or bytes at all now either load or raise FeatureStoreDataError (a store failure the
guard degrades on), with a message that names the file, says where, and stays short.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asahi_features.errors import MAX_MESSAGE_CHARS, FeatureConfigError, FeatureStoreDataError
from asahi_features.stores.local import LocalFeatureStore

DIGITS = (getattr(sys, "get_int_max_str_digits", lambda: 0)() or 4300) + 1
POSITION = re.compile(r"line (\d+), column (\d+)")


def valid_document() -> Dict[str, Any]:
    return {
        "user": {
            "u1": {
                "updated_at": "2026-01-01T00:00:00Z",
                "features": {"tier": "gold", "history": ["shoes", "jacket"], "score": 3},
            }
        }
    }


def load(path: Path) -> FeatureStoreDataError:
    store = LocalFeatureStore(path)
    with pytest.raises(FeatureStoreDataError) as info:
        store.get_features("u1", "user", [])
    assert store.health_check() is False
    message = str(info.value)
    assert str(path) in message
    assert len(message) <= MAX_MESSAGE_CHARS
    return info.value


def position_of(message: str, raw: str) -> int:
    """The offset in ``raw`` of the "line L, column C" the message gives."""
    match = POSITION.search(message)
    assert match is not None, message
    line, column = int(match.group(1)), int(match.group(2))
    lines = raw.split("\n")
    assert line <= len(lines), message
    return sum(len(x) + 1 for x in lines[: line - 1]) + column - 1


def test_overlong_integer_points_at_the_number(tmp_path: Path) -> None:
    number = "7" * DIGITS
    raw = json.dumps(valid_document(), indent=2).replace('"score": 3', f'"score": {number}')
    path = tmp_path / "features.json"
    path.write_text(raw, encoding="utf-8")
    err = load(path)
    assert "4300 digits" in str(err) or "digits" in str(err)
    assert raw[position_of(str(err), raw) :].startswith(number)


def test_digits_inside_strings_are_not_blamed(tmp_path: Path) -> None:
    doc = valid_document()
    doc["user"]["u1"]["features"]["serial"] = "9" * (DIGITS + 10)  # a string: valid
    raw = json.dumps(doc).replace('"score": 3', f'"score": -{"8" * DIGITS}')
    path = tmp_path / "features.json"
    path.write_text(raw, encoding="utf-8")
    err = load(path)
    assert raw[position_of(str(err), raw) :].startswith("-888")


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deep_nesting_names_the_depth_and_the_deepest_point(tmp_path: Path, opener: str) -> None:
    depth = 100_000
    closer = "]" if opener == "[" else "}"
    value = opener * depth + "1" + closer * depth
    raw = json.dumps(valid_document()).replace('"score": 3', f'"score": {value}')
    path = tmp_path / "features.json"
    path.write_text(raw, encoding="utf-8")
    err = load(path)
    assert "nested too deeply" in str(err) and f"{depth + 4:,} levels" in str(err)
    assert raw[position_of(str(err), raw)] in "[{"


def test_moderately_deep_values_still_load(tmp_path: Path) -> None:
    doc = valid_document()
    value: Any = "x"
    for _ in range(200):
        value = [value]
    doc["user"]["u1"]["features"]["deep"] = value
    path = tmp_path / "features.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert LocalFeatureStore(path).get_features("u1", "user", ["tier"]).features == {"tier": "gold"}


def test_huge_entity_type_is_quoted_briefly(tmp_path: Path) -> None:
    path = tmp_path / "features.json"
    path.write_text(json.dumps({"t" * 1_000_000: []}), encoding="utf-8")
    assert "must be an object of entity ids" in str(load(path))


# -- hypothesis: any malformed document ---------------------------------------------------


def _splice(raw: str, at: int, insert: str, cut: int) -> str:
    at = min(at, len(raw))
    return raw[:at] + insert + raw[at + cut :]


hostile_fragments = st.one_of(
    st.builds(lambda n: "9" * n, st.integers(DIGITS, DIGITS + 5000)),
    st.builds(lambda n: "-" + "1" * n, st.integers(DIGITS, DIGITS + 100)),
    st.builds(lambda n: "[" * n, st.integers(1, 60_000)),
    st.builds(lambda n: '{"k":' * n, st.integers(1, 30_000)),
    st.builds(lambda n, m: "[" * n + "]" * m, st.integers(0, 30_000), st.integers(0, 30_000)),
    st.sampled_from(["}", "]", ",", ":", '"', "\\", "NaN", "1e999999", "\ud800", "\x00", "tru"]),
    st.text(max_size=40),
)

malformed = st.one_of(
    st.text(max_size=300),
    st.builds(
        _splice,
        st.just(json.dumps(valid_document(), indent=1)),
        st.integers(0, 300),
        hostile_fragments,
        st.integers(0, 20),
    ),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=malformed)
def test_any_document_loads_or_is_a_data_error_with_a_position(tmp_path: Path, raw: str) -> None:
    path = tmp_path / "features.json"
    path.write_text(raw, encoding="utf-8", errors="surrogatepass")
    store = LocalFeatureStore(path)
    try:
        store.get_features("u1", "user", [])
    except FeatureStoreDataError as exc:
        message = str(exc)
        assert str(path) in message
        assert len(message) <= MAX_MESSAGE_CHARS
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            assert "UTF-8" in message
        except (ValueError, RecursionError):
            # not JSON: the message says where
            offset = position_of(message, path.read_text(encoding="utf-8"))
            assert 0 <= offset <= len(raw)
        assert store.health_check() is False
    except FeatureConfigError:  # a well-formed file without a "user" entity type
        assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except Exception as exc:  # the contract: nothing else escapes a malformed file
        pytest.fail(f"{type(exc).__name__} escaped: {str(exc)[:200]}")


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=200))
def test_any_bytes_load_or_are_a_data_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "features.json"
    path.write_bytes(data)
    try:
        LocalFeatureStore(path).get_features("u1", "user", [])
    except FeatureStoreDataError as exc:
        assert str(path) in str(exc)
    except FeatureConfigError:
        assert isinstance(json.loads(data), dict)
    except Exception as exc:
        pytest.fail(f"{type(exc).__name__} escaped: {str(exc)[:200]}")
