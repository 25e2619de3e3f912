"""The sync client called on the event loop that serves its simulator (``await sim.astart()``, then a blocking
call, as in a notebook) raises a ConfigurationError at once instead of waiting for an answer that cannot come."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fw_rollouts import ConfigurationError, Fireworks, FireworksClient
from fw_rollouts.testing import FireworksSimulator
from fw_rollouts.testing._server import simulator_on_loop

TIMEOUT = 2.0
"""The clients' request timeout: what a call that does hang waits (before the guard, every test here did)."""


def options(sim: FireworksSimulator, **overrides: Any) -> dict[str, Any]:
    return {
        "base_url": sim.base_url, "api_key": sim.api_key, "use_cache": False, "progress_bar": False,
        "timeout": TIMEOUT, "max_retries": 0, "max_tokens": 4, **overrides,
    }  # fmt: skip


def refused(call: Any) -> str:
    """The message of the ConfigurationError ``call()`` raises, which it must raise well before the timeout."""
    start = time.perf_counter()
    with pytest.raises(ConfigurationError) as raised:
        call()
    assert time.perf_counter() - start < TIMEOUT / 2
    return str(raised.value)


def test_a_sync_call_on_the_simulators_loop_is_refused() -> None:
    async def main() -> list[str]:
        sim = await FireworksSimulator().astart()
        client = Fireworks("qwen-15b", **options(sim))
        messages = [
            refused(lambda: client.generate("What is 2+2?", n_samples=2)),
            refused(lambda: client.generate_many(["a", "b"], 2)),
            refused(lambda: list(client.iter_generate("What is 2+2?", 2))),
            refused(lambda: client.score("What is 2+2?", " 4")),
        ]
        # Nothing was sent: the guard runs before the call reaches the loop thread.
        assert sim.requests == []
        client.close()
        await sim.astop()
        return messages

    messages = asyncio.run(main())
    assert "sim.start()" in messages[0] and "AsyncFireworks" in messages[0] and "astart" in messages[0]
    assert len(set(messages)) == 1


def test_the_rollouts_drop_in_is_refused_too() -> None:
    async def main() -> str:
        async with FireworksSimulator() as sim:  # serves on this loop, as astart() does
            client = FireworksClient("qwen-15b", **options(sim))
            return refused(lambda: client.generate("What is 2+2?", n_samples=2))

    assert "astart" in asyncio.run(main())


def test_localhost_names_the_same_server() -> None:
    async def main() -> None:
        sim = await FireworksSimulator().astart()
        url = f"http://localhost:{sim.port}/inference/v1"
        assert simulator_on_loop(asyncio.get_running_loop(), url) is sim
        refused(lambda: Fireworks("qwen-15b", **options(sim, base_url=url)).generate("Hi", n_samples=2))
        assert simulator_on_loop(asyncio.get_running_loop(), f"http://localhost:{sim.port + 1}/v1") is None
        await sim.astop()
        assert simulator_on_loop(asyncio.get_running_loop(), url) is None

    asyncio.run(main())


def test_a_simulator_on_its_own_thread_is_fine_from_a_running_loop() -> None:
    async def main() -> int:
        with FireworksSimulator() as sim, Fireworks("qwen-15b", **options(sim)) as client:
            return len(client.generate("What is 2+2?", n_samples=2))

    assert asyncio.run(main()) == 2


@pytest.fixture
def sim_on_another_loop() -> Iterator[FireworksSimulator]:
    """A simulator started with astart() on a loop running in another thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sim = asyncio.run_coroutine_threadsafe(FireworksSimulator().astart(), loop).result(10)
    yield sim
    asyncio.run_coroutine_threadsafe(sim.astop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_a_simulator_on_another_loop_is_fine(sim_on_another_loop: FireworksSimulator) -> None:
    async def main() -> int:
        with Fireworks("qwen-15b", **options(sim_on_another_loop)) as client:
            return len(client.generate("What is 2+2?", n_samples=2))

    assert asyncio.run(main()) == 2


def test_what_sends_nothing_is_not_refused() -> None:
    async def main() -> int:
        sim = await FireworksSimulator().astart()
        client = Fireworks("qwen-15b", **options(sim))
        estimate = client.estimate(["What is 2+2?"], n_samples=3)  # a dry run: reads the cache, sends nothing
        client.render("What is 2+2?")
        client.close()
        await sim.astop()
        return estimate.requests

    assert asyncio.run(main()) == 3
