"""Every error crosses a process boundary whole: pickle round-trips, and real worker pools report the real error.

multiprocessing, ProcessPoolExecutor, Ray and joblib all send a worker's exception to the parent with pickle
(Ray through cloudpickle, which uses the same ``__reduce__``): an error that cannot be unpickled there turns a
401 into "terminated abruptly", or a ``Pool.get()`` that never returns.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import multiprocessing
import pickle
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import fw_rollouts
from _helpers import MakeClient
from fw_rollouts import (
    APIConnectionError,
    APIError,
    APIStatusError,
    AsyncFireworks,
    AuthenticationError,
    Fireworks,
    FwRollouts,
    FwRolloutsError,
    ServerError,
    ValidationError,
)
from fw_rollouts.testing import Fault, FireworksSimulator

ERROR_CLASSES = sorted(
    (obj for obj in vars(fw_rollouts).values() if inspect.isclass(obj) and issubclass(obj, FwRolloutsError)),
    key=lambda cls: cls.__name__,
)


def build(cls: type[FwRolloutsError]) -> FwRolloutsError:
    """An instance of ``cls`` with every field it has set to something other than its default."""
    if issubclass(cls, APIStatusError):
        return cls(
            "over the limit",
            status_code=429,
            request_id="req-123",
            body={"error": {"message": "over the limit", "code": "rate_limited"}},
            code="rate_limited",
            param="n",
            error_type="rate_limit_error",
            retry_after=2.5,
            should_retry=True,
            url="http://127.0.0.1:1/v1/completions",
            attempts=3,
        )
    if issubclass(cls, APIConnectionError):
        return cls("connection refused", attempts=2, connected=False)
    if issubclass(cls, APIError):
        return cls("not a completion", attempts=4)
    if issubclass(cls, ValidationError):
        return cls("temperature", 9.5, "a number from 0.0 to 2.0")
    return cls("no API key")


@pytest.fixture(scope="module")
def partial() -> FwRollouts:
    """Real samples with logprobs, to attach as an error's successes."""
    with FireworksSimulator() as sim:
        client = Fireworks("qwen-15b", base_url=sim.base_url, api_key=sim.api_key, use_cache=False,
                           progress_bar=False, max_tokens=6)  # fmt: skip
        with client:
            return client.generate("What is 2+2?", 2)


def same(a: FwRolloutsError, b: FwRolloutsError) -> None:
    assert type(a) is type(b)
    assert (a.message, str(a), repr(a), a.args) == (b.message, str(b), repr(b), b.args)
    fields = {k: v for k, v in vars(a).items() if k not in ("rollouts", "errors")}
    assert fields == {k: v for k, v in vars(b).items() if k not in ("rollouts", "errors")}
    assert {seed: (type(e), str(e)) for seed, e in a.errors.items()} == {
        seed: (type(e), str(e)) for seed, e in b.errors.items()
    }
    if a.rollouts is None:
        assert b.rollouts is None
    else:
        assert b.rollouts is not None
        assert b.rollouts.to_dict() == a.rollouts.to_dict()
        assert [r.logprobs for r in b.rollouts] == [r.logprobs for r in a.rollouts]


def test_every_exported_error_class_is_covered() -> None:
    assert len(ERROR_CLASSES) == len(fw_rollouts._exceptions.__all__) - 1  # all but status_error_class


# Protocols 2 and up: every pool uses the default (4 or 5); 0 and 1 cannot carry slotted classes at all.
@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_class_round_trips_with_every_field(
    cls: type[FwRolloutsError], protocol: int, partial: FwRollouts
) -> None:
    bare = build(cls)
    same(bare, pickle.loads(pickle.dumps(bare, protocol)))
    # With what a failed multi-sample call carries: its successes and each failed seed's own error.
    full = bare._evolve(message=bare.message + " [1 of 3 samples failed]", rollouts=partial, errors={2: build(cls)})
    restored = pickle.loads(pickle.dumps(full, protocol))
    same(full, restored)
    assert isinstance(restored, cls) and restored.errors[2] is not full.errors[2]
    same(full, copy.deepcopy(full))
    same(full, copy.copy(full))


def test_a_validation_error_about_an_unpicklable_value_still_crosses() -> None:
    lock = threading.Lock()
    error = ValidationError("logit_bias", lock, "a dict of token ids to numbers")
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is ValidationError and str(restored) == str(error)
    assert restored.argument == "logit_bias" and restored.value == repr(lock)


# -- real worker processes -------------------------------------------------------------------------------------


def _generate(base_url: str, api_key: str, cache_dir: str, n: int) -> int:
    async def go() -> int:
        options: dict[str, Any] = {"progress_bar": False, "max_tokens": 6, "max_retries": 0, "max_concurrency": 1}
        async with AsyncFireworks("qwen-15b", base_url=base_url, api_key=api_key, cache_dir=cache_dir, **options) as c:
            return len(await c.generate("What is 2+2?", n))

    return asyncio.run(go())


def _bad_argument() -> None:
    Fireworks("qwen-15b", api_key="k").generate("hi", temperature=lambda: 1)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_401_in_a_process_pool_worker_reaches_the_parent_as_itself(
    sim: FireworksSimulator, tmp_path: Path, method: str
) -> None:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method)) as pool:
        future = pool.submit(_generate, sim.base_url, "wrong-key", str(tmp_path), 1)
        with pytest.raises(AuthenticationError) as info:
            future.result(timeout=60)
        error = info.value
        assert error.status_code == 401 and error.request_id and error.url and "401" in str(error)
        # The pool survives: the worker did not die, the error was simply returned.
        assert pool.submit(_generate, sim.base_url, sim.api_key, str(tmp_path), 1).result(timeout=60) == 1
        with pytest.raises(ValidationError, match="temperature"):
            pool.submit(_bad_argument).result(timeout=60)


def test_a_partial_failure_in_a_pool_worker_brings_its_successes_back(sim: FireworksSimulator, tmp_path: Path) -> None:
    sim.faults.push(Fault.ok(), Fault.ok(), Fault.status(500, message="bad luck"))
    with multiprocessing.get_context("fork").Pool(1) as pool:
        result = pool.apply_async(_generate, (sim.base_url, sim.api_key, str(tmp_path), 4))
        with pytest.raises(ServerError) as info:
            result.get(timeout=60)  # never returned when the error could not be unpickled
    error = info.value
    assert error.status_code == 500 and "bad luck" in error.message
    assert error.rollouts is not None and len(error.rollouts) == 3
    assert all(r.logprobs is not None and len(r.logprobs) for r in error.rollouts)
    assert sorted(error.errors) == [2] and isinstance(error.errors[2], ServerError)


def test_errors_cross_with_the_pickler_a_make_client_test_uses(make_client: MakeClient) -> None:
    # The same holds for the error of a real call in this process (nothing built by hand).
    async def main() -> Any:
        async with make_client(api_key="wrong-key") as client:
            with pytest.raises(AuthenticationError) as info:
                await client.generate("hi")
            return info.value

    error = asyncio.run(main())
    same(error, pickle.loads(pickle.dumps(error)))
