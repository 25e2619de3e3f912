"""Processes: the simulated server in its own process, CPU accounting from /proc, and foreign load."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_BANNER = re.compile(r"listening on (http://[^ ]+/inference/v1)")


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds (Linux /proc), or None when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields we want follow its closing parenthesis.
    rest = stat[stat.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / _CLK_TCK


@dataclass
class ServerProcess:
    """``python -m fw_rollouts.testing`` in a child process, on a free port it reports in its banner."""

    lenient: bool = False
    replay_cache_mb: int = 512
    proc: subprocess.Popen[str] | None = None
    base_url: str = ""
    log: list[str] = field(default_factory=list)

    def start(self, timeout: float = 60.0) -> ServerProcess:
        cmd = [sys.executable, "-m", "fw_rollouts.testing", "--port", "0", "--any-key"]
        cmd += ["--replay-cache-mb", str(self.replay_cache_mb)]
        if self.lenient:
            cmd.append("--lenient")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line.rstrip())
            match = _BANNER.search(line)
            if match:
                self.base_url = match.group(1)
                return self
        self.stop()
        raise RuntimeError("the simulator did not start: " + " | ".join(self.log))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def chat_url(self) -> str:
        return self.base_url + "/chat/completions"

    def cpu_seconds(self) -> float | None:
        return proc_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _all_cpu() -> dict[int, tuple[float, int, str]]:
    """pid -> (cpu seconds, parent pid, command line) for every readable process."""
    out: dict[int, tuple[float, int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        name = cmdline.strip() or stat[stat.index("(") + 1 : stat.rindex(")")]
        out[pid] = ((int(rest[11]) + int(rest[12])) / _CLK_TCK, int(rest[1]), name[:120])
    return out


class ForeignLoad:
    """CPU used by processes outside this benchmark's process tree, sampled from /proc every ``interval`` s.

    A background thread adds up each foreign process's CPU time between consecutive samples, so a process
    that starts or ends during the run is counted too (from its first sighting to its last).
    """

    def __init__(self, interval: float = 1.0) -> None:
        self._me = os.getpid()
        self._interval = interval
        self._used: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="bench-foreign-load", daemon=True)
        self._thread.start()

    def _ours(self, pid: int, table: dict[int, tuple[float, int, str]]) -> bool:
        seen = set()
        while pid > 1 and pid not in seen:
            if pid == self._me:
                return True
            seen.add(pid)
            pid = table[pid][1] if pid in table else 1
        return False

    def _run(self) -> None:
        previous = _all_cpu()
        while True:
            stopping = self._stop.wait(self._interval)
            current = _all_cpu()
            for pid, (cpu, _ppid, cmd) in current.items():
                if pid in previous and not self._ours(pid, current):
                    delta = cpu - previous[pid][0]
                    if delta > 0:
                        self._used[pid] = self._used.get(pid, 0.0) + delta
                        self._names[pid] = cmd
            previous = current
            if stopping:
                return

    def stop(self, min_share: float = 0.02) -> dict[str, Any]:
        """Processes that used more than ``min_share`` of one core on average over the window."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        wall = max(time.monotonic() - self._t0, 1e-9)
        busy: list[dict[str, Any]] = [
            {"pid": pid, "cmd": self._names[pid], "cpu_s": round(used, 2), "share_of_core": round(used / wall, 3)}
            for pid, used in sorted(self._used.items(), key=lambda item: -item[1])
            if used > min_share * wall
        ]
        return {"window_s": round(wall, 1), "foreign_cpu_s": round(sum(self._used.values()), 2), "processes": busy}


def idle_check(seconds: float = 1.0) -> dict[str, Any]:
    """Who is using the CPU right now (before the benchmark starts anything)."""
    load = ForeignLoad()
    load.start()
    time.sleep(seconds)
    return load.stop()


def dir_bytes(path: str | os.PathLike[str]) -> int:
    """Total size of the regular files under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total


def post_completion(sim: Any, body: dict[str, Any]) -> bytes:
    """``body`` posted straight to the simulator ``sim`` (no client in between): the reply body, status 200."""
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=60)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {sim.api_key}"}
        conn.request("POST", "/v1/completions", json.dumps(body).encode(), headers)
        reply = conn.getresponse()
        data = reply.read()
    finally:
        conn.close()
    if reply.status != 200:
        raise RuntimeError(f"the simulator answered {reply.status}: {data[:200]!r}")
    return data
