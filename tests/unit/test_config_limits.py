"""Hostile configurations: alias bombs, deep nesting, huge values, unrepresentable values.

Whatever a configuration holds, loading it is refused or accepted quickly, the result is
always a :class:`ConfigError` (never a raw ValueError / RecursionError, never a
multi-megabyte message), and the message names the key path of the problem.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asahi_features.config import MAX_CONFIG_DEPTH, MAX_CONFIG_NODES, load_config, parse_config
from asahi_features.errors import (
    MAX_MESSAGE_CHARS,
    AsahiFeaturesError,
    ConfigError,
    FeatureConfigError,
    FeatureStoreDataError,
    excerpt,
)

LIMIT = MAX_MESSAGE_CHARS  # 2,000 characters


def base() -> Dict[str, Any]:
    return {
        "feature_store": {"provider": "local", "local": {"data_path": "features.json"}},
        "enricher": {"policy": {}},
        "monitor": {},
    }


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(call: Any, *args: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        call(*args)
    message = str(info.value)
    assert len(message) <= LIMIT, len(message)
    return info.value


# -- alias bombs and recursive aliases, as YAML files ------------------------------------------

LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.parametrize("where", ["provider", "enabled_task_types", "options"])
def test_billion_laughs_is_refused_with_a_short_message(tmp_path: Path, where: str) -> None:
    # 9**9 = 387 million strings once expanded: the old loader built a 72 MB message
    target = {
        "provider": "feature_store:\n  provider: *i\n",
        "enabled_task_types": (
            "feature_store: {provider: local, local: {data_path: x.json}}\n"
            "enricher:\n  enabled_task_types: *i\n"
        ),
        "options": (
            "feature_store:\n  provider: custom\n  custom:\n    class: 'a.b:C'\n"
            "    options: {payload: *i}\n"
        ),
    }[where]
    err = refused(load_config, write(tmp_path, LAUGHS + target))
    assert "alias" in str(err)
    assert f"more than {MAX_CONFIG_NODES:,} values" in str(err)
    assert err.key_path is not None


def test_merge_key_bomb_is_refused_before_it_is_built(tmp_path: Path) -> None:
    # ``<<:`` copies the merged pairs into the mapping: ten levels of ten merges would
    # build a list of 10**10 pairs while constructing, before any validation
    levels = ["a0: &a0 {x: 1, y: 2}"]
    for n in range(1, 11):
        merges = ", ".join([f"*a{n - 1}"] * 10)
        levels.append(f"a{n}: &a{n} {{<<: [{merges}]}}")
    text = "\n".join(levels) + "\nfeature_store: {provider: local, local: {data_path: x}}\n"
    err = refused(load_config, write(tmp_path, text))
    assert "alias" in str(err)


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    text = "feature_store: &fs {provider: local, local: {data_path: x.json}, again: *fs}\n"
    err = refused(load_config, write(tmp_path, text))
    assert err.key_path == "feature_store.again"
    assert "refers to itself" in str(err)


def test_deep_nesting_in_yaml_is_refused_with_line_and_path(tmp_path: Path) -> None:
    depth = 20_000  # PyYAML's composer recurses: this used to be a raw RecursionError
    text = "feature_store:\n  custom: " + "[" * depth + "]" * depth + "\n"
    err = refused(load_config, write(tmp_path, text))
    assert err.key_path is not None and err.key_path.startswith("feature_store.custom.0.0")
    assert f"nested deeper than {MAX_CONFIG_DEPTH} levels" in str(err)
    assert "line 2" in str(err)


def test_aliases_cannot_stack_depth(tmp_path: Path) -> None:
    # each anchor is 40 deep; each alias inside the next adds 40 more once expanded
    lines = ["x0: &x0 " + "[" * 40 + "1" + "]" * 40]
    for n in range(1, 5):
        lines.append(f"x{n}: &x{n} " + "[" * 40 + f"*x{n - 1}" + "]" * 40)
    lines.append("feature_store: {provider: local, local: {data_path: x}, timeout_ms: *x4}")
    err = refused(load_config, write(tmp_path, "\n".join(lines) + "\n"))
    assert "nested deeper" in str(err)


def test_ordinary_aliases_still_work(tmp_path: Path) -> None:
    text = """\
feature_store: {provider: local, local: {data_path: features.json}}
enricher:
  enabled_task_types: [product_recommendation, upsell]
  task_features:
    product_recommendation:
      user: &shopping [purchase_history, browsing, preferences]
    upsell:
      user: *shopping
"""
    config = load_config(write(tmp_path, text))
    tasks = config.enricher.task_features
    assert tasks["upsell"]["user"] == tasks["product_recommendation"]["user"]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("9" * 6000, "4300 digits"),  # int() refuses it: used to escape as a raw ValueError
        ("2001-13-45", "month must be in 1..12"),  # a timestamp that does not exist
    ],
)
def test_unrepresentable_values_are_config_errors_with_a_position(
    tmp_path: Path, value: str, words: str
) -> None:
    text = f"feature_store:\n  provider: local\n  timeout_ms: {value}\n"
    err = refused(load_config, write(tmp_path, text))
    assert "line 3, column 15" in str(err)
    assert words in str(err)


def test_huge_yaml_syntax_problem_is_quoted_briefly(tmp_path: Path) -> None:
    text = "feature_store: !" + "x" * 1_000_000 + " {}\n"  # an unknown 1 MB tag
    err = refused(load_config, write(tmp_path, text))
    assert "not valid YAML" in str(err)


def test_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"feature_store: \xff\xfe\n")
    assert "not UTF-8" in str(refused(load_config, path))


# -- hypothesis: any bad configuration gives a short ConfigError naming the key path ----------

NUMBER_KEYS = [  # every one has a lower bound, so a huge negative number is out of range
    ("feature_store", "timeout_ms"),
    ("feature_store", "max_workers"),
    ("feature_store", "breaker_window"),
    ("feature_store", "cache_max_entries"),
    ("enricher", "max_feature_tokens"),
    ("enricher", "freshness_threshold_seconds"),
    ("enricher", "max_value_chars"),
    ("monitor", "min_samples"),
    ("monitor", "availability_window"),
]
LIST_KEYS = [("enricher", "enabled_task_types"), ("enricher", "policy", "deny")]
MAP_KEYS = [("enricher", "task_features"), ("enricher", "feature_labels")]
SECTIONS = [
    ("feature_store",),
    ("feature_store", "local"),
    ("enricher",),
    ("enricher", "policy"),
    ("monitor",),
    (),
]


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def _shared(fanout: int, levels: int) -> Any:
    value: Any = ["lol"] * fanout
    for _ in range(levels):
        value = [value] * fanout
    return value


huge_text = st.builds(lambda n, c: "bad-" + c * n, st.integers(0, 300_000), st.sampled_from("xé€"))
bomb = st.builds(_shared, st.integers(10, 40), st.integers(4, 9))
huge_negative = st.integers(30, 4000).map(lambda digits: -(10**digits))


def _set(config: Dict[str, Any], path: Tuple[str, ...], value: Any) -> None:
    node = config
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


@st.composite
def bad_configs(draw: st.DrawFn, max_depth: int = 3000) -> Tuple[Dict[str, Any], Tuple[str, ...]]:
    """A configuration with exactly one problem, and the key path that must be named."""
    deep = st.builds(
        _nested, st.integers(MAX_CONFIG_DEPTH + 1, max_depth), st.sampled_from(["x", 1, None])
    )
    hostile = st.one_of(huge_text, deep, bomb)
    config = base()
    kind = draw(st.sampled_from(["number", "list", "map", "provider", "unknown", "deep", "bomb"]))
    path: Tuple[str, ...]
    if kind == "number":
        path = draw(st.sampled_from(NUMBER_KEYS))
        value = draw(st.one_of(hostile, huge_negative, st.dictionaries(st.text(), st.text())))
    elif kind == "list":
        path = draw(st.sampled_from(LIST_KEYS))
        value = draw(st.one_of(huge_text, deep, bomb, st.just([["nested"]]), st.integers()))
    elif kind == "map":
        path = draw(st.sampled_from(MAP_KEYS))
        value = draw(st.one_of(huge_text, deep, bomb, st.lists(st.integers(), max_size=3)))
    elif kind == "provider":
        path = ("feature_store", "provider")
        value = draw(st.one_of(hostile, st.integers(), st.none()))
    elif kind == "unknown":
        section = draw(st.sampled_from(SECTIONS))
        key = draw(st.one_of(huge_text, st.sampled_from(["timeout", "projekt", "api_key"])))
        path = (*section, key)
        value = draw(st.one_of(st.integers(), huge_text, deep))
    elif kind == "deep":
        path = draw(st.sampled_from(NUMBER_KEYS + LIST_KEYS + MAP_KEYS))
        value = draw(deep)
    else:
        path = draw(st.sampled_from(NUMBER_KEYS + LIST_KEYS + MAP_KEYS))
        value = draw(bomb)
    _set(config, path, value)
    return config, path


def _check(err: ConfigError, path: Tuple[str, ...]) -> None:
    message = str(err)
    assert len(message) <= LIMIT, len(message)
    assert err.key_path is not None
    # every part of the path is named; a long key by an excerpt of its first characters
    named = ".".join(part if len(part) <= 40 else part[:20] for part in path)
    assert named in message.replace("'", ""), (named[:200], message[:300])
    assert err.key_path.replace("'", "").startswith(named), (named[:200], err.key_path)


SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


@SETTINGS
@given(case=bad_configs())
def test_any_bad_config_is_a_short_config_error_naming_the_key(
    case: Tuple[Dict[str, Any], Tuple[str, ...]],
) -> None:
    config, path = case
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    _check(info.value, path)


@SETTINGS
@given(case=bad_configs(max_depth=500))
def test_any_bad_config_file_is_a_short_config_error_naming_the_key(
    tmp_path: Path, case: Tuple[Dict[str, Any], Tuple[str, ...]]
) -> None:
    config, path = case
    try:
        # shared parts (the "bomb" values) become YAML anchors and aliases
        text = yaml.safe_dump(config, allow_unicode=True)
    except RecursionError:  # PyYAML's representer recurses: deep values are written as JSON
        text = json.dumps(config)
    file = tmp_path / "config.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(file)
    _check(info.value, path)


def test_many_problems_are_listed_up_to_a_budget() -> None:
    config = base()
    config["enricher"]["task_features"] = {f"task{n}": {"user": [n]} for n in range(5000)}
    err = refused(parse_config, config)
    assert "more problems" in str(err)
    assert err.key_path == "enricher.task_features.task0.user.0"


def test_cyclic_data_is_refused() -> None:
    config = base()
    options: Dict[str, Any] = {}
    options["self"] = options
    config["feature_store"] = {"provider": "custom", "custom": {"class": "a:B", "options": options}}
    err = refused(parse_config, config)
    assert err.key_path == "feature_store.custom.options.self"


def test_large_but_legitimate_config_is_accepted() -> None:
    config = base()
    names = [f"feature_{n}" for n in range(40)]
    config["enricher"]["task_features"] = {f"task{n}": {"user": names} for n in range(1000)}
    assert len(parse_config(copy.deepcopy(config)).enricher.task_features) == 1000


# -- every error message is capped ---------------------------------------------------------


def test_feature_config_error_lists_briefly() -> None:
    names: List[str] = ["n" * 1_000_000, *(f"feature_{n:05d}" for n in range(20_000))]
    err = FeatureConfigError("unknown feature(s) " + repr("z" * 1_000_000), names)
    message = str(err)
    assert len(message) <= LIMIT
    assert "Available features: " in message and "more)" in message
    assert len(err.available_features) == 20_001  # the attribute keeps everything


@pytest.mark.parametrize("cls", [AsahiFeaturesError, ConfigError, FeatureStoreDataError])
def test_every_library_error_is_capped(cls: type) -> None:
    message = str(cls("x" * 10_000_000))
    assert len(message) <= LIMIT
    assert "message cut" in message


@given(
    st.recursive(st.text() | st.integers(), lambda c: st.lists(c) | st.dictionaries(st.text(), c))
)
def test_excerpt_is_short_for_anything(value: Any) -> None:
    assert len(excerpt(value)) <= 200


def test_excerpt_of_pathological_values() -> None:
    cyclic: List[Any] = []
    cyclic.append(cyclic)
    assert len(excerpt(cyclic)) < 200
    assert len(excerpt(_nested(100_000, "x"))) < 200
    assert len(excerpt(_shared(10, 9))) < 200
    assert len(excerpt(10**10_000)) < 200  # repr() itself would raise ValueError
