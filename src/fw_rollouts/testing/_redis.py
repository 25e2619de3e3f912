"""A local ``redis-server`` for tests and benchmarks: :class:`RedisServer`.

It starts Debian's (or any) ``redis-server`` binary on 127.0.0.1 on a free port, with nothing
persisted (``--save ''``, no AOF), so that a restart is a Redis that comes back empty: the harder
case for a cache and a budget. It uses only the standard library (no Redis client).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

__all__ = ["RedisServer", "redis_binary"]

_START_TIMEOUT = 10.0


def redis_binary() -> str:
    """The ``redis-server`` binary on this machine; RuntimeError naming the package when there is none."""
    binary = find_redis_binary()
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
    return binary


def find_redis_binary() -> str | None:
    """The ``redis-server`` binary on ``PATH`` (or in /usr/bin, /usr/local/bin), or None."""
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.access(p, os.X_OK)), None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1: :meth:`start`, :meth:`stop` (SIGTERM, or ``kill=True``),
    :meth:`restart` on the same port; ``url`` is ``redis://127.0.0.1:<port>/0``.

    ``with RedisServer() as server:`` starts it and, on leaving, stops it and removes its directory.
    ``binary`` is the ``redis-server`` to run (default: the one on ``PATH``; RuntimeError if none),
    ``port`` the port (default: a free one).

    >>> from fw_rollouts.testing import RedisServer
    >>> with RedisServer() as server:  # doctest: +SKIP
    ...     client = Fireworks("llama-v3p1-8b-instruct", cache=server.url)
    """

    def __init__(self, binary: str | None = None, port: int | None = None) -> None:
        self.binary = binary or redis_binary()
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

    @property
    def unix_url(self) -> str:
        """The same server through its Unix socket (only this user may connect), database 0."""
        return f"unix://{os.path.join(self._dir, 'redis.sock')}?db=0"

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
                "--unixsocket", os.path.join(self._dir, "redis.sock"),
                "--unixsocketperm", "700",
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
