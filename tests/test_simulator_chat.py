"""The simulator's chat completions endpoint and its lenient mode, over real loopback HTTP (stdlib clients)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from fw_rollouts.testing import Fault, FireworksSimulator
from fw_rollouts.testing._chat import render_messages

R1_MODEL = "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b"
R1_PROMPT = "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"
OSS_MODEL = "accounts/fireworks/models/gpt-oss-20b"
LLAMA_MODEL = "accounts/fireworks/models/llama-v3p1-8b-instruct"
USER = [{"role": "user", "content": "What is 2+2?"}]
CHAT = "/inference/v1/chat/completions"

# What `rollouts` 0.1.11 (OpenRouter) posts for `agenerate("What is 2+2? <think>Let me", seed=0)`: the sampling
# defaults, client settings that leak into the body, OpenRouter-only fields, and a thinking prefill.
PEER_BODY: dict[str, Any] = {
    "model": R1_MODEL,
    "temperature": 0.7,
    "top_p": 0.95,
    "max_tokens": 4096,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "provider": {"order": ["fireworks"]},
    "reasoning": {"effort": "low"},
    "include_reasoning": True,
    "progress_bar": True,
    "top_a": 0.1,
    "messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "<think>Let me"}],
    "seed": 0,
}


@pytest.fixture(scope="module")
def sim() -> Iterator[FireworksSimulator]:
    with FireworksSimulator() as server:
        yield server


@pytest.fixture(scope="module")
def lenient() -> Iterator[FireworksSimulator]:
    with FireworksSimulator(strict_fields=False) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(sim: FireworksSimulator) -> None:
    sim.reset()


def post(server: FireworksSimulator, body: object, path: str = CHAT, key: str = "sim-key") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", path, payload, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def chat(server: FireworksSimulator, **body: Any) -> Any:
    body.setdefault("model", R1_MODEL)
    body.setdefault("messages", USER)
    status, data = post(server, body)
    assert status == 200, data
    return json.loads(data)


def complete(server: FireworksSimulator, **body: Any) -> Any:
    body.setdefault("model", R1_MODEL)
    status, data = post(server, body, path="/inference/v1/completions")
    assert status == 200, data
    return json.loads(data)


def sse(data: bytes) -> list[Any]:
    text = data.decode("utf-8")
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events), events
    assert events[-1] == "data: [DONE]"
    return [json.loads(e[len("data: ") :]) for e in events[:-1]]


# -- shape and equivalence with /completions -----------------------------------------------------------


def test_response_shape(sim: FireworksSimulator) -> None:
    body = chat(sim, max_tokens=400, seed=3)
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
    assert body["object"] == "chat.completion" and body["model"] == R1_MODEL and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert set(choice) == {"index", "message", "finish_reason", "logprobs"}
    assert choice["index"] == 0 and choice["finish_reason"] == "stop" and choice["logprobs"] is None
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["reasoning_content"] and message["reasoning"] == message["reasoning_content"]
    assert message["content"].startswith("\n\n") and len(message["content"]) > 2
    usage = body["usage"]
    assert usage["prompt_tokens"] == 12 and usage["total_tokens"] == 12 + usage["completion_tokens"]


@pytest.mark.parametrize("path", [CHAT, "/v1/chat/completions", "/chat/completions"])
def test_paths(sim: FireworksSimulator, path: str) -> None:
    status, data = post(sim, {"model": R1_MODEL, "messages": USER, "max_tokens": 2}, path=path)
    assert status == 200 and json.loads(data)["object"] == "chat.completion"


def test_generates_what_completions_generates_for_the_rendered_prompt(sim: FireworksSimulator) -> None:
    params = {"max_tokens": 400, "seed": 11, "temperature": 0.7, "top_p": 0.95, "n": 2, "logprobs": 5, "echo": True}
    c = chat(sim, **params)
    t = complete(sim, prompt=R1_PROMPT, **params)
    assert c["usage"] == t["usage"]
    for cc, tc in zip(c["choices"], t["choices"], strict=True):
        message = cc["message"]
        assert R1_PROMPT + message["reasoning_content"] + "</think>" + message["content"] == tc["text"]
        assert cc["finish_reason"] == tc["finish_reason"] and cc["logprobs"] == tc["logprobs"]
    # echo puts the rendered prompt in the logprobs, not in the message
    assert "".join(c["choices"][0]["logprobs"]["tokens"]).startswith(R1_PROMPT)


def test_content_logprobs_and_token_ids(sim: FireworksSimulator) -> None:
    body = chat(sim, max_tokens=20, seed=2, logprobs=True, top_logprobs=3, return_token_ids=True)
    choice = body["choices"][0]
    entries = choice["logprobs"]["content"]
    assert len(entries) == body["usage"]["completion_tokens"] == len(choice["token_ids"])
    assert all(len(e["top_logprobs"]) == 3 for e in entries)
    assert len(body["prompt_token_ids"]) == body["usage"]["prompt_tokens"] == 12
    message = choice["message"]
    assert "".join(e["token"] for e in entries) == message["reasoning_content"]  # cut inside the reasoning
    assert choice["finish_reason"] == "length" and message["content"] == ""


def test_harmony_llama_and_plain_models(sim: FireworksSimulator) -> None:
    oss = chat(sim, model=OSS_MODEL, max_tokens=400, seed=1, logprobs=1, echo=True)
    message = oss["choices"][0]["message"]
    generated = "".join(oss["choices"][0]["logprobs"]["tokens"][oss["usage"]["prompt_tokens"] :])
    assert generated == f"<|channel|>analysis<|message|>{message['reasoning']}<|end|>" + (
        f"<|start|>assistant<|channel|>final<|message|>{message['content']}"
    )
    assert message["reasoning"] and message["content"] and oss["choices"][0]["finish_reason"] == "stop"
    for model in (LLAMA_MODEL, "accounts/me/models/plain-7b"):
        body = chat(sim, model=model, max_tokens=400, seed=1)
        message = body["choices"][0]["message"]
        assert message["content"] and message["reasoning_content"] is None and "reasoning" not in message
        assert "<|" not in message["content"]


def test_rendering_follows_the_sdk_templates() -> None:
    """A chat request sees the prompt the SDK would render for /completions, so both generate the same text."""
    from fw_rollouts._templates import DeepSeekR1DistillTemplate, HarmonyTemplate, Llama31Template

    conversations: list[list[dict[str, str]]] = [
        USER,
        [*USER, {"role": "assistant", "content": "<think>Let me"}],
        [*USER, {"role": "assistant", "content": "<think>\nstep"}],
        [*USER, {"role": "assistant", "content": "The answer is"}],
        [
            {"role": "system", "content": "Be brief."},
            *USER,
            {"role": "assistant", "content": "<think>x</think>4"},
            {"role": "user", "content": "And 3+3?"},
        ],
    ]
    templates = (
        (R1_MODEL, DeepSeekR1DistillTemplate()),
        (LLAMA_MODEL, Llama31Template()),
        (OSS_MODEL, HarmonyTemplate(current_date="2025-01-01")),
    )
    for model, template in templates:
        for messages in conversations:
            *history, last = messages
            if last["role"] == "assistant":
                expected = template.continue_assistant(template.render(history), last["content"])
            else:
                expected = template.render(messages)
            expected = expected.replace("Current date: 2025-01-01\n", "")  # the simulator's is undated
            assert render_messages(model, [(m["role"], m["content"]) for m in messages], None) == expected


def test_prefill_and_reasoning_controls(sim: FireworksSimulator) -> None:
    prefill = [*USER, {"role": "assistant", "content": "<think>Let me"}]
    body = chat(sim, messages=prefill, max_tokens=400, seed=5)
    t = complete(sim, prompt=R1_PROMPT + "Let me", max_tokens=400, seed=5)
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] + "</think>" + message["content"] == t["choices"][0]["text"]
    for off in ({"reasoning_effort": "none"}, {"thinking": {"type": "disabled"}}):
        message = chat(sim, max_tokens=400, seed=5, **off)["choices"][0]["message"]
        assert message["reasoning_content"] is None and message["content"]
    low = chat(sim, model=OSS_MODEL, max_tokens=2, reasoning_effort="low", logprobs=0, echo=True)
    assert "Reasoning: low" in "".join(low["choices"][0]["logprobs"]["tokens"])


def test_message_content_parts_and_roles(sim: FireworksSimulator) -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]}]
    assert chat(sim, messages=parts, seed=1)["choices"] == chat(sim, seed=1)["choices"]
    with_image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}, "What is 2+2?"]}]
    assert chat(sim, messages=with_image, seed=1)["choices"] == chat(sim, seed=1)["choices"]
    system = [{"role": "system", "content": None}, {"role": "developer", "content": "d"}, *USER]
    assert chat(sim, messages=system, max_tokens=1)["usage"]["prompt_tokens"] == 13  # "d" is the system text


# -- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "loc", "typ"),
    [
        (None, ["body", "messages"], "value_error.missing"),
        ("hi", ["body", "messages"], "type_error.list"),
        (["hi"], ["body", "messages", 0], "type_error.dict"),
        ([{"content": "x"}], ["body", "messages", 0, "role"], "value_error.missing"),
        ([{"role": 1, "content": "x"}], ["body", "messages", 0, "role"], "type_error.str"),
        ([{"role": "robot", "content": "x"}], ["body", "messages", 0, "role"], "type_error.enum"),
        ([{"role": "user", "content": 5}], ["body", "messages", 0, "content"], "type_error.str"),
        ([{"role": "user", "content": [{"type": "text", "text": 5}]}], ["body", "messages", 0, "content", 0, "text"],
         "type_error.str"),
    ],
)  # fmt: skip
def test_422_on_bad_messages(sim: FireworksSimulator, messages: object, loc: list[object], typ: str) -> None:
    body: dict[str, object] = {"model": R1_MODEL}
    if messages is not None:
        body["messages"] = messages
    status, data = post(sim, body)
    assert status == 422
    assert json.loads(data)["detail"][0]["loc"] == loc and json.loads(data)["detail"][0]["type"] == typ


def test_400s_and_404(sim: FireworksSimulator) -> None:
    status, data = post(sim, {"model": R1_MODEL, "messages": []})
    assert status == 400 and json.loads(data)["error"]["param"] == "messages"
    status, data = post(sim, {"model": R1_MODEL, "messages": USER, "prompt": "x"})
    assert status == 400 and "('body', 'prompt')" in json.loads(data)["error"]["message"]
    assert post(sim, {"model": "nope", "messages": USER})[0] == 404
    assert post(sim, {"model": R1_MODEL, "messages": USER, "temperature": 3})[0] == 422
    assert post(sim, {"model": R1_MODEL, "messages": USER}, key="wrong")[0] == 401
    assert post(sim, b"{nope")[0] == 400
    tools = {"tools": [], "tool_choice": "auto", "parallel_tool_calls": False, "prompt_truncate_len": 100}
    assert post(sim, {"model": R1_MODEL, "messages": USER, "max_tokens": 1, **tools})[0] == 200


# -- the peer's request, strict and lenient ----------------------------------------------------------------


def test_peer_request_is_rejected_when_strict(sim: FireworksSimulator) -> None:
    status, data = post(sim, PEER_BODY)
    assert status == 400
    message = json.loads(data)["error"]["message"]
    for field in ("provider", "reasoning", "include_reasoning", "progress_bar", "top_a"):
        assert f"('body', '{field}')" in message


def test_peer_request_when_lenient(lenient: FireworksSimulator) -> None:
    status, data = post(lenient, PEER_BODY)
    assert status == 200
    result = json.loads(data)
    # What rollouts' OpenRouter._parse_response reads.
    choice = result["choices"][0]
    message = choice.get("message", {})
    reasoning, content = message.get("reasoning", ""), message.get("content", "")
    assert reasoning and content and choice.get("finish_reason") == "stop"
    assert result.get("provider", "OpenRouter") == "OpenRouter"
    assert result["id"] and result["model"] == R1_MODEL and result["object"] == "chat.completion"
    assert isinstance(result["created"], int) and result["usage"]["completion_tokens"] > 0
    # The ignored fields change nothing: the same request without them generates the same text.
    fireworks_only = {k: v for k, v in PEER_BODY.items() if k not in ("provider", "reasoning", "include_reasoning",
                                                                      "progress_bar", "top_a")}  # fmt: skip
    assert chat(lenient, **fireworks_only)["choices"] == result["choices"]
    # Lenient covers /completions too; typed fields are still validated.
    status, _ = post(lenient, {"model": R1_MODEL, "prompt": "x", "max_tokens": 1, "top_a": 1}, "/v1/completions")
    assert status == 200
    assert post(lenient, {**PEER_BODY, "temperature": "hot"})[0] == 422


# -- streaming and faults ---------------------------------------------------------------------------------


def test_stream_concatenates_to_the_non_streamed_message(sim: FireworksSimulator) -> None:
    params = {"max_tokens": 400, "seed": 8, "n": 2, "logprobs": True, "echo": True, "return_token_ids": True}
    full = chat(sim, **params)
    status, data = post(sim, {"model": R1_MODEL, "messages": USER, "stream": True, **params})
    assert status == 200
    events = sse(data)
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert all(e["usage"] is None for e in events[:-1]) and events[-1]["usage"] == full["usage"]
    assert events[-1]["prompt_token_ids"] == full["prompt_token_ids"]
    for index, expected in enumerate(full["choices"]):
        mine = [e["choices"][0] for e in events if e["choices"][0]["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant", "content": None}
        deltas = [c["delta"] for c in mine]
        reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
        assert reasoning == "".join(d.get("reasoning", "") for d in deltas)
        assert reasoning == expected["message"]["reasoning_content"]
        assert "".join(d.get("content") or "" for d in deltas) == expected["message"]["content"]
        assert {} in deltas  # the </think> token: logprobs, no text
        content = [x for c in mine if c["logprobs"] for x in c["logprobs"]["content"]]
        assert content == expected["logprobs"]["content"]
        assert [t for c in mine for t in c["token_ids"]] == expected["token_ids"]
        assert [c["finish_reason"] for c in mine] == [None] * (len(mine) - 1) + [expected["finish_reason"]]


def test_stream_without_reasoning(sim: FireworksSimulator) -> None:
    status, data = post(sim, {"model": LLAMA_MODEL, "messages": USER, "stream": True, "max_tokens": 5})
    assert status == 200
    deltas = [e["choices"][0]["delta"] for e in sse(data)]
    assert deltas[0] == {"role": "assistant", "content": None} and all(set(d) == {"content"} for d in deltas[1:])


def test_faults_apply_to_chat(sim: FireworksSimulator) -> None:
    sim.faults.push(Fault.status(429, retry_after="1"), Fault.truncated())
    assert post(sim, {"model": R1_MODEL, "messages": USER})[0] == 429
    status, data = post(sim, {"model": R1_MODEL, "messages": USER})
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(data)
    assert post(sim, {"model": R1_MODEL, "messages": USER})[0] == 200
    assert [r.fault for r in sim.requests] == ["status:429", "truncated", None]
    assert sim.requests[0].path == CHAT and sim.requests[0].body == {"model": R1_MODEL, "messages": USER}
