"""The tokenizer loader never touches the network, whatever the encoding name.

``encoding: gpt2`` used to make the "offline" loader download (tiktoken's data-gym
loader was not redirected) and fail with a raw ``requests`` error. Every name tiktoken
knows, and any other string, now either loads from local files or raises
TokenizerUnavailableError naming the encodings available offline, with sockets guarded.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asahi_features import tokens
from asahi_features.errors import TokenizerUnavailableError
from asahi_features.settings import EnricherConfig
from asahi_features.stores.local import LocalFeatureStore
from asahi_features.tokens import get_encoding, offline_encodings, token_cache_dirs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUNDLED = ["cl100k_base", "o200k_base", "o200k_harmony"]  # llama-index-core's copies


@contextlib.contextmanager
def no_network() -> Iterator[List[Any]]:
    """Every way out of the process by socket is recorded (and fails)."""
    attempts: List[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network access attempted in an offline test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "create_connection", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        yield attempts
    assert attempts == [], f"network attempts: {attempts}"


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    get_encoding.cache_clear()
    yield
    get_encoding.cache_clear()


def tiktoken_names() -> List[str]:
    import tiktoken

    return sorted(tiktoken.list_encoding_names())


def test_the_guard_catches_a_download() -> None:
    import tiktoken.load

    with pytest.raises(AssertionError, match="network attempts"):
        with no_network():
            with contextlib.suppress(Exception):
                tiktoken.load.read_file("https://example.invalid/x.tiktoken")


@pytest.mark.parametrize("name", tiktoken_names())
def test_every_known_encoding_loads_or_names_the_offline_ones(name: str) -> None:
    with no_network():
        if name in BUNDLED:
            assert get_encoding(name).encode_ordinary("hello world")
            return
        with pytest.raises(TokenizerUnavailableError) as info:
            get_encoding(name)
    message = str(info.value)
    assert f"'{name}'" in message and "not available offline" in message
    assert "Encodings available offline: cl100k_base, o200k_base, o200k_harmony" in message


def test_gpt2_in_the_config_is_a_clear_error_without_network() -> None:
    from asahi_features.enricher import FeatureEnricher

    store = LocalFeatureStore(EXAMPLES / "sample_features.json")
    with no_network():
        with pytest.raises(TokenizerUnavailableError, match=r"'gpt2'.*vocab\.bpe"):
            FeatureEnricher(store, EnricherConfig(encoding="gpt2"))


@pytest.mark.parametrize("name", tiktoken_names())
def test_nothing_is_found_offline_and_nothing_is_downloaded(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tokens, "token_cache_dirs", lambda: [tmp_path])
    with no_network():
        with pytest.raises(TokenizerUnavailableError, match=r"available offline: \(none\)"):
            get_encoding(name)
        assert offline_encodings() == []


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=300) | st.sampled_from(["GPT2", "cl100k", "o200k_base ", "r50k"]))
def test_garbage_names_are_refused_without_network(name: str) -> None:
    get_encoding.cache_clear()
    with no_network():
        if name in BUNDLED:
            assert get_encoding(name) is not None
            return
        with pytest.raises(TokenizerUnavailableError) as info:
            get_encoding(name)
    message = str(info.value)
    assert "Encodings available offline: cl100k_base" in message
    assert len(message) < 2000


def test_tiktoken_itself_is_left_untouched() -> None:
    import tiktoken.load
    import tiktoken_ext.openai_public as openai_public

    before = dict(vars(openai_public))
    with no_network():
        get_encoding("o200k_harmony")
        with pytest.raises(TokenizerUnavailableError):
            get_encoding("gpt2")
    assert dict(vars(openai_public)) == before
    assert openai_public.load_tiktoken_bpe is tiktoken.load.load_tiktoken_bpe
    assert tiktoken.load.read_file_cached.__globals__ is vars(tiktoken.load)


def test_a_copy_in_tiktoken_cache_dir_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    key = hashlib.sha1(url.encode()).hexdigest()
    bundled = next(d for d in token_cache_dirs() if (d / key).is_file())
    shutil.copy(bundled / key, tmp_path / key)
    monkeypatch.setattr(tokens, "token_cache_dirs", lambda: [tmp_path])
    with no_network():
        assert offline_encodings() == ["cl100k_base"]
        assert get_encoding("cl100k_base").encode_ordinary("hello") == [15339]


def test_a_corrupt_copy_with_no_good_one_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(b"garbage")
    monkeypatch.setattr(tokens, "token_cache_dirs", lambda: [tmp_path])
    with no_network():
        with pytest.raises(TokenizerUnavailableError, match=r"o200k_base\.tiktoken"):
            get_encoding("o200k_base")
