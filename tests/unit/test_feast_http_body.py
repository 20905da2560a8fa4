"""The body HttpFeatureStore posts to ``/get-online-features``: features or a feature
service, plain ids, compound keys and request data (what feast's
``GetOnlineFeaturesRequest`` accepts; the real server is exercised in
tests/integration/test_feast_init_servers.py)."""

from __future__ import annotations

import pytest

from asahi_features.errors import FeatureConfigError
from asahi_features.stores.entity_keys import (
    canonical_entity_type,
    compose_key,
    entity_parts,
    parse_key,
)
from asahi_features.stores.http_body import build_body, is_service, service_columns


def test_plain_ids_and_features() -> None:
    body = build_body(["u1", "u2"], "user", ["v:a", "v:b"], {}, composite=False)
    assert body == {
        "entities": {"user_id": ["u1", "u2"]},
        "features": ["v:a", "v:b"],
        "full_feature_names": True,
    }


def test_feature_service_and_request_data() -> None:
    keys = [
        compose_key({"driver": "1001"}, {"val_to_add": 1, "val_to_add_2": 2}),
        compose_key({"driver": "1002"}, {"val_to_add": 5}),  # one field missing
        "1003",  # a plain id: no request data
    ]
    body = build_body(keys, "driver", ["@driver_activity_v1"], {}, composite=True)
    assert body == {
        "entities": {
            "driver_id": ["1001", "1002", "1003"],
            "val_to_add": [1, 5, None],
            "val_to_add_2": [2, None, None],
        },
        "feature_service": "driver_activity_v1",
        "full_feature_names": True,
    }
    assert is_service(["@driver_activity_v1"]) == "driver_activity_v1"
    assert is_service(["@a", "b"]) is None and is_service(["v:a"]) is None
    assert service_columns(["driver_id", "v__a", "odfv__b", "val_to_add"]) == ["v:a", "odfv:b"]


def test_compound_keys_send_every_join_key() -> None:
    keys = [compose_key({"user": "u1", "merchant": "m1"}, {})]
    body = build_body(keys, "user+merchant", ["pair:n"], {"merchant": "mid"}, composite=False)
    assert body["entities"] == {"mid": ["m1"], "user_id": ["u1"]}
    with pytest.raises(FeatureConfigError, match="composite keys"):
        build_body(["u1"], "merchant+user", ["pair:n"], {}, composite=False)


def test_entity_keys_are_canonical() -> None:
    assert entity_parts("user + merchant") == ("merchant", "user")
    assert canonical_entity_type("user+merchant") == "merchant+user"
    assert canonical_entity_type("user") == "user"
    a = compose_key({"user": "u1", "merchant": "m1"}, {"x": 1})
    assert a == compose_key({"merchant": "m1", "user": "u1"}, {"x": 1})  # equal reads, equal keys
    assert parse_key(a) == ({"merchant": "m1", "user": "u1"}, {"x": 1})
    for bad in ("u1", "{}", '{"ids": 3}', 7):
        with pytest.raises(ValueError):
            parse_key(bad)
