"""How :class:`~asahi_features.stores.http.HttpFeatureStore` proves who it is and whom it
talks to: the TLS context (verification, CA bundle, client certificate) and the bearer
token (re-read when its source changes, refreshed once after a 401).

Nothing here logs or quotes a token; errors name where the token comes from, never
its value.
"""

from __future__ import annotations

import importlib
import logging
import os
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Tuple, Union

from ..errors import ConfigError, FeatureStoreAuthError
from .http_transport import clean_secret

__all__ = [
    "TokenSource",
    "load_callable",
    "tls_context",
]

logger = logging.getLogger(__name__)

_KEY = "feature_store.http"
PathLike = Union[str, "os.PathLike[str]"]


# -- TLS ---------------------------------------------------------------------------------


def _existing_file(path: Optional[PathLike], what: str) -> Optional[str]:
    if path is None:
        return None
    text = os.fspath(path)
    if not os.path.isfile(text):
        raise ConfigError(
            f"{_KEY}.{what}: no file at {text} (give the path of a PEM file)",
            key_path=f"{_KEY}.{what}",
        )
    return text


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
    return str(reason or type(exc).__name__)


def tls_context(
    url: str,
    *,
    verify: bool = True,
    ca_bundle: Optional[PathLike] = None,
    client_cert: Optional[PathLike] = None,
    client_key: Optional[PathLike] = None,
) -> Union[bool, ssl.SSLContext]:
    """What httpx gets as ``verify=``: ``True`` (the default trust store) when no TLS
    option is set, else an ``ssl.SSLContext`` built from the options.

    Args:
        url: the server URL (TLS options need ``https://``).
        verify: check the server's certificate (``False`` only for tests and trusted
            networks: anyone on the path can then read and answer the requests).
        ca_bundle: a PEM file of CA certificates that the server's certificate must
            chain to (default: what httpx uses, ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``
            when set, else certifi's bundle).
        client_cert: a PEM client certificate, for servers that require one (mutual TLS);
            it may hold the private key too.
        client_key: the PEM private key of ``client_cert`` (when not in the same file).

    Raises:
        ConfigError: a TLS option on an ``http://`` URL, ``verify: false`` together with a
            ``ca_bundle``, a key without a certificate, a missing file, or a file that is
            not a PEM CA bundle / certificate / matching key.
    """
    tls_options = [
        name
        for name, value in (
            ("verify", not verify or None),
            ("ca_bundle", ca_bundle),
            ("client_cert", client_cert),
            ("client_key", client_key),
        )
        if value is not None
    ]
    if not tls_options:
        return True
    if not url.startswith("https://"):
        raise ConfigError(
            f"{_KEY}: {', '.join(tls_options)} configure TLS, which needs an https:// url "
            f"(got {url.split('://', 1)[0]}://)",
            key_path=f"{_KEY}.url",
        )
    if not verify and ca_bundle is not None:
        raise ConfigError(
            f"{_KEY}: verify is false but ca_bundle is set: a CA bundle is only used to "
            f"verify the server; remove one of them",
            key_path=f"{_KEY}.verify",
        )
    if client_key is not None and client_cert is None:
        raise ConfigError(
            f"{_KEY}.client_key is set without client_cert (the certificate the key belongs to)",
            key_path=f"{_KEY}.client_key",
        )
    cafile = _existing_file(ca_bundle, "ca_bundle")
    certfile = _existing_file(client_cert, "client_cert")
    keyfile = _existing_file(client_key, "client_key")
    if verify:
        capath = None
        if cafile is None:  # the trust store httpx itself would use
            cafile = os.environ.get("SSL_CERT_FILE") or None
            capath = None if cafile else os.environ.get("SSL_CERT_DIR") or None
            if cafile is None and capath is None:
                import certifi

                cafile = certifi.where()
        try:
            context = ssl.create_default_context(cafile=cafile, capath=capath)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(
                f"{_KEY}.ca_bundle: {cafile or capath} holds no usable PEM CA certificate "
                f"({_ssl_reason(exc)})",
                key_path=f"{_KEY}.ca_bundle",
            ) from None
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if certfile is not None:
        try:
            context.load_cert_chain(certfile, keyfile)
        except (ssl.SSLError, OSError, ValueError) as exc:
            files = certfile + (f" and {keyfile}" if keyfile else "")
            raise ConfigError(
                f"{_KEY}.client_cert: cannot load the client certificate from {files} "
                f"({_ssl_reason(exc)}); it must be PEM, with its unencrypted private key "
                f"in client_key or in the same file",
                key_path=f"{_KEY}.client_cert",
            ) from None
    return context


# -- bearer token ------------------------------------------------------------------------


def load_callable(path: str, key_path: str = f"{_KEY}.token_provider") -> Callable[[], Any]:
    """Import ``package.module:function`` (or ``module:obj.method``) and check it is callable.

    Raises:
        ConfigError: malformed path, the module cannot be imported, no such attribute,
            or it is not callable.
    """
    module_name, sep, qualname = path.partition(":")
    if not sep or not module_name or not qualname:
        raise ConfigError(
            f"{key_path}: {path!r} must look like 'package.module:function'", key_path=key_path
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"{key_path}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}",
            key_path=key_path,
        ) from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                f"{key_path}: module {module_name!r} has no attribute {qualname!r}",
                key_path=key_path,
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(
            f"{key_path}: {path!r} is a {type(obj).__name__}, not a callable", key_path=key_path
        )
    result: Callable[[], Any] = obj
    return result


class TokenSource:
    """A bearer token that follows its source.

    Exactly one source: ``env`` (an environment variable, read on every request: cheap,
    and a changed value is used at once), ``path`` (a file, re-read whenever its
    modification time, size or inode changes: a rotated Kubernetes secret is picked up
    without a restart) or ``provider`` (a callable returning the token, called on first
    use and again after the server rejects the token). :meth:`refresh` re-reads after a
    401: concurrent 401s with the same token cause one re-read, and at most one per
    ``min_refresh_seconds`` (a server that rejects everything costs no stream of provider
    calls).

    A token that cannot be read at request time (the variable unset, the file gone
    mid-rotation) keeps the last good one, with a WARNING; when there was none, the
    request fails with :class:`FeatureStoreAuthError` and degrades.
    """

    def __init__(
        self,
        *,
        env: Optional[str] = None,
        path: Optional[PathLike] = None,
        provider: Optional[Callable[[], Any]] = None,
        min_refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        label: Optional[str] = None,
    ) -> None:
        given = [n for n, v in (("env", env), ("path", path), ("provider", provider)) if v]
        if len(given) != 1:
            raise ConfigError(
                f"{_KEY}: give exactly one token source (token_env, token_file or "
                f"token_provider); got {', '.join(given) or 'none'}",
                key_path=f"{_KEY}.token_env",
            )
        self._label = label
        self._env = env
        self._path = os.fspath(path) if path is not None else None
        self._provider = provider
        self._min_refresh = min_refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Optional[str] = None
        self._raw: Optional[str] = None  # the env value the token was cleaned from
        self._stamp: Optional[Tuple[int, int, int]] = None  # the file's (mtime, size, inode)
        self._last_refresh = -float("inf")
        self._seen: Tuple[str, ...] = ()  # every token used, for redaction
        if env is not None and os.environ.get(env) is None:
            raise ConfigError(
                f"environment variable {env!r} for the bearer token is not set",
                key_path=f"{_KEY}.token_env",
            )
        if self._path is not None:
            if not os.path.isfile(self._path):
                raise ConfigError(
                    f"{_KEY}.token_file: no file at {self._path}", key_path=f"{_KEY}.token_file"
                )
            self._read_file(strict=True)

    @property
    def what(self) -> str:
        """Where the token comes from, for messages (never the token)."""
        if self._label is not None:
            return self._label
        if self._env is not None:
            return f"environment variable {self._env!r}"
        if self._path is not None:
            return f"token file {self._path}"
        return f"token provider {getattr(self._provider, '__qualname__', 'callable')}"

    def secrets(self) -> Tuple[str, ...]:
        """Every token this source has handed out (for redaction of error texts)."""
        return self._seen

    def _accept(self, raw: Any) -> str:
        if not isinstance(raw, str):
            raise ConfigError(f"{self.what} gave a {type(raw).__name__}, not a token string")
        token = clean_secret(raw, self.what, f"{_KEY}.token")
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        if token not in self._seen:
            self._seen = (*self._seen[-3:], token)
        self._token = token
        return token

    def _read_file(self, strict: bool = False) -> Optional[str]:
        assert self._path is not None
        try:
            st = os.stat(self._path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp and self._token is not None:
                return self._token
            text = Path(self._path).read_text(encoding="utf-8")
            token = self._accept(text)
        except (OSError, UnicodeDecodeError, ConfigError) as exc:
            if strict:
                raise ConfigError(
                    f"{_KEY}.token_file: cannot read a token from {self._path}: "
                    f"{type(exc).__name__}",
                    key_path=f"{_KEY}.token_file",
                ) from None
            return self._keep_last(exc)
        self._stamp = stamp
        return token

    def _read_env(self) -> Optional[str]:
        assert self._env is not None
        raw = os.environ.get(self._env)
        if raw is not None and raw == self._raw and self._token is not None:
            return self._token
        if raw is None:
            return self._keep_last(None)
        try:
            token = self._accept(raw)
        except ConfigError as exc:
            return self._keep_last(exc)
        self._raw = raw
        return token

    def _call_provider(self) -> Optional[str]:
        assert self._provider is not None
        try:
            return self._accept(self._provider())
        except Exception as exc:
            return self._keep_last(exc)

    def _keep_last(self, exc: Optional[BaseException]) -> Optional[str]:
        why = "is not set" if exc is None else f"failed ({type(exc).__name__})"
        if self._token is not None:
            logger.warning("%s %s; the last token read is used", self.what, why)
        return self._token

    def ready(self) -> bool:
        """True when :meth:`current` needs no provider call (async callers run that call
        in a thread, so a provider doing network I/O never blocks the event loop)."""
        return self._provider is None or self._token is not None

    def current(self) -> str:
        """The token to send now.

        Raises:
            FeatureStoreAuthError: no token could be read (nor was one ever read).
        """
        if self._env is not None:
            token = self._read_env()
        elif self._path is not None:
            token = self._read_file()
        else:
            token = self._token
            if token is None:
                with self._lock:
                    token = self._token or self._call_provider()
        if token is None:
            raise FeatureStoreAuthError(f"no bearer token: {self.what} gave none")
        return token

    def refresh(self, rejected: str) -> Optional[str]:
        """After the server rejected ``rejected``: a different token to retry with, or
        ``None`` (the source still gives the same one, or it was re-read less than
        ``min_refresh_seconds`` ago)."""
        with self._lock:
            if self._token is not None and self._token != rejected:
                return self._token  # another request already refreshed it
            now = self._clock()
            if now - self._last_refresh < self._min_refresh:
                return None
            self._last_refresh = now
            if self._env is not None:
                self._raw = None
                token = self._read_env()
            elif self._path is not None:
                self._stamp = None
                token = self._read_file()
            else:
                token = self._call_provider()
        return token if token is not None and token != rejected else None
