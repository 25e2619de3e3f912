"""A real ``redis-server`` for the tests: started on 127.0.0.1 on a free port, stopped, restarted on the same port.

CI installs Debian's ``redis-server`` and sets ``FW_ROLLOUTS_REQUIRE_REDIS=1``, so there a missing server fails
the tests that need one instead of skipping them. Nothing is persisted (``--save ''``, no AOF): a restart is a
Redis that comes back empty, the harder case for a cache and a budget.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from types import TracebackType

import pytest

__all__ = ["RedisServer", "redis_server", "require_redis"]

_START_TIMEOUT = 10.0


def _binary() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.access(p, os.X_OK)), None
    )


def require_redis() -> str:
    """The redis-server binary, or skip the test (fail under ``FW_ROLLOUTS_REQUIRE_REDIS=1``)."""
    binary = _binary()
    if binary is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("FW_ROLLOUTS_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1: :meth:`start`, :meth:`stop` (SIGTERM, or ``kill=True``),
    :meth:`restart` on the same port; ``url`` is ``redis://127.0.0.1:<port>/0``."""

    def __init__(self, binary: str | None = None, port: int | None = None) -> None:
        self.binary = binary or require_redis()
        self.port = port or _free_port()
        self._dir = tempfile.mkdtemp(prefix="fw-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def url_for(self, db: int) -> str:
        """The server's URL for database ``db``."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir,
                "--daemonize", "no",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode} on port {self.port}")
            if self.ping():
                return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {_START_TIMEOUT}s")

    def ping(self) -> bool:
        """Whether the server answers PING now (a bare RESP exchange, no client library)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGKILL with ``kill=True``) and wait for it to exit; its data is gone."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.kill() if kill else process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, *, down_for: float = 0.0) -> None:
        """Stop the server, stay down ``down_for`` seconds, start it again on the same port (empty)."""
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def flush(self) -> None:
        """Empty every database (FLUSHALL)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            if not s.recv(16).startswith(b"+OK"):
                raise RuntimeError("FLUSHALL failed")

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop(kill=True)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test (about 10 ms to start); the test may stop and restart it."""
    with RedisServer() as server:
        yield server
