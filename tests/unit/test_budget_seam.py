"""The token budget holds at the seam between the added text and the prompt (class 5 of
the adversarial review), for every encoding available offline.

``feature_tokens_added`` is what the enrichment adds to the prompt's token count:
``len(encode(enriched_prompt)) - len(encode(original_prompt))`` (``encode_ordinary``:
special-token look-alikes count as text), exactly, and never more than
``max_feature_tokens``. tiktoken's pre-tokenizer can join the closing ``]`` and blank
line of the context block with the first characters of the prompt (a newline in every
encoding, ``/`` in ``o200k_base``), so that sum differs from the count of
``feature_context`` alone for such prompts.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from asahi_features.budget import LAST_BLOCK_END, Seam
from asahi_features.enricher import FeatureEnricher
from asahi_features.models import EnrichmentReason
from asahi_features.settings import EnricherConfig
from asahi_features.tokens import get_encoding
from tests.unit.test_enricher import MemoryClient

ENCODINGS = ["cl100k_base", "o200k_base"]
BEGINNINGS = [
    " ", "  ", "\n", "\n\n", "\n\n\n", "\r\n", "\r", "\t", " \n", "\n ", "/", "//", "/x",
    "/Users/me", "/\n", "\n/", "!", "...", "]", "[", ")", "-", "- ", "'s", "\u2019", "1", "123",
    "日本語", "テキスト", "😀", "👩‍👧", "\u3000", "\u00a0", "\u2028", "é", "\u0301", "A",
    "Hello", "<|endoftext|>", "\ud83d", "\ud83d\ude00",
]  # fmt: skip

prompts = st.one_of(
    st.text(max_size=40),
    st.tuples(st.sampled_from(BEGINNINGS), st.text(max_size=30)).map("".join),
    st.lists(st.sampled_from(BEGINNINGS), min_size=1, max_size=4).map("".join),
    st.text(alphabet=st.characters(exclude_categories=()), max_size=12),
)

NAMES = ["tier", "history", "notes", "a"]
values = st.one_of(
    st.text(max_size=60),
    st.lists(st.text(max_size=12), max_size=6),
    st.integers(),
    st.floats(allow_nan=False),
)


def _encode(name: str) -> Any:
    return get_encoding(name).encode_ordinary


def _added(name: str, enriched: str, original: str) -> int:
    encode = _encode(name)
    return len(encode(enriched)) - len(encode(original))


@pytest.mark.parametrize("encoding", ENCODINGS)
@settings(max_examples=400, deadline=None)
@given(prompt=prompts)
@example(prompt="/x")
@example(prompt="\nHello")
@example(prompt="\ud83d\ude00\n")
@example(prompt="\n" * 50 + "x")
def test_seam_delta_is_exact(encoding: str, prompt: str) -> None:
    seam = Seam(get_encoding(encoding))
    assert seam.delta(prompt) == seam.exact(prompt)


@pytest.mark.parametrize("encoding", ENCODINGS)
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    prompt=prompts,
    features=st.dictionaries(st.sampled_from(NAMES), values, max_size=4),
    context=st.one_of(
        st.none(), st.dictionaries(st.sampled_from(["page", "q"]), values, max_size=2)
    ),
    slack=st.integers(min_value=-3, max_value=3),
)
def test_the_budget_holds_at_the_seam(
    encoding: str,
    prompt: str,
    features: Dict[str, Any],
    context: Optional[Dict[str, Any]],
    slack: int,
) -> None:
    client = MemoryClient({"user": {"u": features}})

    def enricher(budget: int) -> FeatureEnricher:
        return FeatureEnricher(
            client,
            EnricherConfig(
                enabled_task_types=["t"],
                task_features={"t": {"user": NAMES}},
                max_feature_tokens=budget,
                encoding=encoding,
            ),
        )

    # a budget right at the edge: what the block costs before an ordinary prompt
    full = enricher(10_000).enrich("x", user_id="u", task_type="t", context=context)
    budget = max(0, full.feature_tokens_added + slack)
    result = enricher(budget).enrich(prompt, user_id="u", task_type="t", context=context)
    assert result.enriched_prompt == result.feature_context + prompt
    assert _added(encoding, result.enriched_prompt, prompt) == result.feature_tokens_added
    assert result.feature_tokens_added <= budget
    if not result.features_available:
        assert result.feature_tokens_added == 0 and result.enriched_prompt == prompt


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_block_that_fits_exactly_meets_a_seam_that_costs_a_token(encoding: str) -> None:
    """The reviewer's case: a block that fits to the token before an ordinary prompt is
    one token too long before a prompt whose beginning merges with it."""
    client = MemoryClient({"user": {"u": {"tier": "gold", "notes": "likes long walks"}}})

    def run(prompt: str, budget: int) -> Any:
        return FeatureEnricher(
            client,
            EnricherConfig(
                enabled_task_types=["t"],
                task_features={"t": {"user": ["tier", "notes"]}},
                max_feature_tokens=budget,
                encoding=encoding,
            ),
        ).enrich(prompt, user_id="u", task_type="t")

    tight = run("Hello", 10_000).feature_tokens_added
    seam = Seam(get_encoding(encoding))
    costly = [p for p in [*BEGINNINGS, "/x", "/ab", "\nA"] if seam.delta(p) > 0]
    cheap = [p for p in [*BEGINNINGS, "\nA"] if seam.delta(p) < 0]
    if encoding == "o200k_base":
        assert costly, "o200k_base joins '/' to the block's end"
    assert cheap, "a newline after the block's blank line is cheaper together"
    for prompt in costly:
        result = run(prompt, tight)
        assert result.feature_tokens_added <= tight
        assert _added(encoding, result.enriched_prompt, prompt) == result.feature_tokens_added
        assert result.features_used != ["tier", "notes"] or result.feature_tokens_added < tight + 1
    for prompt in cheap:
        result = run(prompt, tight)
        assert result.features_used == ["tier", "notes"]
        assert result.feature_tokens_added == tight + seam.delta(prompt)


def test_the_seam_looks_only_at_the_prompt_beginning() -> None:
    seam = Seam(get_encoding("o200k_base"))
    long_prompt = "/x " + "word " * 200_000
    assert seam.delta(long_prompt) == seam.exact("/x word")
    assert seam.delta("Hello " * 200_000) == 0
    assert Seam(get_encoding("cl100k_base"))._last == "]\n\n"
    assert LAST_BLOCK_END.endswith("]\n\n")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_reasons_stay_right_when_the_seam_costs(encoding: str) -> None:
    client = MemoryClient({"user": {"u": {"tier": "gold"}}})
    cfg = EnricherConfig(
        enabled_task_types=["t"], task_features={"t": {"user": ["tier"]}}, encoding=encoding
    )
    tight = FeatureEnricher(client, cfg).enrich("Hi", user_id="u", task_type="t")
    prompts: List[str] = ["\n\nHi", "/x"]
    for prompt in prompts:
        budget = tight.feature_tokens_added + Seam(get_encoding(encoding)).delta(prompt) - 1
        cfg_tight = cfg.model_copy(update={"max_feature_tokens": max(0, budget)})
        result = FeatureEnricher(client, cfg_tight).enrich(prompt, user_id="u", task_type="t")
        assert result.reason is EnrichmentReason.BUDGET_EXHAUSTED
        assert result.enriched_prompt == prompt
