"""HTTP plumbing shared by the HTTP backends (``feast serve``, Tecton): secret-free
transport errors, header/secret cleaning and redaction, deadline-following request
hooks, one async client per event loop, and which failures are safe to retry once."""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import threading
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Generic,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)

from ..errors import ConfigError, FeatureStoreTimeoutError, FeatureStoreUnavailableError
from .base import io_timeout, read_deadline

if TYPE_CHECKING:
    import httpx

__all__ = [
    "PerLoop",
    "clean_headers",
    "clean_secret",
    "deadline_hooks",
    "redact",
    "retryable",
    "secret_parts",
    "transport_error",
]


def transport_error(exc: BaseException, where: str, timeout_ms: float) -> Exception:
    """The library error for a failed HTTP exchange (timeouts, connection errors, a
    request the HTTP stack refused to send).

    Reported by the exception's type and a fixed summary, never by its message: the
    messages of the HTTP stack quote what they refuse, e.g. an ``Authorization`` header
    whose key ends in a newline. Callers raise the result outside their ``except`` block,
    so the original is not kept as ``__context__`` either.
    """
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return FeatureStoreTimeoutError(
            f"{where} did not answer within {timeout_ms:g} ms ({type(exc).__name__})"
        )
    return FeatureStoreUnavailableError(
        f"{where} is unreachable: {type(exc).__name__}: {_transport_summary(exc)}"
    )


def _transport_summary(exc: BaseException) -> str:
    """A secret-free description of a transport failure: fixed text per httpx exception
    type, plus the symbolic errno of an underlying socket error (``ECONNREFUSED``)."""
    import httpx

    if isinstance(exc, httpx.LocalProtocolError):
        return (
            "the HTTP stack refused to send the request (an invalid header name or value, "
            "e.g. a credential with a control or non-ASCII character)"
        )
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server closed the connection or broke the HTTP protocol"
    if isinstance(exc, httpx.ProxyError):
        return "the proxy failed the connection"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "the URL's scheme is not supported"
    if isinstance(exc, httpx.ConnectError):
        summary = "the connection could not be opened"
    elif isinstance(exc, httpx.ReadError):
        summary = "the connection failed while reading the answer"
    elif isinstance(exc, httpx.WriteError):
        summary = "the connection failed while sending the request"
    elif isinstance(exc, httpx.TransportError):
        summary = "the HTTP transport failed"
    else:
        return "the request failed"
    return summary + _socket_detail(exc)


def _socket_detail(exc: BaseException) -> str:
    """`` (ECONNREFUSED)`` / `` (host name not resolved)`` from the exception chain."""
    seen: Optional[BaseException] = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, socket.gaierror):
            return " (host name not resolved)"
        code = seen.errno if isinstance(seen, OSError) else None
        if code is not None and code in errno.errorcode:
            return f" ({errno.errorcode[code]})"
        seen = seen.__cause__ or seen.__context__
    return ""


_HEADER_VALUE = re.compile(r"[\x20-\x7e]+")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def clean_secret(value: str, what: str, key_path: Optional[str] = None) -> str:
    """``value`` (a key or token for an HTTP header) without surrounding whitespace.

    Keys read from mounted secret files often end in a newline, which the HTTP stack
    refuses, quoting the whole header in its error. What is left must be printable ASCII.

    Raises:
        ConfigError: the value is empty, or holds a control or non-ASCII character. The
            message names ``what`` (e.g. the environment variable), never the value.
    """
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise ConfigError(f"{what} is empty (or only whitespace)", key_path=key_path)
    if not _HEADER_VALUE.fullmatch(text):
        raise ConfigError(
            f"{what} contains a control or non-ASCII character, which an HTTP header "
            f"cannot carry (the value is not shown); check the variable, or the secret "
            f"file it is read from",
            key_path=key_path,
        )
    return text


def clean_headers(
    headers: Mapping[str, str], key_path: str = "feature_store.http.headers_env"
) -> Dict[str, str]:
    """Extra HTTP headers, their values cleaned by :func:`clean_secret`; a name that is
    not an HTTP token is rejected without being shown (it may be a pasted credential)."""
    out: Dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ConfigError(
                "an HTTP header name may hold only letters, digits and !#$%&'*+-.^_`|~ "
                "(the name given is not shown)",
                key_path=key_path,
            )
        out[name] = clean_secret(value, f"the value of HTTP header {name!r}", key_path)
    return out


_MIN_REDACTED = 8


def secret_parts(values: Iterable[str]) -> Tuple[str, ...]:
    """What :func:`redact` hides: each value and each of its words (``Bearer <token>``
    gives the token) of at least 8 characters, longest first."""
    parts = set()
    for value in values:
        for piece in (value, *value.split()):
            if len(piece) >= _MIN_REDACTED:
                parts.add(piece)
    return tuple(sorted(parts, key=len, reverse=True))


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every occurrence of ``secrets`` replaced by ``[redacted]``: for
    error texts that quote a server's answer (a proxy or gateway may echo the header)."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def _follow_deadline(request: httpx.Request) -> None:
    """Inside a guarded read, the request's timeouts are the time left before its deadline."""
    if read_deadline.get() is not None:
        import httpx

        request.extensions["timeout"] = httpx.Timeout(io_timeout(0.0)).as_dict()


async def _afollow_deadline(request: httpx.Request) -> None:
    _follow_deadline(request)


def deadline_hooks(asynchronous: bool = False) -> Dict[str, List[Callable[..., Any]]]:
    """httpx ``event_hooks`` that make every request follow the guard's read deadline
    (:data:`~asahi_features.stores.base.read_deadline`): a batch given seconds is not cut
    at ``timeout_ms``, and no connection is kept waiting after every caller has left.
    Outside a guarded read the client's own timeout applies."""
    return {"request": [_afollow_deadline if asynchronous else _follow_deadline]}


_T = TypeVar("_T")


class PerLoop(Generic[_T]):
    """One object per event loop, made on first use in that loop: an
    ``httpx.AsyncClient``'s connections belong to the loop that opened them. Entries of
    closed loops are dropped whenever a new one is made."""

    def __init__(self, factory: Callable[[], _T]) -> None:
        self._factory = factory
        self._by_loop: Dict[asyncio.AbstractEventLoop, _T] = {}
        self._lock = threading.Lock()  # loops on several threads may make theirs at once

    def current(self) -> _T:
        """The running loop's object (made now if it has none)."""
        loop = asyncio.get_running_loop()
        item = self._by_loop.get(loop)
        if item is None:
            with self._lock:
                for old in [lp for lp in self._by_loop if lp.is_closed()]:
                    del self._by_loop[old]
                item = self._by_loop.get(loop)
                if item is None:
                    item = self._by_loop[loop] = self._factory()
        return item

    def pop(self, loop: Optional[asyncio.AbstractEventLoop] = None) -> Optional[_T]:
        """Forget and return the object of ``loop`` (default: the running loop)."""
        return self._by_loop.pop(loop or asyncio.get_running_loop(), None)

    def clear(self) -> None:
        """Forget every object (their loops' owners close them, or they go with the loop)."""
        self._by_loop.clear()


def retryable(exc: BaseException) -> bool:
    """A reused connection the server closed (worker recycled): safe to retry a read once."""
    import httpx

    return isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError))
