"""A ``feast serve`` look-alike for HttpFeatureStore tests: the wire format of feast 0.6x's
``POST /get-online-features`` (column-major answer, real error bodies) with fault modes.
The integration tests run the real ``feast serve``; this one runs in-process."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Mapping, Optional, Tuple

from tests.support.tecton_server import QuietHTTPServer

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)
EPOCH = "1970-01-01T00:00:00Z"

VIEWS = {"user_profile": ["tier", "score"], "user_activity": ["recent", "tier"]}
Cell = Tuple[Any, datetime]
ROWS: dict[str, dict[str, Cell]] = {
    "u1": {
        "user_profile__tier": ("gold", NOW - timedelta(seconds=30)),
        "user_profile__score": (0.5, NOW - timedelta(seconds=30)),
        "user_activity__recent": (["shoes", "belt"], NOW - timedelta(hours=2)),
    },
    "u2": {"user_profile__tier": ("silver", NOW - timedelta(days=2))},
}


def _ts(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


class FeastMimic:
    """``feast serve`` on 127.0.0.1, with faults: ``status``, ``html``, ``drop`` (close the
    connection without answering, like a recycled worker), ``slow`` and ``garbage``.

    ``rows`` gives an entity's cells (``view__feature`` -> (value, event time)); the
    default serves :data:`ROWS`. Every request is recorded in ``requests``.
    """

    def __init__(self, rows: Optional[Callable[[str], Mapping[str, Cell]]] = None) -> None:
        self.rows = rows or (lambda entity_id: ROWS.get(entity_id, {}))
        self.requests: list[dict[str, Any]] = []
        self.status = 0
        self.mode = "ok"
        self.drop_next = 0
        self.accepted_tokens: Optional[set[str]] = None
        """When set, a request without ``Authorization: Bearer <one of these>`` gets 401."""
        self.delay = threading.Event()
        self._httpd = QuietHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def close(self) -> None:
        self.delay.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def answer(self, body: dict[str, Any]) -> tuple[int, Any]:
        entities = body.get("entities")
        if entities is None:
            return 422, {"detail": [{"type": "missing", "loc": ["body", "entities"]}]}
        columns = []
        for ref in body.get("features", []):
            view, sep, feat = ref.partition(":")
            if not sep:
                return 500, (
                    f"Invalid feature reference '{ref}'. Expected format: "
                    "'<feature_view>:<feature>' or '<feature_view>@<version>:<feature>'"
                )
            if view not in VIEWS:
                return 404, json.dumps(
                    {
                        "module": "feast.errors",
                        "class": "FeatureViewNotFoundException",
                        "message": f"Feature view {view} does not exist in project asahi",
                    }
                )
            if feat not in VIEWS[view]:
                return 500, f"'Feature {feat} not found in projection {view}'"
            columns.append(f"{view}__{feat}" if body.get("full_feature_names") else feat)
        if "user_id" not in entities:
            return 500, json.dumps(
                f"Missing join key values for keys: ['user_id']. No values provided for keys: "
                f"['user_id']. Provided join_key_values: {list(entities)}"
            )
        ids = entities["user_id"]
        names = ["user_id", *sorted(set(columns))]
        results = [
            {
                "values": list(ids),
                "statuses": ["PRESENT"] * len(ids),
                "event_timestamps": [EPOCH] * len(ids),
            }
        ]
        for name in names[1:]:
            cells = [self.rows(i).get(name) for i in ids]
            results.append(
                {
                    "values": [c[0] if c else None for c in cells],
                    "statuses": ["PRESENT" if c else "NOT_FOUND" for c in cells],
                    "event_timestamps": [_ts(c[1]) if c else EPOCH for c in cells],
                }
            )
        return 200, {"results": results, "metadata": {"feature_names": names}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mimic = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _rejected(self) -> bool:
                accepted = mimic.accepted_tokens
                auth = self.headers.get("Authorization") or ""
                if accepted is None or auth.removeprefix("Bearer ") in accepted:
                    return False
                self._send(401, json.dumps({"detail": "Invalid token"}).encode())
                return True

            def do_GET(self) -> None:
                mimic.requests.append(
                    {"method": "GET", "path": self.path, "headers": dict(self.headers.items())}
                )
                if self._rejected():
                    return
                if mimic.drop_next > 0:
                    mimic.drop_next -= 1
                    self.close_connection = True
                    return
                if self.path == "/health":
                    self._send(503 if mimic.status == 503 else 200, b"")
                else:
                    self._send(404, b'{"detail":"Not Found"}')

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                mimic.requests.append(
                    {
                        "method": "POST",
                        "path": self.path,
                        "body": json.loads(raw),
                        "headers": dict(self.headers.items()),
                    }
                )
                if mimic.drop_next > 0:
                    mimic.drop_next -= 1
                    self.close_connection = True
                    return
                if self._rejected():
                    return
                if mimic.mode == "slow":
                    mimic.delay.wait(3.0)
                if mimic.mode == "html":
                    self._send(
                        mimic.status,
                        b"<html><body><h1>502 Bad Gateway</h1></body></html>",
                        "text/html",
                    )
                    return
                if mimic.mode == "garbage":
                    self._send(200, b'{"results": [')
                    return
                if mimic.mode == "status":
                    self._send(mimic.status, json.dumps("Internal Server Error").encode())
                    return
                if self.path != "/get-online-features":
                    self._send(404, b'{"detail":"Not Found"}')
                    return
                if self.headers.get("Content-Type") != "application/json":
                    self._send(422, b'{"detail":[{"type":"model_attributes_type"}]}')
                    return
                status, body = mimic.answer(json.loads(raw))
                self._send(status, json.dumps(body).encode())

        return Handler
