"""create_feature_tool: LangChain's standard tool unit tests, identity only from the
injected runtime or ``configurable`` (never the model's arguments), content and artifact,
sync and async, clear errors. (The agent calling it: test_langchain_agent.py.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langchain_tests.unit_tests import ToolsUnitTests

from asahi_features.enricher import FeatureEnricher
from asahi_features.langchain import MissingIdentityError, create_feature_tool
from asahi_features.langchain.tool import NO_CONTEXT
from asahi_features.models import EnrichmentReason, EnrichmentResult
from asahi_features.sample_repo import SAMPLE_TASK_FEATURES
from asahi_features.settings import EnricherConfig
from asahi_features.stores.local import LocalFeatureStore

from .langchain_helpers import PROFILE_HEADER, marker, write_features

pytestmark = pytest.mark.usefixtures("no_tracing_env")

CONFIG = EnricherConfig(
    enabled_task_types=["general"],
    task_features=SAMPLE_TASK_FEATURES,
    freshness_threshold_seconds=10**8,
)


def _enricher(tmp: Path) -> FeatureEnricher:
    return FeatureEnricher(LocalFeatureStore(write_features(tmp / "f.json")), CONFIG)


@pytest.fixture
def enricher(tmp_path: Path) -> FeatureEnricher:
    return _enricher(tmp_path)


class TestFeatureToolStandard(ToolsUnitTests):
    """LangChain's standard unit tests for tools."""

    @property
    def tool_constructor(self) -> BaseTool:
        import tempfile

        return create_feature_tool(_enricher(Path(tempfile.mkdtemp())))

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {}


@dataclass
class FakeRuntime:
    """What LangGraph's tool node injects (the fields the tool reads)."""

    context: Any = None
    config: Optional[dict[str, Any]] = None


def call(tool: BaseTool, args: dict[str, Any], **config: Any) -> ToolMessage:
    message = tool.invoke(
        {"type": "tool_call", "name": tool.name, "id": "call-1", "args": args},
        RunnableConfig(**config) if config else None,  # type: ignore[typeddict-item]
    )
    assert isinstance(message, ToolMessage)
    return message


def test_model_sees_no_arguments(enricher: FeatureEnricher) -> None:
    tool = create_feature_tool(enricher)
    schema: Any = tool.tool_call_schema
    assert schema.model_json_schema()["properties"] == {}
    assert tool.response_format == "content_and_artifact"


def test_identity_from_configurable_content_and_artifact(enricher: FeatureEnricher) -> None:
    tool = create_feature_tool(enricher)
    message = call(tool, {}, configurable={"asahi_user_id": "u_003"})
    assert PROFILE_HEADER in message.text and marker(3) in message.text
    assert isinstance(message.artifact, EnrichmentResult)
    assert message.artifact.feature_context.strip() == message.text


async def test_async_identity_from_injected_runtime(enricher: FeatureEnricher) -> None:
    tool = create_feature_tool(enricher)
    runtime = FakeRuntime(context={"user_id": "u_004"}, config={"configurable": {}})
    message = await tool.ainvoke(
        {"type": "tool_call", "name": tool.name, "id": "c", "args": {"runtime": runtime}}
    )
    assert marker(4) in message.text


def test_model_arguments_never_give_identity(enricher: FeatureEnricher) -> None:
    tool = create_feature_tool(enricher)
    message = call(tool, {"user_id": "u_005", "organization_id": "acme"})
    assert message.text == NO_CONTEXT
    assert message.artifact.reason is EnrichmentReason.NO_IDENTITY
    message = call(tool, {"user_id": "u_005"}, configurable={"user_id": "u_006"})
    assert marker(6) in message.text and marker(5) not in message.text


def test_require_identity(enricher: FeatureEnricher) -> None:
    tool = create_feature_tool(enricher, require_identity=True)
    with pytest.raises(MissingIdentityError, match="no identity"):
        tool.invoke({})


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"name": "has space"}, ValueError, "tool name must be 1-64"),
        ({"name": ""}, ValueError, "tool name must be 1-64"),
        ({"description": " "}, ValueError, "description must be a non-empty str"),
    ],
)
def test_bad_arguments_are_named(
    enricher: FeatureEnricher, kwargs: dict[str, Any], error: type, text: str
) -> None:
    with pytest.raises(error, match=text):
        create_feature_tool(enricher, **kwargs)
    with pytest.raises(TypeError, match="needs an enricher"):
        create_feature_tool(None)
