"""A real redis-server on 127.0.0.1 for tests and benchmarks: start, stop, restart.

The server runs without persistence in a temporary directory, on one port for its whole
life (``restart()`` brings it back on the same port, empty), and is stopped by its own
process id. A missing ``redis-server`` binary raises, it never skips.

Example::

    with RedisServer() as redis:
        redis.connection_string   # "127.0.0.1:PORT"
        redis.stop(); redis.start()  # or redis.restart()
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Optional

from tests.servers import free_port, port_open, start_process, stop_process, wait_for

__all__ = ["RedisServer", "RedisServerMissing"]


class RedisServerMissing(RuntimeError):
    """redis-server is not installed (apt-get install -y redis-server)."""


class RedisServer:
    """One redis-server process on a fixed free loopback port.

    Args:
        port: the port (default: a free one, chosen once).
        binary: the executable (default: ``redis-server`` from PATH).
    """

    def __init__(self, port: Optional[int] = None, binary: Optional[str] = None) -> None:
        found = binary or shutil.which("redis-server")
        if not found:
            raise RedisServerMissing(
                "redis-server not found on PATH; install it with "
                "`apt-get install -y redis-server` (integration tests need a real server)"
            )
        self.binary = found
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._dir = Path(tempfile.mkdtemp(prefix="asahi_redis_"))
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def connection_string(self) -> str:
        """``host:port`` as Feast's redis online store expects it."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None and self.running else None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> RedisServer:
        """Start the server (no-op when running) and wait until it accepts connections."""
        if self.running:
            return self
        self._proc = start_process(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._dir),
                "--protected-mode",
                "yes",
            ]
        )
        try:
            wait_for(lambda: port_open(self.port) or self._exited(), timeout=timeout)
        except TimeoutError:
            self.stop()
            raise
        if self._exited():
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise RuntimeError(f"redis-server exited on start (port {self.port}): {err[-500:]}")
        return self

    def _exited(self) -> bool:
        return self._proc is not None and self._proc.poll() is not None

    def stop(self) -> None:
        """Stop the server by its own pid (and process group)."""
        if self._proc is not None:
            stop_process(self._proc)
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None

    def restart(self) -> RedisServer:
        """Stop and start again on the same port (the data is gone: no persistence)."""
        self.stop()
        wait_for(lambda: not port_open(self.port), timeout=10.0)
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its working directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()
