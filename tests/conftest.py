"""Shared test configuration."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Property tests judge outcomes, never speed: on a shared 2-core CI machine an example can
# take longer than hypothesis' default 200 ms deadline without anything being wrong.
settings.register_profile("asahi", deadline=None)
settings.load_profile("asahi")

INTEGRATION = os.environ.get("RUN_INTEGRATION_TESTS") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests run only with RUN_INTEGRATION_TESTS=1 (spec 2.6); otherwise they
    are skipped with that reason. With the variable set, a missing server binary is a
    failure raised by the fixture, never a skip."""
    if INTEGRATION:
        return
    skip = pytest.mark.skip(reason="integration test: set RUN_INTEGRATION_TESTS=1 to run")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)
