"""The default budget against a simulator that enforces Fireworks' per-minute limits, over real loopback HTTP on
virtual time shared by both: no 429s, most of each limit used, reservations settled, the service's headers read;
and the extra request headers a transport sends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from _helpers import MakeClient, post_completion
from _virtual_time import VirtualTime
from fw_rollouts import FwRollouts, HTTPTransport, OpenAITransport
from fw_rollouts.testing import FireworksSimulator

PROMPT = "Write a long story about a dragon."


def run(main: Any) -> Any:
    return asyncio.run(main)


def total(rollouts: FwRollouts, field: str) -> int:
    return sum(getattr(r.usage, field) for r in rollouts)


def completions(sim: FireworksSimulator) -> list[int]:
    return [r.status for r in sim.requests if r.path.endswith("/completions")]


@pytest.fixture
def clock() -> VirtualTime:
    return VirtualTime()


def limited_sim(clock: VirtualTime, **limits: Any) -> FireworksSimulator:
    return FireworksSimulator(clock=clock.now, **limits)


@pytest.fixture
def sim_limits() -> dict[str, Any]:
    """The limits the simulator of a test enforces (a test overrides them with parametrize)."""
    return {}


@pytest.fixture
def sim(clock: VirtualTime, sim_limits: dict[str, Any]) -> Iterator[FireworksSimulator]:
    """A simulator on the test's virtual clock, enforcing ``sim_limits``."""
    with limited_sim(clock, **sim_limits) as server:
        yield server


# One worker: with VirtualTime a sleeping worker moves time on at once, even while another's request is in flight
# (which the service would then count a minute late). Concurrent waits are tested on a true scheduler in
# test_ratelimit.py.
ONE_AT_A_TIME = {"max_concurrency": 1, "use_cache": False}


@pytest.mark.parametrize(
    ("sim_limits", "limit", "field"),
    [
        ({"generated_tokens_per_minute": 3000}, {"generated_tokens_per_minute": 3000}, "completion_tokens"),
        ({"prompt_tokens_per_minute": 1000}, {"prompt_tokens_per_minute": 1000}, "prompt_tokens"),
    ],
    ids=["generated", "prompt"],
)
def test_a_client_with_the_services_limits_gets_no_429_and_most_of_the_limit(
    make_client: MakeClient, sim: FireworksSimulator, clock: VirtualTime, limit: dict[str, float], field: str
) -> None:
    async def main() -> FwRollouts:
        async with make_client(clock=clock, **ONE_AT_A_TIME, **limit) as client:
            return await client.generate(PROMPT, n_samples=300, max_tokens=64)

    rollouts = run(main())
    # The simulator refuses whatever would take any rolling minute over its limit: none was.
    assert len(rollouts) == 300 and sim.status_counts[429] == 0
    per_minute = total(rollouts, field) / (clock.time / 60)
    (allowed,) = limit.values()
    assert clock.time > 120  # a few minutes: the limit, not the samples, set the pace
    assert 0.9 * allowed <= per_minute <= allowed, (per_minute, allowed, clock.time)


@pytest.mark.parametrize("sim_limits", [{"generated_tokens_per_minute": 100_000}])
def test_settling_gives_back_what_a_request_did_not_generate(
    make_client: MakeClient, sim: FireworksSimulator, clock: VirtualTime
) -> None:
    async def main() -> FwRollouts:
        async with make_client(clock=clock, generated_tokens_per_minute=100_000, **ONE_AT_A_TIME) as client:
            # max_tokens=4096 is reserved for each, but the story stops at the first full stop.
            return await client.generate(PROMPT, n_samples=20, max_tokens=4096, stop=".")

    rollouts = run(main())
    assert len(rollouts) == 20 and total(rollouts, "completion_tokens") < 1000
    # Kept at 4096 each, the reservations would let one request start every 2.2 s (the bucket holds 4,724).
    assert clock.time < 1.0 and sim.status_counts[429] == 0


@pytest.mark.parametrize("sim_limits", [{"requests_per_minute": 8}])
def test_each_choice_counts_as_a_request(make_client: MakeClient, sim: FireworksSimulator, clock: VirtualTime) -> None:
    async def main() -> FwRollouts:
        async with make_client(clock=clock, requests_per_minute=8, **ONE_AT_A_TIME) as client:
            return await client.generate(PROMPT, n_samples=16, max_tokens=4, samples_per_request=4)

    assert len(run(main())) == 16
    # Four choices are more than the bucket of 8 a minute holds (one): each request waits for it to be empty
    # long enough (60.5 s apart); counted as one request each, all four would be done in 40 s.
    assert completions(sim) == [200] * 4 and 180 <= clock.time <= 183


@pytest.mark.parametrize("headers", [True, False], ids=["headers", "no-headers"])
def test_the_services_headers_lower_the_rate_of_a_client_without_limits(
    make_client: MakeClient, clock: VirtualTime, headers: bool
) -> None:
    with limited_sim(clock, requests_per_minute=5, ratelimit_headers=headers) as sim:

        async def main() -> FwRollouts:
            options = {"base_url": sim.base_url, **ONE_AT_A_TIME}
            async with make_client(clock=clock, max_retries=20, **options) as client:
                return await client.generate(PROMPT, n_samples=12, max_tokens=4)

        assert len(run(main())) == 12
        statuses = completions(sim)
    if headers:
        # The first reply says 5 a minute: the client keeps to it from then on (one a bucket, 4 a span after).
        assert statuses == [200] * 12 and 164 <= clock.time <= 168
    else:
        # Without them, the same client learns only from 429s.
        assert statuses.count(200) == 12 and statuses.count(429) > 0


def test_what_others_spent_of_the_minute_counts_from_the_remaining_header(
    make_client: MakeClient, clock: VirtualTime
) -> None:
    with limited_sim(clock, requests_per_minute=6, ratelimit_headers=True) as sim:
        # Another client on the account: 4 of the minute's 6 requests, straight to the server.
        body = {"model": "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b", "prompt": "x", "max_tokens": 1}
        post_completion(sim, {**body, "n": 4}, path="/inference/v1/completions")

        async def main() -> FwRollouts:
            async with make_client(clock=clock, base_url=sim.base_url, **ONE_AT_A_TIME) as client:
                return await client.generate(PROMPT, n_samples=4, max_tokens=4)

        assert len(run(main())) == 4
        # The reply said the other's four were counted: the bucket is charged them, the next request waits for
        # the minute (60.5 s) and the rest follow at the rate (5 a span).
        assert completions(sim) == [200] * 5 and 84 <= clock.time <= 86


# -- extra request headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [HTTPTransport, OpenAITransport], ids=["http", "openai"])
def test_extra_request_headers_reach_the_server_and_never_replace_the_transports_own(
    sim: FireworksSimulator, kind: type[HTTPTransport]
) -> None:
    body = b'{"model":"accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b","prompt":"x","max_tokens":1,"seed":1}'

    async def main() -> None:
        transport = kind(base_url=sim.base_url, api_key=sim.api_key, max_connections=2)
        try:
            extra = {
                "x-session-affinity": "user-42",
                "Authorization": "Bearer someone-elses-key",
                "content-type": "text/plain",
                "X-Stainless-Raw-Response": "false",
            }
            reply = await transport.post_completions(body, timeout=10, headers=extra)
            assert json.loads(reply.content)["choices"]
            await transport.post_completions(body, timeout=10)  # only for the request it was given to
            await transport.post_completions(body, timeout=10, headers={})
        finally:
            await transport.aclose()

    run(main())
    first, second, third = sim.requests
    assert [r.status for r in sim.requests] == [200, 200, 200]  # the key was the transport's, not the header's
    assert first.headers["x-session-affinity"] == "user-42"
    assert first.headers["content-type"] == "application/json"
    assert "x-session-affinity" not in second.headers and "x-session-affinity" not in third.headers
