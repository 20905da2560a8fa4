"""A local HTTP server on 127.0.0.1 that speaks Tecton's feature-serving protocol.

Tecton is a hosted service, so tests run the real ``tecton-client`` package against this
server. It implements the two endpoints the client uses, with Tecton's real request
validation, response shapes and error bodies:

* ``POST /api/v1/feature-service/get-features``: body
  ``{"params": {"workspaceName", "featureServiceName", "joinKeyMap", "requestContextMap",
  "metadataOptions", ...}}``; answer ``{"result": {"features": [...]}, "metadata":
  {"features": [{"name", "dataType", "effectiveTime", "status"}]}}``. Values are
  positional, aligned with ``metadata.features`` and with the service's ``featureValues``;
  int64 values are JSON strings; metadata fields appear only when requested through
  ``metadataOptions`` (``status`` is ``PRESENT`` or ``MISSING_DATA``).
* ``POST /api/v1/feature-service/metadata``: ``{"featureServiceType", "inputJoinKeys",
  "inputRequestContextKeys", "featureValues"}``.

Errors carry Tecton's body ``{"error": msg, "code": grpc_code, "message": msg}`` with the
messages the real service sends: 401 (missing or wrong ``Authorization: Tecton-key <key>``),
403 (workspace not readable by the key), 404 (unknown workspace or feature service),
400 (bad body, missing or unexpected join key), 429, 500, 503, 504.

Fault injection (for the reliability suite), set on ``server.faults`` at any time::

    with TectonTestServer(api_key="k") as server:
        server.add_service("fs", join_keys=["user_id"], features={"profile.tier": "string"})
        server.put("fs", {"user_id": "u1"}, {"profile.tier": "gold"}, age_seconds=60)
        server.faults.mode = "slow"; server.faults.delay_seconds = 0.5
        ...

``faults.mode`` is one of:

* ``"ok"``: normal service;
* ``"slow"``: sleep ``delay_seconds`` then answer normally;
* ``"hang"``: never answer (until ``release()`` or the server closes; at most
  ``hang_seconds``);
* ``"status"``: answer ``status`` (e.g. 429, 500, 503, 504) with Tecton's error body;
  ``fail_count`` > 0 fails only that many requests then serves normally again;
* ``"malformed_json"``: HTTP 200 with a truncated JSON body;
* ``"html_error"``: ``status`` (default 502) with an HTML page from a proxy;
* ``"reset"``: close the connection without any response.

Faults apply to ``get-features`` only, unless ``faults.include_metadata`` is True.
``server.requests`` records every request (path, body, headers without Authorization);
``server.max_in_flight`` is the highest number of requests handled at once.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ["Faults", "QuietHTTPServer", "TectonTestServer"]

GET_FEATURES = "/api/v1/feature-service/get-features"
METADATA = "/api/v1/feature-service/metadata"

MSG_UNAUTHENTICATED = (
    "invalid 'Tecton-key' authorization header. Note that newly created credentials may "
    "take up to 60 seconds to be usable."
)
MSG_FORBIDDEN = (
    "Not Authorized. Note that access control changes may take up to 60 seconds to apply."
)
MSG_NOT_FOUND = (
    "Unable to query FeatureService `{fs}` for workspace `{ws}`. Newly created feature "
    "services may take up to 60 seconds to query. Also, ensure that the workspace is a "
    "live workspace."
)
MSG_EXHAUSTED = "GetFeatures exceeded the concurrent request limit, please retry later"

_STATUS_ERRORS: Dict[int, Tuple[int, str]] = {
    429: (8, MSG_EXHAUSTED),
    500: (13, "Internal error"),
    503: (14, "503 Service Temporarily Unavailable"),
    504: (4, "Timed out"),
}

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class QuietHTTPServer(ThreadingHTTPServer):
    """Clients that time out close their socket: writing the late answer then fails."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@dataclass
class Faults:
    """What the server does wrong (see the module docstring)."""

    mode: str = "ok"
    status: int = 503
    delay_seconds: float = 0.0
    hang_seconds: float = 30.0
    fail_count: int = 0
    """With ``mode="status"``: fail this many requests, then serve (0 = fail all)."""
    include_metadata: bool = False


@dataclass
class _Service:
    join_keys: List[str]
    features: List[Tuple[str, str]]
    rows: Dict[Tuple[str, ...], Dict[str, Tuple[Any, datetime]]] = field(default_factory=dict)


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _encode(value: Any, data_type: str) -> Any:
    if value is None:
        return None
    if data_type == "int64":
        return str(value)
    return value


def _data_type(data_type: str) -> Dict[str, Any]:
    if data_type.endswith("_array"):
        return {"type": "array", "elementType": {"type": data_type[: -len("_array")]}}
    return {"type": data_type}


class TectonTestServer:
    """A threaded Tecton-protocol server on 127.0.0.1 (a free port unless ``port`` given).

    Args:
        api_key: the only key accepted (``Authorization: Tecton-key <api_key>``).
        workspaces: live workspaces readable with the key.
        forbidden_workspaces: workspaces that exist but the key may not read (403).
    """

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        workspaces: Tuple[str, ...] = ("prod",),
        forbidden_workspaces: Tuple[str, ...] = (),
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.workspaces = set(workspaces)
        self.forbidden_workspaces = set(forbidden_workspaces)
        self.services: Dict[str, _Service] = {}
        self.faults = Faults()
        self.requests: List[Dict[str, Any]] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._httpd = QuietHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    # -- data ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:43123``."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def add_service(self, name: str, *, join_keys: List[str], features: Mapping[str, str]) -> None:
        """Declare a feature service: feature name (``view.feature``) -> data type.

        Data types: ``string``, ``int64``, ``float64``, ``boolean``, ``<type>_array``.
        """
        self.services[name] = _Service(list(join_keys), list(features.items()))

    def put(
        self,
        service: str,
        join_key_map: Mapping[str, str],
        values: Mapping[str, Any],
        *,
        age_seconds: float = 0.0,
        effective_times: Optional[Mapping[str, datetime]] = None,
    ) -> None:
        """Store feature values of one entity (``age_seconds`` before now)."""
        svc = self.services[service]
        key = tuple(str(join_key_map[k]) for k in svc.join_keys)
        now = datetime.now(timezone.utc)
        row = svc.rows.setdefault(key, {})
        for name, value in values.items():
            ts = (effective_times or {}).get(name, now - timedelta(seconds=age_seconds))
            row[name] = (value, ts)

    def release(self) -> None:
        """Let every hanging request finish (with a 503)."""
        self._release.set()

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = 0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> TectonTestServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TectonTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- protocol --------------------------------------------------------------------

    def _answer(self, path: str, headers: Mapping[str, str], raw: bytes) -> Tuple[int, Any]:
        """(status, JSON body) for a request that passed fault injection."""
        if path not in (GET_FEATURES, METADATA):
            return 404, {"error": "Not Found", "code": 5, "message": "Not Found"}
        if headers.get("authorization") != f"Tecton-key {self.api_key}":
            return 401, _err(16, MSG_UNAUTHENTICATED)
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return 400, _err(3, "Failed to parse request body as JSON")
        params = body.get("params") if isinstance(body, dict) else None
        if not isinstance(params, dict):
            return 400, _err(3, "Missing required field: params")
        ws = params.get("workspaceName")
        fs = params.get("featureServiceName")
        if not ws:
            return 400, _err(3, "workspaceName must be specified")
        if not fs:
            return 400, _err(3, "featureServiceName must be specified")
        if ws in self.forbidden_workspaces:
            return 403, _err(7, MSG_FORBIDDEN)
        svc = self.services.get(fs)
        if ws not in self.workspaces or svc is None:
            return 404, _err(5, MSG_NOT_FOUND.format(fs=fs, ws=ws))
        if path == METADATA:
            return 200, self._metadata(svc)
        return self._get_features(svc, params)

    @staticmethod
    def _metadata(svc: _Service) -> Dict[str, Any]:
        return {
            "featureServiceType": "DEFAULT",
            "inputJoinKeys": [
                {"name": k, "dataType": {"type": "string"}, "type": "string"} for k in svc.join_keys
            ],
            "inputRequestContextKeys": [],
            "featureValues": [
                {"name": n, "dataType": _data_type(t), "type": t} for n, t in svc.features
            ],
        }

    @staticmethod
    def _get_features(svc: _Service, params: Dict[str, Any]) -> Tuple[int, Any]:
        jkm = params.get("joinKeyMap") or {}
        if not isinstance(jkm, dict):
            return 400, _err(3, "joinKeyMap must be an object")
        for key in svc.join_keys:
            if key not in jkm:
                return 400, _err(3, f"Missing required join key: `{key}`")
        for key in jkm:
            if key not in svc.join_keys:
                return 400, _err(3, f"Unexpected join key: `{key}`")
        for key, value in jkm.items():
            if value is not None and not isinstance(value, (str, int)):
                return 400, _err(3, f"Join key `{key}` must be a string or an integer")
        opts = params.get("metadataOptions") or {}
        row = svc.rows.get(tuple(str(jkm[k]) for k in svc.join_keys))
        now = datetime.now(timezone.utc)
        values: List[Any] = []
        meta: List[Dict[str, Any]] = []
        for name, dtype in svc.features:
            value, ts = (row or {}).get(name, (None, now))
            present = row is not None and name in row
            values.append(_encode(value, dtype) if present else None)
            item: Dict[str, Any] = {}
            if opts.get("includeNames"):
                item["name"] = name
            if opts.get("includeDataTypes"):
                item["dataType"] = _data_type(dtype)
            if opts.get("includeEffectiveTimes"):
                item["effectiveTime"] = _iso(ts)
            if opts.get("includeServingStatus"):
                item["status"] = "PRESENT" if present else "MISSING_DATA"
            meta.append(item)
        out: Dict[str, Any] = {"result": {"features": values}}
        if any(meta):
            out["metadata"] = {"features": meta}
        if opts.get("includeSloInfo"):
            out.setdefault("metadata", {})["sloInfo"] = {
                "sloEligible": True,
                "sloServerTimeSeconds": 0.001,
                "serverTimeSeconds": 0.001,
                "storeMaxLatency": 0.0005,
                "storeResponseSizeBytes": 100,
            }
        return 200, out

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status, _REASONS.get(status))
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(405, json.dumps(_err(12, "Method Not Allowed")).encode())

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server._lock:
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                    try:
                        parsed = json.loads(raw)
                    except ValueError:
                        parsed = None
                    server.requests.append(
                        {
                            "path": self.path,
                            "body": parsed,
                            "headers": {k: v for k, v in headers.items() if k != "authorization"},
                        }
                    )
                try:
                    self._serve(headers, raw)
                finally:
                    with server._lock:
                        server._in_flight -= 1

            def _serve(self, headers: Dict[str, str], raw: bytes) -> None:
                faults = server.faults
                faulty = self.path == GET_FEATURES or faults.include_metadata
                mode = faults.mode if faulty else "ok"
                if mode == "status" and faults.fail_count > 0:
                    with server._lock:
                        faults.fail_count -= 1
                        if faults.fail_count == 0:
                            faults.mode = "ok"
                if mode == "slow":
                    time.sleep(faults.delay_seconds)
                elif mode == "hang":
                    server._release.wait(faults.hang_seconds)
                    self._send(503, json.dumps(_err(14, _STATUS_ERRORS[503][1])).encode())
                    return
                elif mode == "status":
                    code, msg = _STATUS_ERRORS.get(faults.status, (2, "Unknown error"))
                    self._send(faults.status, json.dumps(_err(code, msg)).encode())
                    return
                elif mode == "malformed_json":
                    self._send(200, b'{"result": {"features": ["gold", ')
                    return
                elif mode == "html_error":
                    status = faults.status if faults.status >= 400 else 502
                    page = (
                        f"<html><head><title>{status} {_REASONS.get(status, 'Error')}</title>"
                        f"</head><body><center><h1>{status} {_REASONS.get(status, 'Error')}"
                        "</h1></center><hr><center>nginx</center></body></html>"
                    ).encode()
                    self._send(status, page, "text/html")
                    return
                elif mode == "reset":
                    self.close_connection = True
                    self.connection.close()
                    return
                status, body = server._answer(self.path.split("?")[0], headers, raw)
                self._send(status, json.dumps(body).encode())

        return Handler


def _err(code: int, message: str) -> Dict[str, Any]:
    return {"error": message, "code": code, "message": message}
