"""The simulator's rate limits over real loopback HTTP, seen from a stdlib client: a rolling minute of its clock,
Fireworks' 429 above a limit, the x-ratelimit-* headers when asked for."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from fw_rollouts.testing import FireworksSimulator
from fw_rollouts.testing._cli import _simulator, build_parser

MODEL = "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b"
USAGE_LIMIT = (
    "You have exceeded your usage limits. Please try again later or contact Fireworks to explore dedicated capacity."
)


class Clock:
    """The simulator's time, moved by hand."""

    def __init__(self) -> None:
        self.time = 1000.0

    def __call__(self) -> float:
        return self.time


def post(sim: FireworksSimulator, **body: Any) -> tuple[int, dict[str, str], Any]:
    body = {"model": MODEL, "prompt": "Count: one two three", "max_tokens": 4, "seed": 1, **body}
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {sim.api_key}"}
        conn.request("POST", "/inference/v1/completions", json.dumps(body).encode(), headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(response.read())
    finally:
        conn.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limited(clock: Clock) -> Iterator[FireworksSimulator]:
    with FireworksSimulator(requests_per_minute=5, ratelimit_headers=True, clock=clock) as sim:
        yield sim


def test_each_choice_counts_and_a_request_over_the_limit_gets_fireworks_429(
    limited: FireworksSimulator, clock: Clock
) -> None:
    status, headers, _ = post(limited, n=3)
    assert status == 200 and headers["x-ratelimit-remaining-requests"] == "2"
    assert headers["x-ratelimit-limit-requests"] == "5" and headers["x-ratelimit-over-limit"] == "no"
    clock.time += 1.0
    status, headers, body = post(limited, n=3)  # 3 + 3 > 5
    assert status == 429
    assert body == {"error": "Too Many Requests", "message": USAGE_LIMIT}
    assert headers["x-ratelimit-over-limit"] == "yes" and headers["x-ratelimit-remaining-requests"] == "2"
    assert post(limited, n=2)[0] == 200  # a refused request counted for nothing: 3 + 2 fit
    assert post(limited)[0] == 429
    assert limited.limits_used() == {"requests": 5, "prompt_tokens": 10, "generated_tokens": 20}
    clock.time += 58.9
    assert post(limited)[0] == 429
    clock.time += 0.1  # a rolling minute: the first request has left it, the second not
    status, headers, _ = post(limited)
    assert status == 200 and headers["x-ratelimit-remaining-requests"] == "2"
    assert limited.status_counts == {200: 3, 429: 3}


def test_token_limits_count_usage_as_reported(clock: Clock) -> None:
    with FireworksSimulator(prompt_tokens_per_minute=12, generated_tokens_per_minute=10, clock=clock) as sim:
        status, headers, body = post(sim, max_tokens=4)
        assert status == 200 and body["usage"]["prompt_tokens"] == 5 and body["usage"]["completion_tokens"] == 4
        assert not any(name.startswith("x-ratelimit-limit") for name in headers)  # not asked for
        assert post(sim, max_tokens=4, n=2)[0] == 429  # 4 + 8 generated > 10
        assert post(sim, max_tokens=6)[0] == 200  # 4 + 6
        assert post(sim, max_tokens=0)[0] == 429  # nothing generated, but 5 + 5 + 5 prompt tokens > 12
        assert sim.limits_used() == {"requests": 2, "prompt_tokens": 10, "generated_tokens": 10}
        clock.time += 60
        assert post(sim, max_tokens=10)[0] == 200
        sim.reset()  # forgets the minute too
        assert sim.limits_used() == {"requests": 0, "prompt_tokens": 0, "generated_tokens": 0}
        assert post(sim, max_tokens=10)[0] == 200


def test_without_limits_nothing_is_counted_or_refused() -> None:
    with FireworksSimulator() as sim:
        for _ in range(3):
            status, headers, _ = post(sim, n=50)
            assert status == 200 and headers["x-ratelimit-over-limit"] == "no"
            assert not any(name.startswith("x-ratelimit-remaining") for name in headers)
        assert sim.limits_used() == {"requests": 0, "prompt_tokens": 0, "generated_tokens": 0}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"requests_per_minute": 0}, "requests_per_minute must be a number > 0"),
        ({"generated_tokens_per_minute": -1.0}, "generated_tokens_per_minute must be a number > 0"),
        ({"prompt_tokens_per_minute": "60"}, "prompt_tokens_per_minute must be a number > 0"),
        ({"requests_per_minute": 60, "replay_cache_mb": 1}, "replay_cache_mb cannot be combined"),
        ({"ratelimit_headers": True, "replay_cache_mb": 1}, "replay_cache_mb cannot be combined"),
    ],
)
def test_bad_limits_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FireworksSimulator(**options)


def test_the_command_line_takes_the_limits() -> None:
    args = build_parser().parse_args(
        ["--requests-per-minute", "6000", "--prompt-tokens-per-minute", "1e6", "--generated-tokens-per-minute",
         "36000", "--ratelimit-headers"]
    )  # fmt: skip
    cfg = _simulator(args, 0, 0)._core.cfg
    assert (cfg.requests_per_minute, cfg.prompt_tokens_per_minute, cfg.generated_tokens_per_minute) == (
        6000,
        1e6,
        36000,
    )
    assert cfg.ratelimit_headers
    plain = _simulator(build_parser().parse_args([]), 0, 0)._core.cfg
    assert plain.requests_per_minute is None and not plain.ratelimit_headers
    for bad in (["--requests-per-minute", "0"], ["--generated-tokens-per-minute", "5", "--replay-cache-mb", "4"]):
        with pytest.raises(SystemExit):
            from fw_rollouts.testing._cli import main

            main(bad)
