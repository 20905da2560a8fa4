"""Offline-safe token counting with tiktoken.

tiktoken downloads its encodings on first use; these machines (and many production
hosts) have no internet. The encodings are read from a local cache instead, in order:
``TIKTOKEN_CACHE_DIR``, ``DATA_GYM_CACHE_DIR``, tiktoken's default cache directory and
the copy llama-index-core bundles. ``os.environ`` is never changed.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

from .errors import TokenizerUnavailableError

if TYPE_CHECKING:
    import tiktoken

__all__ = ["TokenCounter", "get_encoding", "token_cache_dirs"]

_LOCK = threading.Lock()


def token_cache_dirs() -> List[Path]:
    """Directories searched for tiktoken encoding files, in order."""
    dirs: List[Path] = []
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(var):
            dirs.append(Path(os.environ[var]))
    dirs.append(Path(tempfile.gettempdir()) / "data-gym-cache")
    try:
        spec = importlib.util.find_spec("llama_index.core")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            dirs.append(Path(location) / "_static" / "tiktoken_cache")
    return dirs


def _load_bpe_offline(url: str, expected_hash: Optional[str] = None) -> Dict[bytes, int]:
    cache_key = hashlib.sha1(url.encode()).hexdigest()
    searched = token_cache_dirs()
    for directory in searched:
        candidate = directory / cache_key
        if not candidate.is_file():
            continue
        data = candidate.read_bytes()
        if expected_hash and hashlib.sha256(data).hexdigest() != expected_hash:
            continue
        return {
            base64.b64decode(token): int(rank)
            for token, rank in (line.split() for line in data.splitlines() if line)
        }
    raise TokenizerUnavailableError(
        f"no local copy of the tiktoken file {url.rsplit('/', 1)[-1]} was found "
        f"(looked in: {', '.join(str(d) for d in searched)}). Install llama-index-core, "
        f"which bundles cl100k_base and o200k_base, or put the file in TIKTOKEN_CACHE_DIR"
    )


@lru_cache(maxsize=8)
def get_encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    """Load a tiktoken encoding without network access.

    Raises:
        TokenizerUnavailableError: tiktoken is missing, the name is unknown, or no local
            copy of the encoding file exists.
    """
    try:
        import tiktoken
        import tiktoken_ext.openai_public as openai_public
    except ImportError as exc:  # pragma: no cover - tiktoken is a core dependency
        raise TokenizerUnavailableError(f"tiktoken is not installed: {exc}") from None
    constructor = openai_public.ENCODING_CONSTRUCTORS.get(name)
    if constructor is None:
        known = ", ".join(sorted(openai_public.ENCODING_CONSTRUCTORS))
        raise TokenizerUnavailableError(
            f"unknown tiktoken encoding {name!r}; known encodings: {known}"
        )
    # The constructors call the module-level load_tiktoken_bpe (which downloads); point
    # it at the offline loader for the duration of the call only.
    with _LOCK:
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = _load_bpe_offline
        try:
            params = constructor()
        finally:
            openai_public.load_tiktoken_bpe = original
    return tiktoken.Encoding(**params)


class TokenCounter:
    """Counts tokens with one encoding (loaded lazily, once per process)."""

    def __init__(self, encoding: str = "cl100k_base") -> None:
        self.encoding_name = encoding
        self._encoding: Optional[tiktoken.Encoding] = None

    @property
    def encoding(self) -> tiktoken.Encoding:
        """The loaded encoding (raises TokenizerUnavailableError if it cannot be had)."""
        if self._encoding is None:
            self._encoding = get_encoding(self.encoding_name)
        return self._encoding

    def count(self, text: str) -> int:
        """Number of tokens in ``text`` (special-token look-alikes count as plain text)."""
        if not text:
            return 0
        return len(self.encoding.encode_ordinary(text))
