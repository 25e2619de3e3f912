"""Impossible replies are errors, not data: never parsed into a sample, never cached, and never the end of a call.

Pure parsing first, on both logprobs shapes of the Fireworks fixtures (legacy ``tokens/token_logprobs/
top_logprobs/text_offset`` and the ``content`` format), with and without echo; then over real loopback HTTP
with the simulator's ``Fault.body``: one bad reply among many is retried and every sample of the call comes
back, and a reply that stays bad fails only its own samples. Last, replies too large (``Fault.huge``): refused
as they stream in under ``max_response_bytes``, through both transports, with the client's memory bounded.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import random
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _helpers import R1_PROMPT, MakeClient, load_json_fixture, read_cache
from _virtual_time import VirtualTime
from fw_rollouts import (
    AsyncFireworks,
    FwResponse,
    FwRollouts,
    FwRolloutsError,
    MalformedResponseError,
    MissingLogprobsError,
    ServerError,
)
from fw_rollouts._columns import LOGPROB_TOLERANCE
from fw_rollouts._parsing import ResponseSpec, decode_body, parse_completion
from fw_rollouts._templates import split_think
from fw_rollouts._transport import ERROR_BODY_LIMIT
from fw_rollouts.testing import Fault, FireworksSimulator

LEGACY = "fireworks/completion-legacy-logprobs-echo.json"
CONTENT = "fireworks/completion-content-logprobs-echo.json"
GENERATED = 14  # a generated position of the fixtures (12 prompt tokens, 7 generated)
PROMPT_POSITION = 5  # an echoed prompt position (not the first, which has no logprob)

ECHO = ResponseSpec(prompt=R1_PROMPT, echo=True, logprobs=True, split_reasoning=split_think)
NO_ECHO = ResponseSpec(prompt=R1_PROMPT, echo=False, logprobs=True, split_reasoning=split_think)

NAN, INF = float("nan"), float("inf")
# Values no model produces, where a logprob belongs (each with the words of its error).
IMPOSSIBLE: dict[str, tuple[Any, str]] = {
    "nan": (NAN, r"is nan \(not a number\)"),
    "inf": (INF, r"is inf \(infinite\)"),
    "-inf": (-INF, r"is -inf \(infinite\)"),
    "positive": (0.5, r"is 0.5 \(positive: a probability above 1\)"),
    "just above the tolerance": (2 * LOGPROB_TOLERANCE, "positive"),
    "True": (True, "is True, not a number"),
    "False": (False, "is False, not a number"),
    "string": ("-1.5", "is '-1.5', not a number"),
    "list": ([-1.0], "is a list, not a number"),
    "object": ({"logprob": -1.0}, "is a dict, not a number"),
    "int beyond a float": (-(10**400), r"too large for a float"),
}


def fixture(name: str) -> dict[str, Any]:
    return copy.deepcopy(load_json_fixture(name))


def logprobs_of(body: dict[str, Any]) -> dict[str, Any]:
    lp: dict[str, Any] = body["choices"][0]["logprobs"]
    return lp


def parse(body: dict[str, Any], spec: ResponseSpec = ECHO, n: int = 1) -> list[FwResponse]:
    return parse_completion(body, spec, list(range(n)))


def set_logprob(body: dict[str, Any], column: str, position: int, value: Any) -> str:
    """Put ``value`` where ``column`` holds a logprob at ``position``; returns how the error names it."""
    lp = logprobs_of(body)
    if "content" in lp:
        entry = lp["content"][position]
        if column == "token_logprobs":
            entry["logprob"] = value
            return rf"content\[{position}\]\.logprob"
        if column == "sampling":
            entry["sampling_logprob"] = value
            return rf"content\[{position}\]\.sampling_logprob"
        entry["top_logprobs"][0]["logprob"] = value
        return rf"content\[{position}\]\.top_logprobs\['{entry['top_logprobs'][0]['token']}'\]"
    if column == "token_logprobs":
        lp["token_logprobs"][position] = value
        return rf"token_logprobs\[{position}\]"
    top = lp["top_logprobs"][position]
    token = next(iter(top))
    top[token] = value
    return rf"top_logprobs\[{position}\]\['{token}'\]"


# -- impossible logprobs ------------------------------------------------------------------------------------

CELLS = [
    (LEGACY, "token_logprobs"),
    (LEGACY, "top_logprobs"),
    (CONTENT, "token_logprobs"),
    (CONTENT, "sampling"),
    (CONTENT, "top_logprobs"),
]


@pytest.mark.parametrize("value", list(IMPOSSIBLE), ids=list(IMPOSSIBLE))
@pytest.mark.parametrize(("name", "column"), CELLS, ids=[f"{n.split('-')[1]}-{c}" for n, c in CELLS])
@pytest.mark.parametrize("spec", [ECHO, NO_ECHO], ids=["echo", "no echo"])
@pytest.mark.parametrize("position", [GENERATED, PROMPT_POSITION], ids=["generated", "prompt"])
def test_an_impossible_logprob_anywhere_is_a_malformed_reply(
    name: str, column: str, value: str, spec: ResponseSpec, position: int
) -> None:
    body = fixture(name)
    bad, words = IMPOSSIBLE[value]
    where = set_logprob(body, column, position, bad)
    with pytest.raises(MalformedResponseError, match=f"{where} {words}" if "is" in words[:3] else where):
        parse(body, spec)


@pytest.mark.parametrize(("name", "column"), CELLS, ids=[f"{n.split('-')[1]}-{c}" for n, c in CELLS])
def test_rounding_noise_above_zero_is_kept_and_more_is_refused(name: str, column: str) -> None:
    # log(1) = 0 computed in float32 can come back as a tiny positive number: that is data, not an error.
    body = fixture(name)
    set_logprob(body, column, GENERATED, LOGPROB_TOLERANCE / 2)
    (response,) = parse(body)
    assert response.logprobs is not None and len(response.logprobs) == 19
    if column == "token_logprobs":
        assert response.logprobs.token_logprobs[GENERATED] == LOGPROB_TOLERANCE / 2
    set_logprob(body, column, GENERATED, LOGPROB_TOLERANCE * 1.01)
    with pytest.raises(MalformedResponseError, match=r"\(positive: a probability above 1\)"):
        parse(body)


@pytest.mark.parametrize("name", [LEGACY, CONTENT], ids=["legacy", "content"])
@pytest.mark.parametrize("bad", [NAN, 3.0, True, "x"], ids=["nan", "positive", "True", "string"])
def test_the_first_echoed_position_is_no_logprob_so_it_is_not_checked(name: str, bad: Any) -> None:
    body = fixture(name)
    set_logprob(body, "token_logprobs", 0, bad)
    (response,) = parse(body, ECHO)
    assert response.logprobs is not None and response.logprobs.token_logprobs[0] is None
    with pytest.raises(MalformedResponseError, match=r"(token_logprobs|content)\[0\]"):
        parse(fixture_with(name, bad), NO_ECHO)  # without echo it is a generated token's, and checked


def fixture_with(name: str, bad: Any) -> dict[str, Any]:
    body = fixture(name)
    set_logprob(body, "token_logprobs", 0, bad)
    return body


def test_a_json_nan_literal_is_read_then_refused() -> None:
    text = json.dumps(fixture(LEGACY)).replace("-0.33", "NaN", 1)  # orjson refuses the literal, json reads it
    with pytest.raises(MalformedResponseError, match=r"token_logprobs\[14\] is nan"):
        parse(decode_body(text.encode()))


# -- columns of the wrong type ---------------------------------------------------------------------------------

LEGACY_SHAPES: dict[str, tuple[str, Any, str]] = {
    "tokens as a string": ("tokens", "".join(["a"] * 19), "tokens is a str, not a list"),
    "a token that is a number": ("tokens", [7] * 19, r"tokens\[0\] is 7, not a string"),
    "token_logprobs as an object": ("token_logprobs", {"0": -1.0}, "token_logprobs is a dict, not a list"),
    "text_offset as a string": ("text_offset", "0123", "text_offset is a str, not a list"),
    "text_offset of floats": ("text_offset", [float(i) for i in range(19)], r"text_offset\[0\] is 0.0, not an integer"),
    "text_offset of strings": ("text_offset", [str(i) for i in range(19)], r"text_offset\[0\] is '0', not an integer"),
    "text_offset of booleans": ("text_offset", [True] * 19, r"text_offset\[0\] is True, not an integer"),
    "a negative text_offset": ("text_offset", [-1, *range(1, 19)], r"text_offset\[0\] is -1, not a non-negative"),
    "token_ids of booleans": ("token_ids", [False] * 19, r"token_ids\[0\] is False, not an integer"),
    "top_logprobs as a string": ("top_logprobs", "ab", "top_logprobs is a str, not a list"),
    "an alternative list that is a list": ("top_logprobs", [None, *([["a"]] * 18)], r"top_logprobs\[1\] is a list"),
    "an alternative list that is a number": ("top_logprobs", [None, *([5] * 18)], r"top_logprobs\[1\] is 5"),
    "an alternative of null": ("top_logprobs", [None, *([{"a": None}] * 18)], r"\['a'\] is None, not a number"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(LEGACY_SHAPES))
@pytest.mark.parametrize("spec", [ECHO, NO_ECHO], ids=["echo", "no echo"])
def test_legacy_columns_of_the_wrong_type(case: str, spec: ResponseSpec) -> None:
    column, value, words = LEGACY_SHAPES[case]
    body = fixture(LEGACY)
    logprobs_of(body)[column] = value
    with pytest.raises(MalformedResponseError, match=words):
        parse(body, spec)


CONTENT_SHAPES: dict[str, tuple[str, Any, str]] = {
    "content as a string": ("", "abc", "content is a str, not a list"),
    "an entry that is a string": ("", ["x"] * 19, r"content\[0\] is 'x', not an object"),
    "a token that is a number": ("token", 5, r"content\[14\]\.token is 5, not a string"),
    "a token that is a list": ("token", ["a", "b"], r"content\[14\]\.token is a list, not a string"),
    "a text_offset that is a string": ("text_offset", "7", r"content\[14\]\.text_offset is '7', not an integer"),
    "a token_id that is a boolean": ("token_id", True, r"content\[14\]\.token_id is True, not an integer"),
    "top_logprobs as a string": ("top_logprobs", "ab", r"content\[14\]\.top_logprobs is 'ab', not a list"),
    "an alternative without its logprob": ("top_logprobs", [{"token": "a"}], r"top_logprobs\[0\] has no 'logprob'"),
    "an alternative that is a string": ("top_logprobs", ["a"], r"content\[14\]\.top_logprobs\[0\] is 'a', not an"),
    "an alternative token that is a number": ("top_logprobs", [{"token": 5, "logprob": -1.0}], r"\.token is 5, not"),
    "an alternative token that is a list": ("top_logprobs", [{"token": ["a"], "logprob": -1}], r"\.token is a list"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CONTENT_SHAPES))
@pytest.mark.parametrize("spec", [ECHO, NO_ECHO], ids=["echo", "no echo"])
def test_content_entries_of_the_wrong_type(case: str, spec: ResponseSpec) -> None:
    field, value, words = CONTENT_SHAPES[case]
    body = fixture(CONTENT)
    if field:
        logprobs_of(body)["content"][GENERATED][field] = value
    else:
        logprobs_of(body)["content"] = value
    with pytest.raises(MalformedResponseError, match=words):
        parse(body, spec)


# -- logprobs asked for but all null ---------------------------------------------------------------------------


def null_out(body: dict[str, Any], positions: range) -> None:
    lp = logprobs_of(body)
    for i in positions:
        if "content" in lp:
            lp["content"][i]["logprob"] = None
        else:
            lp["token_logprobs"][i] = None


@pytest.mark.parametrize("name", [LEGACY, CONTENT], ids=["legacy", "content"])
def test_every_generated_logprob_null_is_missing_logprobs(name: str) -> None:
    for spec, positions in ((ECHO, range(12, 19)), (NO_ECHO, range(19))):
        body = fixture(name)
        null_out(body, positions)
        with pytest.raises(MissingLogprobsError, match="every generated token is null"):
            parse(body, spec)
        parse(body, ResponseSpec(prompt=R1_PROMPT, echo=spec.echo))  # not asked for: nothing is missing


@pytest.mark.parametrize("name", [LEGACY, CONTENT], ids=["legacy", "content"])
def test_every_echoed_prompt_logprob_null_is_missing_logprobs(name: str) -> None:
    body = fixture(name)
    null_out(body, range(1, 12))
    with pytest.raises(MissingLogprobsError, match="every echoed prompt token is null"):
        parse(body, ECHO)
    some = fixture(name)
    null_out(some, range(1, 11))  # one prompt logprob left: partial nulls are the server's business
    (response,) = parse(some, ECHO)
    assert response.logprobs is not None and response.logprobs.token_logprobs[11] is not None


# -- choices ---------------------------------------------------------------------------------------------------


def two_choices() -> dict[str, Any]:
    body = load_json_fixture("fireworks/completion-legacy-logprobs.json")
    assert [c["index"] for c in body["choices"]] == [0, 1]
    return body


@pytest.mark.parametrize(
    ("indexes", "words"),
    [
        ([0, 0], "choice index 0 appears 2 times"),
        ([1, 1], "choice index 1 appears 2 times"),
        ([0, 2], "choice 1 has index 2, not an integer from 0 to 1"),
        ([0, -1], "choice 1 has index -1"),
        ([True, 0], "choice 0 has index True"),
        (["0", 1], "choice 0 has index '0'"),
        ([0.0, 1], "choice 0 has index 0.0"),
    ],
)
def test_choice_indexes_that_repeat_or_fall_outside_n(indexes: list[Any], words: str) -> None:
    body = two_choices()
    for choice, index in zip(body["choices"], indexes, strict=True):
        choice["index"] = index
    with pytest.raises(MalformedResponseError, match=words):
        parse(body, NO_ECHO, n=2)
    for choice in body["choices"]:
        del choice["index"]
    assert [r.index for r in parse(body, NO_ECHO, n=2)] == [0, 1]  # no indexes at all: in order


@pytest.mark.parametrize("n", [1, 3])
def test_a_number_of_choices_other_than_n(n: int) -> None:
    with pytest.raises(MalformedResponseError, match=f"asked for n={n} choices, the response has 2"):
        parse(two_choices(), NO_ECHO, n=n)


# -- nesting and hostile values anywhere -----------------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = -1.0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"choices":' + b"[" * 3000 + b"]" * 3000 + b"}",
    ],
    ids=["a list", "an object", "inside choices"],
)
def test_a_body_nested_beyond_reason_is_malformed_not_a_recursion_error(content: bytes) -> None:
    with pytest.raises(MalformedResponseError, match="nested too deeply"):
        decode_body(content)


HOSTILE: list[Callable[[], Any]] = [
    lambda: None, lambda: True, lambda: False, lambda: 0, lambda: -1, lambda: 2**70, lambda: -(10**400),
    lambda: NAN, lambda: INF, lambda: 0.5, lambda: "", lambda: "x", lambda: "\ud800", lambda: [], lambda: {},
    lambda: [None], lambda: [[]], lambda: {"a": None}, lambda: {"token": None}, lambda: nested(5000),
    lambda: {"x": nested(5000)},
]  # fmt: skip


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``value`` (keys and indexes)."""
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += paths(item, (*prefix, i))
    return out


@pytest.mark.parametrize("name", [LEGACY, CONTENT, "fireworks/completion-legacy-logprobs.json"])
def test_no_exception_outside_our_tree_escapes_parsing_whatever_the_body_holds(name: str) -> None:
    original = load_json_fixture(name)
    n = len(original["choices"])
    everywhere = [p for p in paths(original) if p]
    rng = random.Random(8)
    outcomes: set[str] = set()
    for _ in range(1500):
        body = copy.deepcopy(original)
        for _ in range(rng.choice((1, 1, 2, 3))):
            *parent_path, last = rng.choice(everywhere)
            parent: Any = body
            try:
                for step in parent_path:
                    parent = parent[step]
                parent[last] = rng.choice(HOSTILE)()
            except (KeyError, IndexError, TypeError):
                continue  # an earlier change replaced this path's parent
        spec = rng.choice((ECHO, NO_ECHO, ResponseSpec(prompt=R1_PROMPT)))
        try:
            responses = parse_completion(body, spec, range(n))
        except FwRolloutsError as exc:
            outcomes.add(type(exc).__name__)
        else:
            outcomes.add("parsed")
            for r in responses:
                lp = r.logprobs
                if lp is not None:  # what is accepted is data a model can produce
                    values = [v for v in lp.token_logprobs if v is not None]
                    values += [v for top in lp.top_logprobs if top for v in top.values()]
                    assert all(math.isfinite(v) and v <= LOGPROB_TOLERANCE for v in values)
                    assert all(type(t) is str for t in lp.tokens)
    assert {"parsed", "MalformedResponseError"} <= outcomes


# -- over HTTP: a bad reply never drops the other samples, and is never cached ---------------------------------


def legacy_body(logprobs: dict[str, Any], *, index: int = 0, text: str = " a b") -> dict[str, Any]:
    return {
        "id": "bad",
        "object": "text_completion",
        "created": 1,
        "model": "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b",
        "choices": [{"index": index, "text": text, "finish_reason": "length", "logprobs": logprobs}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


GOOD_LP = {"tokens": [" a", " b"], "token_logprobs": [-0.5, -1.5], "top_logprobs": [{" a": -0.5}, {" b": -1.5}]}
BAD_REPLIES: dict[str, tuple[object, int]] = {  # body, samples_per_request
    "NaN logprob": (legacy_body({**GOOD_LP, "token_logprobs": [NAN, -1.0]}), 1),
    "Infinity alternative": (legacy_body({**GOOD_LP, "top_logprobs": [{" a": -INF}, {" b": -1.5}]}), 1),
    "positive logprob": (legacy_body({**GOOD_LP, "token_logprobs": [-0.5, 2.5]}), 1),
    "booleans for numbers": (legacy_body({**GOOD_LP, "token_logprobs": [True, False]}), 1),
    "tokens as a string": (legacy_body({**GOOD_LP, "tokens": "ab"}, text="ab"), 1),  # two tokens, or two chars?
    "every logprob null": (legacy_body({**GOOD_LP, "token_logprobs": [None, None]}), 1),
    "content format NaN": (legacy_body({"content": [{"token": " a", "logprob": NAN}]}, text=" a"), 1),
    "nested beyond reason": (b'{"choices":' + b"[" * 5000 + b"]" * 5000 + b"}", 1),
    "a repeated choice index": (
        {"choices": [legacy_body(GOOD_LP)["choices"][0], legacy_body(GOOD_LP)["choices"][0]]},
        2,
    ),
    "three choices for n=2": ({"choices": [dict(legacy_body(GOOD_LP)["choices"][0], index=i) for i in range(3)]}, 2),
}


def client(make_client: MakeClient, **options: Any) -> AsyncFireworks:
    """A client of this test's simulator, one request at a time (scripted faults reach the requests in seed
    order), on virtual time."""
    settings: dict[str, Any] = {"max_tokens": 8, "max_concurrency": 1, "clock": VirtualTime(), **options}
    return make_client(**settings)


@pytest.mark.parametrize("case", list(BAD_REPLIES))
def test_one_bad_reply_among_many_is_retried_and_every_sample_comes_back(
    case: str, sim: FireworksSimulator, make_client: MakeClient, tmp_path: Path
) -> None:
    body, per_request = BAD_REPLIES[case]
    sim.faults.push(Fault.ok(), Fault.ok(), Fault.body(body))  # the third request's first attempt

    async def main() -> FwRollouts:
        async with client(make_client, samples_per_request=per_request) as c:
            return await c.generate("Count to three", n_samples=8)

    rollouts = asyncio.run(main())
    assert [r.seed for r in rollouts] == list(range(8)) and not any(r.cached for r in rollouts)
    requests = [r for r in sim.requests if r.path.endswith("/completions")]
    seeds = [r.body["seed"] for r in requests if r.body]
    assert len(requests) == 8 // per_request + 1 and seeds[2] == seeds[3]  # the bad one, sent again
    assert [r.fault for r in requests].count("body:200") == 1
    entries = read_cache(tmp_path / "cache", rollouts[0].prompt)
    assert len(entries) == 8  # every sample, from the good replies only
    for sample in entries.values():
        assert sample.logprobs is not None
        assert all(v is None or (math.isfinite(v) and v <= 0) for v in sample.logprobs.token_logprobs)
        assert sample.response_id != "bad"


@pytest.mark.parametrize("case", ["NaN logprob", "nested beyond reason", "tokens as a string"])
def test_a_reply_that_stays_bad_fails_only_its_own_sample(
    case: str, sim: FireworksSimulator, make_client: MakeClient, tmp_path: Path
) -> None:
    body, _ = BAD_REPLIES[case]
    sim.faults.push(Fault.ok(), *[Fault.body(body)] * 3)  # the second request, on all three attempts

    async def main() -> BaseException:
        async with client(make_client, max_retries=2) as c:
            with pytest.raises(MalformedResponseError) as info:
                await c.generate("Count to three", n_samples=5)
            return info.value

    error = asyncio.run(main())
    assert isinstance(error, MalformedResponseError) and error.rollouts is not None
    failed = error.errors[1]
    assert sorted(error.errors) == [1] and isinstance(failed, MalformedResponseError) and failed.attempts == 3
    assert [r.seed for r in error.rollouts] == [0, 2, 3, 4]
    assert len(read_cache(tmp_path / "cache", error.rollouts[0].prompt)) == 4


# -- a reply too large is refused as it streams in -------------------------------------------------------------

MiB = 1 << 20




def huge_record(sim: FireworksSimulator) -> Any:
    """The simulator's record of the ``Fault.huge`` reply, once the client has closed its connection."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        records = [r for r in sim.requests if r.fault == "huge"]
        if records:
            return records[-1]
        time.sleep(0.01)
    raise AssertionError("the simulator never finished the huge reply")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_max_response_bytes_is_refused_without_reading_it(
    transport_path: str, chunked: bool, sim: FireworksSimulator, make_client: MakeClient, tmp_path: Path
) -> None:
    sim.faults.push(Fault.huge(64 * MiB, chunked=chunked))

    async def main() -> tuple[MalformedResponseError, int]:
        async with client(make_client, max_response_bytes=MiB, max_retries=0) as c:
            tracemalloc.start()
            try:
                with pytest.raises(MalformedResponseError) as info:
                    await c.generate("Count to three")
                return info.value, tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    error, peak = asyncio.run(main())
    assert "max_response_bytes=1,048,576 (1 MiB)" in str(error) and "raise max_response_bytes" in str(error)
    if chunked:
        assert "bytes read, the rest was not read" in str(error)  # learnt only by reading, and stopped
    else:
        assert "it declared 67,108,864 bytes (Content-Length)" in str(error)  # refused before reading the body
    assert peak < 16 * MiB  # the client (and the simulator, in this process) held a few MiB, not 64
    record = huge_record(sim)
    assert sim.status_counts["client_closed"] == 1 and record.body_bytes < 32 * MiB  # it hung up, not drained


def test_a_huge_reply_among_many_is_retried_and_one_within_the_cap_is_read(
    transport_path: str, sim: FireworksSimulator, make_client: MakeClient, tmp_path: Path
) -> None:
    sim.faults.push(Fault.ok(), Fault.huge(64 * MiB, chunked=True), Fault.huge(MiB + MiB // 2))

    async def main() -> FwRollouts:
        async with client(make_client, max_response_bytes=2 * MiB) as c:
            return await c.generate("Count to three", n_samples=4)

    rollouts = asyncio.run(main())
    assert [r.seed for r in rollouts] == list(range(4))
    requests = [r for r in sim.requests if r.path.endswith("/completions")]
    assert [r.fault for r in requests] == [None, "huge", "huge", None, None]  # refused, retried; then 1.5 MiB read
    assert [r.body_bytes for r in requests][2] == MiB + MiB // 2
    assert len(read_cache(tmp_path / "cache", rollouts[0].prompt)) == 4


def test_an_error_body_is_read_only_up_to_a_limit(
    transport_path: str, sim: FireworksSimulator, make_client: MakeClient
) -> None:
    sim.faults.push(Fault.body(b"<html>" + b"x" * (8 * MiB), status=502, content_type="text/html"))

    async def main() -> ServerError:
        async with client(make_client, max_retries=0) as c:
            with pytest.raises(ServerError) as info:
                await c.generate("Count to three")
            return info.value

    error = asyncio.run(main())
    assert error.status_code == 502 and str(error).startswith("HTTP 502: <html>xxx")
    assert isinstance(error.body, str) and len(error.body) <= ERROR_BODY_LIMIT  # not the 8 MiB sent
