"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.faults import FaultyBackend


@pytest.fixture
def no_tracing_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset LangSmith tracing switches (``pytestmark = pytest.mark.usefixtures(...)``)."""
    from .langchain_helpers import clear_tracing_env

    clear_tracing_env(monkeypatch)


@pytest.fixture
def no_openai_defaults() -> Iterator[None]:
    """LlamaIndex's global LLM/embedding are local doubles for the test, then restored."""
    from .llama_index_helpers import offline_settings

    with offline_settings():
        yield


@pytest.fixture
def backends() -> Iterator[list[FaultyBackend]]:
    """Collects backends so that every hang is released at teardown."""
    made: list[FaultyBackend] = []
    yield made
    for backend in made:
        backend.release()
