"""The allow / deny / redact policy matches a feature whatever the backend's naming
scheme (class 3 of the adversarial review).

Backends spell a view's feature ``view:feature`` (Feast), ``view__feature`` (Feast full
feature names) or ``view.feature`` (Tecton); a policy entry may be written in any of
these forms or plain. When it cannot be sure, the policy denies: ``deny`` / ``redact``
match whenever the name may be the entry's feature, ``allow`` admits only what an entry
surely names.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from asahi_features.enricher import FeatureEnricher, _PolicyMatcher
from asahi_features.settings import EnricherConfig, FeaturePolicy
from tests.unit.test_enricher import MemoryClient

SEPARATORS = [":", ".", "__"]
# identifiers as backends allow them: letters, digits, single underscores
identifier = st.from_regex(r"[a-z][a-z0-9]{0,4}(_[a-z0-9]{1,4}){0,2}", fullmatch=True)
separator = st.sampled_from(SEPARATORS)


def spell(view: Optional[str], feature: str, sep: str) -> str:
    return feature if view is None else f"{view}{sep}{feature}"


def decide(name: str, **policy: Any) -> Optional[str]:
    return _PolicyMatcher(FeaturePolicy(**policy)).decide(name)


@settings(max_examples=300, deadline=None)
@given(
    view=identifier,
    other=identifier,
    feature=identifier,
    name_sep=separator,
    entry_sep=separator,
    entry_has_view=st.booleans(),
    upper=st.booleans(),
)
def test_every_spelling_of_a_feature_is_matched(
    view: str,
    other: str,
    feature: str,
    name_sep: str,
    entry_sep: str,
    entry_has_view: bool,
    upper: bool,
) -> None:
    assume(other != view)
    name = spell(view, feature, name_sep)
    plain_name = feature
    elsewhere = spell(other, feature, name_sep)
    entry = spell(view if entry_has_view else None, feature, entry_sep)
    deny_entry = entry.upper() if upper else entry

    # deny and redact: every spelling of the entry's feature, and the plain name too
    for kind, decision in (("deny", "drop"), ("redact", "redact")):
        assert decide(name, **{kind: [deny_entry]}) == decision, (kind, name, deny_entry)
        assert decide(plain_name, **{kind: [deny_entry]}) == decision
        # a view named differently is another feature (unless the entry names none)
        expected = None if entry_has_view else decision
        assert decide(elsewhere, **{kind: [deny_entry]}) == expected

    # allow: what the entry surely names passes, the rest is left out
    assert decide(name, allow=[entry]) is None
    assert decide(elsewhere, allow=[entry]) == (None if not entry_has_view else "drop")
    assert decide(plain_name, allow=[entry]) == (None if not entry_has_view else "drop")
    # deny wins over allow
    assert decide(name, allow=[entry], deny=[deny_entry]) == "drop"


@settings(max_examples=200, deadline=None)
@given(
    view=identifier,
    feature=identifier,
    other_feature=identifier,
    name_sep=separator,
    entry_sep=separator,
)
def test_other_features_are_not_touched(
    view: str, feature: str, other_feature: str, name_sep: str, entry_sep: str
) -> None:
    assume(other_feature.casefold() != feature.casefold())
    assume(not other_feature.endswith("_" + feature) and not feature.endswith("_" + other_feature))
    name = spell(view, other_feature, name_sep)
    entry = spell(view, feature, entry_sep)
    assert decide(name, deny=[entry]) is None
    assert decide(name, redact=[feature]) is None
    assert decide(name, allow=[entry]) == "drop"


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(identifier, min_size=1, max_size=4),
    seps=st.lists(separator, min_size=3, max_size=3),
    entry_sep=separator,
)
def test_deny_reads_every_way_a_name_can_be_split(
    parts: List[str], seps: List[str], entry_sep: str
) -> None:
    """``project.view:feature``, ``a__b.c``: whichever separator is the view's, a deny of
    the last part (plain, or with the view just before it) drops the name."""
    name = parts[0]
    for part, sep in zip(parts[1:], seps, strict=False):
        name += sep + part
    feature = parts[-1]
    assert decide(name, deny=[feature]) == "drop"
    if len(parts) >= 2:
        assert decide(name, deny=[spell(parts[-2], feature, entry_sep)]) == "drop"


def test_known_cases() -> None:
    assert decide("user_profile.email", deny=["email"]) == "drop"
    assert decide("user_profile__email", deny=["email"]) == "drop"
    assert decide("user_profile:email", deny=["user_profile.email"]) == "drop"
    assert decide("email", deny=["user_profile.email"]) == "drop"  # unsure: deny
    assert decide("billing.email", deny=["user_profile.email"]) is None
    assert decide("proj.user_profile.email", deny=["user_profile:email"]) == "drop"
    assert decide("Email", deny=["email"]) == "drop"
    assert decide("user_profile.email", allow=["email"]) is None
    assert decide("user_profile.email", allow=["user_profile:email"]) is None
    assert decide("email", allow=["user_profile:email"]) == "drop"  # unsure: not admitted
    assert decide("Email", allow=["email"]) == "drop"
    assert decide("tier", allow=["email"]) == "drop"


def _enrich(names: List[str], policy: FeaturePolicy, context: Dict[str, Any]) -> Any:
    row = {name: f"value of {name}" for name in names}
    client = MemoryClient({"user": {"u": row}})
    enricher = FeatureEnricher(
        client,
        EnricherConfig(
            enabled_task_types=["t"],
            task_features={"t": {"user": names}},
            policy=policy,
            max_feature_tokens=2000,
        ),
    )
    return enricher.enrich("P", user_id="u", task_type="t", context=context)


@settings(max_examples=60, deadline=None)
@given(view=identifier, sep=separator, entry_sep=separator, entry_has_view=st.booleans())
def test_a_denied_value_never_reaches_the_prompt(
    view: str, sep: str, entry_sep: str, entry_has_view: bool
) -> None:
    secret = spell(view, "email", sep)
    entry = spell(view if entry_has_view else None, "email", entry_sep)
    result = _enrich(
        [secret, spell(view, "tier", sep)],
        FeaturePolicy(deny=[entry]),
        {"email": "leak@example.com", spell("request", "email", sep): "other@x", "page": "c"},
    )
    assert f"value of {secret}" not in result.feature_context
    assert "leak@" not in result.feature_context  # a plain name: unsure, denied
    assert ("other@" in result.feature_context) == (entry_has_view and view != "request")
    assert secret in result.dropped_policy
    assert f"value of {spell(view, 'tier', sep)}" in result.feature_context
    redacted = _enrich([secret], FeaturePolicy(redact=[entry]), {})
    assert f"value of {secret}" not in redacted.feature_context
    assert "[redacted]" in redacted.feature_context
