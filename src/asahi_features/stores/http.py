"""HttpFeatureStore: a client of Feast's feature server (``feast serve``) over HTTP.

One module on purpose (about 650 lines): the feast serve client (requests, responses,
value conversion); the transport, auth and request-body helpers are already split out
(``http_transport``, ``http_auth``, ``http_body``).

Many application servers can share one feature-serving tier in front of Redis: each
reads through ``POST /get-online-features`` with a pooled httpx client (sync and async).
A batch is one POST. Entity ids travel only inside the JSON body, never in a URL.

Wire format (feast 0.6x): the request is ``{"entities": {join_key: [ids]}, "features":
["view:feature", ...], "full_feature_names": true}``; the answer is column-major,
``{"metadata": {"feature_names": ["user_id", "view__feature", ...]}, "results": [{"values":
[...one per entity], "statuses": [...], "event_timestamps": [...]}, ...]}`` with columns
in no guaranteed order (they are matched by name). The server names no endpoint that
lists feature views, so plain feature names need ``feature_views`` in the configuration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from ..errors import (
    ConfigError,
    FeatureConfigError,
    FeatureStoreAuthError,
    FeatureStoreDataError,
    FeatureStoreTimeoutError,
    FeatureStoreUnavailableError,
)
from ..models import FeatureVector, utc_now
from .base import (
    BaseFeatureStore,
    age_of,
    ordered_map,
    parse_timestamp,
)
from .http_auth import PathLike, TokenSource, load_callable, tls_context
from .http_body import build_body, is_service, service_columns
from .http_transport import (
    PerLoop,
    clean_headers,
    clean_secret,
    deadline_hooks,
    redact,
    retryable,
    secret_parts,
    transport_error,
)
from .naming import FeatureNameResolver

if TYPE_CHECKING:
    import httpx

    from ..settings import FeatureStoreSettings

__all__ = [
    "HttpFeatureStore",
    "PerLoop",
    "clean_secret",
    "deadline_hooks",
    "parse_timestamp",
    "redact",
    "secret_parts",
    "transport_error",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# feast serve answers a bad feature name, a name without a view or a wrong join key with
# HTTP 500 and one of these messages; they are request mistakes, not an outage
_CONFIG_MESSAGES = re.compile(
    r"not found in projection|Invalid feature reference|Missing join key values|"
    r"does not exist in project|FeatureViewNotFound|FeatureServiceNotFound|"
    r"EntityNotFound|Unknown feature",
    re.IGNORECASE,
)


def _has_map(value: Any) -> bool:
    """A dict, or a list holding one (a Map list); plain lists are left alone."""
    return isinstance(value, dict) or any(isinstance(v, dict) for v in value)


def json_value(value: Any) -> Any:
    """A Json feature's value as the embedded Feast backend gives it.

    ``feast serve`` sends a ``Json`` value as its JSON text (a ``Json`` list as a list of
    texts); Feast's own conversion (``feast_value_type_to_python_type``) parses them, and
    keeps a text that does not parse as it is. So does this.
    """
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, list):
        return [json_value(v) if isinstance(v, str) else v for v in value]
    return value


def _error_text(response: httpx.Response) -> str:
    """The message of a feast serve error body (a JSON string, often wrapping JSON)."""
    try:
        body: Any = response.json()
    except ValueError:
        text = " ".join(response.text.split())
        return f"non-JSON body ({response.headers.get('content-type', '?')}): {text[:200]}"
    if isinstance(body, str):
        try:
            inner = json.loads(body)
        except ValueError:
            return body.strip("'\"")[:500]
        body = inner
    if isinstance(body, dict):
        if "message" in body:
            kind = f"{body['class']}: " if "class" in body else ""
            return f"{kind}{body['message']}"[:500]
        if "detail" in body:
            return json.dumps(body["detail"])[:500]
    return str(body)[:500]


class HttpFeatureStore(BaseFeatureStore):
    """Feast feature server (``feast serve``) over HTTP, provider ``http``.

    Args:
        url: base URL of the feature server, e.g. ``http://features.internal:6566``.
        project: the Feast project the server serves (for messages).
        entity_join_keys: entity type -> join key (default ``<entity_type>_id``).
        feature_views: entity type -> feature references (``view:feature``) it serves.
            With it, plain names (``tier``) are accepted and unknown names are rejected
            before any request; without it, only full references work. A feature
            service is asked as ``@<service>`` (sent as ``feature_service``).
        request_data: entity type -> request-context fields sent with its reads (the
            inputs of on-demand views); a compound entity type (``merchant+user``)
            sends each entity's join key.
        headers: extra HTTP headers (e.g. an auth token). Never logged or shown; values
            are stripped of surrounding whitespace (a trailing newline from a secret
            file), and a value with a control or non-ASCII character is rejected.
        timeout_ms: timeout of every HTTP request.
        max_connections: size of the connection pool.
        clock: returns "now" as an aware datetime (tests pass a controllable clock).
        verify: check the server's TLS certificate (default True).
        ca_bundle: PEM file of the CAs the server's certificate must chain to.
        client_cert: PEM client certificate for servers that require one (mutual TLS).
        client_key: its PEM private key, when not in ``client_cert``'s file.
        token: a bearer token: a string, a callable returning one (called on first use
            and after a 401), or a :class:`~asahi_features.stores.http_auth.TokenSource`
            (an env var or file re-read when it changes). After a 401 the token is re-read
            once and the request retried; a second 401 is a
            :class:`~asahi_features.errors.FeatureStoreAuthError` (the request degrades).
        json_features: references (``view:feature``) of ``Json`` features: their JSON
            text is parsed, as the embedded Feast backend does (the server does not say
            which features are ``Json``).

    Raises:
        FeatureConfigError: unknown or ambiguous feature names, an unknown feature view,
            or a join key the server does not know.
        ConfigError: a header value no HTTP header can carry (at construction, without
            showing it); invalid TLS options; the server rejected the request (422).
        FeatureStoreAuthError: the server rejected the credentials (401/403) again after
            the token was re-read once.
        FeatureStoreUnavailableError: connection failures, 429/5xx outages.
        FeatureStoreTimeoutError: no answer within ``timeout_ms``.
        FeatureStoreDataError: an answer that is not the expected JSON.

    Example:
        >>> store = HttpFeatureStore("http://127.0.0.1:6566",
        ...                          feature_views={"user": ["user_profile:tier"]})
        >>> store.get_features("u_1001", "user", ["tier"]).features
        {'tier': 'gold'}
    """

    source = "feast_http"

    def __init__(
        self,
        url: str,
        *,
        project: str = "asahi",
        entity_join_keys: Optional[Mapping[str, str]] = None,
        feature_views: Optional[Mapping[str, Sequence[str]]] = None,
        request_data: Optional[Mapping[str, Sequence[str]]] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout_ms: float = 200,
        max_connections: int = 32,
        clock: Optional[Clock] = None,
        verify: bool = True,
        ca_bundle: Optional[PathLike] = None,
        client_cert: Optional[PathLike] = None,
        client_key: Optional[PathLike] = None,
        token: Union[str, Callable[[], str], TokenSource, None] = None,
        json_features: Sequence[str] = (),
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"feature_store.http.url must be an http(s) URL such as "
                f"http://features.internal:6566; got {url!r}",
                key_path="feature_store.http.url",
            )
        import httpx

        self.url = url.rstrip("/")
        self.project = project
        self.entity_join_keys = dict(entity_join_keys or {})
        self.feature_views = {k: list(v) for k, v in (feature_views or {}).items()}
        self.request_data = {k: tuple(v) for k, v in (request_data or {}).items()}
        self.timeout_ms = timeout_ms
        self.max_connections = max_connections
        self._clock: Clock = clock or utc_now
        self._features_url = f"{self.url}/get-online-features"
        self._health_url = f"{self.url}/health"
        extra = clean_headers(headers or {})
        self._verify = tls_context(
            self.url,
            verify=verify,
            ca_bundle=ca_bundle,
            client_cert=client_cert,
            client_key=client_key,
        )
        self._token = self._token_source(token)
        if self._token is not None and any(h.lower() == "authorization" for h in extra):
            raise ConfigError(
                "feature_store.http: a bearer token and an Authorization header in "
                "headers_env are both configured; keep one",
                key_path="feature_store.http.headers_env",
            )
        static = secret_parts(extra.values())
        tokens = self._token
        self._secrets: Callable[[], Tuple[str, ...]] = (  # a closure: not in vars()
            (lambda: static) if tokens is None else (lambda: static + tokens.secrets())
        )
        if self._token is not None and self.url.startswith("http://"):
            host = self.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
            if host not in ("127.0.0.1", "localhost", "[::1]"):
                logger.warning(
                    "%s: the bearer token is sent over plain http://; use https:// so "
                    "that nobody on the network can read it",
                    self._where(),
                )
        self._json_columns: Set[str] = set()
        for ref in json_features:
            view, sep, feature = ref.partition(":")
            if not sep or not view or not feature:
                raise ConfigError(
                    f"feature_store.http.json_features: {ref!r} is not a feature reference "
                    f"'view:feature'",
                    key_path="feature_store.http.json_features",
                )
            self._json_columns.add(f"{view}__{feature}")
        self._headers = {"Content-Type": "application/json", **extra}
        self._timeout = httpx.Timeout(timeout_ms / 1000.0)
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = httpx.Client(
            timeout=self._timeout,
            limits=self._limits,
            headers=self._headers,
            event_hooks=deadline_hooks(),
            verify=self._verify,
        )
        self._async: PerLoop[httpx.AsyncClient] = PerLoop(self._new_async_client)
        self._resolvers: Dict[str, FeatureNameResolver] = {}
        for entity_type, refs in self.feature_views.items():
            views: Dict[str, List[str]] = {}
            for ref in refs:
                view, sep, feature = ref.partition(":")
                if not sep or not view or not feature:
                    raise ConfigError(
                        f"feature_store.http.feature_views.{entity_type}: {ref!r} is not a "
                        f"feature reference 'view:feature'",
                        key_path=f"feature_store.http.feature_views.{entity_type}",
                    )
                views.setdefault(view, []).append(feature)
            self._resolvers[entity_type] = FeatureNameResolver(entity_type, views, ":")
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: FeatureStoreSettings) -> HttpFeatureStore:
        """Build from ``feature_store.http``; header values come from the named env vars."""
        section = settings.http
        assert section is not None
        headers: Dict[str, str] = {}
        for header, env in section.headers_env.items():
            key_path = f"feature_store.http.headers_env.{header}"
            value = os.environ.get(env)
            if value is None:
                raise ConfigError(
                    f"environment variable {env!r} for HTTP header {header!r} is not set",
                    key_path=key_path,
                )
            what = f"environment variable {env!r} (HTTP header {header!r})"
            headers[header] = clean_secret(value, what, key_path)
        token: Optional[TokenSource] = None
        if section.token_env or section.token_file or section.token_provider:
            provider = load_callable(section.token_provider) if section.token_provider else None
            token = TokenSource(env=section.token_env, path=section.token_file, provider=provider)
        return cls(
            section.url,
            project=section.project,
            entity_join_keys=section.entity_join_keys,
            feature_views=section.feature_views,
            request_data=section.request_data,
            headers=headers,
            timeout_ms=settings.timeout_ms,
            max_connections=section.max_connections,
            verify=section.verify,
            ca_bundle=section.ca_bundle,
            client_cert=section.client_cert,
            client_key=section.client_key,
            token=token,
            json_features=section.json_features,
        )

    @staticmethod
    def _token_source(
        token: Union[str, Callable[[], str], TokenSource, None],
    ) -> Optional[TokenSource]:
        if token is None or isinstance(token, TokenSource):
            return token
        if isinstance(token, str):
            fixed = clean_secret(token, "the bearer token", "feature_store.http.token")
            return TokenSource(provider=lambda: fixed, label="the bearer token given")
        if callable(token):
            name = getattr(token, "__qualname__", type(token).__name__)
            return TokenSource(provider=token, label=f"token provider {name}")
        raise ConfigError(
            f"token must be a string, a callable returning one, or a TokenSource; "
            f"got {type(token).__name__}"
        )

    def __repr__(self) -> str:
        return f"HttpFeatureStore(url={self.url!r}, project={self.project!r})"

    # -- request building ----------------------------------------------------------------

    def _resolve(self, entity_type: str, feature_names: List[str]) -> List[Tuple[str, str]]:
        if is_service(feature_names) is not None:
            return [(feature_names[0], feature_names[0])]  # the answer names its features
        resolver = self._resolvers.get(entity_type)
        if resolver is not None:
            return resolver.resolve(feature_names)
        plain = [n for n in feature_names if ":" not in n]
        if plain:
            raise FeatureConfigError(
                f"feature(s) {', '.join(map(repr, plain))} of entity type {entity_type!r} "
                f"need full references 'view:feature' (or list the type's features in "
                f"feature_store.http.feature_views)",
                [ref for refs in self.feature_views.values() for ref in refs],
                kind="configured references",
            )
        return [(n, n) for n in feature_names]

    def _body(
        self, entity_ids: List[str], entity_type: str, resolved: List[Tuple[str, str]]
    ) -> Dict[str, Any]:
        refs = list(dict.fromkeys(ref for _, ref in resolved))
        composite = entity_type in self.request_data
        return build_body(entity_ids, entity_type, refs, self.entity_join_keys, composite)

    def request_fields(self, entity_type: str, feature_names: Sequence[str]) -> Tuple[str, ...]:
        """The request-context fields sent with reads of ``entity_type``
        (``request_data``): the enricher puts them in the read's composite key."""
        return self.request_data.get(entity_type, ())

    # -- response handling ---------------------------------------------------------------

    def _where(self) -> str:
        return f"feature server {self.url}"

    def _status_error(self, response: httpx.Response, entity_type: str) -> Exception:
        status = response.status_code
        detail = redact(_error_text(response), self._secrets())
        text = f"{self._where()} returned HTTP {status}: {detail}"
        if status in (401, 403):
            where = self._token.what if self._token else "feature_store.http.headers_env"
            return FeatureStoreAuthError(f"{text} (check the credentials: {where})")
        if status in (400, 404) or (status == 500 and _CONFIG_MESSAGES.search(text)):
            resolver = self._resolvers.get(entity_type)
            return FeatureConfigError(text, resolver.available if resolver else ())
        if status == 422:
            return ConfigError(f"{text} (the server rejected the request body)")
        if status == 504:
            return FeatureStoreTimeoutError(text)
        return FeatureStoreUnavailableError(text)

    def _parse(
        self,
        response: httpx.Response,
        entity_ids: List[str],
        entity_type: str,
        resolved: List[Tuple[str, str]],
    ) -> List[FeatureVector]:
        if response.status_code != 200:
            raise self._status_error(response, entity_type)
        now = self._clock()
        try:
            body = response.json()
            names = body["metadata"]["feature_names"]
            results = body["results"]
            columns = {name: results[i] for i, name in enumerate(names)}
            if resolved and is_service([resolved[0][1]]) is not None:
                resolved = [(ref, ref) for ref in service_columns(names)]
            picked = [
                (requested, columns[col], col in self._json_columns)
                for requested, col in ((r, ref.replace(":", "__", 1)) for r, ref in resolved)
            ]
            vectors = [
                self._vector(i, eid, entity_type, picked, now) for i, eid in enumerate(entity_ids)
            ]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            detail = redact(f"{type(exc).__name__}: {exc}", self._secrets())
            error = FeatureStoreDataError(
                f"{self._where()} answered with an unexpected body: {detail}"
            )
        else:
            return vectors
        raise error

    def _vector(
        self,
        i: int,
        entity_id: str,
        entity_type: str,
        picked: List[Tuple[str, Dict[str, Any], bool]],
        now: datetime,
    ) -> FeatureVector:
        features: Dict[str, Any] = {}
        ages: Dict[str, float] = {}
        for requested, column, is_json in picked:
            value = column["values"][i]
            if value is None or column["statuses"][i] == "NOT_FOUND":
                continue
            # Json: parsed as Feast parses it; any other object is a Feast Map / Struct
            # (protobuf maps, no key order): keys sorted as the embedded backend sorts them
            if is_json:
                value = json_value(value)
            elif isinstance(value, (dict, list)) and _has_map(value):
                value = ordered_map(value)
            features[requested] = value
            # missing, null, unparsable, epoch or far-future timestamps: an unknown age
            stamps = column.get("event_timestamps")
            raw = stamps[i] if isinstance(stamps, list) and i < len(stamps) else None
            ages[requested] = age_of(parse_timestamp(raw) if isinstance(raw, str) else None, now)
        if not features and picked:
            logger.info("entity %s/%s not found on %s", entity_type, entity_id, self._where())
        return FeatureVector.from_ages(
            entity_id, entity_type, self.source, features, ages, retrieved_at=now
        )

    # -- sync reads ----------------------------------------------------------------------

    # -- credentials (shared by the sync and async paths) --------------------------------

    def _auth_now(self) -> Tuple[Optional[str], Optional[Dict[str, str]]]:
        """(the token to send, the per-request headers carrying it)."""
        if self._token is None:
            return None, None
        token = self._token.current()
        return token, {"Authorization": f"Bearer {token}"}

    def _auth_retry(
        self, response: httpx.Response, token: Optional[str]
    ) -> Optional[Dict[str, str]]:
        """After a 401: the headers of a re-read token to retry once with (None: do not
        retry, the source has no other token)."""
        if response.status_code != 401 or self._token is None or token is None:
            return None
        fresh = self._token.refresh(token)
        if fresh is None:
            return None
        logger.info("%s rejected the token; retrying once with the re-read one", self._where())
        return {"Authorization": f"Bearer {fresh}"}

    # -- sync I/O ------------------------------------------------------------------------

    def _send(
        self, method: str, url: str, body: Optional[Dict[str, Any]], headers: Any
    ) -> httpx.Response:
        if self._closed:
            raise FeatureStoreUnavailableError("HttpFeatureStore is closed")
        try:
            try:
                return self._client.request(method, url, json=body, headers=headers)
            except Exception as exc:
                if not retryable(exc):
                    raise
                logger.debug("retrying once after %s on %s", type(exc).__name__, self._where())
                return self._client.request(method, url, json=body, headers=headers)
        except Exception as exc:
            error = transport_error(exc, self._where(), self.timeout_ms)
        raise error  # outside the handler: the original is not kept as __context__

    def _call(self, method: str, url: str, body: Optional[Dict[str, Any]]) -> httpx.Response:
        token, headers = self._auth_now()
        response = self._send(method, url, body, headers)
        retry = self._auth_retry(response, token)
        return response if retry is None else self._send(method, url, body, retry)

    def _post(self, body: Dict[str, Any]) -> httpx.Response:
        return self._call("POST", self._features_url, body)

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        """Features of one entity; an empty vector when the server has no row for it."""
        return self.get_batch_features([entity_id], entity_type, feature_names)[0]

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        """One POST for all ids; one vector per id, in input order."""
        ids, resolved, answer = self._prepare(entity_ids, entity_type, feature_names)
        if answer is not None:
            return answer
        response = self._post(self._body(ids, entity_type, resolved))
        return self._parse(response, ids, entity_type, resolved)

    def _prepare(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> Tuple[List[str], List[Tuple[str, str]], Optional[List[FeatureVector]]]:
        """(ids, resolved features, the answer when no request is needed)."""
        resolved = self._resolve(entity_type, feature_names)
        ids = [str(e) for e in entity_ids]
        if not ids:
            return ids, resolved, []
        if not resolved:
            now = self._clock()
            empty = [
                FeatureVector.empty(e, entity_type, self.source, retrieved_at=now) for e in ids
            ]
            return ids, resolved, empty
        return ids, resolved, None

    def health_check(self) -> bool:
        """``GET /health`` answers 200."""
        if self._closed:
            return False
        try:
            response = self._call("GET", self._health_url, None)
        except Exception as exc:
            logger.warning("health check of %s failed: %s", self._where(), type(exc).__name__)
            return False
        if response.status_code != 200:
            logger.warning(
                "health check of %s failed: HTTP %s", self._where(), response.status_code
            )
        return response.status_code == 200

    # -- async reads ---------------------------------------------------------------------

    def _aclient(self) -> httpx.AsyncClient:
        if self._closed:
            raise FeatureStoreUnavailableError("HttpFeatureStore is closed")
        return self._async.current()

    def _new_async_client(self) -> httpx.AsyncClient:
        import httpx

        return httpx.AsyncClient(
            timeout=self._timeout,
            limits=self._limits,
            headers=self._headers,
            event_hooks=deadline_hooks(asynchronous=True),
            verify=self._verify,
        )

    async def _asend(self, body: Dict[str, Any], headers: Any) -> httpx.Response:
        client = self._aclient()
        url = self._features_url
        try:
            try:
                return await client.post(url, json=body, headers=headers)
            except Exception as exc:
                if not retryable(exc):
                    raise
                logger.debug("retrying once after %s on %s", type(exc).__name__, self._where())
                return await client.post(url, json=body, headers=headers)
        except Exception as exc:
            error = transport_error(exc, self._where(), self.timeout_ms)
        raise error  # outside the handler: the original is not kept as __context__

    async def _apost(self, body: Dict[str, Any]) -> httpx.Response:
        if self._token is not None and not self._token.ready():
            await asyncio.to_thread(self._token.current)  # a provider call: off the loop
        token, headers = self._auth_now()
        response = await self._asend(body, headers)
        retry = None
        if response.status_code == 401 and token is not None:
            retry = await asyncio.to_thread(self._auth_retry, response, token)
        return response if retry is None else await self._asend(body, retry)

    async def aget_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        """Native async :meth:`get_features`."""
        return (await self.aget_batch_features([entity_id], entity_type, feature_names))[0]

    async def aget_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        """Native async :meth:`get_batch_features` (one POST)."""
        ids, resolved, answer = self._prepare(entity_ids, entity_type, feature_names)
        if answer is not None:
            return answer
        response = await self._apost(self._body(ids, entity_type, resolved))
        return self._parse(response, ids, entity_type, resolved)

    def list_features(self, entity_type: Optional[str] = None) -> Dict[str, List[str]]:
        """Plain feature names per entity type, from ``feature_views``."""
        if entity_type is not None:
            resolver = self._resolvers.get(entity_type)
            if resolver is None:
                raise FeatureConfigError(
                    f"entity type {entity_type!r} has no feature_views configured",
                    self._resolvers.keys(),
                    kind="entity types",
                )
            return {entity_type: resolver.plain_names}
        return {etype: r.plain_names for etype, r in self._resolvers.items()}

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the pooled connections (async pools of other loops are dropped)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._client.close()
        self._async.clear()

    async def aclose(self) -> None:
        """Close the async pool of the running loop, then the rest."""
        client = self._async.pop()
        if client is not None:
            await client.aclose()
        self.close()
