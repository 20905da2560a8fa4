"""Offline-safe token counting with tiktoken.

tiktoken downloads its encodings on first use; these machines (and many production
hosts) have no internet. The encodings are read from a local cache instead, in order:
``TIKTOKEN_CACHE_DIR``, ``DATA_GYM_CACHE_DIR``, tiktoken's default cache directory and
the copy llama-index-core bundles (``cl100k_base`` and ``o200k_base``). ``os.environ``
is never changed, and no encoding name (``gpt2`` included, whose files come in another
format) can make this module open a network connection: an encoding whose files are not
on disk is a :class:`~asahi_features.errors.TokenizerUnavailableError` naming the
encodings that are available offline.

How: tiktoken's constructors (``tiktoken_ext.openai_public``) fetch their files through
the functions of ``tiktoken.load``. They are run here as copies bound to a private
namespace in which the file reader only reads the local cache and the downloader refuses;
nothing global is patched, so other users of tiktoken in the process are not affected.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import types
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from .errors import TokenizerUnavailableError, excerpt

if TYPE_CHECKING:
    import tiktoken

__all__ = ["TokenCounter", "get_encoding", "offline_encodings", "token_cache_dirs"]

Constructor = Callable[[], Dict[str, Any]]


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


def _find_offline(url: str, expected_hash: Optional[str]) -> Tuple[Optional[bytes], List[Path]]:
    """The local copy of ``url`` (tiktoken's cache layout: the SHA-1 of the URL), skipping
    copies whose SHA-256 is not ``expected_hash``; ``(None, searched)`` when there is none."""
    cache_key = hashlib.sha1(url.encode()).hexdigest()
    searched = token_cache_dirs()
    for directory in searched:
        candidate = directory / cache_key
        try:
            if not candidate.is_file():
                continue
            data = candidate.read_bytes()
        except OSError:
            continue
        if expected_hash and hashlib.sha256(data).hexdigest() != expected_hash:
            continue
        return data, searched
    return None, searched


def _read_offline(blobpath: str, expected_hash: Optional[str] = None) -> bytes:
    """Stands in for ``tiktoken.load.read_file_cached``: the local cache, never the network."""
    data, searched = _find_offline(blobpath, expected_hash)
    if data is None:
        raise TokenizerUnavailableError(
            f"no local copy of the tiktoken file {blobpath.rsplit('/', 1)[-1]} was found "
            f"(looked in: {', '.join(str(d) for d in searched)}). Install llama-index-core, "
            f"which bundles cl100k_base and o200k_base, or put the file in TIKTOKEN_CACHE_DIR"
        )
    return data


def _refuse(name: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise TokenizerUnavailableError(
            f"tiktoken would call {name}(), which may download; refused (offline only)"
        )

    return refused


def _rebound(module: types.ModuleType, overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """A private copy of ``module``'s namespace: its own functions re-bound to the copy
    (so they call one another there), then ``overrides`` applied."""
    namespace = dict(vars(module))
    for name, obj in vars(module).items():
        if isinstance(obj, types.FunctionType) and obj.__module__ == module.__name__:
            copy = types.FunctionType(
                obj.__code__, namespace, obj.__name__, obj.__defaults__, obj.__closure__
            )
            copy.__kwdefaults__ = obj.__kwdefaults__
            namespace[name] = copy
    namespace.update(overrides)
    return namespace


def _constructors(loaders: Mapping[str, Any]) -> Dict[str, Constructor]:
    """openai_public's encoding constructors, bound so that every ``tiktoken.load``
    function they use is the one in ``loaders`` (or a stub that refuses)."""
    import tiktoken_ext.openai_public as openai_public

    overrides = {
        name: loaders.get(obj.__name__) or _refuse(obj.__name__)
        for name, obj in vars(openai_public).items()
        if callable(obj) and getattr(obj, "__module__", None) == "tiktoken.load"
    }
    namespace = _rebound(openai_public, overrides)
    out: Dict[str, Constructor] = {}
    for encoding, constructor in openai_public.ENCODING_CONSTRUCTORS.items():
        bound = namespace.get(getattr(constructor, "__name__", ""))
        if isinstance(bound, types.FunctionType) and bound.__globals__ is namespace:
            out[encoding] = bound
    return out


def _offline_constructors() -> Dict[str, Constructor]:
    import tiktoken.load

    load = _rebound(
        tiktoken.load, {"read_file_cached": _read_offline, "read_file": _refuse("read_file")}
    )
    return _constructors({name: load[name] for name in load if callable(load[name])})


def _files_needed(constructor_name: str) -> Optional[List[Tuple[str, Optional[str]]]]:
    """(url, sha256) of every file the encoding's constructor would read, found by running
    it with recording loaders (no file is read); ``None`` if it cannot be run offline."""
    needed: List[Tuple[str, Optional[str]]] = []

    def bpe(url: str, expected_hash: Optional[str] = None) -> Dict[bytes, int]:
        needed.append((url, expected_hash))
        return {}

    def data_gym(
        vocab_bpe_file: str,
        encoder_json_file: str,
        vocab_bpe_hash: Optional[str] = None,
        encoder_json_hash: Optional[str] = None,
        clobber_one_byte_tokens: bool = False,
    ) -> Dict[bytes, int]:
        needed.extend([(vocab_bpe_file, vocab_bpe_hash), (encoder_json_file, encoder_json_hash)])
        return {}

    probe = _constructors({"load_tiktoken_bpe": bpe, "data_gym_to_mergeable_bpe_ranks": data_gym})
    constructor = probe.get(constructor_name)
    if constructor is None:
        return None
    try:
        constructor()
    except Exception:
        return None
    return needed


def offline_encodings() -> List[str]:
    """Names of the tiktoken encodings whose files are on disk (loadable offline), sorted."""
    try:
        import tiktoken_ext.openai_public  # noqa: F401
    except ImportError:  # pragma: no cover - tiktoken is a core dependency
        return []
    available = []
    for name in sorted(_offline_constructors()):
        files = _files_needed(name)
        if files and all(_find_offline(url, sha)[0] is not None for url, sha in files):
            available.append(name)
    return available


def _unavailable(problem: str) -> TokenizerUnavailableError:
    names = ", ".join(offline_encodings()) or "(none)"
    return TokenizerUnavailableError(f"{problem}. Encodings available offline: {names}")


@lru_cache(maxsize=8)
def get_encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    """Load a tiktoken encoding from local files only (never the network).

    Raises:
        TokenizerUnavailableError: tiktoken is missing, the name is unknown, or no local
            copy of the encoding's files exists; the message lists the encodings that
            are available offline.
    """
    try:
        import tiktoken
    except ImportError as exc:  # pragma: no cover - tiktoken is a core dependency
        raise TokenizerUnavailableError(f"tiktoken is not installed: {exc}") from None
    constructors = _offline_constructors()
    constructor = constructors.get(name) if isinstance(name, str) else None
    if constructor is None:
        raise _unavailable(f"unknown tiktoken encoding {excerpt(name)}")
    try:
        params = constructor()
        return tiktoken.Encoding(**params)
    except TokenizerUnavailableError as exc:
        raise _unavailable(f"tiktoken encoding {name!r} is not available offline: {exc}") from None
    except Exception as exc:  # a corrupt local copy, an incompatible tiktoken version
        raise _unavailable(
            f"tiktoken encoding {name!r} could not be built from its local files "
            f"({type(exc).__name__}: {excerpt(str(exc))})"
        ) from None


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
