"""The ``custom`` provider: import a user's class, build it with options, check the protocol."""

from __future__ import annotations

from typing import Any, List

import pytest

from asahi_features.config import build_backend, client_from_config
from asahi_features.errors import ConfigError
from asahi_features.models import FeatureVector, utc_now
from asahi_features.settings import FeatureStoreSettings
from asahi_features.stores.base import FeatureStoreClient
from asahi_features.stores.custom import CustomBackend, load_class

HERE = __name__


class DictStore:
    """A complete backend without any base class: the protocol is all it needs."""

    def __init__(self, data: dict[str, dict[str, Any]], label: str = "custom") -> None:
        self.data = data
        self.label = label

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        row = self.data.get(entity_id)
        now = utc_now()
        if row is None:
            return FeatureVector.empty(entity_id, entity_type, self.label, retrieved_at=now)
        feats = {k: row[k] for k in feature_names if k in row}
        return FeatureVector.from_ages(
            entity_id, entity_type, self.label, feats, dict.fromkeys(feats, 1.0), now
        )

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        return [self.get_features(e, entity_type, feature_names) for e in entity_ids]

    def health_check(self) -> bool:
        return True

    def extra(self) -> str:
        return "still reachable"


class Outer:
    class Nested(DictStore):
        pass


class HalfStore:
    def get_features(self, *args: Any) -> None: ...


class NotCallable(DictStore):
    health_check = True  # type: ignore[assignment]


class LosesMethodOnInit(DictStore):
    def __init__(self) -> None:
        super().__init__({})
        self.get_batch_features = None  # type: ignore[assignment]


class Explodes(DictStore):
    def __init__(self) -> None:
        raise RuntimeError("cannot connect to warehouse")


not_a_class = 42


def settings(class_path: str, **options: Any) -> FeatureStoreSettings:
    return FeatureStoreSettings.model_validate(
        {"provider": "custom", "custom": {"class": class_path, "options": options}}
    )


def test_builds_the_users_instance_with_options() -> None:
    store = build_backend(settings(f"{HERE}:DictStore", data={"u1": {"tier": "gold"}}, label="w"))
    assert type(store) is DictStore
    assert isinstance(store, FeatureStoreClient)
    assert store.extra() == "still reachable"
    vec = store.get_features("u1", "user", ["tier"])
    assert vec.features == {"tier": "gold"} and vec.source == "w"


def test_nested_class_and_direct_build() -> None:
    store = CustomBackend.build(f"{HERE}:Outer.Nested", {"data": {}})
    assert type(store) is Outer.Nested
    with pytest.raises(
        ConfigError, match=r"missing 1 required positional argument: 'data' \(given: none\)"
    ):
        CustomBackend.build(f"{HERE}:DictStore", None)


def test_missing_methods_are_listed() -> None:
    with pytest.raises(ConfigError) as info:
        build_backend(settings(f"{HERE}:HalfStore"))
    msg = str(info.value)
    assert "get_batch_features" in msg and "health_check" in msg
    assert "missing method(s): get_batch_features, health_check" in msg
    assert info.value.key_path == "feature_store.custom.class"


def test_non_callable_attribute_counts_as_missing() -> None:
    with pytest.raises(ConfigError, match="missing method\\(s\\): health_check"):
        CustomBackend.build(f"{HERE}:NotCallable", {"data": {}})


def test_instance_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"instances of .* lack method\(s\): get_batch_features"):
        CustomBackend.build(f"{HERE}:LosesMethodOnInit")


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("no_such_package_xyz.mod:Store", "cannot import module 'no_such_package_xyz.mod'"),
        (f"{HERE}:Missing", "has no attribute 'Missing'"),
        (f"{HERE}:not_a_class", "is a int, not a class"),
        ("justamodule", "must look like 'package.module:ClassName'"),
        (":Store", "must look like"),
    ],
)
def test_import_problems(path: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_class(path)


def test_module_raising_on_import(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_backend_mod.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="RuntimeError: boom at import"):
        load_class("broken_backend_mod:Store")


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="options do not fit") as info:
        CustomBackend.build(f"{HERE}:DictStore", {"data": {}, "colour": "red"})
    assert "colour" in str(info.value)
    assert info.value.key_path == "feature_store.custom.options"


def test_constructor_failure_propagates() -> None:
    with pytest.raises(RuntimeError, match="cannot connect"):
        CustomBackend.build(f"{HERE}:Explodes")


def test_config_rejects_malformed_class_path() -> None:
    from asahi_features.config import parse_config

    with pytest.raises(ConfigError, match=r"custom\.class"):
        parse_config({"feature_store": {"provider": "custom", "custom": {"class": "a b"}}})


def test_unguarded_client_from_config() -> None:
    store = client_from_config(settings(f"{HERE}:DictStore", data={}), guarded=False)
    assert type(store) is DictStore
