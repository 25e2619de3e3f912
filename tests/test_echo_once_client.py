"""Echo paid once per prompt, through the client over loopback HTTP (issue 9, item 4).

One request per prompt asks for echo and the rest do not; every sample still reads exactly as an
echoed one; the prompt's part is cached once and serves top-ups; samples_per_request, studies and a
failed echo request all keep every sample.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from _helpers import MakeClient
from fw_rollouts import FwRollouts, HTTPTransport, Reply, ServerError
from fw_rollouts.testing import Fault, FireworksSimulator

OWN = ("response_id", "created")  # what identifies each reply, not the sample


def _bodies(sim: FireworksSimulator) -> list[dict[str, Any]]:
    return [r.body for r in sim.requests if r.path.endswith("/completions") and r.body is not None]


def _fields(rollouts: FwRollouts) -> list[dict[str, Any]]:
    out = []
    for r in rollouts:
        d = r.to_dict()
        for name in OWN:
            d.pop(name)
        d.pop("cached")
        out.append(d)
    return out


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_one_request_echoes_and_every_sample_reads_as_echoed(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async def main() -> tuple[FwRollouts, FwRollouts]:
        async with make_client(max_tokens=12, use_cache=False) as client:
            once = await client.generate("Tell me about tides.", 12)
            every = await client.generate("Tell me about tides.", 12, echo_once=False)
        return once, every

    once, every = _run(main())
    bodies = _bodies(sim)
    assert [b["echo"] for b in bodies[:12]].count(True) == 1 and len(bodies[:12]) == 12
    assert all(b["echo"] is True for b in bodies[12:])  # echo_once=False: every request echoes, as before
    assert _fields(once) == _fields(every)  # field by field, logprobs included
    prompt = once[0].get_prompt_logprobs()
    assert prompt is not None and len(prompt) > 0
    # One copy of the prompt's positions for all twelve samples.
    assert all(r.get_prompt_logprobs() is prompt for r in once)
    assert all(r.echo and r.full_text.startswith(r.prompt) for r in once)


def test_the_part_is_cached_once_and_serves_top_ups(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async def main() -> tuple[FwRollouts, FwRollouts, FwRollouts]:
        async with make_client(max_tokens=8) as client:
            first = await client.generate("Why is the sky blue?", 5)
            sim.reset()
            grown = await client.generate("Why is the sky blue?", 15)
            top_up = _bodies(sim)
            sim.reset()
            again = await client.generate("Why is the sky blue?", 15)
            assert _bodies(sim) == []
            assert len(top_up) == 10 and not any(b["echo"] for b in top_up)  # the part came from the cache
        return first, grown, again

    first, grown, again = _run(main())
    assert _fields(grown)[:5] == _fields(first)
    assert _fields(again) == _fields(grown) and all(r.cached for r in again)
    prompt = again[0].get_prompt_logprobs()
    assert prompt is not None and all(r.get_prompt_logprobs() is prompt for r in again)


def test_samples_per_request_echo_once(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async def main() -> tuple[FwRollouts, FwRollouts]:
        async with make_client(max_tokens=8, samples_per_request=4, use_cache=False) as client:
            once = await client.generate("Count to three.", 16)
            every = await client.generate("Count to three.", 16, echo_once=False)
        return once, every

    once, every = _run(main())
    bodies = _bodies(sim)[:4]
    assert len(bodies) == 4 and [b["echo"] for b in bodies].count(True) == 1
    assert _fields(once) == _fields(every)


def test_a_study_of_prompts_echoes_each_prompt_once(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async def main() -> list[FwRollouts]:
        async with make_client(max_tokens=6, max_concurrency=4) as client:
            return await client.generate_many([f"Topic {i}" for i in range(6)], n_samples=5)

    results = _run(main())
    echoed = [b["prompt"] for b in _bodies(sim) if b["echo"]]
    assert len(echoed) == 6 and len(set(echoed)) == 6
    for rollouts in results:
        lp = rollouts[0].get_prompt_logprobs()
        assert lp is not None and all(r.get_prompt_logprobs() is lp for r in rollouts)


def test_a_failed_echo_request_loses_no_other_sample(make_client: MakeClient, sim: FireworksSimulator) -> None:
    """The echo request fails for good while the others come back without echo: one more request asks for
    the prompt's part alone, and every other sample is returned reading as echoed."""
    sim.faults.push(Fault.status(500))

    async def main() -> ServerError:
        async with make_client(max_tokens=6, max_retries=0, max_concurrency=8, use_cache=False) as client:
            with pytest.raises(ServerError) as info:
                await client.generate("Faulty start", 8)
            return info.value

    error = _run(main())
    assert list(error.errors) == [0]
    assert error.rollouts is not None and [r.seed for r in error.rollouts] == list(range(1, 8))
    assert all(r.echo and r.get_prompt_logprobs() for r in error.rollouts)
    bodies = _bodies(sim)
    assert len(bodies) == 9 and [b["echo"] for b in bodies].count(True) == 2  # the failed one and the extra one


class EchoRefused:
    """A transport (the client's seam) over the real simulator that answers 500 to every request asking for echo."""

    def __init__(self, inner: HTTPTransport) -> None:
        self.inner = inner
        self.url = inner.url
        self.refused = 0

    async def post_completions(
        self, body: bytes, *, timeout: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        if b'"echo":true' in body:
            self.refused += 1
            await asyncio.sleep(0.1)  # the others are on their way meanwhile, without echo
            raise ServerError("HTTP 500: no echo today", status_code=500)
        return await self.inner.post_completions(body, timeout=timeout, headers=headers)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_when_the_part_cannot_be_fetched_its_samples_fail_clearly(
    make_client: MakeClient, sim: FireworksSimulator
) -> None:
    async def main() -> tuple[ServerError, int]:
        inner = HTTPTransport(base_url=sim.base_url, api_key=sim.api_key, max_connections=8)
        transport = EchoRefused(inner)
        async with make_client(max_tokens=6, max_retries=0, use_cache=False, transport=transport) as client:
            with pytest.raises(ServerError) as info:
                await client.generate("Never echoed", 4)
        return info.value, transport.refused

    error, refused = _run(main())
    # The echo request, and the one asking for the part alone, were refused: the three samples that came
    # back without echo cannot be given as asked (with the prompt's logprobs), so they fail, each saying why.
    assert refused == 2
    assert sorted(error.errors) == [0, 1, 2, 3] and error.rollouts is not None and len(error.rollouts) == 0
    assert all("no echo today" in str(e) for e in error.errors.values())


def test_a_server_that_does_not_echo_gets_echo_asked_every_time(make_client: MakeClient, tmp_path: Path) -> None:
    with FireworksSimulator(echo_text=False) as sim:
        async def main() -> FwRollouts:
            async with make_client(base_url=sim.base_url, api_key=sim.api_key, max_tokens=6, use_cache=False) as c:
                return await c.generate("No echo here?", 4)

        rollouts = _run(main())
        assert len(rollouts) == 4
