"""Offline token counting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asahi_features import tokens
from asahi_features.errors import TokenizerUnavailableError
from asahi_features.tokens import TokenCounter, get_encoding, token_cache_dirs


def test_counts_cl100k_offline_without_touching_environ() -> None:
    before = dict(os.environ)
    counter = TokenCounter()
    assert counter.count("hello world") == 2
    assert counter.count("") == 0
    assert dict(os.environ) == before


def test_special_token_lookalikes_are_plain_text() -> None:
    assert TokenCounter().count("<|endoftext|>") > 1


def test_o200k_is_available_too() -> None:
    assert TokenCounter("o200k_base").count("hello world") == 2


def test_unknown_encoding_is_a_clear_error() -> None:
    with pytest.raises(TokenizerUnavailableError, match="unknown tiktoken encoding 'nope'"):
        TokenCounter("nope").count("x")


def test_bundled_cache_is_searched() -> None:
    assert any("tiktoken_cache" in str(d) for d in token_cache_dirs())


def test_env_cache_dirs_come_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert token_cache_dirs()[0] == tmp_path


def test_no_local_copy_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tokens, "token_cache_dirs", lambda: [tmp_path])
    get_encoding.cache_clear()
    try:
        with pytest.raises(TokenizerUnavailableError, match=r"no local copy.*r50k_base"):
            get_encoding("r50k_base")
    finally:
        get_encoding.cache_clear()


def test_corrupt_copy_is_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import hashlib

    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(b"garbage")
    bundled = [d for d in token_cache_dirs() if "tiktoken_cache" in str(d)]
    monkeypatch.setattr(tokens, "token_cache_dirs", lambda: [tmp_path, *bundled])
    get_encoding.cache_clear()
    try:
        assert get_encoding("cl100k_base").encode_ordinary("hello") == [15339]
    finally:
        get_encoding.cache_clear()
