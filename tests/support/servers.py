"""Helpers to run real servers (redis-server, feast serve, test HTTP servers) in tests.

Servers listen on 127.0.0.1 only and are stopped by their own process id.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Optional, Self, Union


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], object], timeout: float = 5.0, interval: float = 0.005) -> bool:
    """Poll ``check`` until it is true; False when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False


def wait_for(check: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll ``check`` (exceptions count as not yet) until it is true, or raise TimeoutError."""

    def safe() -> bool:
        with contextlib.suppress(Exception):
            return bool(check())
        return False

    if not wait_until(safe, timeout, interval):
        raise TimeoutError(f"condition not met within {timeout}s")


def port_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_process(
    args: Sequence[str],
    *,
    stdout: Union[int, IO[bytes]] = subprocess.DEVNULL,
    stderr: Union[int, IO[bytes]] = subprocess.PIPE,
    **kwargs: object,
) -> subprocess.Popen[bytes]:
    """Start a server in its own process group (so stop_process ends its children too).

    ``stdout``/``stderr`` default to discarded/piped; a chatty server should write both to
    a log file instead (a full, unread pipe would block it).
    """
    proc: subprocess.Popen[bytes] = subprocess.Popen(
        list(args),
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        **kwargs,  # type: ignore[call-overload]
    )
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a server started by start_process, by its own process id (and group)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


class ServerProcess:
    """The lifecycle every test server shares: one process on a fixed 127.0.0.1 port,
    stopped by its own pid, restartable on the same port, and a working directory that
    :meth:`close` removes. Subclasses implement :meth:`_launch`."""

    host = "127.0.0.1"
    start_timeout = 30.0
    """Seconds :meth:`start` waits for the server by default."""

    def __init__(self, port: Optional[int], workdir: Optional[Path]) -> None:
        self.port = port or free_port()
        self._dir = workdir
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def pid(self) -> Optional[int]:
        """The server's process id while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: Optional[float] = None) -> Self:
        """Start the server (no-op when running) and wait until it serves."""
        if not self.running:
            self._launch(self.start_timeout if timeout is None else timeout)
        return self

    def _launch(self, timeout: float) -> None:
        """Start the process and wait until it serves (or raise, leaving it stopped)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server by its own pid (and process group)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)
            if proc.stderr is not None:
                proc.stderr.close()

    def restart(self, timeout: Optional[float] = None) -> Self:
        """Stop and start again on the same port."""
        self.stop()
        wait_for(lambda: not port_open(self.port), timeout=10.0)
        return self.start(timeout)

    def close(self) -> None:
        """Stop the server and remove its working directory (if it made one)."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()
