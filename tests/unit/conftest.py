"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults import FaultyBackend


@pytest.fixture
def backends() -> Iterator[list[FaultyBackend]]:
    """Collects backends so that every hang is released at teardown."""
    made: list[FaultyBackend] = []
    yield made
    for backend in made:
        backend.release()
