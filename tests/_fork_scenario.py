"""A client made (and used) before ``fork``, then used in forked children: run as a script by test_fork.py.

``python _fork_scenario.py {sync,async} {cache,nocache} CACHE_DIR`` starts a simulator, makes the client
in this (parent) process, calls it once (except ``sync-unused``), then has children made with the fork
start method call it through ``multiprocessing.Process``, ``multiprocessing.Pool`` and
``ProcessPoolExecutor``. It prints one JSON line: what each child got, and the simulator's request count.
The test runs this in a subprocess with a timeout, so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from fw_rollouts import AsyncFireworks, Fireworks
from fw_rollouts.testing import FireworksSimulator

CHILD_TIMEOUT = 30.0
_client: Any = None
_kind = ""


def _texts(prompt: str) -> list[str]:
    if _kind.startswith("sync"):
        return [r.full for r in _client.generate(prompt, 2)]

    async def go() -> list[str]:
        return [r.full for r in await _client.generate(prompt, 2)]

    return asyncio.run(go())


def _work(prompt: str) -> list[str]:
    return _texts(prompt)


def _process_target(prompt: str, queue: Any) -> None:
    queue.put(_texts(prompt))


def main() -> None:
    global _client, _kind
    _kind, cache, cache_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    fork = multiprocessing.get_context("fork")
    with FireworksSimulator() as sim:
        options: dict[str, Any] = {
            "base_url": sim.base_url,
            "api_key": sim.api_key,
            "progress_bar": False,
            "max_tokens": 8,
            "use_cache": cache == "cache",
            "cache_dir": cache_dir,
        }
        _client = (Fireworks if _kind.startswith("sync") else AsyncFireworks)("qwen-15b", **options)
        parent = [] if _kind == "sync-unused" else _texts("asked in the parent")
        # A call in flight on the parent's loop thread while the children fork: they must not inherit it.
        busy = threading.Thread(target=_texts, args=("in flight during the fork",)) if _kind == "sync" else None
        if busy is not None:
            busy.start()
        queue = fork.Queue()
        process = fork.Process(target=_process_target, args=("asked in the parent", queue))
        process.start()
        from_process = queue.get(timeout=CHILD_TIMEOUT)
        process.join(CHILD_TIMEOUT)
        with fork.Pool(2) as pool:
            from_pool = pool.map_async(_work, ["pool 0", "pool 1", "pool 2"]).get(timeout=CHILD_TIMEOUT)
        with ProcessPoolExecutor(2, mp_context=fork) as executor:
            from_executor = list(executor.map(_work, ["executor 0", "executor 1"], timeout=CHILD_TIMEOUT))
        if busy is not None:
            busy.join()
        again = _texts("asked in the parent")  # the parent's client still works after its children
        requests = len(sim.requests)
    print(
        json.dumps(
            {
                "parent": parent,
                "process": from_process,
                "process_exitcode": process.exitcode,
                "pool": from_pool,
                "executor": from_executor,
                "again": again,
                "requests": requests,
            }
        )
    )


if __name__ == "__main__":
    main()
