"""Test TLS material made with the ``openssl`` CLI, and a TLS-terminating proxy.

:func:`make_certificates` writes a CA, a server certificate for 127.0.0.1 signed by it,
a client certificate signed by it, and an unrelated CA (for verification failures).

:class:`TlsProxy` listens on 127.0.0.1 with HTTPS (optionally requiring a client
certificate signed by the CA), optionally accepts only ``Authorization: Bearer <token>``
for the tokens in ``accepted_tokens`` (401 otherwise, like an auth gateway), and forwards
everything else to a plain-HTTP upstream such as a real ``feast serve``.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, List, Optional, Set

from tests.support.tecton_server import QuietHTTPServer

__all__ = ["Certificates", "TlsProxy", "make_certificates"]


@dataclass(frozen=True)
class Certificates:
    """PEM files: ``ca`` signs ``server`` (127.0.0.1, localhost) and ``client``;
    ``other_ca`` signs nothing used here."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_combined: Path
    """The client certificate and its key in one file."""
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("the openssl CLI is needed to make test certificates")
    subprocess.run([binary, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(name: str, cwd: Path) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=asahi test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )  # fmt: skip


def _leaf(name: str, cwd: Path, extensions: str) -> None:
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN=asahi test {name}",
        cwd=cwd,
    )  # fmt: skip
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        cwd=cwd,
    )  # fmt: skip


def make_certificates(directory: Path) -> Certificates:
    """Write the test PKI into ``directory`` (about a second)."""
    directory.mkdir(parents=True, exist_ok=True)
    _ca("ca", directory)
    _ca("other_ca", directory)
    _leaf(
        "server",
        directory,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    _leaf("client", directory, "extendedKeyUsage=clientAuth\n")
    combined = directory / "client_combined.pem"
    combined.write_text(
        (directory / "client.pem").read_text() + (directory / "client.key").read_text()
    )
    return Certificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        client_combined=combined,
        other_ca=directory / "other_ca.pem",
    )


class TlsProxy:
    """HTTPS on 127.0.0.1 in front of ``upstream`` (``http://host:port``).

    Args:
        upstream: the plain-HTTP server to forward to.
        certs: the test PKI (the proxy serves ``certs.server_cert``).
        require_client_cert: refuse handshakes without a client certificate signed by
            ``certs.ca``.
        accepted_tokens: when set, only these bearer tokens pass; others get 401.
    """

    def __init__(
        self,
        upstream: str,
        certs: Certificates,
        *,
        require_client_cert: bool = False,
        accepted_tokens: Optional[Set[str]] = None,
    ) -> None:
        import httpx

        self.upstream = upstream.rstrip("/")
        self.accepted_tokens = accepted_tokens
        self.seen_tokens: List[str] = []
        self.rejected = 0
        self._client = httpx.Client(timeout=30.0)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(certs.server_cert), str(certs.server_key))
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(certs.ca))
        self._httpd = QuietHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._client.close()

    def __enter__(self) -> TlsProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                with proxy._lock:
                    proxy.seen_tokens.append(token)
                    accepted = proxy.accepted_tokens
                    if accepted is not None and token not in accepted:
                        proxy.rejected += 1
                        self._reply(401, b'{"detail":"invalid token"}', "application/json")
                        return
                headers = {"Content-Type": self.headers.get("Content-Type") or ""}
                answer = proxy._client.request(
                    method, proxy.upstream + self.path, content=body, headers=headers
                )
                self._reply(
                    answer.status_code,
                    answer.content,
                    answer.headers.get("content-type", "application/json"),
                )

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        return Handler
