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
import tempfile
from pathlib import Path
from typing import Optional

from tests.support.servers import ServerProcess, port_open, start_process, wait_for

__all__ = ["RedisServer", "RedisServerMissing"]


class RedisServerMissing(RuntimeError):
    """redis-server is not installed (apt-get install -y redis-server)."""


class RedisServer(ServerProcess):
    """One redis-server process on a fixed free loopback port (no persistence: a restart
    loses the data).

    Args:
        port: the port (default: a free one, chosen once).
        binary: the executable (default: ``redis-server`` from PATH).
    """

    start_timeout = 20.0

    def __init__(self, port: Optional[int] = None, binary: Optional[str] = None) -> None:
        found = binary or shutil.which("redis-server")
        if not found:
            raise RedisServerMissing(
                "redis-server not found on PATH; install it with "
                "`apt-get install -y redis-server` (integration tests need a real server)"
            )
        self.binary = found
        super().__init__(port, Path(tempfile.mkdtemp(prefix="asahi_redis_")))

    @property
    def connection_string(self) -> str:
        """``host:port`` as Feast's redis online store expects it."""
        return f"{self.host}:{self.port}"

    def _launch(self, timeout: float) -> None:
        proc = self._proc = start_process(
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
            wait_for(lambda: port_open(self.port) or proc.poll() is not None, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            self.stop()
            raise RuntimeError(f"redis-server exited on start (port {self.port}): {err[-500:]}")
