"""Fork safety: a client made or used before ``os.fork()`` works in the children, never hangs.

Each case runs tests/_fork_scenario.py in a subprocess with a timeout, so that a hang (the failure this
guards against: a child waiting on the parent's loop thread, which the child does not have) fails the test
rather than stopping the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")

SCENARIO = Path(__file__).with_name("_fork_scenario.py")


def run_scenario(kind: str, cache: str, tmp_path: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SCENARIO.parent), *sys.path])}
    try:
        done = subprocess.run(
            [sys.executable, str(SCENARIO), kind, cache, str(tmp_path / "cache")],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the forked children hung: {exc.stderr!r}")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("cache", ["cache", "nocache"])
@pytest.mark.parametrize("kind", ["sync", "sync-unused", "async"])
def test_a_client_from_before_fork_works_in_process_pool_and_executor_children(
    kind: str, cache: str, tmp_path: Path
) -> None:
    result = run_scenario(kind, cache, tmp_path)
    assert result["process_exitcode"] == 0
    assert len(result["pool"]) == 3 and len(result["executor"]) == 2
    for texts in [result["process"], *result["pool"], *result["executor"], result["again"]]:
        assert len(texts) == 2 and all(isinstance(t, str) and t for t in texts)
    if kind != "sync-unused":
        # Same prompt, same seeds: the child's samples are the parent's (from the cache, or sampled again).
        assert result["process"] == result["parent"] == result["again"]
    # Children share the directory (SQLite locking): with the cache, a prompt asked before is never re-asked.
    cached = cache == "cache"
    expected = (
        (0 if kind == "sync-unused" else 2)  # the parent's call
        + (2 if kind == "sync" else 0)  # the call in flight during the forks
        + (0 if cached and kind != "sync-unused" else 2)  # the Process child, asking the parent's prompt
        + 6  # the Pool's three prompts
        + 4  # the executor's two
        + (0 if cached else 2)  # the parent's prompt again, after the children
    )
    assert result["requests"] == expected


def test_a_lock_held_at_fork_does_not_stop_the_child_from_reading_logprobs() -> None:
    # A parent thread parsing (holding the vocabulary lock) at the moment another thread forks.
    from fw_rollouts import _columns
    from fw_rollouts._logprobs import Logprobs

    read, write = os.pipe()
    with _columns._VOCAB_LOCK:
        pid = os.fork()
        if pid == 0:  # the child: a token never seen before must be added to the vocabulary
            status = 1
            try:
                done = threading.Event()

                def parse() -> None:
                    assert Logprobs(["a token only the child sees"], [-0.5]).tokens == ["a token only the child sees"]
                    done.set()

                threading.Thread(target=parse, daemon=True).start()
                status = 0 if done.wait(10) else 2
            finally:
                os.write(write, bytes([status]))
                os._exit(0)
    os.close(write)
    reported = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert reported == b"\x00", "the child hung on a lock its parent held at fork"


def test_a_fork_waits_for_a_thread_inside_sqlite() -> None:
    """A ForkBarrier held by another thread (the cache thread inside SQLite) holds the fork back until it is let go,
    and the child gets it back free: a fork mid-call left SQLite's own mutex held in the child, which then hung."""
    script = textwrap.dedent(
        """
        import os, threading, time
        from fw_rollouts._locks import ForkBarrier

        barrier = ForkBarrier()
        inside = threading.Event()

        def busy():
            with barrier:
                inside.set()
                time.sleep(0.4)

        thread = threading.Thread(target=busy)
        thread.start()
        inside.wait()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            with barrier:  # free in the child
                os._exit(0)
        waited = time.monotonic() - started
        _, status = os.waitpid(pid, 0)
        thread.join()
        print(f"{waited:.3f} {os.waitstatus_to_exitcode(status)}")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    waited, code = done.stdout.split()
    assert float(waited) >= 0.3 and code == "0"
