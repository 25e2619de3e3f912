"""The simulated Fireworks server over real loopback HTTP, seen from stdlib clients (no project client code)."""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pytest

import fw_rollouts.testing
from _helpers import fixture_path, load_json_fixture
from fw_rollouts.testing import Fault, FireworksSimulator

R1_MODEL = "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b"
R1_PROMPT = "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"
OSS_MODEL = "accounts/fireworks/models/gpt-oss-20b"
OSS_PROMPT = "<|start|>user<|message|>What is 2+2?<|end|><|start|>assistant"
LLAMA_MODEL = "accounts/fireworks/models/llama-v3p1-8b-instruct"
SRC = Path(fw_rollouts.testing.__file__).resolve().parents[2]


def fixture(name: str) -> Any:
    return load_json_fixture(f"fireworks/{name}")


@pytest.fixture(scope="module")
def sim() -> Iterator[FireworksSimulator]:
    with FireworksSimulator() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(sim: FireworksSimulator) -> None:
    sim.reset()


class Resp:
    def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data

    def json(self) -> Any:
        return json.loads(self.data)


class HasPort(Protocol):
    @property
    def port(self) -> int: ...


def call(
    server: HasPort,
    body: object = None,
    *,
    method: str = "POST",
    path: str = "/inference/v1/completions",
    key: str | None = "sim-key",
    conn: http.client.HTTPConnection | None = None,
    timeout: float = 10.0,
) -> Resp:
    c = conn or http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    payload = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    c.request(method, path, payload, headers)
    r = c.getresponse()
    data = r.read()
    return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)


def complete(server: FireworksSimulator, **body: Any) -> Any:
    body.setdefault("model", R1_MODEL)
    body.setdefault("prompt", R1_PROMPT)
    r = call(server, body)
    assert r.status == 200, r.data
    return r.json()


def sse(data: bytes) -> list[Any]:
    text = data.decode("utf-8")
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events), events
    return [e[len("data: ") :] for e in events]


# -- response shapes --------------------------------------------------------------------------------


def test_legacy_logprobs_match_fixture_shape(sim: FireworksSimulator) -> None:
    fx = fixture("completion-legacy-logprobs.json")
    body = complete(sim, max_tokens=7, logprobs=2, seed=1)
    assert set(body) == set(fx)
    assert body["object"] == "text_completion" and body["model"] == R1_MODEL and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert set(choice) == set(fx["choices"][0])
    lp = choice["logprobs"]
    assert set(lp) == set(fx["choices"][0]["logprobs"])
    assert "".join(lp["tokens"]) == choice["text"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["token_ids"]) == 7
    offset = 0
    columns = (lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], lp["text_offset"])
    for tok, val, top, off in zip(*columns, strict=True):
        assert off == offset
        offset += len(tok)
        assert val <= 0 and top[tok] == val
        assert 2 <= len(top) <= 3
        values = list(top.values())
        assert values == sorted(values, reverse=True)
    assert set(body["usage"]) >= set(fx["usage"])
    usage = body["usage"]
    assert usage["completion_tokens"] == 7 and usage["total_tokens"] == usage["prompt_tokens"] + 7


def test_legacy_logprobs_zero_holds_only_the_sampled_token(sim: FireworksSimulator) -> None:
    lp = complete(sim, max_tokens=5, logprobs=0)["choices"][0]["logprobs"]
    assert [list(top) for top in lp["top_logprobs"]] == [[t] for t in lp["tokens"]]


def test_content_logprobs_match_fixture_shape(sim: FireworksSimulator) -> None:
    fx = fixture("completion-content-logprobs-echo.json")["choices"][0]["logprobs"]["content"]
    body = complete(sim, max_tokens=6, logprobs=True, top_logprobs=3)
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == 6
    for entry in content:
        assert set(entry) == set(fx[1])
        assert bytes(entry["bytes"]).decode("utf-8") == entry["token"]
        assert entry["logprob"] <= 0 and entry["sampling_logprob"] == entry["logprob"]  # T=1: same distribution
        assert len(entry["top_logprobs"]) == 3
        assert all(set(alt) == set(fx[1]["top_logprobs"][0]) for alt in entry["top_logprobs"])
        values = [alt["logprob"] for alt in entry["top_logprobs"]]
        assert values == sorted(values, reverse=True)
        assert len({alt["token"] for alt in entry["top_logprobs"]}) == 3
        for alt in entry["top_logprobs"]:
            if alt["token_id"] == entry["token_id"]:
                assert alt["logprob"] == entry["logprob"]
    assert complete(sim, max_tokens=2, logprobs=True)["choices"][0]["logprobs"]["content"][0]["top_logprobs"] == []
    assert complete(sim, max_tokens=2)["choices"][0]["logprobs"] is None
    assert complete(sim, max_tokens=2, logprobs=False)["choices"][0]["logprobs"] is None


def test_headers(sim: FireworksSimulator) -> None:
    r = call(sim, {"model": R1_MODEL, "prompt": "x", "max_tokens": 1})
    assert r.headers["content-type"] == "application/json" and r.headers["x-ratelimit-over-limit"] == "no"
    assert len(r.headers["x-request-id"]) == 36 and int(r.headers["content-length"]) == len(r.data)
    assert r.json()["id"] != r.headers["x-request-id"]


# -- echo, BOS ----------------------------------------------------------------------------------------


def test_echo_legacy(sim: FireworksSimulator) -> None:
    fx = fixture("completion-legacy-logprobs-echo.json")["choices"][0]["logprobs"]
    body = complete(sim, max_tokens=7, logprobs=2, echo=True)
    choice = body["choices"][0]
    lp = choice["logprobs"]
    assert set(lp) == set(fx)
    assert lp["tokens"][:12] == fx["tokens"][:12]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(v is not None and v <= 0 for v in lp["token_logprobs"][1:])
    assert "".join(lp["tokens"]) == choice["text"] and choice["text"].startswith(R1_PROMPT)
    assert lp["text_offset"][:12] == fx["text_offset"][:12]
    assert lp["text_offset"][12] == len(R1_PROMPT)
    assert body["usage"]["prompt_tokens"] == 12 and body["usage"]["completion_tokens"] == 7
    # The scored prompt does not depend on the seed.
    again = complete(sim, max_tokens=7, logprobs=2, echo=True, seed=9)["choices"][0]["logprobs"]
    assert again["token_logprobs"][:12] == lp["token_logprobs"][:12]


def test_echo_content(sim: FireworksSimulator) -> None:
    fx = fixture("completion-content-logprobs-echo.json")["choices"][0]["logprobs"]["content"]
    content = complete(sim, max_tokens=3, logprobs=True, top_logprobs=1, echo=True)["choices"][0]["logprobs"]["content"]
    assert len(content) == 15
    first = content[0]
    assert set(first) == set(fx[0])
    assert (first["logprob"], first["sampling_logprob"], first["top_logprobs"]) == (0.0, None, [])
    assert [e["text_offset"] for e in content[:12]] == [e["text_offset"] for e in fx[:12]]
    assert all(e["sampling_logprob"] is not None and len(e["top_logprobs"]) == 1 for e in content[1:])


def test_scoring_with_max_tokens_zero(sim: FireworksSimulator) -> None:
    text = R1_PROMPT + "Okay, so I need to add 2 and 2."
    body = complete(sim, prompt=text, max_tokens=0, logprobs=1, echo=True)
    choice = body["choices"][0]
    assert choice["text"] == text and choice["finish_reason"] == "length"
    assert "".join(choice["logprobs"]["tokens"]) == text
    assert body["usage"]["completion_tokens"] == 0
    plain = complete(sim, max_tokens=0, logprobs=1)["choices"][0]
    assert plain["text"] == "" and plain["logprobs"]["tokens"] == [] and plain["finish_reason"] == "length"


def test_echo_last(sim: FireworksSimulator) -> None:
    choice = complete(sim, max_tokens=2, logprobs=1, echo_last=3)["choices"][0]
    lp = choice["logprobs"]
    assert lp["tokens"][:3] == ["<｜Assistant｜>", "<think>", "\n"]
    assert None not in lp["token_logprobs"]  # these positions have context
    assert choice["text"].startswith("<｜Assistant｜><think>\n") and lp["text_offset"][:3] == [0, 13, 20]


def test_echo_text_off_and_llamacpp_offsets() -> None:
    with FireworksSimulator(echo_text=False, text_offset_base="prompt") as server:
        echoed = complete(server, max_tokens=3, logprobs=1, echo=True)["choices"][0]
        assert not echoed["text"].startswith("<｜") and len(echoed["logprobs"]["tokens"]) == 15
        plain = complete(server, max_tokens=3, logprobs=1)["choices"][0]
        assert plain["logprobs"]["text_offset"][0] == len(R1_PROMPT)


@pytest.mark.parametrize(("bos", "prompt_tokens", "echoed"), [("none", 2, 2), ("count", 3, 2), ("echo", 3, 3)])
def test_bos_modes(bos: str, prompt_tokens: int, echoed: int) -> None:
    with FireworksSimulator(bos=bos) as server:  # type: ignore[arg-type]
        body = complete(server, model=LLAMA_MODEL, prompt="Hi there", max_tokens=2, logprobs=1, echo=True)
    choice = body["choices"][0]
    lp = choice["logprobs"]
    assert body["usage"]["prompt_tokens"] == prompt_tokens
    assert choice["text"].startswith("Hi there")
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert len(lp["tokens"]) == echoed + 2
    if bos == "echo":
        assert lp["tokens"][0] == "<|begin_of_text|>" and lp["token_ids"][0] == 128000
        assert lp["text_offset"][:3] == [0, 0, 2]
        assert "".join(lp["tokens"][1:]) == choice["text"]
    else:
        assert lp["tokens"][0] == "Hi" and "".join(lp["tokens"]) == choice["text"]


def test_return_token_ids_and_token_id_prompts(sim: FireworksSimulator) -> None:
    choice = complete(sim, max_tokens=4, return_token_ids=True, raw_output=True)["choices"][0]
    assert choice["prompt_token_ids"][:2] == [151646, 151644] and len(choice["token_ids"]) == 4
    assert choice["raw_output"]["completion"] == choice["text"]
    ids = choice["prompt_token_ids"] + choice["token_ids"]
    scored = complete(sim, prompt=ids, max_tokens=0, logprobs=1, echo=True)["choices"][0]
    assert scored["text"] == R1_PROMPT + choice["text"] and scored["logprobs"]["token_ids"] == ids


def test_several_prompts(sim: FireworksSimulator) -> None:
    body = complete(sim, prompt=["One", "Two two"], n=2, max_tokens=3, logprobs=1, echo=True)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [c["text"].split(" ")[0] for c in body["choices"]] == ["One", "One", "Two", "Two"]
    assert body["usage"]["prompt_tokens"] == 1 + 2


# -- generation ---------------------------------------------------------------------------------------


def test_determinism_seeds_and_n(sim: FireworksSimulator) -> None:
    a = complete(sim, max_tokens=12, seed=1, logprobs=1)
    b = complete(sim, max_tokens=12, seed=1, logprobs=1)
    assert a["choices"] == b["choices"] and a["id"] != b["id"]
    texts = {complete(sim, max_tokens=12, seed=s)["choices"][0]["text"] for s in range(8)}
    assert len(texts) >= 6
    unseeded = [complete(sim, max_tokens=12)["choices"][0]["text"] for _ in range(2)]
    assert unseeded[0] == unseeded[1] == complete(sim, max_tokens=12, seed=0)["choices"][0]["text"]
    many = complete(sim, max_tokens=12, seed=1, n=6)
    assert [c["index"] for c in many["choices"]] == list(range(6))
    assert many["choices"][0]["text"] == a["choices"][0]["text"]
    assert len({c["text"] for c in many["choices"]}) >= 5
    assert many["usage"]["completion_tokens"] == 6 * 12
    # Sampling parameters change the draw.
    assert complete(sim, max_tokens=12, seed=1, temperature=0.9)["choices"][0]["text"] != a["choices"][0]["text"]


def test_greedy(sim: FireworksSimulator) -> None:
    body = complete(sim, max_tokens=10, n=3, temperature=0, logprobs=True, seed=4)
    assert len({c["text"] for c in body["choices"]}) == 1
    assert all(e["sampling_logprob"] == 0.0 for e in body["choices"][0]["logprobs"]["content"])


def test_reasoning_and_harmony_shapes(sim: FireworksSimulator) -> None:
    r1 = complete(sim, max_tokens=400, seed=3)["choices"][0]
    assert r1["finish_reason"] == "stop" and "</think>\n\n" in r1["text"]
    cut = complete(sim, max_tokens=5, seed=3)["choices"][0]
    assert cut["finish_reason"] == "length" and r1["text"].startswith(cut["text"])
    oss = complete(sim, model=OSS_MODEL, prompt=OSS_PROMPT, max_tokens=400, seed=3)["choices"][0]
    assert oss["finish_reason"] == "stop" and oss["text"].startswith("<|channel|>analysis<|message|>")
    assert "<|end|><|start|>assistant<|channel|>final<|message|>" in oss["text"] and "<|return|>" not in oss["text"]
    llama = complete(
        sim,
        model=LLAMA_MODEL,
        prompt="<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        max_tokens=400,
    )["choices"][0]
    assert llama["finish_reason"] == "stop" and "<|" not in llama["text"] and llama["text"]


def test_max_tokens_default_and_ignore_eos(sim: FireworksSimulator) -> None:
    body = complete(sim, prompt="Once upon a time", ignore_eos=True)
    assert body["usage"]["completion_tokens"] == 16 and body["choices"][0]["finish_reason"] == "length"
    with FireworksSimulator(default_max_tokens=3) as server:
        assert complete(server, ignore_eos=True)["usage"]["completion_tokens"] == 3
    assert complete(sim, max_completion_tokens=4, ignore_eos=True)["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("stop_included", [False, True])
def test_stop_sequences(stop_included: bool) -> None:
    with FireworksSimulator(stop_included=stop_included) as server:
        full = complete(server, max_tokens=400, seed=2)["choices"][0]["text"]
        choice = complete(server, max_tokens=400, seed=2, stop=["</think>", "zzz"], logprobs=1)["choices"][0]
    reasoning = full.split("</think>")[0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == (reasoning + "</think>" if stop_included else reasoning)
    assert "".join(choice["logprobs"]["tokens"]) == choice["text"]


def test_context_length() -> None:
    with FireworksSimulator(context_length=16) as server:
        body = complete(server, max_tokens=100, ignore_eos=True)
        assert body["usage"]["completion_tokens"] == 16 - 12
        r = call(
            server,
            {"model": R1_MODEL, "prompt": R1_PROMPT, "max_tokens": 100, "context_length_exceeded_behavior": "error"},
        )
        assert r.status == 400 and r.json()["error"]["param"] == "prompt"
        assert call(server, {"model": R1_MODEL, "prompt": "word " * 40}).status == 400


# -- errors -------------------------------------------------------------------------------------------


def test_validation_errors_over_http(sim: FireworksSimulator) -> None:
    r = call(sim, {"model": R1_MODEL, "prompt": "x", "best_of": 2})
    assert r.status == 400 and r.json() == fixture("error-400-extra-field.json")
    r = call(sim, {"model": R1_MODEL, "prompt": "x", "logprobs": 6})
    assert r.status == 422 and r.json() == fixture("error-422-detail.json")
    assert call(sim, b"{oops").status == 400
    r = call(sim, {"model": "accounts/fireworks/models/nope!", "prompt": "x"})
    assert r.status == 404 and r.json() == fixture("error-404-flat.json")


def test_auth(sim: FireworksSimulator) -> None:
    for key in (None, "wrong", ""):
        r = call(sim, {"model": R1_MODEL, "prompt": "x"}, key=key)
        assert r.status == 401
        body = r.json()
        assert set(body) == {"error", "request_id"} and body["error"]["code"] == "UNAUTHORIZED"
        assert set(body["error"]) == {"message", "param", "code", "type"}
    with FireworksSimulator(api_key=None) as open_server:
        assert call(open_server, {"model": R1_MODEL, "prompt": "x"}, key="anything").status == 200
        assert call(open_server, {"model": R1_MODEL, "prompt": "x"}, key=None).status == 401


def test_routes(sim: FireworksSimulator) -> None:
    for path in ("/v1/completions", "/completions", "/inference/v1/completions?x=1"):
        assert call(sim, {"model": R1_MODEL, "prompt": "x", "max_tokens": 1}, path=path).status == 200
    models = call(sim, method="GET", path="/inference/v1/models")
    assert models.status == 200 and models.json()["object"] == "list"
    assert {m["id"] for m in models.json()["data"]} >= {R1_MODEL, OSS_MODEL}
    r = call(sim, method="GET", path="/inference/v1/completions")
    assert r.status == 405 and r.headers["allow"] == "POST"
    assert call(sim, {}, path="/inference/v1/embeddings").status == 404
    assert call(sim, {}, path="/inference/v1/chat/completions").status == 422  # a route since chat exists
    with FireworksSimulator(known_models=[OSS_MODEL]) as server:
        listed = call(server, method="GET", path="/v1/models").json()["data"]
        assert [m["id"] for m in listed] == [OSS_MODEL]
        assert call(server, {"model": R1_MODEL, "prompt": "x"}).status == 404


# -- streaming ----------------------------------------------------------------------------------------


def test_sse_framing_matches_non_stream(sim: FireworksSimulator) -> None:
    fx_chunk = json.loads(sse(fixture_path("fireworks/stream-legacy-logprobs.sse").read_bytes())[0])
    r = call(sim, {"model": R1_MODEL, "prompt": R1_PROMPT, "max_tokens": 7, "logprobs": 2, "stream": True})
    assert r.status == 200 and r.headers["content-type"] == "text/event-stream"
    assert r.headers["transfer-encoding"] == "chunked" and "content-length" not in r.headers
    events = sse(r.data)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 7
    for ch in chunks:
        assert set(ch) == set(fx_chunk) and set(ch["choices"][0]) == set(fx_chunk["choices"][0])
    assert len({c["id"] for c in chunks}) == 1
    assert [c["usage"] is None for c in chunks] == [True] * 6 + [False]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 6 + ["length"]
    whole = complete(sim, max_tokens=7, logprobs=2)
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    merged: dict[str, list[Any]] = {k: [] for k in whole["choices"][0]["logprobs"]}
    for c in chunks:
        for k, v in c["choices"][0]["logprobs"].items():
            merged[k] += v
    assert merged == whole["choices"][0]["logprobs"]
    assert chunks[-1]["usage"] == whole["usage"]


def test_sse_echo_and_n(sim: FireworksSimulator) -> None:
    r = call(
        sim,
        {
            "model": R1_MODEL,
            "prompt": R1_PROMPT,
            "max_tokens": 3,
            "n": 2,
            "logprobs": True,
            "echo": True,
            "stream": True,
            "return_token_ids": True,
        },
    )
    chunks = [json.loads(e) for e in sse(r.data)[:-1]]
    by_index: dict[int, list[Any]] = {0: [], 1: []}
    for c in chunks:
        by_index[c["choices"][0]["index"]].append(c["choices"][0])
    assert [c["choices"][0]["index"] for c in chunks[:4]] == [0, 1, 0, 1]  # interleaved
    for parts in by_index.values():
        assert parts[0]["text"] == R1_PROMPT and len(parts[0]["logprobs"]["content"]) == 12
        assert parts[0]["logprobs"]["content"][0]["sampling_logprob"] is None
        assert len(parts[0]["prompt_token_ids"]) == 12
        assert [p["finish_reason"] for p in parts] == [None, None, None, "length"]
        assert sum(len(p["token_ids"]) for p in parts) == 3
    assert [c["usage"] is not None for c in chunks].count(True) == 1 and chunks[-1]["usage"] is not None


# -- faults ---------------------------------------------------------------------------------------------

BODY = {"model": R1_MODEL, "prompt": R1_PROMPT, "max_tokens": 4}


def test_fault_status_over_http(sim: FireworksSimulator) -> None:
    sim.faults.push(
        Fault.status(429, retry_after="2"),
        Fault.status(503, shape="html", retry_after=timedelta(seconds=5)),
        Fault.status(429, shape="string", retry_after_ms="250", should_retry=True),
        Fault.status(500, shape="empty"),
    )
    r = call(sim, BODY)
    assert r.status == 429 and r.headers["retry-after"] == "2" and r.headers["x-ratelimit-over-limit"] == "yes"
    assert set(r.json()) == {"error", "request_id"} and r.json()["request_id"] == r.headers["x-request-id"]
    r = call(sim, BODY)
    assert r.status == 503 and r.headers["content-type"] == "text/html" and r.data.startswith(b"<html>")
    assert parsedate_to_datetime(r.headers["retry-after"]).timestamp() > time.time()
    r = call(sim, BODY)
    assert r.json() == fixture("error-429-string.json")
    assert r.headers["retry-after-ms"] == "250" and r.headers["x-should-retry"] == "true"
    r = call(sim, BODY)
    assert r.status == 500 and r.data == b""
    assert call(sim, BODY).status == 200  # the script is used up
    assert [rec.fault for rec in sim.requests] == ["status:429", "status:503", "status:429", "status:500", None]
    assert sim.status_counts == {429: 2, 503: 1, 500: 1, 200: 1}


def test_fault_reset(sim: FireworksSimulator) -> None:
    sim.faults.push(Fault.reset())
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        call(sim, BODY)
    assert call(sim, BODY).status == 200
    assert sim.status_counts["reset"] == 1 and sim.requests[0].status == 0 and sim.requests[0].fault == "reset"


def test_fault_reset_mid_body(sim: FireworksSimulator) -> None:
    sim.faults.push(Fault.reset_mid_body(), Fault.stream_cut())
    for _ in range(2):
        with pytest.raises(http.client.IncompleteRead):
            call(sim, BODY)
    assert sim.status_counts == {"reset_mid_body": 2}


def test_fault_truncated_and_malformed(sim: FireworksSimulator) -> None:
    sim.faults.push(Fault.truncated(), Fault.malformed(), Fault.malformed("wrong_shape"), Fault.malformed("empty"))
    r = call(sim, BODY)
    assert r.status == 200 and int(r.headers["content-length"]) == len(r.data) > 0
    with pytest.raises(json.JSONDecodeError):
        r.json()
    r = call(sim, BODY)
    assert r.status == 200 and r.headers["content-type"] == "text/html" and r.data == b"<html>upstream error</html>"
    assert call(sim, BODY).json()["choices"] is None
    assert call(sim, BODY).data == b""
    assert sim.status_counts == {200: 4}
    assert [rec.fault for rec in sim.requests] == [
        "truncated",
        "malformed:html",
        "malformed:wrong_shape",
        "malformed:empty",
    ]


def test_fault_truncated_stream(sim: FireworksSimulator) -> None:
    sim.faults.push(Fault.truncated())
    events = sse(call(sim, {**BODY, "stream": True}).data)
    assert events[-1] == "[DONE]"
    with pytest.raises(json.JSONDecodeError):
        json.loads(events[-2])


def test_fault_slow_and_client_timeout(sim: FireworksSimulator) -> None:
    sim.faults.push(Fault.slow(0.3))
    t0 = time.monotonic()
    assert call(sim, BODY).status == 200
    assert time.monotonic() - t0 >= 0.3
    sim.faults.push(Fault.slow(0.5))
    with pytest.raises(TimeoutError):
        call(sim, BODY, timeout=0.1)
    time.sleep(0.05)
    assert call(sim, BODY).status == 200  # the server shrugged off the client that left
    deadline = time.monotonic() + 2
    while sim.status_counts["client_closed"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.status_counts["client_closed"] == 1


def test_fault_stream_cut(sim: FireworksSimulator) -> None:
    sim.faults.push(Fault.stream_cut(), Fault.stream_cut(abort=True))
    body = {**BODY, "max_tokens": 10, "stream": True}
    r = call(sim, body)
    events = sse(r.data)
    assert r.status == 200 and "[DONE]" not in events and 1 <= len(events) < 10
    assert all(json.loads(e)["choices"][0]["finish_reason"] is None for e in events)
    with pytest.raises(http.client.IncompleteRead):
        call(sim, body)
    assert sim.status_counts == {200: 1, "stream_cut": 1}


def test_fault_body_answers_exactly_that(sim: FireworksSimulator) -> None:
    logprobs = {"tokens": ["a"], "token_logprobs": [float("nan")]}
    impossible = {"choices": [{"index": 0, "text": "a", "logprobs": logprobs}]}
    sim.faults.push(
        Fault.body(impossible),
        Fault.body(b"[" * 5000 + b"]" * 5000),
        Fault.body("<p>down</p>", status=503, content_type="text/html"),
    )
    r = call(sim, BODY)
    assert r.status == 200 and r.headers["content-type"] == "application/json" and r.headers["x-request-id"]
    assert b'"token_logprobs":[NaN]' in r.data  # the literal some servers send, as json.dumps writes it
    assert call(sim, BODY).data == b"[" * 5000 + b"]" * 5000
    r = call(sim, BODY)
    assert (r.status, r.headers["content-type"], r.data) == (503, "text/html", b"<p>down</p>")
    assert call(sim, BODY).status == 200 and "choices" in call(sim, BODY).json()
    assert [rec.fault for rec in sim.requests][:3] == ["body:200", "body:200", "body:503"]
    with pytest.raises(ValueError, match="from 200 to 599"):
        Fault.body({}, status=101)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_fault_huge_is_the_reply_padded_and_sent_as_the_client_reads(sim: FireworksSimulator, chunked: bool) -> None:
    normal = call(sim, BODY).json()
    sim.faults.push(Fault.huge(3_000_000, chunked=chunked))
    r = call(sim, BODY)
    assert r.status == 200 and len(r.data) == 3_000_000
    assert ("transfer-encoding" in r.headers) == chunked and ("content-length" in r.headers) != chunked
    padded = r.json()
    assert set(padded.pop("x_padding")) == {"a"}
    for each in (padded, normal):  # a new id and maybe another second: the rest is the reply it would have got
        del each["id"], each["created"]
    assert padded == normal
    assert sim.requests[-1].fault == "huge" and sim.requests[-1].body_bytes == 3_000_000

    # A client that stops reading: the server writes only as fast as the socket drains, then sees it close.
    sim.faults.push(Fault.huge(1 << 30, chunked=chunked))
    with socket.create_connection(("127.0.0.1", sim.port)) as raw:
        payload = json.dumps(BODY).encode()
        raw.sendall(
            b"POST /inference/v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sim-key\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
        )
        assert raw.recv(65536).startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 5
    while sim.status_counts["client_closed"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    record = sim.requests[-1]
    assert sim.status_counts["client_closed"] == 1 and record.fault == "huge"
    assert record.body_bytes is not None and 0 < record.body_bytes < 64 << 20  # kernel buffers, not a gigabyte
    assert call(sim, BODY).status == 200  # and it serves the next request as usual
    with pytest.raises(ValueError, match="nbytes"):
        Fault.huge(-1)


def test_random_faults(sim: FireworksSimulator) -> None:
    sim.faults.random(1.0, kinds=[503])
    sim.faults.push(Fault.ok())
    assert call(sim, BODY).status == 200  # scripted entries come first, even "ok"
    assert [call(sim, BODY).status for _ in range(3)] == [503, 503, 503]
    assert call(sim, method="GET", path="/v1/models").status == 200  # only completions are faulted

    def pattern() -> list[int]:
        sim.faults.random(0.5, kinds=[429, 500], seed=3)
        return [call(sim, BODY).status for _ in range(30)]

    first = pattern()
    assert first == pattern() and {200, 429, 500} == set(first)
    sim.faults.clear()
    assert call(sim, BODY).status == 200


def test_default_random_mix_is_survivable(sim: FireworksSimulator) -> None:
    """Every default kind is observable by a plain client and the server keeps serving."""
    sim.faults.random(0.6, seed=11)
    outcomes: set[str] = set()
    for _ in range(60):
        try:
            r = call(sim, BODY, timeout=5)
            try:
                json.loads(r.data)
                outcomes.add(str(r.status))
            except ValueError:
                outcomes.add(f"{r.status}-unparseable")
        except (http.client.HTTPException, ConnectionError) as e:
            outcomes.add(type(e).__name__)
    sim.faults.clear()
    assert call(sim, BODY).status == 200
    assert {"200", "429", "200-unparseable"} <= outcomes
    assert outcomes & {"RemoteDisconnected", "ConnectionResetError", "IncompleteRead"}
    assert sum(sim.status_counts.values()) == 61 and len(sim.requests) == 61


# -- HTTP behaviour -----------------------------------------------------------------------------------


def test_keep_alive_and_records(sim: FireworksSimulator) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    call(sim, BODY, conn=conn)
    first_sock = conn.sock
    for _ in range(4):
        assert call(sim, BODY, conn=conn).status == 200
        assert conn.sock is first_sock  # not reconnected
    assert call(sim, {"model": R1_MODEL}, conn=conn).status == 422
    assert conn.sock is first_sock
    rec = sim.requests[0]
    assert rec.method == "POST" and rec.path == "/inference/v1/completions" and rec.body == BODY
    assert rec.headers["authorization"] == "REDACTED" and rec.status == 200 and rec.fault is None
    sim.reset()
    assert sim.requests == [] and sim.status_counts == {}


def _raw_request(body: bytes, extra: str = "", send_body: bool = True) -> bytes:
    head = (
        f"POST /inference/v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sim-key\r\n"
        f"Content-Type: application/json\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body if send_body else head


def test_pipelining_chunked_and_expect_continue(sim: FireworksSimulator) -> None:
    body = json.dumps(BODY).encode()
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as s:
        s.sendall(_raw_request(body) + _raw_request(body))  # two requests in one segment
        f = s.makefile("rb")
        for _ in range(2):
            assert f.readline().startswith(b"HTTP/1.1 200 ")
            length = 0
            while (line := f.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert json.loads(f.read(length))["choices"][0]["finish_reason"] in ("length", "stop")
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sim-key\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        s.sendall(b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:10], body[10:])) + b"0\r\n\r\n")
        rest = f.read()
        assert rest.startswith(b"HTTP/1.1 200 ") and b"connection: close" in rest
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as s:
        s.sendall(_raw_request(body, "Expect: 100-continue\r\n", send_body=False))
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        assert s.recv(100).startswith(b"HTTP/1.1 200 ")
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as s:
        s.sendall(b"NONSENSE\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")


def test_throughput_64_connections(sim: FireworksSimulator) -> None:
    """500 requests over 64 keep-alive connections (raw asyncio streams) finish quickly."""
    body = _raw_request(json.dumps({**BODY, "max_tokens": 16, "logprobs": 1}).encode())

    async def worker(n: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        ok = 0
        for _ in range(n):
            writer.write(body)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            data = await reader.readexactly(length)
            ok += head.startswith(b"HTTP/1.1 200") and data.endswith(b"}")
        writer.close()
        await writer.wait_closed()
        return ok

    async def main() -> int:
        counts = await asyncio.gather(*(worker(8 if i < 52 else 7) for i in range(64)))
        return sum(counts)

    t0 = time.perf_counter()
    assert asyncio.run(main()) == 500
    assert time.perf_counter() - t0 < 10
    assert sim.status_counts == {200: 500}


# -- replay memo ------------------------------------------------------------------------------------------

BENCH_BODY = {
    "model": R1_MODEL, "prompt": R1_PROMPT, "max_tokens": 32, "temperature": 0.7, "top_p": 0.95,
    "presence_penalty": 0.0, "frequency_penalty": 0.0, "logprobs": 5, "echo": True, "seed": 0,
}  # fmt: skip


def _read_response(f: BinaryIO) -> bytes:
    """One raw response with a Content-Length body, byte for byte."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = f.readline()
        assert line, "connection closed"
        head += line
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head + f.read(length)


def _exchange(port: int, *requests: bytes) -> list[bytes]:
    """Send requests one after another on one keep-alive connection; the raw responses."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        for request in requests:
            s.sendall(request)
            out.append(_read_response(f))
    return out


@pytest.fixture
def replay_sim() -> Iterator[FireworksSimulator]:
    with FireworksSimulator(replay_cache_mb=8) as server:
        yield server


def test_replay_returns_byte_identical_replies(replay_sim: FireworksSimulator) -> None:
    request = _raw_request(json.dumps(BENCH_BODY).encode())
    other = _raw_request(json.dumps({**BENCH_BODY, "seed": 1}).encode())
    first, again, different = _exchange(replay_sim.port, request, request, other)
    (later,) = _exchange(replay_sim.port, request)  # another connection
    assert first.startswith(b"HTTP/1.1 200 ") and first == again == later
    assert different != first and json.loads(different.split(b"\r\n\r\n", 1)[1])["choices"][0]["text"]
    assert replay_sim.status_counts == {200: 4}
    records = replay_sim.requests
    assert len(records) == 4 and all(r.body == BENCH_BODY for r in records[:2]) and records[1].status == 200
    # Streams and chat replies are replayed too.
    for body, path in (
        ({**BENCH_BODY, "stream": True}, "/inference/v1/completions"),
        ({"model": R1_MODEL, "messages": [{"role": "user", "content": "Hi"}]}, "/v1/chat/completions"),
    ):
        replies = [call(replay_sim, body, path=path) for _ in range(2)]
        assert replies[0].status == 200 and replies[0].data == replies[1].data
    # Without the memo only the generation repeats, not the id.
    ids = {json.loads(_exchange(replay_sim.port, request)[0].split(b"\r\n\r\n", 1)[1])["id"]}
    with FireworksSimulator() as plain:
        ids |= {call(plain, BENCH_BODY).json()["id"] for _ in range(2)}
    assert len(ids) == 3


def test_replay_still_applies_faults(replay_sim: FireworksSimulator) -> None:
    request = _raw_request(json.dumps(BENCH_BODY).encode())
    (first,) = _exchange(replay_sim.port, request)
    replay_sim.faults.push(Fault.status(503), Fault.truncated(), Fault.reset())
    unavailable, truncated = _exchange(replay_sim.port, request, request)
    assert unavailable.startswith(b"HTTP/1.1 503 ") and truncated.startswith(b"HTTP/1.1 200 ")
    assert len(truncated) < len(first)
    with pytest.raises(ConnectionError):
        _exchange(replay_sim.port, request)
    assert _exchange(replay_sim.port, request) == [first]  # the faulted replies were not memoised
    replay_sim.faults.random(1.0, kinds=[429])
    assert _exchange(replay_sim.port, request)[0].startswith(b"HTTP/1.1 429 ")
    replay_sim.faults.clear()
    assert replay_sim.status_counts == {200: 3, 503: 1, 429: 1, "reset": 1}


def test_replay_still_checks_auth(replay_sim: FireworksSimulator) -> None:
    body = json.dumps(BENCH_BODY).encode()
    (first,) = _exchange(replay_sim.port, _raw_request(body))
    wrong = _raw_request(body).replace(b"Bearer sim-key", b"Bearer wrong-key")
    missing = _raw_request(body).replace(b"Authorization: Bearer sim-key\r\n", b"")
    for request in (wrong, missing, wrong):
        assert _exchange(replay_sim.port, request)[0].startswith(b"HTTP/1.1 401 ")
    assert _exchange(replay_sim.port, _raw_request(body)) == [first]


def test_replay_keys_and_bypasses(replay_sim: FireworksSimulator) -> None:
    body = json.dumps(BENCH_BODY).encode()
    a, b = (_raw_request(body, f"X-Request-ID: req-{i}\r\n") for i in "ab")
    ra, rb, ra2 = _exchange(replay_sim.port, a, b, a)
    assert b"x-request-id: req-a\r\n" in ra and b"x-request-id: req-b\r\n" in rb and ra == ra2
    # Connection: close requests are answered afresh (and their replies not memoised).
    closing = _raw_request(body, "Connection: close\r\n")
    with socket.create_connection(("127.0.0.1", replay_sim.port), timeout=5) as s:
        s.sendall(closing)
        reply = s.makefile("rb").read()
    assert b"connection: close" in reply and reply.split(b"\r\n\r\n", 1)[1] != ra.split(b"\r\n\r\n", 1)[1]
    # reset() empties the memo.
    (before,) = _exchange(replay_sim.port, _raw_request(body))
    replay_sim.reset()
    (after,) = _exchange(replay_sim.port, _raw_request(body))
    assert before != after and _exchange(replay_sim.port, _raw_request(body)) == [after]


def test_replay_with_latency_and_a_bounded_memo() -> None:
    with FireworksSimulator(replay_cache_mb=1, latency=0.05) as server:
        request = _raw_request(json.dumps(BENCH_BODY).encode())
        t0 = time.perf_counter()
        first, again = _exchange(server.port, request, request)
        assert first == again and time.perf_counter() - t0 >= 0.1
    with FireworksSimulator(replay_cache_mb=1) as server:
        big = {**BENCH_BODY, "max_tokens": 200, "ignore_eos": True, "logprobs": True, "top_logprobs": 5}
        requests = [_raw_request(json.dumps({**big, "seed": i}).encode()) for i in range(12)]
        replies = _exchange(server.port, *requests)
        assert sum(map(len, replies)) > 1024 * 1024  # more than the memo holds
        last, first = _exchange(server.port, requests[-1], requests[0])
        assert last == replies[-1] and first != replies[0]  # the oldest were dropped
    with pytest.raises(ValueError):
        FireworksSimulator(replay_cache_mb=-1)


# -- lifecycle ------------------------------------------------------------------------------------------


def test_start_stop_and_async_variant() -> None:
    server = FireworksSimulator(port=0)
    with pytest.raises(RuntimeError):
        _ = server.base_url
    server.start()
    try:
        assert server.base_url == f"http://127.0.0.1:{server.port}/inference/v1"
        assert call(server, BODY).status == 200
        with pytest.raises(RuntimeError):
            server.start()
    finally:
        server.stop()
    server.stop()  # idempotent

    async def main() -> int:
        async with FireworksSimulator() as inner:
            reader, writer = await asyncio.open_connection("127.0.0.1", inner.port)
            writer.write(_raw_request(json.dumps(BODY).encode()))
            head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
            return int(head.split(b" ")[1])

    assert asyncio.run(main()) == 200

    async def from_a_loop() -> int:  # the thread-backed simulator works from inside asyncio.run too
        with FireworksSimulator() as inner:
            return await asyncio.to_thread(lambda: call(inner, BODY).status)

    assert asyncio.run(from_a_loop()) == 200


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_cli_runs_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fw_rollouts.testing", "--port", "0", "--bos", "count"],
        stdout=subprocess.PIPE,
        env=_env(),
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fw_rollouts simulator listening on http://127.0.0.1:")
        assert line.rstrip().endswith("/inference/v1 (api key: sim-key)")
        port = int(line.split(":")[2].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request(
            "POST",
            "/inference/v1/completions",
            json.dumps({**BODY, "prompt": "Hi"}),
            {"Authorization": "Bearer sim-key"},
        )
        assert json.loads(conn.getresponse().read())["usage"]["prompt_tokens"] == 2  # BOS counted
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _start_cli(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fw_rollouts.testing", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("fw_rollouts simulator listening on http://127.0.0.1:"), line
    return proc, int(line.split(":")[2].split("/")[0])


def _stop_cli(proc: subprocess.Popen[str]) -> str:
    """SIGTERM the CLI; it must exit 0. Returns its stderr."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    return err


class _Port:
    def __init__(self, port: int) -> None:
        self.port = port


def test_cli_lenient_replay_and_workers() -> None:
    proc, port = _start_cli("--lenient", "--replay-cache-mb", "4", "--workers", "2")
    try:
        server = _Port(port)
        peer = {"model": R1_MODEL, "messages": [{"role": "user", "content": "Hi"}], "provider": {}, "top_a": 0}
        r = call(server, peer, path="/v1/chat/completions")
        assert r.status == 200 and r.json()["choices"][0]["message"]["reasoning"]
        request = _raw_request(json.dumps(BENCH_BODY).encode())
        first, again = _exchange(port, request, request)  # one connection: one worker, one memo
        assert first.startswith(b"HTTP/1.1 200 ") and first == again
        with ThreadPoolExecutor(8) as pool:  # many connections, spread over the workers
            statuses = list(pool.map(lambda _: _exchange(port, request)[0][:12], range(32)))
        assert statuses == [b"HTTP/1.1 200"] * 32
    finally:
        _stop_cli(proc)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # every worker is gone


def test_cli_uvloop_flag() -> None:
    proc, port = _start_cli("--uvloop")
    try:
        assert call(_Port(port), BODY).status == 200
    finally:
        err = _stop_cli(proc)
    installed = importlib.util.find_spec("uvloop") is not None
    assert ("uvloop is not installed" in err) is not installed


def test_loop_factory_without_uvloop(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from fw_rollouts.testing import _cli

    assert _cli._loop_factory(False) is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail
    assert _cli._loop_factory(True) is None
    assert "uvloop is not installed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _cli.main(["--workers", "0"])


def test_import_is_light() -> None:
    """The testing package itself pulls in nothing heavy (its parent package is stubbed out here)."""
    code = (
        "import sys, types; pkg = types.ModuleType('fw_rollouts'); "
        f"pkg.__path__ = [{str(SRC / 'fw_rollouts')!r}]; sys.modules['fw_rollouts'] = pkg; "
        "import fw_rollouts.testing; "
        "heavy = [m for m in ('openai', 'aiohttp', 'httpx', 'httpx2', 'pydantic', 'tenacity') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True)
    assert out.stdout.strip() == "[]"
