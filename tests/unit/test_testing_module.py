"""asahi_features.testing: the helpers users are told to use in their own tests."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap

import pytest

import asahi_features.testing as testing
from asahi_features import FeatureEnricher, GuardedClient
from asahi_features.errors import FeatureStoreUnavailableError
from asahi_features.models import EnrichmentReason
from asahi_features.testing import AsyncFaultyBackend, FaultyBackend, ManualClock, WallClock


def test_the_documented_example_runs_as_written() -> None:
    doc = testing.__doc__ or ""
    block = doc.split("Example::", 1)[1]
    code = textwrap.dedent(block)
    exec(compile(code, "asahi_features.testing example", "exec"), {})


def test_importing_it_pulls_no_test_framework_or_heavy_dependency() -> None:
    code = (
        "import sys, asahi_features.testing\n"
        "heavy = ('pytest', 'feast', 'langchain_core', 'llama_index')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("ok", EnrichmentReason.ENRICHED),
        ("raise", EnrichmentReason.STORE_UNAVAILABLE),
        ("garbage", EnrichmentReason.STORE_UNAVAILABLE),
    ],
)
def test_each_mode_gives_the_outcome_an_application_must_handle(
    mode: str, reason: EnrichmentReason
) -> None:
    store = FaultyBackend(mode)  # type: ignore[arg-type]
    result = FeatureEnricher(GuardedClient(store, timeout_ms=2000)).enrich(
        "Q", user_id="u1", task_type="general"
    )
    assert result.reason is reason
    if reason is EnrichmentReason.ENRICHED:
        assert "- Customer tier: gold" in result.enriched_prompt
        assert result.enriched_prompt.endswith("Q")
    else:
        assert result.enriched_prompt == "Q"
    assert store.calls_by_method == {"get_features": 1}


def test_recover_fails_a_set_number_of_times_then_answers() -> None:
    store = FaultyBackend("recover", fail_count=2)
    outcomes = []
    for _ in range(3):
        try:
            store.get_features("u1", "user", ["tier"])
            outcomes.append("ok")
        except FeatureStoreUnavailableError:
            outcomes.append("fail")
    assert outcomes == ["fail", "fail", "ok"]


def test_flap_follows_its_pattern_and_unknown_modes_are_refused() -> None:
    store = FaultyBackend("flap", pattern=(True, False, False))
    answers = []
    for _ in range(6):
        try:
            answers.append(store.get_features("u1", "user", ["tier"]).features["tier"])
        except FeatureStoreUnavailableError:
            answers.append(None)
    assert answers == ["gold", None, None, "gold", None, None]
    with pytest.raises(ValueError, match=re.escape("allowed: ok, hang, slow, raise")):
        store.set_mode("explode")  # type: ignore[arg-type]


async def test_an_async_hang_is_cancellable_and_counted() -> None:
    store = AsyncFaultyBackend("hang")
    task = asyncio.ensure_future(store.aget_features("u1", "user", ["tier"]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (store.cancelled, store.in_flight) == (1, 0)
    store.release()
    vector = await store.aget_features("u1", "user", ["tier"])
    assert vector.features == {"tier": "gold"}


def test_clocks_move_only_when_told() -> None:
    clock = ManualClock(10.0)
    clock.advance(2.5)
    assert clock() == 12.5
    wall = WallClock()
    before = wall()
    wall.advance(60)
    assert (wall() - before).total_seconds() == 60
