"""Where FeatureEnrichmentRunnable takes identities from: ``configurable`` or the input.

The rule, for ``user_id``, ``organization_id`` and ``<entity_type>_id`` of every other
entity type of the enricher's task map (here ``merchant``, read from the input's
``context["merchant_id"]``):

* a key present in ``configurable`` is final; ``None`` there means "no identity";
* otherwise the input's value counts, unless ``identity_from_input=False``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Dict, List, Optional, Set, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.runnables import RunnableConfig

from asahi_features.enricher import FeatureEnricher
from asahi_features.langchain import FeatureEnrichmentRunnable, FeatureMonitorCallbackHandler
from asahi_features.models import EnrichmentRequest, EnrichmentResult, FeatureVector, utc_now
from asahi_features.monitor import FeatureMonitor
from asahi_features.settings import EnricherConfig
from asahi_features.stores.base import BaseFeatureStore

pytestmark = pytest.mark.usefixtures("no_tracing_env")

TASKS = {
    "shop": {"user": ["user_tag"], "organization": ["org_tag"], "merchant": ["merchant_tag"]},
    "plain": {"user": ["user_tag"]},
}
CONFIG = EnricherConfig(
    enabled_task_types=list(TASKS), task_features=TASKS, freshness_threshold_seconds=10**8
)
KEYS = ("user_id", "organization_id", "merchant_id")
ENTITY = {"user_id": "user", "organization_id": "organization", "merchant_id": "merchant"}


class EchoStore(BaseFeatureStore):
    """Every entity exists; its one feature names the entity. Records every id asked."""

    source = "echo"

    def __init__(self) -> None:
        self.asked: Set[Tuple[str, str]] = set()
        self._lock = threading.Lock()

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        with self._lock:
            self.asked.add((entity_type, entity_id))
        features = {name: f"{entity_type}={entity_id}" for name in feature_names}
        return FeatureVector.from_ages(
            entity_id, entity_type, "echo", features, dict.fromkeys(features, 1.0), utc_now()
        )

    def health_check(self) -> bool:
        return True


STATES = st.sampled_from(["absent", "none", "value"])


def _expected(
    config_state: str, config_value: Any, body_state: str, body_value: str, from_input: bool
) -> Optional[str]:
    if config_state == "value":
        return str(config_value)
    if config_state == "none":
        return None
    if from_input and body_state == "value":
        return body_value
    return None


def _build(
    states: Dict[str, Tuple[str, str]], config_values: Dict[str, Any]
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(input dict, configurable) for the given (config state, body state) per key."""
    body: Dict[str, Any] = {"prompt": "Which plan?"}
    context: Dict[str, Any] = {"page": "checkout"}
    configurable: Dict[str, Any] = {}
    for key, (config_state, body_state) in states.items():
        if config_state != "absent":
            configurable[key] = config_values[key] if config_state == "value" else None
        if body_state != "absent":
            value = f"b_{key}" if body_state == "value" else None
            if key == "merchant_id":
                context[key] = value
            else:
                body[key] = value
    body["context"] = context
    return body, configurable


def _run(
    runnable: FeatureEnrichmentRunnable, body: Dict[str, Any], config: RunnableConfig, mode: str
) -> EnrichmentResult:
    if mode == "invoke":
        out = runnable.invoke(body, config)
    elif mode == "batch":
        out = runnable.batch([body], config)[0]
    elif mode == "ainvoke":
        out = asyncio.run(runnable.ainvoke(body, config))
    else:
        out = asyncio.run(runnable.abatch([body], config))[0]
    result: EnrichmentResult = out.enrichment
    return result


@settings(max_examples=250, deadline=None)
@given(
    user=st.tuples(STATES, STATES),
    organization=st.tuples(STATES, STATES),
    merchant=st.tuples(STATES, STATES),
    merchant_config_value=st.sampled_from(["c_merchant", 42]),
    from_input=st.booleans(),
    mode=st.sampled_from(["invoke", "batch", "ainvoke", "abatch"]),
    observed=st.booleans(),
)
def test_configurable_is_final_and_input_counts_only_when_allowed(
    user: Tuple[str, str],
    organization: Tuple[str, str],
    merchant: Tuple[str, str],
    merchant_config_value: Any,
    from_input: bool,
    mode: str,
    observed: bool,
) -> None:
    store = EchoStore()
    runnable = FeatureEnrichmentRunnable(
        FeatureEnricher(store, CONFIG), task_type="shop", identity_from_input=from_input
    )
    states = {"user_id": user, "organization_id": organization, "merchant_id": merchant}
    config_values = {
        "user_id": "c_user",
        "organization_id": 7,
        "merchant_id": merchant_config_value,
    }
    body, configurable = _build(states, config_values)
    config: RunnableConfig = {"configurable": configurable}
    if observed:
        config["callbacks"] = [FeatureMonitorCallbackHandler(FeatureMonitor())]

    result = _run(runnable, body, config, mode)

    expected = {
        key: _expected(states[key][0], config_values[key], states[key][1], f"b_{key}", from_input)
        for key in KEYS
    }
    asked = {(ENTITY[key], value) for key, value in expected.items() if value is not None}
    assert store.asked == asked
    for key, value in expected.items():
        line = f"{ENTITY[key]}={value}"
        if value is None:
            assert f"{ENTITY[key]}=" not in result.enriched_prompt
        else:
            assert line in result.enriched_prompt
        if value != f"b_{key}":  # an input identity that was not used never shows
            assert f"b_{key}" not in result.enriched_prompt
    if asked:
        assert "checkout" in result.enriched_prompt  # the rest of the context is kept
    else:
        assert result.reason.value == "no_identity"
    # the caller's dicts are not changed
    assert (
        body == _build(states, config_values)[0]
        and configurable == _build(states, config_values)[1]
    )


def test_none_in_configurable_does_not_fall_back_to_the_body() -> None:
    """The reported case: configurable user_id None used to take the body's user_id."""
    store = EchoStore()
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(store, CONFIG), task_type="plain")
    out = runnable.invoke(
        {"prompt": "q", "user_id": "someone_else"}, {"configurable": {"user_id": None}}
    )
    assert store.asked == set()
    assert out.enrichment.reason.value == "no_identity"
    assert "someone_else" not in out


def test_every_entity_type_is_advertised_and_pinnable() -> None:
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(EchoStore(), CONFIG))
    ids = [spec.id for spec in runnable.config_specs]
    # namespaced (no clash with RunnableWithMessageHistory's user_id); plain keys still read
    assert ids == [
        "asahi_user_id",
        "asahi_organization_id",
        "asahi_task_type",
        "asahi_merchant_id",
    ]
    merchant = next(s for s in runnable.config_specs if s.id == "asahi_merchant_id")
    assert merchant.default is None and merchant.is_shared
    # the specs reach a chain that contains the runnable
    chain = runnable | (lambda p: p)
    assert "asahi_merchant_id" in {spec.id for spec in chain.config_specs}


def test_pinned_id_of_an_entity_type_the_task_does_not_use_is_not_rendered() -> None:
    """A server pins merchant_id for every request; tasks without merchant features
    neither fetch it nor show it as request context."""
    store = EchoStore()
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(store, CONFIG), task_type="plain")
    out = runnable.invoke(
        {"prompt": "q", "context": {"page": "home"}},
        {"configurable": {"user_id": "u1", "merchant_id": "m_secret"}},
    )
    assert store.asked == {("user", "u1")}
    assert "m_secret" not in out and "home" in out


def test_task_type_none_in_configurable_still_reads_the_input() -> None:
    """task_type is not an identity: None there means "not set"."""
    store = EchoStore()
    runnable = FeatureEnrichmentRunnable(FeatureEnricher(store, CONFIG), task_type="plain")
    out = runnable.invoke(
        {"prompt": "q", "task_type": "shop", "context": {"merchant_id": "m1"}},
        {"configurable": {"task_type": None, "user_id": "u1"}},
    )
    assert out.enrichment.task_type == "shop"
    assert store.asked == {("user", "u1"), ("merchant", "m1")}


class RecordingLookAlike:
    """An enricher look-alike without a task map: the runnable cannot know which
    context keys are identities."""

    def __init__(self) -> None:
        self.seen: List[EnrichmentRequest] = []
        self.inner = FeatureEnricher(EchoStore(), CONFIG)

    def enrich(self, prompt: str, **kwargs: Any) -> EnrichmentResult:
        self.seen.append(EnrichmentRequest(prompt=prompt, **kwargs))
        return self.inner.enrich(prompt, **kwargs)

    def enrich_batch(self, requests: List[EnrichmentRequest]) -> List[EnrichmentResult]:
        self.seen.extend(requests)
        return self.inner.enrich_batch(requests)


def test_without_a_task_map_identity_from_input_false_drops_every_id_in_the_context() -> None:
    alike = RecordingLookAlike()
    runnable = FeatureEnrichmentRunnable(alike, identity_from_input=False)
    body = {
        "prompt": "q",
        "user_id": "u_body",
        "context": {"merchant_id": "m_body", "shop_id": "s", "page": "p"},
    }
    runnable.invoke(body, {"configurable": {"organization_id": "o_conf"}})
    runnable.batch([body])
    for request in alike.seen:
        assert request.user_id is None and request.organization_id in ("o_conf", None)
        assert request.context == {"page": "p"}
    assert [s.id for s in runnable.config_specs] == [
        "asahi_user_id",
        "asahi_organization_id",
        "asahi_task_type",
    ]
