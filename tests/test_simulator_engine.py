"""Unit tests of the simulator's pure parts: tokenizer, toy model, validation, fault replies (no sockets)."""

from __future__ import annotations

import json
import random
import struct
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from _helpers import load_json_fixture
from fw_rollouts.testing import DEFAULT_RANDOM_KINDS, Fault, FaultPlan, tokenize
from fw_rollouts.testing._config import Config
from fw_rollouts.testing._engine import Engine
from fw_rollouts.testing._model import Sampling, generate, walk_prompt
from fw_rollouts.testing._tokenizer import SPECIAL_IDS, decode_id, token_id

R1_MODEL = "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b"
R1_PROMPT = "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"
AUTH = {"authorization": "Bearer sim-key"}


def fixture(name: str) -> Any:
    return load_json_fixture(f"fireworks/{name}")


def is_float32(x: float) -> bool:
    return bool(struct.unpack("f", struct.pack("f", x))[0] == x)


# -- tokenizer ----------------------------------------------------------------------------------------


def test_tokenizer_splits_the_r1_prompt_like_the_fixture() -> None:
    texts, ids = tokenize(R1_PROMPT)
    legacy = fixture("completion-legacy-logprobs-echo.json")["choices"][0]["logprobs"]
    assert list(texts) == legacy["tokens"][:12]
    for t, i in zip(texts, ids, strict=True):
        if t in SPECIAL_IDS:
            assert i == SPECIAL_IDS[t]
    assert ids[0] == 151646 and ids[-2] == 151648  # begin_of_sentence, <think>


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Hello  world\n\nOkay, café 東京大学の数学科学研究所です 🙂👍🏽 internationalization_x",
        "<|start|>assistant<|channel|>analysis<|message|>We think.<|end|>",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
        "   leading and trailing   \t\r\n",
        "naïve résumé — “quotes” ‘single’ … e\u0301 (combining) \U0001f469\u200d\U0001f4bb",
        "<think><think></think>|<|not special|>",
    ],
)
def test_tokenizer_round_trips(text: str) -> None:
    texts, ids = tokenize(text)
    assert "".join(texts) == text
    assert len(texts) == len(ids)
    assert all(t for t in texts)


def test_tokenizer_round_trips_random_unicode() -> None:
    rng = random.Random(7)
    alphabet = "ab Z9_ \n\t.,!?é東🙂<|>｜▁" + "".join(SPECIAL_IDS)[:40]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        assert "".join(tokenize(text)[0]) == text


def test_tokenizer_rules() -> None:
    texts, _ = tokenize("Hi  there 123 supercalifragilistic!\n\nOk")
    assert texts == ("Hi", " ", " there", " ", "1", "2", "3", " superc", "alifra", "gilist", "ic", "!", "\n\n", "Ok")
    assert tokenize("<think>")[0] == ("<think>",)
    assert tokenize("<｜User｜>x<|eot_id|>")[0] == ("<｜User｜>", "x", "<|eot_id|>")


def test_token_ids_are_stable_and_decodable() -> None:
    assert token_id(" the") == token_id(" the")
    assert token_id("\n") == 10 and token_id("A") == 65
    assert 256 <= token_id(" café") < 126_256
    assert decode_id(token_id(" café")) == " café"
    assert decode_id(SPECIAL_IDS["<|return|>"]) == "<|return|>"
    assert decode_id(199_000) == "<tok_199000>"


# -- toy model ----------------------------------------------------------------------------------------


def _prompt(model: str, text: str, bos_hidden: bool = False) -> Any:
    texts, ids = tokenize(text)
    return walk_prompt(model, texts, ids, text, bos_hidden)


def test_generation_is_deterministic_and_seed_dependent() -> None:
    p = _prompt(R1_MODEL, R1_PROMPT)
    sp = Sampling(1.0, 0, 1.0, 0.0)
    a = generate(p, seed_key=1, sampling=sp, max_tokens=40)
    b = generate(p, seed_key=1, sampling=sp, max_tokens=40)
    c = generate(p, seed_key=2, sampling=sp, max_tokens=40)
    assert a.text == b.text and [s.lp for s in a.steps] == [s.lp for s in b.steps]
    assert a.text != c.text
    assert "".join(s.text for s in a.steps) == a.text


def test_greedy_ignores_the_seed_and_has_zero_sampling_logprob() -> None:
    p = _prompt(R1_MODEL, R1_PROMPT)
    sp = Sampling(0.0, 0, 1.0, 0.0)
    a = generate(p, seed_key=1, sampling=sp, max_tokens=300)
    b = generate(p, seed_key=99, sampling=sp, max_tokens=300)
    assert a.text == b.text
    assert all(s.slp == 0.0 for s in a.steps)
    for s in a.steps:  # greedy takes the top candidate (or a forced token)
        assert s.dist is not None and s.tid == s.dist.ids[0]


def test_logprobs_are_float32_sorted_and_consistent() -> None:
    p = _prompt(R1_MODEL, R1_PROMPT)
    for T, top_p in ((1.0, 1.0), (0.7, 0.9), (1.5, 1.0)):
        g = generate(p, seed_key=3, sampling=Sampling(T, 0, top_p, 0.0), max_tokens=200)
        for s in g.steps:
            assert s.lp is not None and s.slp is not None and s.dist is not None
            assert s.lp <= 0 and s.slp <= 0 and is_float32(s.lp) and is_float32(s.slp)
            assert list(s.dist.lps) == sorted(s.dist.lps, reverse=True)
            assert len(set(s.dist.ids)) == len(s.dist.ids) == 6
            if s.tid in s.dist.ids:
                assert s.dist.lps[s.dist.ids.index(s.tid)] == s.lp
            else:  # a tail token ranks below every candidate
                assert s.lp < s.dist.lps[-1]
            if T == 1.0 and top_p == 1.0:
                assert s.slp == s.lp


@pytest.mark.parametrize(
    ("model", "prompt"),
    [
        (R1_MODEL, R1_PROMPT),
        ("accounts/fireworks/models/gpt-oss-20b", "<|start|>user<|message|>Hi<|end|><|start|>assistant"),
    ],
)
def test_scoring_a_generation_reproduces_its_logprobs(model: str, prompt: str) -> None:
    """Scoring prompt+completion (echo) gives every generated token the logprob it was sampled with."""
    p = _prompt(model, prompt)
    for seed in range(8):
        g = generate(p, seed_key=seed, sampling=Sampling(1.0, 0, 1.0, 0.0), max_tokens=400)
        scored = _prompt(model, prompt + g.text)
        tail = scored.steps[len(p.steps) :]
        assert [s.text for s in tail] == [s.text for s in g.steps]
        assert [s.lp for s in tail] == [s.lp for s in g.steps]


def test_reasoning_shape_r1() -> None:
    p = _prompt(R1_MODEL, R1_PROMPT)
    for seed in range(20):
        g = generate(p, seed_key=seed, sampling=Sampling(1.0, 0, 1.0, 0.0), max_tokens=400)
        assert g.finish_reason == "stop"
        reasoning, sep, answer = g.text.partition("</think>")
        assert sep and reasoning and "<think>" not in g.text
        assert answer.startswith("\n\n") and len(answer) > 2 and "<｜" not in answer


def test_reasoning_shape_harmony() -> None:
    model = "accounts/fireworks/models/gpt-oss-20b"
    head = "<|start|>user<|message|>Hi<|end|><|start|>assistant"
    for seed in range(10):
        g = generate(_prompt(model, head), seed_key=seed, sampling=Sampling(1.0, 0, 1.0, 0.0), max_tokens=400)
        assert g.finish_reason == "stop" and "<|return|>" not in g.text
        assert g.text.startswith("<|channel|>analysis<|message|>")
        analysis, sep, final = g.text.partition("<|end|><|start|>assistant<|channel|>final<|message|>")
        assert sep and len(analysis) > len("<|channel|>analysis<|message|>") and final
        assert "<|" not in final
    injected = head + "<|channel|>analysis<|message|>Let me think"
    g = generate(_prompt(model, injected), seed_key=0, sampling=Sampling(1.0, 0, 1.0, 0.0), max_tokens=400)
    assert not g.text.startswith("<|channel|>") and "<|end|><|start|>assistant<|channel|>final<|message|>" in g.text


def test_max_tokens_and_stop() -> None:
    p = _prompt(R1_MODEL, R1_PROMPT)
    sp = Sampling(1.0, 0, 1.0, 0.0)
    assert generate(p, seed_key=0, sampling=sp, max_tokens=0).finish_reason == "length"
    g = generate(p, seed_key=0, sampling=sp, max_tokens=5)
    assert len(g.steps) == 5 and g.finish_reason == "length"
    full = generate(p, seed_key=0, sampling=sp, max_tokens=400)
    cut = generate(p, seed_key=0, sampling=sp, max_tokens=400, stops=("</think>",))
    assert cut.finish_reason == "stop" and cut.text == full.text.split("</think>")[0]
    kept = generate(p, seed_key=0, sampling=sp, max_tokens=400, stops=("</think>",), stop_included=True)
    assert kept.text == cut.text + "</think>"
    # A stop string inside a token shortens that token so that the steps still spell the text.
    word = full.steps[3].text
    mid = generate(p, seed_key=0, sampling=sp, max_tokens=400, stops=(word[1:],))
    assert mid.text == full.text[: full.text.index(word[1:])]
    assert "".join(s.text for s in mid.steps) == mid.text


def test_ignore_eos_runs_to_max_tokens() -> None:
    p = _prompt("accounts/a/models/b", "Once upon a time")
    g = generate(p, seed_key=0, sampling=Sampling(0.0, 0, 1.0, 0.0), max_tokens=120, ignore_eos=True)
    assert len(g.steps) == 120 and g.finish_reason == "length"


# -- validation ---------------------------------------------------------------------------------------


def handle(body: object, cfg: Config | None = None) -> tuple[int, Any]:
    engine = Engine(cfg or Config())
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply, _ = engine.handle("POST", "/inference/v1/completions", AUTH, raw)
    return reply.status, json.loads(reply.body) if reply.body else None


def test_unknown_field_400_matches_fixture_exactly() -> None:
    status, body = handle({"model": R1_MODEL, "prompt": "x", "best_of": 2})
    assert status == 400 and body == fixture("error-400-extra-field.json")
    status, body = handle({"model": R1_MODEL, "prompt": "x", "stream": True, "stream_options": {}})
    assert status == 400 and "('body', 'stream_options')" in body["error"]["message"]


def test_422_matches_fixture_exactly() -> None:
    status, body = handle({"model": R1_MODEL, "prompt": "x", "logprobs": 6})
    assert status == 422 and body == fixture("error-422-detail.json")


@pytest.mark.parametrize(
    ("field", "value", "typ"),
    [
        ("temperature", 2.5, "value_error.number.not_le"),
        ("temperature", -0.1, "value_error.number.not_ge"),
        ("top_p", 1.5, "value_error.number.not_le"),
        ("min_p", -1, "value_error.number.not_ge"),
        ("typical_p", 2, "value_error.number.not_le"),
        ("top_k", 101, "value_error.number.not_le"),
        ("frequency_penalty", -2.5, "value_error.number.not_ge"),
        ("presence_penalty", 3, "value_error.number.not_le"),
        ("repetition_penalty", 2.1, "value_error.number.not_le"),
        ("n", 0, "value_error.number.not_ge"),
        ("n", 129, "value_error.number.not_le"),
        ("top_logprobs", 6, "value_error.number.not_le"),
        ("max_tokens", -1, "value_error.number.not_ge"),
        ("logprobs", -1, "value_error.number.not_ge"),
        ("logprobs", "5", "type_error.integer"),
        ("n", 1.5, "type_error.integer"),
        ("seed", "1", "type_error.integer"),
        ("temperature", "hot", "type_error.float"),
        ("echo", "yes", "type_error.bool"),
        ("stop", ["a", "b", "c", "d", "e"], "value_error.list.max_items"),
        ("stop", 5, "type_error.str"),
        ("context_length_exceeded_behavior", "drop", "type_error.enum"),
        ("prompt", {"a": 1}, "type_error.str"),
    ],
)
def test_422_ranges_and_types(field: str, value: object, typ: str) -> None:
    status, body = handle({"model": R1_MODEL, "prompt": "x", field: value})
    assert status == 422
    assert body["detail"][0]["loc"] == ["body", field] and body["detail"][0]["type"] == typ


def test_boundary_values_are_accepted() -> None:
    body = {
        "model": R1_MODEL, "prompt": "x", "temperature": 2, "top_p": 0, "top_k": 100, "min_p": 1, "typical_p": 0,
        "frequency_penalty": -2, "presence_penalty": 2, "repetition_penalty": 0, "n": 128, "logprobs": 5,
        "top_logprobs": 5, "max_tokens": 0, "stop": ["a", "b", "c", "d"], "seed": -3, "echo_last": 0,
        "logit_bias": {"42": -100}, "prompt_cache_max_len": 0, "user": "u", "metadata": {"k": "v"},
    }  # fmt: skip
    status, body = handle(body)
    assert status == 200 and len(body["choices"]) == 128


def test_missing_fields_and_bad_bodies() -> None:
    status, body = handle({"prompt": "x"})
    assert status == 422 and body["detail"] == [
        {"loc": ["body", "model"], "msg": "field required", "type": "value_error.missing"}
    ]
    assert handle(b"{not json")[0] == 400
    assert handle([1, 2])[0] == 422
    status, body = handle({"model": R1_MODEL, "prompt": "x", "max_tokens": 1, "max_completion_tokens": 1})
    assert status == 400 and set(body) == {"error", "request_id"} and body["error"]["param"] == "max_tokens"
    assert handle({"model": R1_MODEL, "prompt": ""})[0] == 400
    assert handle({"model": R1_MODEL, "prompt": [10**9]})[0] == 400


def test_model_names() -> None:
    ok = {"prompt": "x", "max_tokens": 1}
    assert handle({**ok, "model": "accounts/me/deployments/dep-1"})[0] == 200
    assert handle({**ok, "model": "accounts/fireworks/models/m#accounts/me/deployments/d"})[0] == 200
    for bad in ("llama", "accounts/Fireworks/models/x", "accounts/f/models/-x", "accounts/f/other/x"):
        status, body = handle({**ok, "model": bad})
        assert status == 404 and body == fixture("error-404-flat.json")
    cfg = Config(known_models=frozenset({R1_MODEL}))
    assert handle({**ok, "model": R1_MODEL}, cfg)[0] == 200
    assert handle({**ok, "model": "accounts/fireworks/models/gpt-oss-20b"}, cfg)[0] == 404


def test_reasoning_effort_none_is_rejected_on_gpt_oss() -> None:
    status, body = handle({"model": "accounts/fireworks/models/gpt-oss-20b", "prompt": "x", "reasoning_effort": "none"})
    assert status == 400 and body["error"]["message"] == "Invalid reasoning effort: none"


# -- faults (pure) ------------------------------------------------------------------------------------


def test_fault_status_reply_shapes_and_headers() -> None:
    r = Fault.status(429, retry_after="2", retry_after_ms=150, should_retry=False).reply("rid")
    headers = dict(r.headers)
    assert r.status == 429 and headers["retry-after"] == "2" and headers["retry-after-ms"] == "150"
    assert headers["x-should-retry"] == "false" and headers["x-ratelimit-over-limit"] == "yes"
    body = json.loads(r.body)
    assert set(body) == {"error", "request_id"} and body["error"]["code"] == "RESOURCE_EXHAUSTED"
    string = json.loads(Fault.status(429, shape="string").reply("rid").body)
    assert string == fixture("error-429-string.json")
    assert set(json.loads(Fault.status(404, shape="flat").reply("r").body)) == {"message", "param", "code", "type"}
    assert set(json.loads(Fault.status(422, shape="detail").reply("r").body)["detail"][0]) == {"loc", "msg", "type"}
    html = Fault.status(502, shape="html").reply("r")
    assert dict(html.headers)["content-type"] == "text/html" and b"502 Bad Gateway" in html.body
    assert Fault.status(504, shape="empty").reply("r").body == b""
    dated = dict(Fault.status(503, retry_after=timedelta(seconds=30)).reply("r").headers)["retry-after"]
    assert parsedate_to_datetime(dated).tzinfo is not None
    assert dict(Fault.status(503, retry_after=0.5).reply("r").headers)["retry-after"] == "0.5"
    with pytest.raises(ValueError):
        Fault.status(200)


def test_fault_plan_script_random_and_clear() -> None:
    plan = FaultPlan()
    plan.push(Fault.reset(), Fault.ok(), Fault.status(500))
    assert plan.pending == 3
    taken = [plan.take() for _ in range(4)]
    assert taken == [Fault.reset(), None, Fault.status(500), None]
    plan.random(0.5, kinds=[503, "reset"], seed=1)
    first = [plan.take() for _ in range(200)]
    plan.random(0.5, kinds=[503, "reset"], seed=1)
    assert [plan.take() for _ in range(200)] == first
    hits = [f for f in first if f is not None]
    assert 60 < len(hits) < 140 and {f.label for f in hits} == {"status:503", "reset"}
    plan.push(Fault.truncated())
    assert plan.take() == Fault.truncated()  # scripted faults come first
    plan.clear()
    assert all(plan.take() is None for _ in range(50))
    assert len(DEFAULT_RANDOM_KINDS) >= 10
    with pytest.raises(ValueError):
        plan.random(0.1, kinds=["explode"])


def test_memo_is_bounded_by_weight() -> None:
    from fw_rollouts.testing._memo import Memo

    memo: Memo[str, int] = Memo(10)
    memo.put("a", 1, 4)
    memo.put("b", 2, 4)
    memo.put("c", 3, 4)  # evicts "a", the oldest
    assert (memo.get("a"), memo.get("b"), memo.get("c"), len(memo)) == (None, 2, 3, 2)
    memo.put("huge", 4, 11)  # heavier than the whole budget: not kept, nothing evicted
    assert memo.get("huge") is None and len(memo) == 2


# -- chat (pure) --------------------------------------------------------------------------------------


def test_lenient_config_ignores_unknown_fields_only() -> None:
    body = {"model": R1_MODEL, "prompt": "x", "max_tokens": 1, "best_of": 2, "provider": {"order": []}}
    assert handle(body)[0] == 400
    lenient = Config(strict_fields=False)
    assert handle(body, lenient)[0] == 200
    assert handle({**body, "temperature": "hot"}, lenient)[0] == 422
    assert handle({"prompt": "x", "top_a": 1}, lenient)[0] == 422  # model is still required


def test_split_generation() -> None:
    from fw_rollouts.testing._chat import split_generation

    engine = Engine(Config())

    def spans(model: str, prompt: str, text: str) -> list[tuple[str, str]] | None:
        found = split_generation(text, engine.prompt(model, prompt).end_state)
        return None if found is None else [(kind, text[a:b]) for a, b, kind in found]

    assert spans(R1_MODEL, R1_PROMPT, "so</think>\n\n4") == [("reasoning", "so"), ("content", "\n\n4")]
    assert spans(R1_MODEL, R1_PROMPT, "so far") == [("reasoning", "so far")]
    assert spans(R1_MODEL, "<｜User｜>Hi<｜Assistant｜>", "<think>\nhm</think>ok") == [
        ("reasoning", "\nhm"),
        ("content", "ok"),
    ]
    assert spans(R1_MODEL, R1_PROMPT + "a</think>\n\n", "4") is None  # the reasoning is in the prompt
    oss = "accounts/fireworks/models/gpt-oss-20b"
    head = "<|start|>user<|message|>Hi<|end|><|start|>assistant"
    generated = "<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>answer"
    assert spans(oss, head, generated) == [("reasoning", "think"), ("content", "answer")]
    assert spans(oss, head + "<|channel|>analysis<|message|>I", " go on") == [("reasoning", " go on")]
    assert spans(oss, head + "<|channel|>final<|message|>The", " end") == [("content", " end")]
    assert spans(oss, head, "") == []
    assert spans("accounts/fireworks/models/llama-v3p1-8b-instruct", "Hi", "there") is None
