"""Cache keys (pure: no cache directory is touched). The record format is tested in test_record.py."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from fw_rollouts import Settings
from fw_rollouts._cache_key import CacheKeyer

ENDPOINT = "https://api.fireworks.ai/inference/v1"
PROMPT = "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"
SECRET = "fw_SECRET_key_for_cache_tests"
DEPLOYMENT = "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b#accounts/me/deployments/d"


def key(endpoint: str = ENDPOINT, prompt: str = PROMPT, seed: int = 0, **options: Any) -> str:
    options.setdefault("model", "qwen-15b")
    settings = Settings.create(**options)
    return CacheKeyer(endpoint, settings.key_body(prompt))(seed)


BASE = key()

# Each changes exactly one thing that shapes the output.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("endpoint", {"endpoint": "http://127.0.0.1:8000/v1"}),
    ("endpoint-trailing-path", {"endpoint": ENDPOINT + "/v2"}),
    ("model", {"model": "llama-v3p1-8b"}),
    ("model-deployment", {"model": DEPLOYMENT}),
    ("prompt", {"prompt": PROMPT + " "}),
    ("prompt-unicode", {"prompt": PROMPT.replace("｜", "|")}),
    ("seed", {"seed": 1}),
    ("temperature", {"temperature": 0.71}),
    ("temperature-none", {"temperature": None}),
    ("top_p", {"top_p": 0.9}),
    ("max_tokens", {"max_tokens": 4095}),
    ("top_k", {"top_k": 40}),
    ("min_p", {"min_p": 0.05}),
    ("presence_penalty", {"presence_penalty": 0.1}),
    ("frequency_penalty", {"frequency_penalty": -0.1}),
    ("repetition_penalty", {"repetition_penalty": 1.1}),
    ("stop", {"stop": ["\n"]}),
    ("stop-other", {"stop": ["\n\n"]}),
    ("logprobs", {"logprobs": 4}),
    ("logprobs-off", {"logprobs": None}),
    ("echo", {"echo": False}),
    ("top_logprobs", {"top_logprobs": 2}),
    ("typical_p", {"typical_p": 0.9}),
    ("logit_bias", {"logit_bias": {42: -100}}),
    ("ignore_eos", {"ignore_eos": True}),
    ("context_length_exceeded_behavior", {"context_length_exceeded_behavior": "error"}),
    ("mirostat_target", {"mirostat_target": 5.0}),
    ("mirostat_lr", {"mirostat_lr": 0.2}),
    ("response_format", {"response_format": {"type": "json_object"}}),
]


class TestCacheKeys:
    def test_key_is_a_sha256_hex_digest(self) -> None:
        assert len(BASE) == 64
        int(BASE, 16)

    def test_same_input_same_key(self) -> None:
        assert key() == BASE
        assert key(temperature=0.7, top_p=0.95) == BASE  # the defaults, spelled out
        assert key(model="accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b") == BASE  # alias resolved

    @pytest.mark.parametrize(("what", "change"), VARIANTS, ids=[v[0] for v in VARIANTS])
    def test_any_change_changes_the_key(self, what: str, change: dict[str, Any]) -> None:
        assert key(**change) != BASE

    def test_all_variants_differ_from_each_other(self) -> None:
        keys = [key(**change) for _, change in VARIANTS]
        assert len(set(keys)) == len(keys)

    def test_field_order_does_not_matter(self) -> None:
        body = Settings.create(model="qwen-15b", stop=["x"], top_k=3).key_body(PROMPT)
        reordered = dict(reversed(list(body.items())))
        assert list(reordered) != list(body)
        assert CacheKeyer(ENDPOINT, reordered)(5) == CacheKeyer(ENDPOINT, body)(5)

    def test_seeds_of_one_keyer(self) -> None:
        keyer = CacheKeyer(ENDPOINT, Settings.create(model="qwen-15b").key_body(PROMPT))
        keys = [keyer(s) for s in range(100)]
        assert len(set(keys)) == 100
        assert keyer(0) == BASE
        assert keyer(7) == keyer(7)  # the prefix hash is not consumed by a call

    def test_non_output_fields_do_not_change_the_key(self) -> None:
        assert key(user="someone", service_tier="priority", prompt_cache_key="session-1") == BASE

    def test_client_side_options_do_not_change_the_key(self) -> None:
        assert key(timeout=5, max_retries=0, max_concurrency=2, progress_bar=False, use_cache=True) == BASE
        assert key(requests_per_minute=10, cache_dir="/elsewhere", raw=True) == BASE

    def test_api_key_is_not_an_input(self) -> None:
        assert list(inspect.signature(CacheKeyer).parameters) == ["endpoint", "body"]
        assert list(inspect.signature(CacheKeyer.__call__).parameters) == ["self", "seed", "choice"]
        settings = Settings.create(model="qwen-15b", api_key=SECRET)
        body = settings.key_body(PROMPT)
        assert SECRET not in repr(body)
        assert key(api_key=SECRET) == key(api_key="another-key") == BASE

    def test_keys_never_change(self) -> None:
        # Every cache on disk is addressed by these: a change here would silently turn every hit into a miss.
        body = {"model": "accounts/fireworks/models/qwen", "prompt": "Hi ｜", "temperature": 0.7, "stop": ["\n"]}
        keyer = CacheKeyer(ENDPOINT, body)
        assert keyer(0) == "ee144dbd88368c9b6a6d3ef523c5af681d20a17f23c5f46f4f06b01a8765a068"
        assert keyer(41, 2) == "bd242766c533f2ce1458fc20a36ed0e203c2d6765e47a709ed92286dc82b7194"

    def test_choice_is_part_of_the_key(self) -> None:
        keyer = CacheKeyer(ENDPOINT, {"model": "m"})
        assert len({keyer(3), keyer(3, 0), keyer(3, 1), keyer(4, 0)}) == 4

    def test_keyer_holds_no_body_or_secret(self) -> None:
        keyer = CacheKeyer(ENDPOINT, Settings.create(model="qwen-15b", api_key=SECRET).key_body(PROMPT))
        assert CacheKeyer.__slots__ == ("_prefix",)
        assert not hasattr(keyer, "__dict__")
