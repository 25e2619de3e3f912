"""client.score and client.score_many over loopback HTTP against the simulator: scores equal the logprobs of the
same tokens generated, chat and raw prompts, one study, the cache, max_tokens=0 refused, echo_last, a span in the
middle, a boundary inside a token, bad input, the sync twins, and docs/scoring.md's example."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _helpers import MakeClient, docs_block, post_completion
from fw_rollouts import (
    AsyncFireworks,
    BadRequestError,
    Fireworks,
    FwRolloutsError,
    InvalidTypeError,
    Score,
    ValidationError,
)
from fw_rollouts.testing import Fault, FireworksSimulator

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def completions(sim: FireworksSimulator) -> list[dict[str, Any]]:
    return [r.body for r in sim.requests if r.path.endswith("/completions") and r.body is not None]


async def greedy_generation(client: AsyncFireworks, prompt: Any, **options: Any) -> tuple[list[str], list[float]]:
    """The tokens and logprobs of a greedy generation of ``prompt``."""
    (response,) = (await client.generate(prompt, temperature=0.0, max_tokens=8, **options)).responses
    generated = response.get_generation_logprobs()
    assert generated is not None
    lps = generated.token_logprobs
    assert None not in lps
    return generated.tokens, [lp for lp in lps if lp is not None]


# -- the score is the model's logprob of the same tokens -------------------------------------------------------------


async def test_a_raw_score_equals_the_logprobs_of_the_same_tokens_generated(
    make_client: MakeClient, sim: FireworksSimulator
) -> None:
    async with make_client(raw=True) as client:
        tokens, lps = await greedy_generation(client, "The answer is")
        score = await client.score("The answer is", "".join(tokens))
    assert isinstance(score, Score)
    assert list(score.tokens) == tokens and list(score.token_logprobs) == lps
    assert score.sum_logprob == sum(lps) and score.num_tokens == len(tokens)
    assert score.greedy_all is True and score.boundary_inside_token is None  # a greedy generation, spelled back
    assert score.text == "The answer is" + "".join(tokens) and score.start == len("The answer is")
    body = completions(sim)[-1]
    assert body["echo"] is True and body["temperature"] == 0.0 and body["max_tokens"] == 0
    assert body["logprobs"] == 5 and "n" not in body and "echo_last" not in body  # a short prompt: full echo
    assert score.response is not None and not score.cached


async def test_a_chat_prompt_is_rendered_as_generate_renders_it(make_client: MakeClient) -> None:
    messages = [{"role": "user", "content": "What is 2+2?"}]
    async with make_client() as client:
        tokens, lps = await greedy_generation(client, messages)
        score = await client.score(messages, "".join(tokens))
        also = await client.score("What is 2+2?", "".join(tokens))  # one user message, the same text
        rendered = client.render(messages)
        raw = await client.score(rendered, "".join(tokens), raw=True)
    assert score.text == rendered + "".join(tokens)
    assert score.text.startswith("<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n")
    assert list(score.tokens) == tokens and list(score.token_logprobs) == lps
    assert also == score and raw == score


async def test_a_span_in_the_middle_is_scored_exactly_with_the_suffix_sent(
    make_client: MakeClient, sim: FireworksSimulator
) -> None:
    prefix, span, suffix = "Tell me. The sum is", " four", " and that is all."
    async with make_client(raw=True) as client:
        score = await client.score(prefix, span, suffix)
        (echoed,) = (await client.generate(prefix + span + suffix, max_tokens=1)).responses
    assert completions(sim)[0]["prompt"] == prefix + span + suffix
    assert score.tokens == (" four",) and score.span == " four"
    lp = echoed.get_prompt_logprobs()
    assert lp is not None
    at = lp.tokens.index(" four")
    assert score.token_logprobs == (lp.token_logprobs[at],)  # the echo of the whole text, at that token


async def test_a_boundary_inside_a_token_is_reported(make_client: MakeClient) -> None:
    async with make_client(raw=True) as client:
        score = await client.score("Hello wor", "ld")
        exact = await client.score("Hello", " world")
    assert score.tokens == (" world",) and score.token_logprobs == exact.token_logprobs
    (inside,) = score.boundary_inside_token or ()
    assert (inside.boundary, inside.token, inside.chars, inside.assigned) == ("start", " world", (5, 11), "span")
    assert exact.boundary_inside_token is None


async def test_an_empty_prompt_leaves_the_first_token_unscored(make_client: MakeClient) -> None:
    async with make_client(raw=True) as client:
        score = await client.score("", "Hello world")
    assert score.unscored_token == "Hello" and score.tokens == (" world",)


async def test_a_client_with_logprobs_off_still_scores_with_one_alternative(
    make_client: MakeClient, sim: FireworksSimulator
) -> None:
    async with make_client(raw=True, logprobs=None) as client:
        score = await client.score("The answer is", " four")
        three = await client.score("The answer is", " four", logprobs=3)
    assert [b["logprobs"] for b in completions(sim)] == [1, 3]
    assert score.top_logprobs is not None and all(len(t) <= 2 for t in score.top_logprobs)
    assert three.token_logprobs == score.token_logprobs


# -- score_many: one study, the cache -------------------------------------------------------------------------------

PAIRS: list[Any] = [
    ("The answer is", " four"),
    ("Once upon a", " time", " there was"),
    {"prompt": "Roses are", "continuation": " red"},
    {"prefix": "A", "span": " b", "suffix": " c", "logprobs": 2},
    ("Then we", " check the sum again"),
]


async def test_score_many_is_one_study_with_one_bar_and_a_rerun_is_served_from_the_cache(
    make_client: MakeClient, sim: FireworksSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    async with make_client(raw=True) as client:
        scores = await client.score_many(PAIRS, progress_bar=True)
        singles = [await client.score(*p) if isinstance(p, tuple) else None for p in PAIRS]
    bar = capsys.readouterr().err
    assert len(completions(sim)) == len(PAIRS)  # one request per pair (the first went ahead alone: a new server)
    assert "4/4" in bar and "5/5" not in bar  # the study's one bar; the lone first request had none
    assert [s.span for s in scores] == [" four", " time", " red", " b", " check the sum again"]
    assert completions(sim)[3]["logprobs"] == 2
    assert [s for s in singles if s is not None] == [scores[0], scores[1], scores[4]]
    assert all(s.cached for s in singles if s is not None)  # score and score_many share the cache

    async with make_client(raw=True) as fresh:  # a new client on the same cache: nothing is sent
        again = await fresh.score_many(PAIRS)
    assert len(completions(sim)) == len(PAIRS) and again == scores and all(s.cached for s in again)
    assert fresh.usage.requests == 0 and fresh.usage.cached_samples == len(PAIRS)


async def test_a_failed_pair_does_not_lose_the_others(make_client: MakeClient) -> None:
    with FireworksSimulator(context_length=64) as small:
        pairs = [("short", " one"), ("many words " * 40, " too long"), ("short", " two")]
        async with make_client(raw=True, base_url=small.base_url) as client:
            with pytest.raises(BadRequestError, match=r"pairs\[1\]: .*1 of 3 pairs failed") as info:
                await client.score_many(pairs)
            got = await client.score_many(pairs, on_error="return")
    assert isinstance(info.value, FwRolloutsError)
    # The raised error keeps the scores that came back, as a failed generate_many keeps its items' samples.
    assert info.value.results is not None and [type(r) for r in info.value.results] == [Score, BadRequestError, Score]
    assert isinstance(got[1], BadRequestError) and "too long" in got[1].message
    assert isinstance(got[0], Score) and isinstance(got[2], Score) and got[2].span == " two"


# -- max_tokens=0 or 1 ---------------------------------------------------------------------------------------------


async def test_a_server_refusing_max_tokens_zero_gets_one_from_then_on(make_client: MakeClient) -> None:
    with FireworksSimulator(refuse_max_tokens_zero=True) as strict, FireworksSimulator() as lenient:
        async with make_client(raw=True, base_url=strict.base_url) as client:
            scores = await client.score_many(PAIRS)
            later = await client.score("The answer is", " five")
            with pytest.raises(BadRequestError, match="max_tokens"):
                await client.score("The answer is", " six", max_tokens=0)  # as given: no second guess
        async with make_client(raw=True, base_url=lenient.base_url, use_cache=False) as other:
            expected = await other.score_many(PAIRS)
    sent = [(r.body["max_tokens"] if r.body else None, r.status) for r in strict.requests]
    # The first pair went ahead alone, was refused once and sent again with 1; every later request had 1.
    assert sent == [(0, 422), (1, 200), (1, 200), (1, 200), (1, 200), (1, 200), (1, 200), (0, 422)]
    assert scores == expected and later.span == " five"  # the generated token is dropped


async def test_max_tokens_one_as_given_and_bad_values_refused(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async with make_client(raw=True) as client:
        one = await client.score("The answer is", " four", max_tokens=1)
        zero = await client.score("The answer is", " four", max_tokens=0)
        for bad in (2, -1, True, "0"):
            with pytest.raises(ValidationError, match="max_tokens"):
                await client.score("The answer is", " four", max_tokens=bad)  # type: ignore[arg-type]
    assert [b["max_tokens"] for b in completions(sim)] == [1, 0]
    assert one == zero


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda c: c.score("p", ""), "continuation"),
        (lambda c: c.score("p", 5), "continuation"),
        (lambda c: c.score("p", "x", 7), "suffix"),
        (lambda c: c.score(b"p", "x"), "prompt"),
        (lambda c: c.score("p", "x", logprobs=0), "logprobs"),
        (lambda c: c.score("p", "x", temperature=1.0), "temperature"),
        (lambda c: c.score("p", "x", echo_last=3), "echo_last"),
        (lambda c: c.score("p", "x", temperatur=0.5), "temperatur"),
        (lambda c: c.score_many([("p", "x"), ("p",)]), r"pairs\[1\]"),
        (lambda c: c.score_many([("p", "x"), {"prompt": "p"}]), r"pairs\[1\]"),
        (lambda c: c.score_many([("p", "x"), ("q", "")]), r"pairs\[1\]\.continuation"),
        (lambda c: c.score_many([]), "pairs"),
        (lambda c: c.score_many("p"), "pairs"),
        (lambda c: c.score_many([("p", "x")], on_error="ignore"), "on_error"),
    ],
)
async def test_bad_input_is_refused_before_any_request(
    make_client: MakeClient, sim: FireworksSimulator, call: Any, argument: str
) -> None:
    async with make_client(raw=True) as client:
        with pytest.raises((ValidationError, InvalidTypeError), match=argument):
            await call(client)
    assert completions(sim) == []


# -- echo_last ----------------------------------------------------------------------------------------------------

LONG_PROMPT = "".join(f"Step {i}: we add the next number to the running total and check it. " for i in range(60))


@pytest.mark.parametrize("base", ["completion", "prompt"])
@pytest.mark.parametrize("refuse_zero", [False, True], ids=["max_tokens=0", "max_tokens=1"])
async def test_echo_last_shrinks_the_reply_and_scores_the_same(
    make_client: MakeClient, base: str, refuse_zero: bool
) -> None:
    with FireworksSimulator(text_offset_base=base, refuse_max_tokens_zero=refuse_zero) as server:  # type: ignore[arg-type]
        async with make_client(raw=True, base_url=server.base_url) as client:
            score = await client.score(LONG_PROMPT, " So the total is")
            (echoed,) = (await client.generate(LONG_PROMPT + " So the total is", max_tokens=1)).responses
        body = completions(server)[-2]
        assert body["echo_last"] == len(" So the total is") + 2 and body["echo"] is True
        partial = post_completion(server, body)
        full = post_completion(server, {k: v for k, v in body.items() if k != "echo_last"})
    lp = echoed.get_prompt_logprobs()
    assert lp is not None
    k = score.num_tokens
    assert score.tokens == tuple(lp.tokens[-k:]) and score.token_logprobs == tuple(lp.token_logprobs[-k:])
    assert score.located_by == "spelling from the end"
    assert len(partial) * 20 < len(full)  # 18 positions instead of 1,075: 4.1 kB, not 220 kB


async def test_a_server_refusing_echo_last_gets_a_full_echo_from_then_on(make_client: MakeClient) -> None:
    with FireworksSimulator() as server:
        server.faults.push(Fault.status(400, message="extra fields not permitted: echo_last"))
        async with make_client(raw=True, base_url=server.base_url) as client:
            first = await client.score(LONG_PROMPT, " So the total is")
            second = await client.score(LONG_PROMPT, " and so on")
        sent = ["echo_last" in b for b in completions(server)]
    assert sent == [True, False, False]
    assert first.located_by == "spelling" and second.span == " and so on"


async def test_echo_once_is_off_under_echo_last(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async with make_client(raw=True, max_tokens=3) as client:
        rollouts = await client.generate(LONG_PROMPT, n_samples=3, echo_last=4)
    bodies = completions(sim)
    assert len(bodies) == 3 and all(b["echo"] is True and b["echo_last"] == 4 for b in bodies)
    assert len(rollouts) == 3


# -- the simulator's two switches ------------------------------------------------------------------------------


@pytest.mark.parametrize(("base", "first"), [("completion", 0), ("prompt", len("Alpha beta gamma"))])
def test_simulator_echo_last_offsets_count_from_the_echo_or_from_the_prompt(base: str, first: int) -> None:
    body = {"model": "accounts/fireworks/models/x", "prompt": "Alpha beta gamma delta", "max_tokens": 1,
            "logprobs": 1, "echo": True, "echo_last": 1}  # fmt: skip
    with FireworksSimulator(text_offset_base=base) as server:  # type: ignore[arg-type]
        lp = json.loads(post_completion(server, body))["choices"][0]["logprobs"]
    assert lp["tokens"][0] == " delta"
    assert lp["text_offset"] == [first, first + len(" delta")]  # the generated token sits at the end of the text


def test_simulator_refuse_max_tokens_zero_answers_422_naming_it() -> None:
    import http.client

    with FireworksSimulator(refuse_max_tokens_zero=True) as server:
        body = {"model": "accounts/fireworks/models/x", "prompt": "Hi", "max_tokens": 0}
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/v1/completions", json.dumps(body), {"Authorization": f"Bearer {server.api_key}"})
        reply = conn.getresponse()
        detail = json.loads(reply.read())["detail"]
        conn.close()
        assert post_completion(server, {**body, "max_tokens": 1})
    assert reply.status == 422 and detail[0]["loc"] == ["body", "max_tokens"]


# -- the sync twins, and the docs' example ---------------------------------------------------------------------


def test_the_sync_twins(sim: FireworksSimulator, tmp_path: Path) -> None:
    with Fireworks("qwen-15b", base_url=sim.base_url, api_key=sim.api_key, cache_dir=str(tmp_path), raw=True,
                   progress_bar=False) as client:  # fmt: skip
        one = client.score("The answer is", " four")
        many = client.score_many([("The answer is", " four"), ("The answer is", " five")])
    assert many[0] == one and many[1].span == " five"


def test_the_docs_example_runs(tmp_path: Path) -> None:
    """docs/scoring.md's example, run as a script: its re-run of the study is served from the cache."""
    script = tmp_path / "example.py"
    script.write_text(docs_block("scoring.md"), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert out.count("greedy ") == 3 and "(' That', ' is'," in out
    assert "boundary inside a token: start ' world' at characters (5, 11)" in out
    assert "requests=5, samples=5, cached_samples=0" in out and "requests=5, samples=5, cached_samples=3" in out


# -- a server that refuses without saying what ---------------------------------------------------------------------


async def test_a_new_server_refusing_vaguely_gets_max_tokens_one_then_a_full_echo(make_client: MakeClient) -> None:
    with FireworksSimulator() as server:
        for _ in range(2):
            server.faults.push(Fault.status(400, message="Invalid request"))
        async with make_client(raw=True, base_url=server.base_url) as client:
            first = await client.score(LONG_PROMPT, " So the total is")
            later = await client.score(LONG_PROMPT, " and so on")
        sent = [(b.get("max_tokens"), "echo_last" in b) for b in completions(server)]
    # 0 given up first, then echo_last; what was learned holds for the next score.
    assert sent == [(0, True), (1, True), (1, False), (1, False)]
    assert first.span == " So the total is" and first.num_tokens > 0 and later.span == " and so on"


async def test_a_vague_refusal_from_a_server_that_answered_before_is_the_pair_s_error(
    make_client: MakeClient,
) -> None:
    with FireworksSimulator() as server:
        async with make_client(raw=True, base_url=server.base_url) as client:
            await client.score("The answer is", " four")
            server.faults.push(Fault.status(400, message="Invalid request"))
            with pytest.raises(BadRequestError, match="Invalid request"):
                await client.score("The answer is", " five")
        assert len(completions(server)) == 2
