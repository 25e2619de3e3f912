"""Clients and simulators left unclosed are closed quietly: when dropped (garbage collected), when their event loop
shuts down, or at exit. No aiohttp "Unclosed client session" / "Unclosed connector", no unclosed socket, with
``-W error::ResourceWarning`` too.

Each scenario runs as a user's script would, in a new interpreter, and ends by exiting.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from _helpers import run_python

SCENARIO = '''
import asyncio, gc, socket, sys, time
import fw_rollouts
from fw_rollouts._loop_local import _OPEN
from fw_rollouts.testing import FireworksSimulator

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port

UNREACHABLE = dict(base_url=f"http://127.0.0.1:{free_port()}/inference/v1", api_key="fw-test-key-123456",
                   max_retries=0)
COMMON = dict(use_cache=False, progress_bar=False, max_tokens=4)

def fail_sync():
    client = fw_rollouts.Fireworks("qwen-15b", **UNREACHABLE, **COMMON)
    try:
        client.generate("What is 2+2?", 2)
    except fw_rollouts.APIConnectionError:
        pass

async def fail_async():
    client = fw_rollouts.AsyncFireworks("qwen-15b", **UNREACHABLE, **COMMON)
    try:
        await client.generate("What is 2+2?", 2)
    except fw_rollouts.APIConnectionError:
        pass

def closed_when_dropped():
    gc.collect()
    for _ in range(100):  # the close runs on the client's loop, soon after
        if not _OPEN:
            return
        time.sleep(0.01)
    raise AssertionError(f"still open: {_OPEN}")

mode = sys.argv[1]
if mode == "sync, failed call, dropped":
    fail_sync()
    closed_when_dropped()
elif mode == "sync, failed call, dropped, exit at once":
    fail_sync()
    gc.collect()
elif mode == "sync, calls served, kept to exit":
    sim = FireworksSimulator().start()
    client = fw_rollouts.Fireworks("qwen-15b", base_url=sim.base_url, api_key=sim.api_key, **COMMON)
    client.generate("What is 2+2?", 3)
elif mode == "sync, calls served, dropped":
    with FireworksSimulator() as sim:
        client = fw_rollouts.Fireworks("qwen-15b", base_url=sim.base_url, api_key=sim.api_key, **COMMON)
        client.generate("What is 2+2?", 3)
        del client
        closed_when_dropped()
elif mode == "async, failed call, dropped":
    async def main():
        await fail_async()
        gc.collect()
        await asyncio.sleep(0.1)
        assert not _OPEN, _OPEN
    asyncio.run(main())
elif mode == "async, calls served, never closed, astart never stopped":
    async def main():
        sim = await FireworksSimulator().astart()
        client = fw_rollouts.AsyncFireworks("qwen-15b", base_url=sim.base_url, api_key=sim.api_key, **COMMON)
        await client.generate("What is 2+2?", 3)
    asyncio.run(main())
elif mode == "a loop of the user's, left open and idle at exit":
    loop = asyncio.new_event_loop()
    loop.run_until_complete(fail_async())
    gc.collect()
    keep = loop
elif mode == "simulator thread never stopped":
    sim = FireworksSimulator().start()
gc.collect()
print("end")
'''

STRICT = ("-W", "error::ResourceWarning")

RUNS = [
    ("sync, failed call, dropped, exit at once", ()),  # as a user's script: no warnings printed, either way
    ("sync, failed call, dropped, exit at once", STRICT),
    ("sync, failed call, dropped", STRICT),
    ("sync, calls served, dropped", STRICT),
    ("async, failed call, dropped", STRICT),
    ("async, calls served, never closed, astart never stopped", STRICT),
    ("simulator thread never stopped", STRICT),
]
"""Each scenario (``-W error::ResourceWarning`` turns a warning in a ``__del__`` into "Exception ignored")."""

LOOP_LEFT_OPEN = ("a loop of the user's, left open and idle at exit", STRICT)


def test_left_unclosed_is_closed_quietly() -> None:
    # A new interpreter per scenario (its exit is part of it), a few at a time: most of each is importing openai.
    with ThreadPoolExecutor(4) as pool:
        processes = list(pool.map(lambda run: run_python(SCENARIO, run[0], flags=run[1]), [*RUNS, LOOP_LEFT_OPEN]))
    *scenarios, loop_left_open = processes
    failed = {
        f"{mode} {' '.join(flags)}": process.stderr or process.stdout
        for (mode, flags), process in zip(RUNS, scenarios, strict=True)
        if process.returncode != 0 or process.stdout.strip() != "end" or process.stderr != ""
    }
    assert failed == {}
    # The user's own loop, never closed, warns about itself; the client's pool on it was closed at exit.
    assert loop_left_open.returncode == 0 and loop_left_open.stdout.strip() == "end", loop_left_open.stderr
    assert "unclosed event loop" in loop_left_open.stderr
    assert not any(noise in loop_left_open.stderr for noise in ("Unclosed client session", "Unclosed connector"))
