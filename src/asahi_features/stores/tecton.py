"""TectonClient: a Tecton feature service over the real ``tecton-client`` package.

One module on purpose (about 640 lines): Tecton's wire format in one place (request,
response, status and error mapping, typed values), so that it can be checked against the
service's documentation side by side.

Tecton's HTTP API serves one entity per ``get-features`` request and returns the values of
every feature of the service positionally, aligned with ``metadata.features``. This
backend asks for names, data types, effective times and serving status, matches features
by name (``view.feature`` or the plain ``feature``), derives per-feature freshness from
``effectiveTime`` and treats ``MISSING_DATA`` as missing. The list of features a service
offers comes from the metadata endpoint, fetched once per service and cached.

The API key is read from an environment variable when the client is built (stripped of
surrounding whitespace; a key no HTTP header can carry is rejected without being shown)
and is kept only inside the ``tecton-client`` objects: it never appears in ``repr``, logs
or errors. Transport failures are reported by type and a fixed summary, never by the
message of the HTTP stack (which quotes a header it refuses).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Dict, List, Optional, Tuple, TypeVar

from ..errors import (
    AsahiFeaturesError,
    ConfigError,
    FeatureConfigError,
    FeatureStoreDataError,
    FeatureStoreTimeoutError,
    FeatureStoreUnavailableError,
)
from ..models import FeatureVector, utc_now
from ..settings import env_name_problem
from .base import BaseFeatureStore, age_of
from .http import (
    Clock,
    PerLoop,
    clean_secret,
    deadline_hooks,
    parse_timestamp,
    redact,
    secret_parts,
    transport_error,
)
from .naming import FeatureNameResolver

if TYPE_CHECKING:
    import httpx

    from ..settings import FeatureStoreSettings

__all__ = ["TectonClient"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_CONFIG_STATUSES = {400, 401, 403, 404}


@dataclass(frozen=True)
class _ServiceInfo:
    """What the metadata endpoint says about one feature service."""

    name: str
    feature_names: List[str]
    join_keys: List[str]

    _resolvers: Dict[str, FeatureNameResolver] = field(
        default_factory=dict, compare=False, repr=False
    )

    def resolver(self, entity_type: str) -> FeatureNameResolver:
        """The name resolver of this service for ``entity_type`` (built once, then reused)."""
        cached = self._resolvers.get(entity_type)
        if cached is not None:
            return cached
        views: Dict[str, List[str]] = {}
        for full in self.feature_names:
            view, _, feature = full.partition(".")
            views.setdefault(view, []).append(feature)
        return self._resolvers.setdefault(
            entity_type, FeatureNameResolver(entity_type, views, separator=".")
        )


class _LoopThread:
    """A private event loop in a daemon thread, for running async batches from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="asahi-tecton-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class TectonClient(BaseFeatureStore):
    """Tecton feature service implementation (spec section 2.3).

    Args:
        api_key_env: name of the environment variable that holds the Tecton API key.
        workspace: the live workspace the feature service is deployed in.
        url: base URL of the Tecton cluster, e.g. ``https://yourco.tecton.ai``.
        feature_service: the feature service to read (all entity types).
        feature_services: entity type -> feature service, overriding ``feature_service``.
        entity_join_keys: entity type -> join key. Default: the service's only join key,
            or ``<entity_type>_id`` when it has several.
        timeout_ms: timeout of every HTTP request (connect, read, write, pool).
        max_concurrency: requests in flight at once for one batch.
        clock: returns "now" as an aware datetime (tests pass a controllable clock).

    Raises:
        ConfigError: ``api_key_env`` is not a variable name (the value is not shown), the
            variable is not set or holds a key no HTTP header can carry (a control or
            non-ASCII character; surrounding whitespace is stripped), the URL is not
            http(s), no feature service is configured; and at request time for a rejected
            key (401), a workspace the key may not read (403) or an unknown service or
            workspace (404).
        FeatureConfigError: unknown feature names (listing what the service offers), or
            a request Tecton rejects as malformed (400, e.g. a missing join key).
        FeatureStoreUnavailableError: 429, 5xx, connection failures, non-JSON answers.
        FeatureStoreTimeoutError: no answer within ``timeout_ms``.

    Example:
        >>> client = TectonClient("TECTON_API_KEY", "prod",
        ...                       url="https://yourco.tecton.ai", feature_service="user_fs")
        >>> client.get_features("u_1001", "user", ["tier"]).features
        {'tier': 'gold'}
    """

    source = "tecton"

    def __init__(
        self,
        api_key_env: str,
        workspace: str,
        *,
        url: Optional[str] = None,
        feature_service: Optional[str] = None,
        feature_services: Optional[Dict[str, str]] = None,
        entity_join_keys: Optional[Dict[str, str]] = None,
        timeout_ms: float = 200,
        max_concurrency: int = 16,
        clock: Optional[Clock] = None,
    ) -> None:
        key_path = "feature_store.tecton.api_key_env"
        problem = env_name_problem(api_key_env, "api_key_env")
        if problem:
            raise ConfigError(problem, key_path=key_path)
        raw_key = os.environ.get(api_key_env)
        if raw_key is None:
            raise ConfigError(
                f"the Tecton API key environment variable {api_key_env!r} is not set "
                f"(feature_store.tecton.api_key_env names the variable, not the key)",
                key_path=key_path,
            )
        what = f"the Tecton API key in environment variable {api_key_env!r}"
        api_key = clean_secret(raw_key, what, key_path)
        if not url or not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"feature_store.tecton.url must be the cluster's http(s) URL, "
                f"e.g. https://yourco.tecton.ai; got {url!r}",
                key_path="feature_store.tecton.url",
            )
        if not feature_service and not feature_services:
            raise ConfigError(
                "no Tecton feature service configured: set feature_store.tecton.feature_service "
                "(or feature_services per entity type)",
                key_path="feature_store.tecton.feature_service",
            )
        if max_concurrency < 1:
            raise ConfigError("max_concurrency must be >= 1", key_path="feature_store.tecton")
        import httpx
        from tecton_client import TectonClient as _SyncClient

        self.api_key_env = api_key_env
        self.workspace = workspace
        self.url = url
        self.feature_service = feature_service
        self.feature_services = dict(feature_services or {})
        self.entity_join_keys = dict(entity_join_keys or {})
        self.timeout_ms = timeout_ms
        self.max_concurrency = max_concurrency
        self._clock: Clock = clock or utc_now
        self._timeout = httpx.Timeout(timeout_ms / 1000.0)
        self._limits = httpx.Limits(
            max_connections=max(max_concurrency, 1), max_keepalive_connections=max_concurrency
        )
        self._http = httpx.Client(
            timeout=self._timeout, limits=self._limits, event_hooks=deadline_hooks()
        )
        self._sync = _SyncClient(
            url=url, api_key=api_key, default_workspace_name=workspace, client=self._http
        )
        # (AsyncTectonClient, its httpx.AsyncClient) per event loop
        self._async: PerLoop[Tuple[Any, httpx.AsyncClient]] = PerLoop(self._new_async_client)
        self._api_key_holder: Callable[[], str] = lambda: api_key
        secrets = secret_parts([api_key])
        self._secrets: Callable[[], Tuple[str, ...]] = lambda: secrets  # not in vars()
        self._lock = threading.Lock()
        self._services: Dict[str, _ServiceInfo] = {}
        self._loop_thread: Optional[_LoopThread] = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: FeatureStoreSettings) -> TectonClient:
        """Build from the ``feature_store.tecton`` section (timeout from ``timeout_ms``)."""
        section = settings.tecton
        assert section is not None
        return cls(
            section.api_key_env,
            section.workspace,
            url=section.url,
            feature_service=section.feature_service,
            feature_services=section.feature_services,
            entity_join_keys=section.entity_join_keys,
            timeout_ms=settings.timeout_ms,
            max_concurrency=section.max_concurrency,
        )

    def __repr__(self) -> str:
        return (
            f"TectonClient(api_key_env={self.api_key_env!r}, workspace={self.workspace!r}, "
            f"url={self.url!r}, feature_service={self.feature_service!r})"
        )

    # -- service metadata --------------------------------------------------------------

    def _service_name(self, entity_type: str) -> str:
        name = self.feature_services.get(entity_type) or self.feature_service
        if not name:
            raise FeatureConfigError(
                f"no Tecton feature service serves entity type {entity_type!r}",
                self.feature_services.keys(),
                kind="entity types",
            )
        return name

    def _join_key(self, info: _ServiceInfo, entity_type: str) -> str:
        key = self.entity_join_keys.get(entity_type)
        if key is None:
            key = info.join_keys[0] if len(info.join_keys) == 1 else f"{entity_type}_id"
        if info.join_keys and key not in info.join_keys:
            raise FeatureConfigError(
                f"feature service {info.name!r} has no join key {key!r} for entity type "
                f"{entity_type!r}; set feature_store.tecton.entity_join_keys",
                info.join_keys,
                kind="join keys",
            )
        return key

    @staticmethod
    def _parse_metadata(name: str, meta: Any) -> _ServiceInfo:
        try:
            features = [str(f["name"]) for f in meta.feature_values]
            keys = [str(k["name"]) for k in (meta.input_join_keys or [])]
        except (KeyError, TypeError) as exc:
            raise FeatureStoreDataError(
                f"Tecton metadata of feature service {name!r} is not in the expected shape: {exc!r}"
            ) from None
        return _ServiceInfo(name, features, keys)

    def _fetch_metadata(self, name: str) -> _ServiceInfo:
        meta = self._call(
            lambda: self._sync.get_feature_service_metadata(feature_service_name=name),
            f"metadata of feature service {name!r}",
        )
        return self._parse_metadata(name, meta)

    def _service(self, entity_type: str) -> _ServiceInfo:
        name = self._service_name(entity_type)
        info = self._services.get(name)
        if info is not None:
            return info
        with self._lock:
            info = self._services.get(name)
            if info is None:
                info = self._fetch_metadata(name)
                self._services[name] = info
        return info

    async def _aservice(self, entity_type: str) -> _ServiceInfo:
        name = self._service_name(entity_type)
        info = self._services.get(name)
        if info is None:
            client = self._async_client()
            meta = await self._acall(
                client.get_feature_service_metadata(feature_service_name=name),
                f"metadata of feature service {name!r}",
            )
            info = self._services.setdefault(name, self._parse_metadata(name, meta))
        return info

    # -- error mapping -----------------------------------------------------------------

    def _map_error(self, exc: BaseException, what: str) -> Exception:
        """Turn what tecton-client / httpx raised into one of the library's errors."""
        import httpx
        from tecton_client.exceptions import TectonHttpException

        where = f"Tecton {what} (workspace {self.workspace!r} at {self.url})"
        if isinstance(exc, (httpx.TransportError, httpx.TimeoutException)):
            return transport_error(exc, where, self.timeout_ms)
        status: Optional[int] = None
        detail = ""
        cause = _status_cause(exc)
        if cause is not None:
            status = cause.response.status_code
            detail = _error_message(cause.response)
        if isinstance(exc, TectonHttpException):
            status = status or exc.STATUS_CODE or None
            detail = detail or str(exc)
        elif status is None:
            # a foreign exception's message is never copied (a ValueError may quote
            # anything, a UnicodeEncodeError the header it could not encode); the
            # JSON parser's own message is a fixed text with a position
            if isinstance(exc, json.JSONDecodeError):
                return FeatureStoreDataError(f"{where} answered with a malformed body: {exc}")
            if isinstance(exc, (KeyError, TypeError, ValueError)):
                return FeatureStoreDataError(
                    f"{where} answered with a malformed body ({type(exc).__name__})"
                )
            return FeatureStoreUnavailableError(f"{where} failed: {type(exc).__name__}")
        assert status is not None
        text = f"{where} returned HTTP {status}: {redact(detail, self._secrets())}"
        if status in (401, 403):
            hint = (
                "the API key was rejected"
                if status == 401
                else "the API key may not read this workspace"
            )
            return ConfigError(
                f"{text} ({hint}; check the key in ${self.api_key_env})",
                key_path="feature_store.tecton.api_key_env",
            )
        if status == 404:
            return ConfigError(
                f"{text} (check feature_store.tecton.workspace and feature_service)",
                key_path="feature_store.tecton.feature_service",
            )
        if status == 400:
            keys = {k for info in self._services.values() for k in info.join_keys}
            return FeatureConfigError(
                f"{text} (the request was rejected as invalid; check "
                f"feature_store.tecton.entity_join_keys)",
                keys,
                kind="join keys",
            )
        if status == 504:
            return FeatureStoreTimeoutError(text)
        return FeatureStoreUnavailableError(text)

    def _call(self, fn: Callable[[], T], what: str) -> T:
        self._check_open()
        try:
            return fn()
        except Exception as exc:
            error = self._map_error(exc, what)
        raise error  # outside the handler: the original is not kept as __context__

    async def _acall(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        try:
            return await coro
        except Exception as exc:
            error = self._map_error(exc, what)
        raise error  # outside the handler: the original is not kept as __context__

    def _check_open(self) -> None:
        if self._closed:
            raise FeatureStoreUnavailableError("TectonClient is closed")

    # -- reads ---------------------------------------------------------------------------

    def _prepare(
        self, info: _ServiceInfo, entity_type: str, feature_names: List[str]
    ) -> Tuple[str, List[Tuple[str, str]]]:
        resolved = info.resolver(entity_type).resolve(feature_names)
        return self._join_key(info, entity_type), resolved

    @staticmethod
    def _metadata_options() -> Any:
        from tecton_client import MetadataOptions

        return MetadataOptions(
            include_names=True,
            include_data_types=True,
            include_effective_times=True,
            include_serving_status=True,
        )

    def _vector(
        self,
        response: Any,
        entity_id: str,
        entity_type: str,
        resolved: List[Tuple[str, str]],
    ) -> FeatureVector:
        now = self._clock()
        try:
            values = response.get_features_dict()
            meta = {m["name"]: m for m in response.metadata["features"]}
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise FeatureStoreDataError(
                f"Tecton answer for {entity_type} {entity_id!r} is not in the expected shape: "
                f"{exc!r}"
            ) from None
        features: Dict[str, Any] = {}
        ages: Dict[str, float] = {}
        missing = 0
        for requested, ref in resolved:
            item = meta.get(ref, {})
            value = values.get(ref)
            if item.get("status") == "MISSING_DATA" or value is None:
                missing += 1
                continue
            features[requested] = value
            # no, an unparsable, an epoch or a far-future effectiveTime: an unknown age
            effective = item.get("effectiveTime")
            ts = parse_timestamp(effective) if isinstance(effective, str) else None
            ages[requested] = age_of(ts, now)
        if resolved and missing == len(resolved):
            logger.info("entity %s/%s not found in Tecton", entity_type, entity_id)
        return FeatureVector.from_ages(
            entity_id, entity_type, self.source, features, ages, retrieved_at=now
        )

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        """Features of one entity; an empty vector when Tecton has no data for it."""
        info = self._service(entity_type)
        join_key, resolved = self._prepare(info, entity_type, feature_names)
        response = self._call(
            lambda: self._sync.get_features(
                feature_service_name=info.name,
                join_key_map={join_key: entity_id},
                metadata_options=self._metadata_options(),
            ),
            f"get-features from {info.name!r}",
        )
        return self._vector(response, entity_id, entity_type, resolved)

    def _async_client(self) -> Any:
        """The AsyncTectonClient of the running event loop (created on first use)."""
        self._check_open()
        return self._async.current()[0]

    def _new_async_client(self) -> Tuple[Any, httpx.AsyncClient]:
        import httpx
        from tecton_client import AsyncTectonClient

        http = httpx.AsyncClient(
            timeout=self._timeout,
            limits=self._limits,
            event_hooks=deadline_hooks(asynchronous=True),
        )
        client = AsyncTectonClient(
            url=self.url or "",
            api_key=self._api_key_holder(),
            default_workspace_name=self.workspace,
            client=http,
        )
        return client, http

    async def _afetch(
        self,
        info: _ServiceInfo,
        join_key: str,
        entity_id: str,
        entity_type: str,
        resolved: List[Tuple[str, str]],
    ) -> FeatureVector:
        client = self._async_client()
        response = await self._acall(
            client.get_features(
                feature_service_name=info.name,
                join_key_map={join_key: entity_id},
                metadata_options=self._metadata_options(),
            ),
            f"get-features from {info.name!r}",
        )
        return self._vector(response, entity_id, entity_type, resolved)

    async def aget_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        """Native async :meth:`get_features` (AsyncTectonClient)."""
        info = await self._aservice(entity_type)
        join_key, resolved = self._prepare(info, entity_type, feature_names)
        return await self._afetch(info, join_key, entity_id, entity_type, resolved)

    async def aget_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        """Concurrent requests (at most ``max_concurrency`` in flight), in input order."""
        info = await self._aservice(entity_type)
        join_key, resolved = self._prepare(info, entity_type, feature_names)
        if not entity_ids:
            return []
        return await self._afetch_all(info, join_key, resolved, entity_ids, entity_type)

    async def _afetch_all(
        self,
        info: _ServiceInfo,
        join_key: str,
        resolved: List[Tuple[str, str]],
        entity_ids: List[str],
        entity_type: str,
    ) -> List[FeatureVector]:
        gate = asyncio.Semaphore(self.max_concurrency)

        async def one(entity_id: str) -> FeatureVector:
            async with gate:
                return await self._afetch(info, join_key, entity_id, entity_type, resolved)

        tasks = [asyncio.ensure_future(one(eid)) for eid in entity_ids]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        """One vector per id, in input order; the requests run concurrently."""
        info = self._service(entity_type)
        join_key, resolved = self._prepare(info, entity_type, feature_names)
        if not entity_ids:
            return []
        if len(entity_ids) == 1:
            return [self.get_features(entity_ids[0], entity_type, feature_names)]
        with self._lock:
            self._check_open()
            if self._loop_thread is None:
                self._loop_thread = _LoopThread()
            runner = self._loop_thread
        return runner.run(self._afetch_all(info, join_key, resolved, entity_ids, entity_type))

    def health_check(self) -> bool:
        """True when the metadata of every configured feature service can be read."""
        names = {n for n in [self.feature_service, *self.feature_services.values()] if n}
        try:
            for name in sorted(names):
                self._services.setdefault(name, self._fetch_metadata(name))
        except Exception as exc:
            # the library's own errors are secret-free; of anything else only the type
            shown = type(exc).__name__
            if isinstance(exc, AsahiFeaturesError):
                shown = f"{shown}: {exc}"
            logger.warning("Tecton health check failed: %s", shown)
            return False
        return True

    def list_features(self, entity_type: Optional[str] = None) -> Dict[str, List[str]]:
        """Plain feature names per entity type (from the cached service metadata)."""
        types = [entity_type] if entity_type else sorted(self.feature_services) or ["*"]
        out: Dict[str, List[str]] = {}
        for etype in types:
            info = self._service(etype if etype != "*" else "")
            out[etype] = info.resolver(etype).plain_names
        return out

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP connections (sync and, where their loop is gone, async)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            runner, self._loop_thread = self._loop_thread, None
        self._http.close()
        if runner is not None:
            entry = self._async.pop(runner.loop)
            if entry is not None:
                with _suppress():
                    runner.run(entry[1].aclose())
            runner.stop()
        # clients of other event loops hold no thread; their loop owner closes them with
        # aclose(), or they are dropped with the loop
        self._async.clear()

    async def aclose(self) -> None:
        """Close the async client of the running loop, then everything else."""
        entry = self._async.pop()
        if entry is not None:
            await entry[1].aclose()
        await asyncio.to_thread(self.close)


class _suppress:
    """``contextlib.suppress(Exception)`` that also logs at DEBUG."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc is not None:
            logger.debug("ignored error while closing: %s", type(exc).__name__)
        return exc_type is not None and issubclass(exc_type, Exception)


def _status_cause(exc: BaseException) -> Optional[httpx.HTTPStatusError]:
    """The HTTPStatusError behind ``exc``, if any.

    tecton-client parses error bodies as JSON while handling the HTTPStatusError: a
    proxy's HTML page then surfaces as a JSONDecodeError whose context chain holds it.
    """
    import httpx

    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, httpx.HTTPStatusError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _error_message(response: httpx.Response) -> str:
    """Tecton's error message from a response body, or a short excerpt of a non-JSON one."""
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())
        return f"non-JSON body ({response.headers.get('content-type', '?')}): {text[:120]}"
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:500]
    return str(body)[:500]
