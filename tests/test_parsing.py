"""Parsing completions bodies: the fixtures in tests/data/fixtures, synthetic server behaviours and malformed bodies."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from _helpers import (
    R1_GENERATED,
    R1_PROMPT,
    char_offsets,
    completion_body,
    legacy_logprobs,
    load_json_fixture,
)
from fw_rollouts import (
    FwResponse,
    Logprobs,
    MalformedResponseError,
    MissingLogprobsError,
    ResponseError,
    Usage,
)
from fw_rollouts._parsing import (
    ResponseSpec,
    count_prompt_tokens,
    decode_body,
    parse_completion,
    parse_logprobs,
)
from fw_rollouts._templates import split_think

LEGACY_ECHO = "fireworks/completion-legacy-logprobs-echo.json"
CONTENT_ECHO = "fireworks/completion-content-logprobs-echo.json"
LEGACY_TWO_CHOICES = "fireworks/completion-legacy-logprobs.json"
LLAMACPP_ECHO = "llamacpp/completion-echo-logprobs5.json"
LLAMACPP_PLAIN = "llamacpp/completion-logprobs5.json"

R1_PROMPT_TOKENS = [
    "<｜begin▁of▁sentence｜>",
    "<｜User｜>",
    "What",
    " is",
    " ",
    "2",
    "+",
    "2",
    "?",
    "<｜Assistant｜>",
    "<think>",
    "\n",
]
R1_GENERATED_TOKENS = ["Okay", ",", " so", " I", " need", " to", " add"]
R1_LOGPROBS = [
    None,
    -0.0012,
    -5.91,
    -1.22,
    -3.07,
    -0.41,
    -0.88,
    -0.02,
    -0.35,
    -0.0003,
    -0.0001,
    -0.0005,
    -0.21,
    -0.05,
    -0.33,
    -0.02,
    -0.64,
    -0.01,
    -1.07,
]
R1_OFFSETS = [0, 21, 29, 33, 36, 37, 38, 39, 40, 41, 54, 61, 62, 66, 67, 70, 72, 77, 80]
R1_IDS = [151646, 151644, 3838, 374, 220, 17, 10, 17, 30, 151645, 151648, 198, 32313, 11, 773, 358, 1184, 311, 912]

ECHO_SPEC = ResponseSpec(prompt=R1_PROMPT, echo=True, logprobs=True, split_reasoning=split_think)


def parse_one(body: dict[str, Any], spec: ResponseSpec, seed: int | None = 0) -> FwResponse:
    responses = parse_completion(body, spec, [seed])
    assert len(responses) == 1
    return responses[0]


def logprobs_of(response: FwResponse) -> Logprobs:
    assert response.logprobs is not None
    return response.logprobs


# -- Fireworks echo fixtures (legacy and content shapes) ----------------------------------------


class TestFireworksEchoFixtures:
    @pytest.fixture(params=[LEGACY_ECHO, CONTENT_ECHO], ids=["legacy", "content"])
    def response(self, request: pytest.FixtureRequest) -> FwResponse:
        return parse_one(load_json_fixture(request.param), ECHO_SPEC, seed=7)

    def test_prompt_string_is_exactly_what_the_fixtures_echo(self) -> None:
        body = load_json_fixture(LEGACY_ECHO)
        assert "".join(body["choices"][0]["logprobs"]["tokens"][:12]) == R1_PROMPT
        assert len(R1_PROMPT) == 62

    def test_columns_of_every_position(self, response: FwResponse) -> None:
        lp = logprobs_of(response)
        assert lp.tokens == R1_PROMPT_TOKENS + R1_GENERATED_TOKENS
        assert lp.token_logprobs == R1_LOGPROBS
        assert lp.text_offset == R1_OFFSETS
        assert lp.token_ids == R1_IDS
        assert len(lp) == 19

    def test_legacy_and_content_shapes_give_the_same_logprobs(self) -> None:
        legacy = logprobs_of(parse_one(load_json_fixture(LEGACY_ECHO), ECHO_SPEC))
        content = logprobs_of(parse_one(load_json_fixture(CONTENT_ECHO), ECHO_SPEC))
        for column in ("tokens", "token_logprobs", "text_offset", "token_ids"):
            assert legacy[column] == content[column], column
        assert legacy.num_prompt_tokens == content.num_prompt_tokens == 12
        # The fixtures carry different alternatives (3 legacy, 2 content); the sampled token's entry agrees.
        tokens = legacy.tokens
        for i, (lt, ct) in enumerate(zip(legacy.top_logprobs[1:], content.top_logprobs[1:], strict=True), 1):
            assert lt is not None and ct is not None
            assert lt[tokens[i]] == ct[tokens[i]] == R1_LOGPROBS[i]
        assert content.top_logprobs[1] == {"<｜User｜>": -0.0012, "Hello": -1.3012000000000001}
        assert legacy.top_logprobs[12] == {"Okay": -0.21, "Alright": -1.11, " we": -1.91}

    def test_echo_splits_at_the_exact_prompt_string(self, response: FwResponse) -> None:
        lp = logprobs_of(response)
        assert lp.num_prompt_tokens == 12
        assert lp.prompt_length == len(R1_PROMPT)
        assert lp.echo is True
        prompt = lp.get_prompt_logprobs()
        generation = lp.get_generation_logprobs()
        assert "".join(prompt.tokens) == R1_PROMPT
        assert prompt.tokens == R1_PROMPT_TOKENS
        assert generation.tokens == R1_GENERATED_TOKENS
        assert generation.token_logprobs == [-0.21, -0.05, -0.33, -0.02, -0.64, -0.01, -1.07]
        assert generation.text_offset[0] == len(R1_PROMPT) == 62
        assert generation.token_ids == R1_IDS[12:]
        assert generation.num_prompt_tokens == 0
        assert response.usage == Usage(prompt_tokens=12, completion_tokens=7, total_tokens=19, cached_tokens=0)
        assert len(generation) == response.usage.completion_tokens
        assert len(prompt) == response.usage.prompt_tokens

    def test_first_echoed_position_has_no_logprob_and_no_alternatives(self, response: FwResponse) -> None:
        lp = logprobs_of(response)
        assert lp.token_logprobs[0] is None
        assert lp.top_logprobs[0] is None
        assert lp.token_logprobs[1] == -0.0012
        first = next(iter(lp))
        assert first.logprob is None and first.top_logprobs is None
        assert first.token == "<｜begin▁of▁sentence｜>" and first.token_id == 151646
        # The undefined first position is left out of the prompt's total.
        assert lp.get_prompt_logprobs().sum() == pytest.approx(sum(v for v in R1_LOGPROBS[1:12] if v is not None))

    def test_content_shape_first_position_number_is_dropped(self) -> None:
        body = load_json_fixture(CONTENT_ECHO)
        first = body["choices"][0]["logprobs"]["content"][0]
        assert first["logprob"] == 0.0  # the server sent a meaningless number here
        assert first["top_logprobs"] == []
        lp = logprobs_of(parse_one(body, ECHO_SPEC))
        assert lp.token_logprobs[0] is None
        assert lp.top_logprobs[0] is None
        assert lp.sampling_logprobs is not None
        assert lp.sampling_logprobs[0] is None
        assert lp.sampling_logprobs[1:] == R1_LOGPROBS[1:]

    def test_content_shape_first_position_dropped_even_when_server_sends_numbers_everywhere(self) -> None:
        body = load_json_fixture(CONTENT_ECHO)
        first = body["choices"][0]["logprobs"]["content"][0]
        first["logprob"] = -3.5
        first["sampling_logprob"] = -3.5
        first["top_logprobs"] = [{"token": first["token"], "logprob": -3.5, "token_id": 151646}]
        lp = logprobs_of(parse_one(body, ECHO_SPEC))
        assert lp.token_logprobs[0] is None
        assert lp.top_logprobs[0] is None
        assert lp.sampling_logprobs is not None and lp.sampling_logprobs[0] is None

    def test_the_content_shape_keeps_the_alternatives_ids(self) -> None:
        body = load_json_fixture(CONTENT_ECHO)
        entries = body["choices"][0]["logprobs"]["content"]
        lp = logprobs_of(parse_one(body, ECHO_SPEC))
        assert lp.top_token_ids is not None
        assert lp.top_token_ids[0] is None  # the first echoed position has no alternatives
        for entry, ids, top in zip(entries[1:], lp.top_token_ids[1:], lp.top_logprobs[1:], strict=True):
            assert ids == {alt["token"]: alt["token_id"] for alt in entry["top_logprobs"]}
            assert top is not None and ids is not None and list(ids) == list(top)
        assert lp.top_token_ids[1] == {"<｜User｜>": 151644, "Hello": 9707}
        generation = lp.get_generation_logprobs()
        assert generation.top_token_ids == lp.top_token_ids[12:]
        assert lp.get_prompt_logprobs().top_token_ids == lp.top_token_ids[:12]
        # The legacy shape sends the chosen tokens' ids only.
        assert logprobs_of(parse_one(load_json_fixture(LEGACY_ECHO), ECHO_SPEC)).top_token_ids is None

    def test_an_alternative_without_its_id_leaves_the_column_out(self) -> None:
        body = load_json_fixture(CONTENT_ECHO)
        del body["choices"][0]["logprobs"]["content"][5]["top_logprobs"][1]["token_id"]
        lp = logprobs_of(parse_one(body, ECHO_SPEC))
        assert lp.top_token_ids is None and lp.token_ids == R1_IDS

    @pytest.mark.parametrize("bad", ["9707", -1, 1.5, True])
    def test_an_alternative_id_that_is_no_token_id_is_malformed(self, bad: Any) -> None:
        body = load_json_fixture(CONTENT_ECHO)
        body["choices"][0]["logprobs"]["content"][5]["top_logprobs"][1]["token_id"] = bad
        with pytest.raises(MalformedResponseError, match="token_id"):
            parse_one(body, ECHO_SPEC)

    def test_r1_text_split_open_think_is_all_reasoning(self, response: FwResponse) -> None:
        assert response.full == R1_GENERATED
        assert response.reasoning == R1_GENERATED
        assert response.content == ""
        assert response.completed_reasoning is False

    def test_generated_text_never_contains_the_echoed_prompt(self, response: FwResponse) -> None:
        assert R1_PROMPT not in response.full
        assert "<｜User｜>" not in response.full
        assert "<think>" not in response.full
        assert response.text == R1_GENERATED
        assert response.full_text == R1_PROMPT + R1_GENERATED

    def test_metadata(self, response: FwResponse) -> None:
        assert response.seed == 7
        assert response.model == "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b"
        assert response.finish_reason == "length"
        assert response.echo is True
        assert response.prompt == R1_PROMPT
        assert response.index == 0
        assert response.cached is False
        assert response.created in (1795500000, 1795500002)
        assert response.response_id in ("9b1f6a2e-3c57-4c1e-9c4e-2f0e8a1d7b21", "5f0e1d2c-3b4a-4958-8776-655443322110")

    def test_echo_requested_but_prompt_parsed_without_echo_keeps_every_position(self) -> None:
        spec = ResponseSpec(prompt=R1_PROMPT, echo=False, logprobs=True)
        response = parse_one(load_json_fixture(LEGACY_ECHO), spec)
        lp = logprobs_of(response)
        assert lp.num_prompt_tokens == 0
        assert lp.echo is False
        assert lp.get_generation_logprobs().tokens == R1_PROMPT_TOKENS + R1_GENERATED_TOKENS


# -- llama.cpp fixtures --------------------------------------------------------------------------


LLAMA_ECHO_SPEC = ResponseSpec(prompt="Hello world", echo=True, logprobs=True)


class TestLlamaCppFixtures:
    def test_echo_has_six_prompt_tokens_and_no_bos(self) -> None:
        response = parse_one(load_json_fixture(LLAMACPP_ECHO), LLAMA_ECHO_SPEC)
        lp = logprobs_of(response)
        assert lp.num_prompt_tokens == 6
        assert lp.get_prompt_logprobs().tokens == ["H", "el", "lo", " wor", "l", "d"]
        assert "".join(lp.get_prompt_logprobs().tokens) == "Hello world"
        assert not any(t in ("<s>", "") for t in lp.tokens)  # no BOS token is echoed
        assert response.usage.prompt_tokens == 6
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert lp.token_logprobs[1] == -23.285741806030273

    def test_echo_generated_text_is_vcode(self) -> None:
        response = parse_one(load_json_fixture(LLAMACPP_ECHO), LLAMA_ECHO_SPEC)
        assert response.full == " Vcode"
        assert response.content == " Vcode"
        assert response.completed_reasoning is None
        assert response.full_text == "Hello world Vcode"

    def test_echo_logprobs_lack_the_last_generated_token_code(self) -> None:
        # llama.cpp quirk: with echo, the logprob arrays stop one token short of the generated text.
        response = parse_one(load_json_fixture(LLAMACPP_ECHO), LLAMA_ECHO_SPEC)
        lp = logprobs_of(response)
        generation = lp.get_generation_logprobs()
        assert generation.tokens == [" V"]
        assert "code" not in lp.tokens
        assert response.usage.completion_tokens == 2
        assert len(generation) == response.usage.completion_tokens - 1
        assert generation.token_logprobs == [-15.182501792907715]
        assert generation.text_offset == [11]

    def test_non_echo_preserves_text_offset_starting_at_11(self) -> None:
        response = parse_one(load_json_fixture(LLAMACPP_PLAIN), ResponseSpec(prompt="Hello world", logprobs=True))
        lp = logprobs_of(response)
        assert lp.text_offset == [11, 13, 17, 18]
        assert lp.get_generation_logprobs().text_offset == [11, 13, 17, 18]
        assert lp.num_prompt_tokens == 0
        assert lp.tokens == [" V", "code", "v", " elif"]
        assert lp.token_logprobs[0] == -1.4668101072311401  # nothing None'd without echo
        assert lp.top_logprobs[0] == {" V": -1.4668101072311401, "ract": -1.8663824796676636}
        assert lp.token_ids is None
        assert response.full == " Vcodev elif"
        assert response.usage == Usage(6, 4, 10, None)


# -- several choices -------------------------------------------------------------------------------


class TestSeveralChoices:
    SPEC = ResponseSpec(prompt=R1_PROMPT, logprobs=True, split_reasoning=split_think)

    def test_per_choice_usage_and_seeds_by_index(self) -> None:
        first, second = parse_completion(load_json_fixture(LEGACY_TWO_CHOICES), self.SPEC, [10, 11])
        assert (first.index, first.seed, second.index, second.seed) == (0, 10, 1, 11)
        assert first.full == R1_GENERATED and first.finish_reason == "length"
        assert second.full == "Alright" and second.finish_reason == "stop"
        assert first.usage == Usage(prompt_tokens=12, completion_tokens=7, total_tokens=19)
        assert second.usage == Usage(prompt_tokens=12, completion_tokens=1, total_tokens=13)
        assert first.usage.completion_tokens + second.usage.completion_tokens == 8  # the request's total
        assert logprobs_of(second).tokens == ["Alright"]
        assert logprobs_of(second).top_logprobs == [{"Alright": -1.11, "Okay": -0.21}]
        assert logprobs_of(first).text_offset == [0, 4, 5, 8, 10, 15, 18]

    def test_choices_out_of_order_are_sorted_and_keep_their_seed(self) -> None:
        body = load_json_fixture(LEGACY_TWO_CHOICES)
        body["choices"].reverse()
        first, second = parse_completion(body, self.SPEC, [10, 11])
        assert (first.index, first.seed, first.full) == (0, 10, R1_GENERATED)
        assert (second.index, second.seed, second.full) == (1, 11, "Alright")

    @pytest.mark.parametrize("seeds", [[5], [5, 6, 7]], ids=["more than asked", "fewer than asked"])
    def test_a_number_of_choices_other_than_n_is_malformed(self, seeds: list[int]) -> None:
        with pytest.raises(MalformedResponseError, match=f"asked for n={len(seeds)} choices, the response has 2"):
            parse_completion(load_json_fixture(LEGACY_TWO_CHOICES), self.SPEC, seeds)

    def test_per_request_completion_count_does_not_hide_an_echo(self) -> None:
        # Two echoed choices for a 2-token prompt whose byte-level tokens do not spell it: the request's
        # completion count (8) exceeds each choice's length, which must not be read as "nothing was echoed".
        lp_a = legacy_logprobs(["h", "Ã©", " a", " b"], [None, -1.0, -2.0, -3.0], text_offset=[0, 1, 2, 4])
        lp_b = legacy_logprobs(["h", "Ã©", " c"], [None, -1.0, -4.0], text_offset=[0, 1, 2])
        body = {
            "choices": [
                {"index": 0, "text": "hé a b", "finish_reason": "length", "logprobs": lp_a},
                {"index": 1, "text": "hé c", "finish_reason": "length", "logprobs": lp_b},
            ],
            "usage": {"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10},
        }
        spec = ResponseSpec(prompt="hé", echo=True, logprobs=True)
        a, b = parse_completion(body, spec, [0, 1])
        assert logprobs_of(a).num_prompt_tokens == 2 and a.full == " a b"
        assert logprobs_of(b).num_prompt_tokens == 2 and b.full == " c"
        assert a.usage == Usage(2, 2, 4) and b.usage == Usage(2, 1, 3)


# -- synthetic server behaviours ---------------------------------------------------------------------

HELLO = "Hello world"


class TestEchoVariants:
    SPEC = ResponseSpec(prompt=HELLO, echo=True, logprobs=True)

    @pytest.mark.parametrize("text", ["!", "Hello world!"], ids=["text-without-prompt", "text-with-prompt"])
    def test_text_with_or_without_the_prompt_prepended(self, text: str) -> None:
        tokens = ["Hel", "lo", " wor", "ld", "!"]
        lp = legacy_logprobs(tokens, [None, -1.0, -2.0, -3.0, -0.5], text_offset=char_offsets(tokens))
        response = parse_one(completion_body(text, lp), self.SPEC)
        assert response.full == "!"
        assert logprobs_of(response).num_prompt_tokens == 4
        assert logprobs_of(response).get_generation_logprobs().tokens == ["!"]

    @pytest.mark.parametrize("text", ["Hello world!", "<s>Hello world!"], ids=["bos-not-in-text", "bos-in-text"])
    def test_extra_bos_echoed_ahead_of_the_prompt(self, text: str) -> None:
        tokens = ["<s>", "Hel", "lo", " wor", "ld", "!"]
        lp = legacy_logprobs(tokens, [None, -1.0, -2.0, -3.0, -4.0, -0.5], text_offset=[0, 0, 3, 5, 9, 11])
        response = parse_one(completion_body(text, lp), self.SPEC)
        lp_out = logprobs_of(response)
        assert response.full == "!"
        assert lp_out.num_prompt_tokens == 5
        assert lp_out.get_prompt_logprobs().tokens == ["<s>", "Hel", "lo", " wor", "ld"]
        # The BOS is the context-free position; the first prompt-text token keeps its logprob.
        assert lp_out.token_logprobs == [None, -1.0, -2.0, -3.0, -4.0, -0.5]
        assert lp_out.get_generation_logprobs().token_logprobs == [-0.5]

    def test_two_leading_special_tokens(self) -> None:
        tokens = ["<s>", "<s>", "Hello", " world", "!"]
        lp = legacy_logprobs(tokens, [None, -9.0, -1.0, -2.0, -0.5])
        response = parse_one(completion_body("Hello world!", lp), self.SPEC)
        assert logprobs_of(response).num_prompt_tokens == 4
        assert response.full == "!"

    def test_bos_echoed_with_a_logprob_is_still_none(self) -> None:
        tokens = ["<s>", "Hello", " world", "!"]
        lp = legacy_logprobs(tokens, [-0.7, -1.0, -2.0, -0.5])
        lp_out = logprobs_of(parse_one(completion_body("Hello world!", lp), self.SPEC))
        assert lp_out.token_logprobs == [None, -1.0, -2.0, -0.5]

    def test_server_that_ignores_echo_entirely(self) -> None:
        # A generated token starts at offset 11 == len(prompt); the usage shows nothing was echoed.
        tokens = [" The", " answer", " is", " 4", "."]
        assert char_offsets(tokens)[2] == len(HELLO)
        lp = legacy_logprobs(tokens, [-1.0, -2.0, -3.0, -4.0, -0.5], text_offset=char_offsets(tokens))
        usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
        response = parse_one(completion_body(" The answer is 4.", lp, usage=usage), self.SPEC)
        lp_out = logprobs_of(response)
        assert lp_out.num_prompt_tokens == 0
        assert lp_out.echo is False
        assert lp_out.token_logprobs == [-1.0, -2.0, -3.0, -4.0, -0.5]  # nothing None'd
        assert response.full == " The answer is 4."
        assert lp_out.get_generation_logprobs().tokens == tokens

    def test_server_that_ignores_echo_with_offsets_after_the_prompt(self) -> None:
        tokens = [" V", "code"]
        lp = legacy_logprobs(tokens, [-1.5, -0.4], text_offset=char_offsets(tokens, start=len(HELLO)))
        response = parse_one(completion_body(" Vcode", lp), self.SPEC)
        assert logprobs_of(response).num_prompt_tokens == 0
        assert logprobs_of(response).token_logprobs == [-1.5, -0.4]
        assert response.full == " Vcode"

    def test_server_that_ignores_echo_without_offsets_or_usage(self) -> None:
        lp = legacy_logprobs([" Hi"], [-1.5])
        response = parse_one(completion_body(" Hi", lp), self.SPEC)
        assert logprobs_of(response).num_prompt_tokens == 0
        assert logprobs_of(response).token_logprobs == [-1.5]


NON_ASCII = "héllo wörld"
# GPT-2 style byte-level pieces: their texts do not spell the prompt.
BYTE_PIECES = ["h", "Ã©", "llo", "Ġw", "Ã¶", "r", "l", "d"]


class TestByteLevelTokens:
    SPEC = ResponseSpec(prompt=NON_ASCII, echo=True, logprobs=True)

    def test_prompt_has_more_bytes_than_chars(self) -> None:
        assert (len(NON_ASCII), len(NON_ASCII.encode("utf-8"))) == (11, 13)
        assert "".join(BYTE_PIECES) != NON_ASCII

    def test_text_offset_in_characters(self) -> None:
        offsets = [0, 1, 2, 5, 7, 8, 9, 10, 11]
        lp = legacy_logprobs([*BYTE_PIECES, "!"], [None] + [-1.0] * 8, text_offset=offsets)
        response = parse_one(completion_body(NON_ASCII + "!", lp), self.SPEC)
        assert logprobs_of(response).num_prompt_tokens == 8
        assert logprobs_of(response).get_generation_logprobs().tokens == ["!"]
        assert response.full == "!"

    def test_text_offset_in_utf8_bytes(self) -> None:
        offsets = [0, 1, 3, 6, 8, 10, 11, 12, 13]
        assert 11 in offsets[:8]  # a prompt token starts at the prompt's length in characters
        lp = legacy_logprobs([*BYTE_PIECES, "!"], [None] + [-1.0] * 8, text_offset=offsets)
        usage = {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}
        response = parse_one(completion_body(NON_ASCII + "!", lp, usage=usage), self.SPEC)
        assert logprobs_of(response).num_prompt_tokens == 8
        assert response.full == "!"

    def test_text_offset_in_utf8_bytes_without_usage(self) -> None:
        pieces = ["h", "Ã©", "llo", "Ġw", "Ã¶", "rld"]
        lp = legacy_logprobs([*pieces, "!"], [None] + [-1.0] * 6, text_offset=[0, 1, 3, 6, 7, 10, 13])
        response = parse_one(completion_body("!", lp), self.SPEC)
        assert logprobs_of(response).num_prompt_tokens == 6
        assert response.full == "!"

    def test_no_offsets_falls_back_to_usage(self) -> None:
        lp = legacy_logprobs([*BYTE_PIECES, "!"], [None] + [-1.0] * 8)
        usage = {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}
        response = parse_one(completion_body(NON_ASCII + "!", lp, usage=usage), self.SPEC)
        assert logprobs_of(response).num_prompt_tokens == 8

    def test_count_prompt_tokens_directly(self) -> None:
        assert count_prompt_tokens(["Hel", "lo", " world", "!"], None, HELLO) == 3
        assert count_prompt_tokens(["<s>", "Hello", " world"], None, HELLO) == 3
        assert count_prompt_tokens(["Hello world!"], None, HELLO) == 0  # a token straddles the boundary
        assert count_prompt_tokens(["a", "b"], [0, 11], HELLO) == 1
        assert count_prompt_tokens(["a", "b"], None, HELLO, Usage(prompt_tokens=1, completion_tokens=1)) == 1


class TestStopAndFinish:
    def spec(self, *stop: str) -> ResponseSpec:
        return ResponseSpec(prompt="Q:", stop=stop)

    def test_stop_left_in_text_is_stripped_when_finish_reason_is_stop(self) -> None:
        response = parse_one(completion_body(" 4.\n\nQ:", finish_reason="stop"), self.spec("\n\nQ:", "###"))
        assert response.full == " 4."
        assert response.content == " 4."

    def test_stop_is_kept_when_finish_reason_is_length(self) -> None:
        response = parse_one(completion_body(" 4.\n\nQ:", finish_reason="length"), self.spec("\n\nQ:"))
        assert response.full == " 4.\n\nQ:"

    def test_text_without_the_stop_is_unchanged(self) -> None:
        response = parse_one(completion_body(" 4. Q: more", finish_reason="stop"), self.spec("Q:"))
        assert response.full == " 4. Q: more"

    def test_only_one_trailing_stop_is_stripped(self) -> None:
        response = parse_one(completion_body("a##", finish_reason="stop"), self.spec("#"))
        assert response.full == "a#"

    def test_finish_reason_error_raises_response_error(self) -> None:
        with pytest.raises(ResponseError, match="finish_reason='error'") as info:
            parse_one(completion_body("partial", finish_reason="error"), self.spec())
        assert not isinstance(info.value, MalformedResponseError)

    def test_missing_finish_reason_is_empty(self) -> None:
        assert parse_one(completion_body("x", finish_reason=None), self.spec()).finish_reason == ""


class TestMissingLogprobs:
    def test_requested_but_null_raises(self) -> None:
        with pytest.raises(MissingLogprobsError, match="logprobs were requested") as info:
            parse_one(completion_body("Hello", None), ResponseSpec(prompt="Q", logprobs=True))
        assert info.value.retryable is True

    @pytest.mark.parametrize(
        "empty",
        [{}, {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}, {"content": []}],
        ids=["empty-object", "empty-legacy", "empty-content"],
    )
    def test_requested_but_empty_raises(self, empty: dict[str, Any]) -> None:
        # An empty logprobs object for a non-empty text is as missing as null (such a sample must not be cached).
        with pytest.raises(MissingLogprobsError):
            parse_one(completion_body("Hello", empty), ResponseSpec(prompt="Q", logprobs=True))

    def test_empty_logprobs_for_empty_text_without_echo_is_fine(self) -> None:
        response = parse_one(completion_body("", {"content": []}), ResponseSpec(prompt="Q", logprobs=True))
        assert response.logprobs is not None and len(response.logprobs) == 0

    def test_requested_with_echo_but_null_raises_even_for_empty_text(self) -> None:
        with pytest.raises(MissingLogprobsError):
            parse_one(completion_body("", None), ResponseSpec(prompt="Q", echo=True, logprobs=True))

    def test_empty_generation_without_echo_is_fine(self) -> None:
        # max_tokens=0 and no echo: nothing was generated, so there is nothing to have logprobs for.
        body = completion_body("", None, usage={"prompt_tokens": 3})
        response = parse_one(body, ResponseSpec(prompt="Q", logprobs=True))
        assert response.full == ""
        assert response.logprobs == Logprobs()
        assert len(logprobs_of(response)) == 0
        assert response.usage == Usage(3, 0, 3)

    def test_not_requested_and_null_is_none(self) -> None:
        response = parse_one(completion_body("Hello", None), ResponseSpec(prompt="Q"))
        assert response.logprobs is None
        assert response.get_generation_logprobs() is None

    def test_null_text_is_empty(self) -> None:
        body = completion_body("x")
        body["choices"][0]["text"] = None
        assert parse_one(body, ResponseSpec(prompt="Q")).full == ""


class TestMalformedBodies:
    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b"<html>502 Bad Gateway</html>", r"not valid JSON.*502 Bad Gateway"),
            ("", "not valid JSON"),
            (b"\xff\xfe\x00", "not valid JSON"),
            ("[1, 2]", "JSON list, not an object"),
            ('"text"', "JSON str, not an object"),
            ("null", "JSON NoneType, not an object"),
        ],
    )
    def test_decode_body(self, content: bytes | str, message: str) -> None:
        with pytest.raises(MalformedResponseError, match=message):
            decode_body(content)

    def test_decode_body_returns_the_object(self) -> None:
        assert decode_body(b'{"choices": []}') == {"choices": []}

    @pytest.mark.parametrize(
        "body",
        [{}, {"choices": []}, {"choices": None}, {"choices": "text"}, {"choices": {"0": {}}}],
        ids=["missing", "empty", "null", "string", "dict"],
    )
    def test_no_usable_choices(self, body: dict[str, Any]) -> None:
        with pytest.raises(MalformedResponseError, match="no choices"):
            parse_completion(body, ResponseSpec(prompt="Q"), [0])

    def test_choice_not_an_object(self) -> None:
        with pytest.raises(MalformedResponseError, match="choice 0 is not an object"):
            parse_completion({"choices": ["text"]}, ResponseSpec(prompt="Q"), [0])

    @pytest.mark.parametrize("text", [5, ["a"], {"a": 1}])
    def test_text_not_a_string(self, text: Any) -> None:
        body = completion_body("x")
        body["choices"][0]["text"] = text
        with pytest.raises(MalformedResponseError, match=f"text is a {type(text).__name__}, not a string"):
            parse_one(body, ResponseSpec(prompt="Q"))

    @pytest.mark.parametrize(
        ("logprobs", "message"),
        [
            ([1, 2], "logprobs is a list, not an object"),
            ("abc", "logprobs is a str, not an object"),
            ({"tokens": ["a", "b"], "token_logprobs": [-1.0]}, "documented shape"),
            ({"tokens": [1, 2], "token_logprobs": [-1.0, -2.0]}, "documented shape"),
            ({"tokens": ["a"], "token_logprobs": ["x"]}, "documented shape"),
            ({"tokens": ["a"], "token_logprobs": [-1.0], "top_logprobs": [5]}, "documented shape"),
            ({"tokens": ["a"], "token_logprobs": [-1.0], "top_logprobs": [{"a": "x"}]}, "documented shape"),
            ({"tokens": ["a"], "token_logprobs": [-1.0], "top_logprobs": [{"a": -1.0}, {"b": -1.0}]}, "documented"),
            ({"tokens": ["a"], "token_logprobs": [-1.0], "token_ids": ["x"]}, "documented shape"),
            ({"tokens": ["a"], "token_logprobs": [-1.0], "token_ids": [1, 2]}, "documented shape"),
            ({"tokens": ["a"], "token_logprobs": [-1.0], "text_offset": ["x"]}, "documented shape"),
            ({"content": [{"logprob": -1.0}]}, "documented shape"),
            ({"content": "abc"}, "documented shape"),
            ({"content": [{"token": 5, "logprob": -1.0}]}, "documented shape"),
            ({"content": [{"token": "a", "logprob": -1.0, "top_logprobs": [{"token": "a"}]}]}, "documented shape"),
        ],
    )
    def test_logprobs_of_the_wrong_shape(self, logprobs: Any, message: str) -> None:
        with pytest.raises(MalformedResponseError, match=message):
            parse_one(completion_body("a", logprobs), ResponseSpec(prompt="Q", logprobs=True))

    def test_parse_logprobs_rejects_non_mapping(self) -> None:
        with pytest.raises(MalformedResponseError, match="not an object"):
            parse_logprobs(None)

    def test_missing_usage_is_zero(self) -> None:
        response = parse_one(completion_body("x"), ResponseSpec(prompt="Q"))
        assert response.usage == Usage(0, 0, 0, None)

    def test_usage_total_derived_when_missing(self) -> None:
        body = completion_body("x", usage={"prompt_tokens": 4, "completion_tokens": None, "total_tokens": None})
        assert parse_one(body, ResponseSpec(prompt="Q")).usage == Usage(4, 0, 4, None)


class TestParseLogprobs:
    def test_content_shape_without_offsets_derives_them(self) -> None:
        raw = {
            "content": [
                {"token": "Hel", "logprob": -1.0, "token_id": 1, "top_logprobs": []},
                {"token": "lo", "logprob": -2.0, "token_id": 2, "top_logprobs": []},
            ]
        }
        lp = parse_logprobs(raw)
        assert lp.text_offset == [0, 3]
        assert lp.token_ids == [1, 2]
        assert lp.sampling_logprobs is None
        assert lp.top_logprobs == [{}, {}]

    def test_content_shape_with_partial_ids_drops_ids(self) -> None:
        raw = {"content": [{"token": "a", "logprob": -1.0, "token_id": 1}, {"token": "b", "logprob": -2.0}]}
        assert parse_logprobs(raw).token_ids is None

    def test_input_body_is_not_mutated(self) -> None:
        body = load_json_fixture(LEGACY_ECHO)
        before = copy.deepcopy(body)
        parse_one(body, ECHO_SPEC)
        assert body == before

    def test_empty_logprobs_object(self) -> None:
        lp = parse_logprobs({}, prompt="Q")
        assert len(lp) == 0 and lp.num_prompt_tokens == 0
