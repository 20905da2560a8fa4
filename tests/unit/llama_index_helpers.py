"""Shared LlamaIndex test doubles: a recording LLM and a deterministic local embedding.

Only the LLM and the evaluation embedding are doubles: the index, engines, retrievers,
postprocessors, evaluators and instrumentation are the real llama-index-core objects.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms import (
    CompletionResponse,
    CompletionResponseGen,
    CustomLLM,
    LLMMetadata,
)

FEATURE_LINE = re.compile(r"^- .*$", re.MULTILINE)


@contextlib.contextmanager
def offline_settings() -> Iterator[None]:
    """Point LlamaIndex's global LLM/embedding at local doubles, never its OpenAI defaults.

    The previous (possibly unresolved) values are restored on exit.
    """
    from llama_index.core import Settings
    from llama_index.core.embeddings import MockEmbedding

    llm, embed = Settings._llm, Settings._embed_model
    Settings.llm = RecordingLLM()
    Settings.embed_model = MockEmbedding(embed_dim=8)
    try:
        yield
    finally:
        Settings._llm, Settings._embed_model = llm, embed


class RecordingLLM(CustomLLM):
    """A CustomLLM that records every prompt it receives (thread-safe).

    Its answer repeats the feature lines of the prompt (``- Label: value``), or
    ``"no context"`` when there are none, so that evaluation can tell enriched answers
    from plain ones.
    """

    _prompts: List[str] = PrivateAttr(default_factory=list)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=8192, num_output=256, model_name="recording")

    @property
    def prompts(self) -> List[str]:
        with self._lock:
            return list(self._prompts)

    def prompts_with(self, text: str) -> List[str]:
        return [p for p in self.prompts if text in p]

    def _record(self, prompt: str) -> str:
        with self._lock:
            self._prompts.append(prompt)
        lines = FEATURE_LINE.findall(prompt)
        return " ".join(lines) if lines else "no context"

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._record(prompt))

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        answer = self._record(prompt)  # recorded now, not when the stream is consumed

        def gen() -> Iterator[CompletionResponse]:
            text = ""
            for word in answer.split(" "):
                text += word + " "
                yield CompletionResponse(text=text, delta=word + " ")

        return gen()  # type: ignore[return-value]  # LlamaIndex annotates a Generator


class HashingEmbedding(BaseEmbedding):
    """Deterministic bag-of-words embedding (CRC32 buckets), normalised: offline and
    different for different texts, unlike MockEmbedding."""

    dim: int = 256

    def _vector(self, text: str) -> List[float]:
        vec = [0.0] * self.dim
        for token in re.findall(r"[a-z0-9]+", text.lower()):
            vec[zlib.crc32(token.encode()) % self.dim] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._vector(text)


def user_id(i: int) -> str:
    return f"u_{i:03d}"


def user_marker(i: int) -> str:
    """A value that appears in user ``i``'s features and nowhere else."""
    return f"flavour{i:03d}x"


def write_features(path: Path, users: int = 50) -> Path:
    """A LocalFeatureStore file with ``users`` users whose features are all fresh."""
    now = datetime.now(timezone.utc).isoformat()
    data: Dict[str, Any] = {
        "user": {
            user_id(i): {
                "updated_at": now,
                "features": {
                    "tier": "gold" if i % 2 else "silver",
                    "preferences": user_marker(i),
                    "preferred_language": "en",
                },
            }
            for i in range(users)
        },
        "organization": {
            "acme": {"updated_at": now, "features": {"brand_voice": "playful"}},
        },
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _recording_generator(calls: List[str], lock: Any) -> Any:
    from llama_index.core.base.llms.types import ChatMessage

    def generate(messages: Any, **kwargs: Any) -> Any:
        text = "\n".join(f"{m.role.value}: {m.content or ''}" for m in messages)
        with lock:
            calls.append(text)
        lines = FEATURE_LINE.findall(text)
        return ChatMessage(role="assistant", content=" ".join(lines) if lines else "no context")

    return generate


def recording_chat_llm(**kwargs: Any) -> Any:
    """A real ``MockFunctionCallingLLM`` (a FunctionCallingLLM agents accept) whose every
    chat call is recorded as text (``llm.calls``, one ``role: content`` line per message).
    It never calls a tool and answers with the feature lines it saw (or "no context")."""
    from llama_index.core.llms.mock import MockFunctionCallingLLM

    calls: List[str] = []
    lock = threading.Lock()
    llm = MockFunctionCallingLLM(
        response_generator=_recording_generator(calls, lock), is_chat_model=True, **kwargs
    )
    object.__setattr__(llm, "calls", calls)
    return llm
