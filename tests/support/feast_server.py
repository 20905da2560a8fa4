"""A real ``feast serve`` on 127.0.0.1 for tests: start, stop, restart.

The server runs the venv's ``feast`` binary in a given Feast repository, on one port for
its whole life (``restart()`` brings it back on the same port), writes its output to a log
file (appended across restarts) and is stopped by its own process id. A missing ``feast``
binary raises, it never skips.

Example::

    with FeastServe(repo) as feast:
        feast.url                   # "http://127.0.0.1:PORT"
        feast.stop(); feast.start()  # or feast.restart()
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from tests.support.servers import ServerProcess, start_process, wait_for

__all__ = ["FEAST", "FeastServe", "FeastServeMissing"]

FEAST = Path(sys.executable).with_name("feast")


class FeastServeMissing(RuntimeError):
    """The ``feast`` binary is not installed next to the interpreter (pip install feast)."""


class FeastServe(ServerProcess):
    """One ``feast serve`` process for ``repo`` on a fixed loopback port.

    Args:
        repo: the Feast repository directory (holds ``feature_store.yaml``).
        port: the port (default: a free one, chosen once).
        binary: the executable (default: ``feast`` next to the running interpreter).
        log: the log file (default: ``feast.log`` in a temporary directory).
        extra_args: more ``feast serve`` options (e.g. ``--max-requests 20``).
        tls: ``(certificate, key, CA bundle)`` PEM files: serve HTTPS (``--cert/--key``);
            the start-up health probe verifies the certificate against the CA bundle.
    """

    start_timeout = 120.0

    def __init__(
        self,
        repo: Path,
        port: Optional[int] = None,
        binary: Optional[Path] = None,
        log: Optional[Path] = None,
        extra_args: Sequence[str] = (),
        tls: Optional[tuple[Path, Path, Path]] = None,
    ) -> None:
        found = Path(binary) if binary is not None else FEAST
        if not found.exists():
            raise FeastServeMissing(
                f"feast binary not found at {found}; install feast in the venv "
                "(integration tests need a real server)"
            )
        self.binary = found
        self.repo = Path(repo)
        self.extra_args = tuple(extra_args)
        self.tls = tls
        if tls is not None:
            self.extra_args += ("--cert", str(tls[0]), "--key", str(tls[1]))
        workdir: Optional[Path] = None
        if log is None:
            workdir = Path(tempfile.mkdtemp(prefix="asahi_feast_"))
            log = workdir / "feast.log"
        super().__init__(port, workdir)
        self.log = Path(log)

    @property
    def url(self) -> str:
        """``http://host:port`` (``https://`` with ``tls``), the feature server's base URL."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def _launch(self, timeout: float) -> None:
        """Start ``feast serve`` and wait until ``/health`` answers 200.

        Raises:
            RuntimeError: the server exited while starting (the log tail is in the message).
            TimeoutError: it did not become healthy within ``timeout`` seconds.
        """
        import httpx

        args = [str(self.binary), "serve", "-h", self.host, "-p", str(self.port)]
        with self.log.open("ab") as sink:
            proc = start_process(
                [*args, "--no-access-log", *self.extra_args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=self.repo,
                env={**os.environ, "FEAST_USAGE": "False"},
            )
        self._proc = proc

        verify: Any = True
        if self.tls is not None:
            import ssl

            verify = ssl.create_default_context(cafile=str(self.tls[2]))

        def up_or_exited() -> bool:
            if proc.poll() is not None:
                return True
            return httpx.get(f"{self.url}/health", timeout=1.0, verify=verify).status_code == 200

        try:
            wait_for(up_or_exited, timeout=timeout, interval=0.25)
        except BaseException:
            self.stop()
            raise
        if proc.poll() is not None:
            self._proc = None
            raise RuntimeError(
                f"feast serve exited with {proc.returncode} (port {self.port}): "
                f"{self.log.read_text(errors='replace')[-2000:]}"
            )
