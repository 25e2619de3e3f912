"""The failure policy: what is retried, what ends a call, what cools the client down, and how failures read.

The first half tests the pure rules of ``fw_rollouts._policy``; the second holds a client to them
end to end over real loopback HTTP (the simulator, or a closed port), on virtual time.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from _virtual_time import VirtualTime
from fw_rollouts import (
    AccountError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AsyncFireworks,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    FwRolloutsError,
    InvalidTypeError,
    MalformedResponseError,
    MissingLogprobsError,
    NotFoundError,
    RateLimitError,
    ResponseError,
    ServerError,
    ValidationError,
)
from fw_rollouts import _exceptions as exceptions_module
from fw_rollouts._exceptions import status_error_class
from fw_rollouts._options import DEFAULT_MAX_RETRIES
from fw_rollouts._policy import (
    MAX_RETRY_AFTER,
    UNREACHABLE_AFTER,
    Reachability,
    cools_down,
    ends_the_call,
    is_retryable,
)
from fw_rollouts.testing import Fault, FireworksSimulator


def status(code: int, **fields: Any) -> APIStatusError:
    """The error the transport raises for HTTP ``code``."""
    return status_error_class(code)(f"status {code}", status_code=code, **fields)


def status_code(error: FwRolloutsError) -> int:
    """The HTTP status of a sample's error (which must be a status error)."""
    assert isinstance(error, APIStatusError), error
    return error.status_code


def refused() -> APIConnectionError:
    return APIConnectionError("connection refused", connected=False)


def reset() -> APIConnectionError:
    return APIConnectionError("connection reset by peer", connected=True)


# -- is_retryable ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        (400, False), (401, False), (402, False), (403, False), (404, False), (405, False), (412, False),
        (413, False), (422, False), (451, False),
        (408, True), (409, True), (425, True), (429, True),
        (500, True), (502, True), (503, True), (504, True), (599, True),
    ],
)  # fmt: skip
def test_is_retryable_by_status(code: int, retryable: bool) -> None:
    assert is_retryable(status(code)) is retryable


def test_x_should_retry_overrides_the_status() -> None:
    assert is_retryable(status(400, should_retry=True))
    assert is_retryable(status(401, should_retry=True))
    assert not is_retryable(status(503, should_retry=False))
    assert not is_retryable(status(429, should_retry=False))


def test_a_retry_after_longer_than_we_wait_is_not_retried() -> None:
    assert is_retryable(status(429, retry_after=MAX_RETRY_AFTER))
    assert not is_retryable(status(429, retry_after=MAX_RETRY_AFTER + 1))
    assert not is_retryable(status(503, retry_after=3600.0))
    assert not is_retryable(status(500, retry_after=MAX_RETRY_AFTER + 1, should_retry=True))


@pytest.mark.parametrize(
    "error",
    [
        refused(),
        reset(),
        APITimeoutError("timed out"),
        APITimeoutError("connect timed out", connected=False),
        MalformedResponseError("not JSON"),
        MissingLogprobsError("no logprobs"),
    ],
    ids=type,
)
def test_connection_failures_timeouts_and_unusable_bodies_are_retried(error: APIError) -> None:
    assert is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [ValueError("x"), RuntimeError("a bug"), ValidationError("n", 0, "bad"), ConfigurationError("no key")],
    ids=type,
)
def test_anything_but_an_api_error_is_not_retried(error: BaseException) -> None:
    assert not is_retryable(error)


# -- ends_the_call and cools_down ------------------------------------------------------------------------------


def test_missing_logprobs_end_the_call_only_if_no_sample_had_them() -> None:
    error = MissingLogprobsError("no logprobs")
    assert ends_the_call(error, any_succeeded=False)
    assert not ends_the_call(error, any_succeeded=True)


@pytest.mark.parametrize("any_succeeded", [False, True])
def test_failures_every_sample_would_share_end_the_call(any_succeeded: bool) -> None:
    for ends in (status(400), status(401), status(403), status(402), status(404), status(429, retry_after=1e6)):
        assert ends_the_call(ends, any_succeeded=any_succeeded), ends
    for goes_on in (status(500), status(503), status(429), refused(), reset(), MalformedResponseError("x")):
        assert not ends_the_call(goes_on, any_succeeded=any_succeeded), goes_on


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (status(429), True),
        (status(503), True),
        (status(503, should_retry=False), True),
        (status(500), False),
        (status(502), False),
        (status(400), False),
        (refused(), False),
        (APITimeoutError("slow"), False),
        (ValueError("x"), False),
    ],
    ids=repr,
)
def test_only_overload_statuses_cool_the_client_down(error: BaseException, expected: bool) -> None:
    assert cools_down(error) is expected


# -- Reachability ------------------------------------------------------------------------------------------


class Ticker:
    """A settable clock for Reachability."""

    def __init__(self) -> None:
        self.time = 100.0

    def __call__(self) -> float:
        return self.time


def test_reachability_gives_up_after_two_connect_failures_spanning_the_limit() -> None:
    clock = Ticker()
    reach = Reachability(clock)
    reach.record(refused())
    clock.time += 10 * UNREACHABLE_AFTER
    assert not reach.gives_up(refused())  # one attempt is not enough, however long ago
    reach.record(refused())
    assert reach.gives_up(refused())
    assert not reach.gives_up(reset())  # only connect failures are given up on
    assert not reach.gives_up(status(503))


def test_reachability_needs_the_time_as_well_as_the_attempts() -> None:
    clock = Ticker()
    reach = Reachability(clock)
    for _ in range(50):
        reach.record(refused())
    clock.time += UNREACHABLE_AFTER * 0.99
    assert not reach.gives_up(refused())
    clock.time += UNREACHABLE_AFTER * 0.02
    assert reach.gives_up(refused())


@pytest.mark.parametrize("answer", [None, status(500), status(401), status(429), MalformedResponseError("x")], ids=repr)
def test_reachability_never_gives_up_after_any_http_answer(answer: BaseException | None) -> None:
    clock = Ticker()
    reach = Reachability(clock)
    reach.record(refused())
    reach.record(answer)
    for _ in range(10):
        reach.record(refused())
        clock.time += UNREACHABLE_AFTER
    assert reach.reached and not reach.gives_up(refused())


def test_reachability_waits_for_the_attempts_already_on_their_way() -> None:
    # 128 connections at once to a server slow to accept: a few connects time out, the rest are still going.
    clock = Ticker()
    reach = Reachability(clock)
    attempts = [reach.start() for _ in range(128)]
    reach.record(refused(), attempts[0])
    retry = reach.start()
    reach.record(refused(), retry)
    clock.time += 10 * UNREACHABLE_AFTER
    assert not reach.gives_up(refused())  # 127 of the first attempts may still connect
    for attempt in attempts[1:-1]:
        reach.record(refused(), attempt)
    assert not reach.gives_up(refused())
    reach.abandon(attempts[-1])  # cancelled: ended, with nothing learnt
    assert reach.gives_up(refused()) and not reach.reached
    # The same start, where one of those attempts got through instead.
    other = Reachability(clock)
    first = [other.start() for _ in range(3)]
    other.record(refused(), first[0])
    other.record(refused(), first[1])
    clock.time += 10 * UNREACHABLE_AFTER
    other.record(None, first[2])
    assert other.reached and not other.gives_up(refused())


def test_a_reset_connection_never_counts_as_unreachable() -> None:
    clock = Ticker()
    reach = Reachability(clock)
    for _ in range(5):
        reach.record(reset())
        clock.time += UNREACHABLE_AFTER
    assert not reach.gives_up(reset()) and not reach.gives_up(refused())


def test_the_unreachable_error_is_a_new_error_naming_the_url() -> None:
    clock = Ticker()
    reach = Reachability(clock)
    original = APITimeoutError("could not connect within 10s", connected=False, attempts=2)
    reach.record(original)
    reach.record(refused())
    clock.time += 2.5
    error = reach.unreachable_error(original, "http://127.0.0.1:9/v1/completions")
    assert type(error) is APITimeoutError and error is not original
    assert "no attempt could connect to http://127.0.0.1:9/v1/completions" in error.message
    assert "2 attempts over 2.5s" in error.message
    assert error.attempts == 2 and not error.connected
    assert original.message == "could not connect within 10s"
    named = APIConnectionError("connection to http://127.0.0.1:9/v1/completions failed: refused", connected=False)
    again = reach.unreachable_error(named, "http://127.0.0.1:9/v1/completions")
    assert again.message.count("http://127.0.0.1:9/v1/completions") == 1 and "no attempt could connect" in again.message


def silent(attempts: int = 9) -> APITimeoutError:
    """A read timeout: connected, and no HTTP response came."""
    return APITimeoutError("no complete response within 300s", connected=True, attempts=attempts)


def test_a_call_never_answered_ends_when_one_sample_has_used_its_retries() -> None:
    clock = Ticker()
    reach = Reachability(clock)
    for _ in range(9):
        reach.record(silent())
        clock.time += 300
    assert not reach.gives_up(silent())  # a slow server looks the same for a while: each sample retries
    assert reach.ends_the_call(silent(attempts=9)) and reach.ends_the_call(reset()._evolve(attempts=3))
    assert not reach.ends_the_call(silent(attempts=1))  # max_retries=0: each sample fails alone
    assert not reach.ends_the_call(status(500, attempts=9))
    error = reach.unanswered_error(silent(), "http://127.0.0.1:9/v1/completions")
    assert type(error) is APITimeoutError and error.connected and error.attempts == 9
    assert "accepted connections but answered none of this call's 9 attempts" in error.message
    assert "http://127.0.0.1:9/v1/completions" in error.message and "timeout=" in error.message


@pytest.mark.parametrize("answer", [None, status(500), status(429), MalformedResponseError("x")], ids=repr)
def test_one_answer_means_a_timeout_is_only_that_samples_bad_luck(answer: BaseException | None) -> None:
    reach = Reachability(Ticker())
    reach.record(silent())
    reach.record(answer)
    reach.record(silent())
    assert reach.answered and not reach.ends_the_call(silent(attempts=9))


# -- end to end ------------------------------------------------------------------------------------------


def completions(sim: FireworksSimulator) -> list[Any]:
    return [r for r in sim.requests if r.path.endswith("/completions")]


def make(base_url: str, api_key: str, tmp_path: Path, **options: Any) -> AsyncFireworks:
    settings: dict[str, Any] = {
        "model": "qwen-15b",
        "base_url": base_url,
        "api_key": api_key,
        "cache_dir": str(tmp_path / "cache"),
        "max_tokens": 8,
        "progress_bar": False,
        "clock": VirtualTime(),
    }
    settings.update(options)
    return AsyncFireworks(**settings)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("fw_rollouts") and r.levelno >= logging.WARNING]


def test_an_unreachable_server_ends_the_call_fast_with_one_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fw_rollouts")
    base_url = f"http://127.0.0.1:{closed_port()}/inference/v1"

    async def main() -> None:
        async with make(base_url, "k", tmp_path) as client:
            assert client.settings.max_retries == DEFAULT_MAX_RETRIES
            await client.generate("Anyone there?", n_samples=100)

    start = time.perf_counter()
    with pytest.raises(APIConnectionError) as info:
        asyncio.run(main())
    assert time.perf_counter() - start < 10
    error = info.value
    message = str(error)
    assert "no attempt could connect" in message
    assert message.count(f"{base_url}/completions") == 1  # named, once
    assert not error.connected
    assert error.attempts < DEFAULT_MAX_RETRIES + 1  # given up on, not retried to the end
    assert error.rollouts is not None and len(error.rollouts) == 0
    assert len(warnings_of(caplog)) <= 1


def test_retries_are_logged_once_per_cause_per_call(
    sim: FireworksSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fw_rollouts")
    storm = [Fault.status(503)] * 30 + [Fault.status(500)] * 3 + [Fault.reset()] * 2 + [Fault.status(429)] * 5

    async def main() -> None:
        async with make(sim.base_url, sim.api_key, tmp_path, use_cache=False) as client:
            for _ in range(2):
                caplog.clear()
                sim.faults.push(*storm)
                assert len(await client.generate("Storm", n_samples=50)) == 50
                assert sim.faults.pending == 0
                retries = [r for r in caplog.records if "failed (" in r.getMessage()]
                warnings = warnings_of(caplog)
                assert len(retries) == len(storm)  # every fault cost one retry, and each was logged
                # 503, 500 and the reset once each; 429s (the service working as designed) never at WARNING.
                causes = ("HTTP 503", "HTTP 500", "APIConnectionError", "HTTP 429")
                assert sorted(c for w in warnings for c in causes if c in w.getMessage()) == sorted(causes[:3])
                assert all("logged at DEBUG" in w.getMessage() for w in warnings)
                assert sum(r.levelno == logging.DEBUG for r in retries) == len(storm) - 3

    asyncio.run(main())


def test_errors_are_per_sample_and_the_raised_error_is_fresh(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def fail_once(client: AsyncFireworks) -> BadRequestError:
        sim.faults.push(Fault.ok(), Fault.status(400, message="prompt rejected"))
        with pytest.raises(BadRequestError) as info:
            await client.generate("Blocks of four", n_samples=8)
        return info.value

    async def main() -> tuple[BadRequestError, BadRequestError]:
        async with make(sim.base_url, sim.api_key, tmp_path, samples_per_request=4, max_concurrency=1,
                        use_cache=False) as client:  # fmt: skip
            return await fail_once(client), await fail_once(client)

    first, second = asyncio.run(main())
    for error in (first, second):
        assert list(error.errors) == [4, 5, 6, 7]
        each = list(error.errors.values())
        assert len({id(e) for e in each}) == 4 and {type(e) for e in each} == {BadRequestError}
        assert all(status_code(e) == 400 and "prompt rejected" in e.message for e in each)
        assert all(e.rollouts is None and dict(e.errors) == {} for e in each)
        assert all(error is not e for e in each)
        assert all("samples failed" not in e.message for e in each)  # the call's summary is the raised error's only
        assert error.rollouts is not None and [r.seed for r in error.rollouts] == [0, 1, 2, 3]
        assert "4 of 8 samples failed" in error.message and error.message.startswith(each[0].message)
    assert len(second.message) <= len(first.message)
    assert str(second).count("samples failed") == 1
    copy = pickle.loads(pickle.dumps(first))
    assert type(copy) is BadRequestError and copy.message == first.message
    assert {seed: (type(e), status_code(e)) for seed, e in copy.errors.items()} == {
        seed: (BadRequestError, 400) for seed in (4, 5, 6, 7)
    }
    assert copy.rollouts is not None and [r.full for r in copy.rollouts] == [r.full for r in first.rollouts or []]


def test_a_failure_that_does_not_end_the_call_fails_only_its_own_samples(
    sim: FireworksSimulator, tmp_path: Path
) -> None:
    async def main() -> ServerError:
        async with make(sim.base_url, sim.api_key, tmp_path, samples_per_request=4, max_concurrency=1,
                        max_retries=0, use_cache=False) as client:  # fmt: skip
            sim.faults.push(Fault.status(500), Fault.ok(), Fault.status(502))
            with pytest.raises(ServerError) as info:
                await client.generate("Blocks of four", n_samples=12)
            return info.value

    error = asyncio.run(main())
    assert error.status_code == 500  # the lowest failed seed's
    assert {seed: status_code(e) for seed, e in error.errors.items()} == {
        **dict.fromkeys(range(4), 500),
        **dict.fromkeys(range(8, 12), 502),
    }
    assert error.rollouts is not None and [r.seed for r in error.rollouts] == [4, 5, 6, 7]
    assert "8 of 12 samples failed" in error.message
    assert len(completions(sim)) == 3


# -- pickling ----------------------------------------------------------------------------------------------


def examples() -> list[FwRolloutsError]:
    """One instance of every exception class, with its fields set to something other than the defaults."""
    fields: dict[str, Any] = {
        "request_id": "req-1",
        "attempts": 3,
        "retry_after": 2.5,
        "url": "http://x/v1/completions",
    }
    return [
        FwRolloutsError("root"),
        ConfigurationError("no key"),
        ValidationError("temperature", 3.0, "must be within [0, 2]"),
        InvalidTypeError("n_samples", "5", "a positive integer"),
        APIError("api", attempts=2),
        APIConnectionError("refused", attempts=4, connected=False),
        APITimeoutError("slow", attempts=2, connected=True),
        APIStatusError("teapot", status_code=418, body={"error": "x"}, code="c", param="p", error_type="t", **fields),
        *(
            cls(cls.__name__, status_code=code, should_retry=False, **fields)
            for cls, code in (
                (BadRequestError, 400),
                (AuthenticationError, 401),
                (AccountError, 402),
                (NotFoundError, 404),
                (RateLimitError, 429),
                (ServerError, 503),
            )
        ),
        ResponseError("unusable", attempts=2),
        MalformedResponseError("not JSON", attempts=3),
        MissingLogprobsError("no logprobs", attempts=9),
    ]


def test_the_examples_cover_every_exception_class() -> None:
    defined = {
        obj for obj in vars(exceptions_module).values() if isinstance(obj, type) and issubclass(obj, FwRolloutsError)
    }
    assert {type(e) for e in examples()} == defined


@pytest.mark.parametrize("error", examples(), ids=lambda e: type(e).__name__)
def test_every_error_pickles_with_its_fields(error: FwRolloutsError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert copy.__dict__ == error.__dict__
    assert str(copy) == str(error) and repr(copy) == repr(error) and copy.args == error.args
    assert copy.rollouts is None and dict(copy.errors) == {}
    for name in ("status_code", "request_id", "attempts", "connected", "retry_after", "argument", "value"):
        assert getattr(copy, name, None) == getattr(error, name, None)
    if isinstance(error, APIError):
        assert isinstance(copy, APIError) and copy.retryable == error.retryable


def test_a_failure_carrier_pickles_with_its_errors() -> None:
    first = ServerError("overloaded", status_code=503, request_id="r1", retry_after=1.0, attempts=9)
    other = APIConnectionError("reset", attempts=9)
    carrier = first._evolve(message="overloaded [2 of 5 samples failed]", errors={0: first, 3: other})
    copy = pickle.loads(pickle.dumps(carrier))
    assert type(copy) is ServerError and copy.message == carrier.message
    assert copy.status_code == 503 and copy.request_id == "r1" and copy.retry_after == 1.0 and copy.attempts == 9
    assert sorted(copy.errors) == [0, 3]
    assert type(copy.errors[0]) is ServerError and copy.errors[0].message == "overloaded"
    assert type(copy.errors[3]) is APIConnectionError and copy.errors[3].attempts == 9
    assert first.errors == {} and first.message == "overloaded"  # _evolve left the original alone


def test_a_server_that_accepts_and_never_answers_fails_a_big_call_in_one_samples_retries(
    sim: FireworksSimulator, tmp_path: Path
) -> None:
    # Every request hangs far past the timeout. 40 samples, 4 at a time, 3 attempts of 0.2 s each: one
    # sample's retries take ~0.6 s; before, every wave of 4 waited that long in turn (10 waves, ~6 s).
    sim.faults.random(1.0, [Fault.slow(3600)])

    async def main() -> None:
        async with make(sim.base_url, sim.api_key, tmp_path, timeout=0.2, max_retries=2, max_concurrency=4) as c:
            await c.generate("Hello?", n_samples=40)

    start = time.perf_counter()
    with pytest.raises(APITimeoutError) as info:
        asyncio.run(main())
    elapsed = time.perf_counter() - start
    error = info.value
    assert elapsed < 2.5, elapsed
    assert "accepted connections but answered none" in error.message and sim.base_url in error.message
    assert error.attempts == 3 and error.rollouts is not None and len(error.rollouts) == 0
    assert len(completions(sim)) <= 4 * 3


def test_a_request_that_hangs_while_others_are_answered_is_retried_and_nothing_is_lost(
    sim: FireworksSimulator, tmp_path: Path
) -> None:
    sim.faults.push(Fault.slow(3600), Fault.ok(), Fault.slow(3600), Fault.ok(), Fault.slow(3600))

    async def main() -> int:
        async with make(sim.base_url, sim.api_key, tmp_path, timeout=0.3, max_concurrency=2) as c:
            return len(await c.generate("Hello?", n_samples=12))

    assert asyncio.run(main()) == 12
