"""build_enricher checks the task map against the store, at build time.

An enabled task mapping a feature (or entity type) the store does not have used to be
found on the first request. Now, when the store can list its features, build_enricher
raises FeatureConfigError naming the task and suggesting close matches; when the store is
down or hangs it warns once and goes on, within a bounded time; a store that cannot list
its features is skipped silently. Disabled task types are not checked.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml

from asahi_features.config import check_task_features, load_config
from asahi_features.enricher import FeatureEnricher, build_enricher
from asahi_features.errors import FeatureConfigError, FeatureStoreUnavailableError
from asahi_features.models import FeatureVector
from asahi_features.sample_repo import SAMPLE_TASK_FEATURES
from asahi_features.settings import DEFAULT_TASK_FEATURES, EnricherConfig
from tests.support.feast_helpers import build_test_repo

ROOT = Path(__file__).resolve().parents[2]
HERE = "tests.unit.test_build_time_checks"

USERS = {
    "u1": {
        "updated_at": "2026-11-24T10:00:00Z",
        "features": {
            "purchase_history": ["shoes"],
            "browsing": "athletic wear",
            "preferences": "casual",
            "budget_level": "medium",
            "tier": "gold",
        },
    }
}


def local_config(tmp_path: Path, enricher: str, users: Optional[Dict[str, Any]] = None) -> Path:
    (tmp_path / "features.json").write_text(json.dumps({"user": users or USERS}))
    path = tmp_path / "asahi.yaml"
    path.write_text(
        "feature_store:\n  provider: local\n  local: {data_path: features.json}\n"
        f"enricher:\n{enricher}",
        encoding="utf-8",
    )
    return path


def custom_config(tmp_path: Path, cls: str, enricher: str, timeout_ms: int = 200) -> Path:
    path = tmp_path / "asahi.yaml"
    path.write_text(
        f"feature_store:\n  provider: custom\n  custom: {{class: '{HERE}:{cls}'}}\n"
        f"  timeout_ms: {timeout_ms}\nenricher:\n{enricher}",
        encoding="utf-8",
    )
    return path


PRODUCT_TASK = """\
  enabled_task_types: [product_recommendation]
  task_features:
    product_recommendation:
      user: [purchase_history, browsing, preferences, budget, demographic]
"""


# -- the local store -------------------------------------------------------------------------


def test_unknown_feature_of_an_enabled_task_fails_the_build(tmp_path: Path) -> None:
    with pytest.raises(FeatureConfigError) as info:
        build_enricher(local_config(tmp_path, PRODUCT_TASK))
    message = str(info.value)
    assert "enricher.task_features.product_recommendation.user: 'budget'" in message
    assert "did you mean 'budget_level'?" in message
    assert "'demographic' is not a feature of entity type 'user'" in message
    assert "Available features of 'user': browsing, budget_level" in message
    assert info.value.available_features == sorted(USERS["u1"]["features"])


def test_disabled_tasks_are_not_checked(tmp_path: Path) -> None:
    enricher = PRODUCT_TASK.replace("[product_recommendation]", "[general]")
    built = build_enricher(local_config(tmp_path, enricher))
    assert isinstance(built, FeatureEnricher)


def test_a_correct_map_builds(tmp_path: Path) -> None:
    enricher = PRODUCT_TASK.replace("budget, demographic", "budget_level")
    built = build_enricher(local_config(tmp_path, enricher))
    assert built.get_relevant_features("product_recommendation", "user")[-1] == "budget_level"


def test_the_default_map_is_checked_and_said_to_be_the_default(tmp_path: Path) -> None:
    # the defaults enable general / summarization / faq: a store without "tier" fails
    users = {"u1": {"updated_at": "2026-11-24T10:00:00Z", "features": {"preferences": "x"}}}
    with pytest.raises(FeatureConfigError) as info:
        build_enricher(local_config(tmp_path, "  max_feature_tokens: 200\n", users))
    message = str(info.value)
    assert "enricher.task_features.general.user: 'tier'" in message
    assert "(also in: faq)" in message
    assert "default task map (spec table 3.5)" in message


def test_unknown_entity_type_suggests_the_served_ones(tmp_path: Path) -> None:
    enricher = "  enabled_task_types: [t]\n  task_features:\n    t:\n      usr: [tier]\n"
    with pytest.raises(FeatureConfigError) as info:
        build_enricher(local_config(tmp_path, enricher))
    message = str(info.value)
    assert "enricher.task_features.t.usr: entity type 'usr' is not served" in message
    assert "did you mean 'user'?" in message


def test_check_can_be_turned_off(tmp_path: Path) -> None:
    built = build_enricher(local_config(tmp_path, PRODUCT_TASK), check_features=False)
    with pytest.raises(FeatureConfigError):  # ... and then the first request finds it
        built.enrich("Recommend", user_id="u1", task_type="product_recommendation")


def test_the_example_config_passes_the_check() -> None:
    config = load_config(ROOT / "examples" / "config.yaml")
    assert set(config.enricher.enabled_task_types) == set(DEFAULT_TASK_FEATURES)
    built = build_enricher(config)
    assert built.get_relevant_features("product_recommendation", "user") == [
        "purchase_history",
        "browsing",
        "preferences",
        "budget_level",
        "demographics",
    ]


def test_a_malformed_store_file_warns_and_builds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = local_config(tmp_path, PRODUCT_TASK)
    (tmp_path / "features.json").write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="asahi_features.config"):
        built = build_enricher(path)
    assert isinstance(built, FeatureEnricher)
    warnings = [r for r in caplog.records if r.name == "asahi_features.config"]
    assert len(warnings) == 1 and "could not check" in warnings[0].getMessage()


# -- custom stores: down, hanging, unable to list ---------------------------------------------


class _Base:
    def get_features(self, entity_id: str, entity_type: str, names: List[str]) -> FeatureVector:
        return FeatureVector.empty(entity_id, entity_type, "custom")

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, names: List[str]
    ) -> List[FeatureVector]:
        return [self.get_features(e, entity_type, names) for e in entity_ids]

    def health_check(self) -> bool:
        return True


class NoListing(_Base):
    """A store without list_features (the protocol does not require it)."""


class Down(_Base):
    calls = 0

    def list_features(self, entity_type: Optional[str] = None) -> Dict[str, List[str]]:
        type(self).calls += 1
        raise FeatureStoreUnavailableError("connection refused")


RELEASE = threading.Event()


class Hung(_Base):
    """Lists its features only once the test sets RELEASE (or after a minute)."""

    answered = 0

    def list_features(self, entity_type: Optional[str] = None) -> Dict[str, List[str]]:
        RELEASE.wait(60)
        type(self).answered += 1
        return {"user": []}


TWO_ENTITY_TYPES = """\
  enabled_task_types: [product_recommendation, content_generation]
"""


def test_a_store_without_list_features_is_skipped_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="asahi_features"):
        build_enricher(custom_config(tmp_path, "NoListing", TWO_ENTITY_TYPES))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_store_that_is_down_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Down.calls = 0
    with caplog.at_level(logging.WARNING, logger="asahi_features.config"):
        build_enricher(custom_config(tmp_path, "Down", TWO_ENTITY_TYPES))
    warnings = [r for r in caplog.records if r.name == "asahi_features.config"]
    assert len(warnings) == 1
    assert "connection refused" in warnings[0].getMessage()
    assert Down.calls == 1  # the other entity type is not tried against a dead store


def test_a_hung_store_does_not_hold_the_build(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    RELEASE.clear()
    Hung.answered = 0
    try:
        with caplog.at_level(logging.WARNING, logger="asahi_features.config"):
            built = build_enricher(custom_config(tmp_path, "Hung", TWO_ENTITY_TYPES, 100))
        # built while the store still hung: bounded by max(timeout_ms, 1 s), not by the
        # store (which answers only when released, or after a minute)
        unanswered = Hung.answered == 0
    finally:
        RELEASE.set()
    assert isinstance(built, FeatureEnricher)
    assert unanswered, "the build waited for the hung store's listing"
    warnings = [r for r in caplog.records if r.name == "asahi_features.config"]
    assert len(warnings) == 1 and "within 1.0 s" in warnings[0].getMessage()


# -- check_task_features directly: references, odd listings ----------------------------------


class Listing:
    def __init__(self, catalog: Dict[str, List[str]]) -> None:
        self.catalog = catalog

    def list_features(self, entity_type: Optional[str] = None) -> Dict[str, List[str]]:
        if entity_type not in self.catalog:
            raise FeatureConfigError(
                f"entity type {entity_type!r} has no feature_views configured",
                self.catalog,
                kind="entity types",
            )
        return {entity_type: self.catalog[entity_type]}


def enricher_config(task_features: Dict[str, Dict[str, List[str]]]) -> EnricherConfig:
    return EnricherConfig(enabled_task_types=list(task_features), task_features=task_features)


def test_references_count_by_their_feature_name() -> None:
    client = Listing({"user": ["tier", "budget_level"]})
    check_task_features(client, enricher_config({"t": {"user": ["user_profile:tier", "tier"]}}))
    with pytest.raises(FeatureConfigError, match="'user_profile:tierx'"):
        check_task_features(client, enricher_config({"t": {"user": ["user_profile:tierx"]}}))


def test_an_unlisted_entity_type_with_references_only_is_left_to_the_store() -> None:
    # e.g. the HTTP store with no feature_views for the type: full references still work
    client = Listing({"user": ["tier"]})
    check_task_features(client, enricher_config({"t": {"org": ["org_brand:tone"]}}))
    with pytest.raises(FeatureConfigError, match="entity type 'org' is not served"):
        check_task_features(client, enricher_config({"t": {"org": ["tone"]}}))


def test_many_problems_make_a_short_message() -> None:
    names = [f"missing_{n}_" + "x" * 500 for n in range(200)]
    client = Listing({"user": [f"feature_{n}" for n in range(5000)]})
    with pytest.raises(FeatureConfigError) as info:
        check_task_features(client, enricher_config({"t": {"user": names}}))
    assert len(str(info.value)) <= 2000
    assert "and 195 more" in str(info.value)


# -- a real Feast repository ----------------------------------------------------------------


@pytest.fixture(scope="module")
def feast_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_test_repo(tmp_path_factory.mktemp("feast"), users=20, organizations=5)


def feast_config(tmp_path: Path, repo: Path, enricher: str) -> Path:
    path = tmp_path / "asahi.yaml"
    path.write_text(
        f"feature_store:\n  provider: feast\n  feast: {{repo_path: '{repo}', project: asahi}}\n"
        f"enricher:\n{enricher}",
        encoding="utf-8",
    )
    return path


def test_feast_unknown_feature_fails_the_build(tmp_path: Path, feast_repo: Path) -> None:
    enricher = (
        "  enabled_task_types: [product_recommendation, content_generation]\n"
        "  task_features:\n"
        "    product_recommendation: {user: [purchase_history, user_purchases:budget_levl]}\n"
        "    content_generation: {organization: [brand_voice, tone, style_guides]}\n"
    )
    with pytest.raises(FeatureConfigError) as info:
        build_enricher(feast_config(tmp_path, feast_repo, enricher))
    message = str(info.value)
    assert "'user_purchases:budget_levl'" in message and "did you mean 'budget_level'?" in message
    assert "'style_guides'" in message and "did you mean 'style_guide'?" in message


def test_feast_default_map_and_sample_map_pass(tmp_path: Path, feast_repo: Path) -> None:
    tasks = ", ".join(DEFAULT_TASK_FEATURES)
    built = build_enricher(feast_config(tmp_path, feast_repo, f"  enabled_task_types: [{tasks}]\n"))
    assert built.get_relevant_features("product_recommendation", "user") == [
        "purchase_history",
        "browsing",
        "preferences",
    ]
    sample = yaml.safe_dump({"task_features": SAMPLE_TASK_FEATURES}, default_flow_style=True)
    enricher = f"  enabled_task_types: [{tasks}]\n  " + sample.strip()[1:-1] + "\n"
    built = build_enricher(feast_config(tmp_path, feast_repo, enricher))
    assert built.get_relevant_features("product_recommendation", "user")[-1] == "demographics"
