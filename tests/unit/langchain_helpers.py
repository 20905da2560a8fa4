"""Shared pieces of the LangChain tests: a real local store, a counting client, fake models."""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel, SimpleChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from asahi_features.models import FeatureVector
from asahi_features.stores.base import BaseFeatureStore
from asahi_features.stores.local import LocalFeatureStore

PROFILE_HEADER = "[Context from user profile]"

#: Variables that switch LangSmith tracing on (tests must never post runs).
TRACING_ENV_VARS = ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING")


def clear_tracing_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every tracing switch for one test (``monkeypatch``: pytest's fixture)."""
    for name in TRACING_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def marker(number: int) -> str:
    """A value unique to one user, so crossing between users is visible."""
    return f"pref-{number:03d}-zz"


def write_features(path: Path, users: int = 60) -> Path:
    """A JSON feature file: users u_000... with a tier, a unique preference and a language."""
    updated = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()
    data: Dict[str, Any] = {
        "user": {
            f"u_{n:03d}": {
                "updated_at": updated,
                "features": {
                    "tier": ["gold", "silver", "bronze"][n % 3],
                    "preferences": marker(n),
                    "preferred_language": "en",
                },
            }
            for n in range(users)
        },
        "organization": {
            "acme": {
                "updated_at": updated,
                "features": {"brand_voice": "playful", "tone": "warm", "style_guide": "short"},
            },
        },
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


class CountingClient(BaseFeatureStore):
    """Wraps a real LocalFeatureStore and counts every call made to it."""

    source = "local"

    def __init__(self, inner: LocalFeatureStore) -> None:
        self.inner = inner
        self.single_calls: List[str] = []
        self.batch_calls: List[List[str]] = []
        self._lock = threading.Lock()

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        with self._lock:
            self.single_calls.append(entity_id)
        return self.inner.get_features(entity_id, entity_type, feature_names)

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        with self._lock:
            self.batch_calls.append(list(entity_ids))
        return self.inner.get_batch_features(entity_ids, entity_type, feature_names)

    def health_check(self) -> bool:
        return self.inner.health_check()


class MessageRecorder(BaseCallbackHandler):
    """Records the exact messages every chat model received, and every chain run."""

    def __init__(self) -> None:
        self.messages: List[List[BaseMessage]] = []
        self.chain_starts: List[tuple[Optional[str], UUID, Any]] = []
        self.chain_ends: List[tuple[UUID, Any]] = []
        self.chain_errors: List[tuple[UUID, BaseException]] = []
        self._lock = threading.Lock()

    def on_chat_model_start(
        self, serialized: Dict[str, Any], messages: List[List[BaseMessage]], **kwargs: Any
    ) -> None:
        with self._lock:
            self.messages.extend(messages)

    def on_chain_start(
        self, serialized: Optional[Dict[str, Any]], inputs: Any, **kwargs: Any
    ) -> None:
        with self._lock:
            self.chain_starts.append((kwargs.get("name"), kwargs["run_id"], inputs))

    def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        with self._lock:
            self.chain_ends.append((kwargs["run_id"], outputs))

    def on_chain_error(self, error: BaseException, **kwargs: Any) -> None:
        with self._lock:
            self.chain_errors.append((kwargs["run_id"], error))

    def runs_named(self, name: str) -> List[tuple[Optional[str], UUID, Any]]:
        return [start for start in self.chain_starts if start[0] == name]


class ContextAwareChat(SimpleChatModel):
    """A deterministic fake chat model: with a user-profile block it answers with the
    user's tier (a good answer); without one it gives a generic answer."""

    @property
    def _llm_type(self) -> str:
        return "context-aware-fake"

    def _call(
        self,
        messages: List[BaseMessage],
        stop: Optional[List[str]] = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> str:
        text = "\n".join(str(m.content) for m in messages)
        if PROFILE_HEADER in text:
            for tier in ("gold", "silver", "bronze"):
                if f"Customer tier: {tier}" in text:
                    return f"As a {tier} customer you get the {tier} plan."
        return "Here is a generic plan."


MARKER_PATTERN = re.compile(r"pref-\d{3}-zz")


class ScriptedToolChat(BaseChatModel):
    """A deterministic tool-calling fake chat model that records every request.

    With ``tool`` set, its first answer to a question is a call of that tool (with
    ``tool_args``, e.g. a forged ``user_id``); once a tool answered, or without ``tool``,
    it answers ``"markers: <the pref-NNN-zz markers it saw in its input>"``. Every list of
    messages it received is kept in ``received`` (shared by copies made by
    ``bind_tools``), so tests assert on exactly what the model got.
    """

    tool: Optional[str] = None
    echo: bool = True
    """Answer with the markers themselves (else only with how many it saw)."""
    tool_args: Dict[str, Any] = Field(default_factory=dict)
    received: List[List[BaseMessage]] = Field(default_factory=list)
    bound_tools: List[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-chat"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        names = [getattr(t, "name", None) or t.get("name") for t in tools]
        self.bound_tools[:] = [str(n) for n in names]
        return self

    def _generate(
        self,
        messages: List[BaseMessage],
        stop: Optional[List[str]] = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.received.append(list(messages))  # list.append is atomic
        last = messages[-1]
        if self.tool and not isinstance(last, ToolMessage):
            reply = AIMessage(
                content="",
                tool_calls=[
                    {"name": self.tool, "args": dict(self.tool_args), "id": uuid.uuid4().hex}
                ],
            )
        else:
            text = "\n".join(m.text for m in messages)
            found = MARKER_PATTERN.findall(text)
            content = "markers: " + ",".join(found) if self.echo else f"saw {len(found)}"
            reply = AIMessage(content=content)
        return ChatResult(generations=[ChatGeneration(message=reply)])


def system_text(messages: List[BaseMessage]) -> str:
    """The text of the leading system message ('' when there is none)."""
    if messages and isinstance(messages[0], SystemMessage):
        return messages[0].text
    return ""
