"""Property-based tests of the enricher: budget, block structure, prompt suffix."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asahi_features.enricher import FeatureEnricher
from asahi_features.models import EnrichmentReason
from asahi_features.settings import EnricherConfig, FeaturePolicy
from asahi_features.tokens import TokenCounter
from tests.unit.test_enricher import MemoryClient

COUNTER = TokenCounter("cl100k_base")
NAMES = ["a_b", "purchase_history", "preferences", "x", "profile:email", "tier"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=120),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=12),
        st.dictionaries(st.text(max_size=10), inner, max_size=4),
    ),
    max_leaves=30,
)
labels = st.dictionaries(st.sampled_from(NAMES), st.text(max_size=30), max_size=3)
contexts = st.one_of(st.none(), st.dictionaries(st.text(max_size=12), values, max_size=4))

HEADER = re.compile(r"^\[Context from [^\[\]\n]+\]$")


def _check_structure(context: str) -> None:
    if not context:
        return
    assert context.endswith("[End context]\n\n")
    blocks = context[: -len("\n\n")].split("\n\n")
    for block in blocks:
        lines = block.split("\n")
        assert len(lines) >= 3
        assert HEADER.match(lines[0]), lines[0]
        assert lines[-1] == "[End context]"
        for line in lines[1:-1]:
            assert line.startswith("- ")
            assert ": " in line
            assert line.isprintable()
            assert "[" not in line.split(": ", 1)[1] or "[redacted]" in line
    all_lines = context.split("\n")
    assert sum(1 for x in all_lines if x == "[End context]") == len(blocks)
    assert sum(1 for x in all_lines if x.startswith("[Context from")) == len(blocks)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    features=st.dictionaries(st.sampled_from(NAMES), values, max_size=6),
    org=st.dictionaries(st.sampled_from(NAMES), values, max_size=3),
    prompt=st.text(max_size=200),
    budget=st.integers(min_value=0, max_value=260),
    feature_labels=labels,
    context=contexts,
    max_list_items=st.integers(min_value=1, max_value=20),
    max_value_chars=st.integers(min_value=8, max_value=400),
    redact=st.lists(st.sampled_from(NAMES), max_size=2),
)
def test_budget_structure_and_suffix(
    features: Dict[str, Any],
    org: Dict[str, Any],
    prompt: str,
    budget: int,
    feature_labels: Dict[str, str],
    context: Optional[Dict[str, Any]],
    max_list_items: int,
    max_value_chars: int,
    redact: List[str],
) -> None:
    client = MemoryClient({"user": {"u": features}, "organization": {"o": org}})
    enricher = FeatureEnricher(
        client,
        EnricherConfig(
            max_feature_tokens=budget,
            enabled_task_types=["t"],
            task_features={"t": {"user": NAMES, "organization": NAMES[:3]}},
            feature_labels=feature_labels,
            max_list_items=max_list_items,
            max_value_chars=max_value_chars,
            policy=FeaturePolicy(redact=redact),
        ),
    )
    result = enricher.enrich(
        prompt, user_id="u", organization_id="o", task_type="t", context=context
    )
    assert result.enriched_prompt == result.feature_context + prompt
    assert result.enriched_prompt.endswith(prompt)
    if prompt:
        assert result.feature_context == result.enriched_prompt[: -len(prompt)]
    # what the block adds to the prompt's token count, seam included
    tokens = COUNTER.count(result.enriched_prompt) - COUNTER.count(prompt)
    assert tokens == result.feature_tokens_added <= budget
    assert result.features_available == bool(result.features_used)
    assert result.features_available == (result.reason is EnrichmentReason.ENRICHED)
    if not result.features_available:
        assert result.feature_context == "" and result.enriched_prompt == prompt
    _check_structure(result.feature_context)
