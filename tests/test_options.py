"""The option table is the one source: signatures, Settings, bodies, messages and the docs agree with it.

Also the limits among the client options: ``connect_timeout`` (over a port that never accepts) and the
validation of ``max_response_bytes`` (its effect is in test_impossible_replies.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fw_rollouts import (
    APITimeoutError,
    AsyncFireworks,
    Fireworks,
    FireworksClient,
    InvalidTypeError,
    Settings,
    ValidationError,
)
from fw_rollouts._options import CALL_OPTIONS, CLIENT_OPTIONS, OPTIONS, REQUIRED, SENT_OPTIONS, options_markdown
from fw_rollouts._services import SEAMS

DOCS = Path(__file__).resolve().parents[1] / "docs"

# FireworksClient keeps the rollouts package's defaults where they differ (docs/usage.md, "Drop-in").
PEER_DEFAULTS = {"top_k": 40, "max_retries": 100, "use_cache": "json", "timeout": 300}
# RolloutsClient arguments that are not options of ours (OpenRouter-only or logging), handled in _compat.
PEER_ONLY = {"provider", "reasoning", "include_reasoning", "verbose"}


def parameters(function: Any) -> dict[str, inspect.Parameter]:
    return {
        name: p
        for name, p in inspect.signature(function).parameters.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def validated(name: str, value: Any) -> Any:
    return next(o for o in OPTIONS if o.name == name).validate(value)


class TestSignatures:
    def test_async_client_takes_every_option_with_the_table_default(self) -> None:
        params = parameters(AsyncFireworks.__init__)
        assert list(params) == [o.name for o in OPTIONS if o.name == "model"] + [
            o.name for o in OPTIONS if o.name != "model"
        ] + list(SEAMS), "AsyncFireworks.__init__ must list the table's options in table order, then the seams"
        for option in OPTIONS:
            param = params[option.name]
            if option.default is REQUIRED:
                assert param.default is inspect.Parameter.empty, option.name
            else:
                assert validated(option.name, param.default) == option.default, option.name
        for seam in SEAMS:
            assert params[seam].default is None and params[seam].kind is inspect.Parameter.KEYWORD_ONLY

    def test_sync_client_has_the_same_signature(self) -> None:
        assert inspect.signature(Fireworks.__init__) == inspect.signature(AsyncFireworks.__init__)

    def test_drop_in_client_names_are_options_and_defaults_agree_but_the_peers(self) -> None:
        params = parameters(FireworksClient.__init__)
        for name, param in params.items():
            if name in PEER_ONLY:
                continue
            assert name in CLIENT_OPTIONS | CALL_OPTIONS, f"{name} is not in the option table"
            if name in PEER_DEFAULTS:
                assert param.default == PEER_DEFAULTS[name], name
            elif name != "model":
                option_default = next(o.default for o in OPTIONS if o.name == name)
                assert validated(name, param.default) == option_default, name

    def test_generate_takes_call_toggles_by_name(self) -> None:
        for method in (AsyncFireworks.generate, Fireworks.generate):
            params = parameters(method)
            assert {"prompt", "n_samples", "seed", "raw", "use_cache", "progress_bar"} <= set(params)
            assert not set(params) & CLIENT_OPTIONS


class TestSettingsDerive:
    def test_settings_fields_are_the_table(self) -> None:
        names = [f.name for f in dataclasses.fields(Settings) if f.name != "model_as_given"]
        assert sorted(names) == sorted(o.name for o in OPTIONS)
        assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(Settings) if f.name in names)

    def test_defaults_come_from_the_table(self) -> None:
        settings = Settings.create(model="qwen-15b")
        for option in OPTIONS:
            if option.default is not REQUIRED:
                assert getattr(settings, option.name) == option.default, option.name

    def test_only_sent_options_reach_the_body_and_only_output_shaping_ones_the_key(self) -> None:
        values = {
            "model": "qwen-15b", "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "stop": ["x"],
            "samples_per_request": 2, "top_logprobs": 2, "typical_p": 0.9, "logit_bias": {"1": 2.0},
            "ignore_eos": True, "context_length_exceeded_behavior": "error", "mirostat_target": 1.0,
            "mirostat_lr": 0.1, "response_format": {"type": "json_object"}, "user": "u", "service_tier": "flex",
            "prompt_cache_key": "k", "echo_last": 3,
        }  # fmt: skip
        settings = Settings.create(**values)
        body = settings.body("p")
        assert set(body) == {"prompt"} | {o.field for o in SENT_OPTIONS}
        assert body["n"] == 2 and body["stop"] == ["x"]
        assert set(settings.key_body("p")) == {"prompt"} | {o.field for o in SENT_OPTIONS if o.shapes_output}
        assert not {o.name for o in OPTIONS if not o.sent} & set(body)

    def test_every_option_has_a_doc_line_and_a_scope(self) -> None:
        for option in OPTIONS:
            assert option.doc.strip() and option.scope in ("client", "call") and option.annotation, option.name
        assert {"api_key", "base_url", "timeout", "connect_timeout", "max_response_bytes", "max_retries",
                "max_concurrency", "requests_per_minute", "tokens_per_minute", "prompt_tokens_per_minute",
                "generated_tokens_per_minute", "cache_dir"} == CLIENT_OPTIONS  # fmt: skip


class TestMessages:
    def test_unknown_option_suggests_the_closest(self) -> None:
        with pytest.raises(ValidationError, match="did you mean 'presence_penalty'"):
            Settings.create(model="qwen-15b", presense_penalty=0.1)

    @pytest.mark.parametrize("name", sorted(CLIENT_OPTIONS))
    def test_client_option_per_call_names_with_options(self, name: str) -> None:
        settings = Settings.create(model="qwen-15b")
        with pytest.raises(ValidationError, match=re.escape(f"with_options({name}=")):
            settings.for_call({name: getattr(settings, name)})


def test_docs_options_table_is_the_table() -> None:
    usage = (DOCS / "usage.md").read_text(encoding="utf-8")
    assert options_markdown() in usage, (
        "docs/usage.md's options table is out of date: paste the output of "
        "`python -c 'from fw_rollouts._options import options_markdown; print(options_markdown())'`"
    )


# -- the connection and reply limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("connect_timeout", 0, ValidationError),
        ("connect_timeout", -1.0, ValidationError),
        ("connect_timeout", None, InvalidTypeError),
        ("connect_timeout", "10", InvalidTypeError),
        ("connect_timeout", True, InvalidTypeError),
        ("connect_timeout", float("nan"), InvalidTypeError),
        ("max_response_bytes", 0, ValidationError),
        ("max_response_bytes", -1, ValidationError),
        ("max_response_bytes", 1.5, InvalidTypeError),
        ("max_response_bytes", "64MB", InvalidTypeError),
        ("max_response_bytes", True, InvalidTypeError),
    ],
)
def test_limits_are_validated_naming_the_option(name: str, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=name):
        Settings.create(model="qwen-15b", **{name: value})


def test_limit_defaults_and_no_cap() -> None:
    settings = Settings.create(model="qwen-15b")
    assert settings.connect_timeout == 10.0 and settings.max_response_bytes == 256 * 2**20
    assert Settings.create(model="qwen-15b", max_response_bytes=None, connect_timeout=2).max_response_bytes is None
    assert Settings.create(model="qwen-15b", connect_timeout=2).connect_timeout == 2.0


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops new SYNs, so a connect hangs until it times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # the one connection the queue holds
    try:
        yield port
    finally:
        filler.close()
        listener.close()


@pytest.mark.parametrize("transport", ["http", "openai"])
def test_connect_timeout_bounds_connecting_and_a_sibling_has_its_own(
    transport: str, unanswered_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if transport == "openai":
        monkeypatch.setenv("FW_ROLLOUTS_TRANSPORT", "openai")
    else:
        monkeypatch.delenv("FW_ROLLOUTS_TRANSPORT", raising=False)
    base_url = f"http://127.0.0.1:{unanswered_port}/v1"

    async def fail(client: AsyncFireworks) -> tuple[APITimeoutError, float]:
        started = time.monotonic()
        with pytest.raises(APITimeoutError) as info:
            await client.generate("hi")
        return info.value, time.monotonic() - started

    async def main() -> list[tuple[APITimeoutError, float]]:
        options: dict[str, Any] = {"api_key": "k", "base_url": base_url, "cache_dir": str(tmp_path)}
        options.update(max_retries=0, progress_bar=False)
        async with AsyncFireworks("qwen-15b", connect_timeout=0.2, timeout=30, **options) as c:
            sibling = c.with_options(connect_timeout=0.6)  # a transport of its own, not the parent's
            try:
                return [await fail(c), await fail(sibling)]
            finally:
                await sibling.aclose()

    (own, own_s), (sibling, sibling_s) = asyncio.run(main())
    assert "within 0.2s (connect_timeout)" in str(own) and own.connected is False and 0.2 <= own_s < 2
    assert "within 0.6s (connect_timeout)" in str(sibling) and sibling.connected is False and 0.6 <= sibling_s < 3
