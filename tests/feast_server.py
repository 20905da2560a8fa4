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
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Optional

from tests.servers import free_port, port_open, start_process, stop_process, wait_for

__all__ = ["FEAST", "FeastServe", "FeastServeMissing"]

FEAST = Path(sys.executable).with_name("feast")


class FeastServeMissing(RuntimeError):
    """The ``feast`` binary is not installed next to the interpreter (pip install feast)."""


class FeastServe:
    """One ``feast serve`` process for ``repo`` on a fixed loopback port.

    Args:
        repo: the Feast repository directory (holds ``feature_store.yaml``).
        port: the port (default: a free one, chosen once).
        binary: the executable (default: ``feast`` next to the running interpreter).
        log: the log file (default: ``feast.log`` in a temporary directory).
        extra_args: more ``feast serve`` options (e.g. ``--max-requests 20``).
    """

    def __init__(
        self,
        repo: Path,
        port: Optional[int] = None,
        binary: Optional[Path] = None,
        log: Optional[Path] = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        found = Path(binary) if binary is not None else FEAST
        if not found.exists():
            raise FeastServeMissing(
                f"feast binary not found at {found}; install feast in the venv "
                "(integration tests need a real server)"
            )
        self.binary = found
        self.repo = Path(repo)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.extra_args = tuple(extra_args)
        self._dir: Optional[Path] = None
        if log is None:
            self._dir = Path(tempfile.mkdtemp(prefix="asahi_feast_"))
            log = self._dir / "feast.log"
        self.log = Path(log)
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        """``http://host:port``, the base URL of the feature server."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        """The server's process id while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 120.0) -> FeastServe:
        """Start the server (no-op when running) and wait until ``/health`` answers 200.

        Raises:
            RuntimeError: the server exited while starting (the log tail is in the message).
            TimeoutError: it did not become healthy within ``timeout`` seconds.
        """
        if self.running:
            return self
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

        def up_or_exited() -> bool:
            if proc.poll() is not None:
                return True
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200

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
        return self

    def stop(self) -> None:
        """Stop the server by its own pid (and process group)."""
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def restart(self, timeout: float = 120.0) -> FeastServe:
        """Stop and start again on the same port."""
        self.stop()
        wait_for(lambda: not port_open(self.port), timeout=10.0)
        return self.start(timeout)

    def close(self) -> None:
        """Stop the server and remove its temporary directory (if it made one)."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> FeastServe:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()
