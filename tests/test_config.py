"""Settings: validation of every option, secrets kept out of reprs and errors, and the request body."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from fw_rollouts import (
    DEFAULT_BASE_URL,
    ConfigurationError,
    FwRolloutsError,
    InvalidTypeError,
    Settings,
    ValidationError,
)
from fw_rollouts._options import CLIENT_OPTIONS, OPTIONS, SENT_OPTIONS

NON_OUTPUT_FIELDS = {o.field for o in SENT_OPTIONS if not o.shapes_output}

FW = "accounts/fireworks/models/"
SECRET = "fw_SECRET_abc123_do_not_print"

# Every field name the completions endpoint accepts that this SDK may send (reference §2).
FIREWORKS_FIELDS = {
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "typical_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "mirostat_target",
    "mirostat_lr",
    "logprobs",
    "top_logprobs",
    "echo",
    "echo_last",
    "stop",
    "logit_bias",
    "ignore_eos",
    "context_length_exceeded_behavior",
    "response_format",
    "user",
    "service_tier",
    "prompt_cache_key",
}


def create(**options: Any) -> Settings:
    options.setdefault("model", "qwen-15b")
    return Settings.create(**options)


def assert_names(error: BaseException, argument: str, value: Any, allowed: str) -> None:
    """The message names the argument, shows the value and says what is allowed."""
    message = str(error)
    assert f"{argument}=" in message, message
    assert repr(value)[:40] in message, message
    assert allowed in message, message


# (option, bad value, what the message must say is allowed)
OUT_OF_RANGE = [
    ("logprobs", -1, "from 0 to 5"),
    ("logprobs", 6, "from 0 to 5"),
    ("top_logprobs", -1, "from 0 to 5"),
    ("top_logprobs", 6, "from 0 to 5"),
    ("temperature", -0.1, "[0.0, 2.0]"),
    ("temperature", 2.01, "[0.0, 2.0]"),
    ("temperature", math.inf, "[0.0, 2.0]"),
    ("temperature", math.nan, "[0.0, 2.0]"),
    ("top_p", -0.01, "[0.0, 1.0]"),
    ("top_p", 1.01, "[0.0, 1.0]"),
    ("min_p", -0.5, "[0.0, 1.0]"),
    ("min_p", 1.5, "[0.0, 1.0]"),
    ("typical_p", 1.5, "[0.0, 1.0]"),
    ("top_k", -1, "from 0 to 100"),
    ("top_k", 101, "from 0 to 100"),
    ("presence_penalty", -2.01, "[-2.0, 2.0]"),
    ("presence_penalty", 2.01, "[-2.0, 2.0]"),
    ("frequency_penalty", -3, "[-2.0, 2.0]"),
    ("frequency_penalty", 2.5, "[-2.0, 2.0]"),
    ("repetition_penalty", -0.1, "[0.0, 2.0]"),
    ("repetition_penalty", 2.1, "[0.0, 2.0]"),
    ("max_tokens", -1, ">= 0"),
    ("echo_last", 0, ">= 1"),
    ("stop", ["a", "b", "c", "d", "e"], "at most 4 stop sequences"),
    ("stop", ["a", ""], "non-empty"),
    ("stop", "", "non-empty"),
    ("max_concurrency", 0, ">= 1"),
    ("max_retries", -1, ">= 0"),
    ("timeout", 0, "> 0"),
    ("timeout", -5.0, "> 0"),
    ("requests_per_minute", 0, "> 0"),
    ("tokens_per_minute", -1, "> 0"),
    ("prompt_tokens_per_minute", 0, "> 0"),
    ("generated_tokens_per_minute", -5.5, "> 0"),
    ("logit_bias", {"abc": 1.0}, "token ids"),
    ("logit_bias", {"42": 101}, "from -100 to 100"),
    ("service_tier", "gold", "'auto', 'default', 'flex', 'priority'"),
    ("context_length_exceeded_behavior", "drop", "'truncate', 'error'"),
    ("mirostat_lr", 1.5, "[0.0, 1.0]"),
]

WRONG_TYPE = [
    ("logprobs", True, "an integer from 0 to 5"),
    ("logprobs", False, "an integer from 0 to 5"),
    ("logprobs", 2.0, "an integer from 0 to 5"),
    ("logprobs", "5", "an integer from 0 to 5"),
    ("top_logprobs", True, "an integer from 0 to 5"),
    ("temperature", "hot", "a number from 0.0 to 2.0"),
    ("temperature", True, "a number from 0.0 to 2.0"),
    ("top_p", [0.9], "a number from 0.0 to 1.0"),
    ("top_k", 2.5, "an integer from 0 to 100"),
    ("top_k", True, "an integer from 0 to 100"),
    ("max_tokens", 10.0, "an integer >= 0"),
    ("max_tokens", "100", "an integer >= 0"),
    ("echo_last", 2.0, "an integer >= 1"),
    ("presence_penalty", "0", "a number from -2.0 to 2.0"),
    ("stop", 5, "a string or a list of up to 4 strings"),
    ("stop", ["a", 1], "a string or a list of up to 4 strings"),
    ("echo", "yes", "True or False"),
    ("echo", 1, "True or False"),
    ("use_cache", None, "True or False"),
    ("raw", 0, "True or False"),
    ("model", 5, "a model name"),
    ("base_url", 5, "an http(s) URL string"),
    ("cache_dir", "", "a directory path"),
    ("cache_dir", 3, "a directory path"),
    ("timeout", None, "a positive number"),
    ("prompt_tokens_per_minute", True, "a positive number, or None"),
    ("generated_tokens_per_minute", "6000", "a positive number, or None"),
    ("max_concurrency", 2.0, "an integer >= 1"),
    ("chat_template", 5, "a Jinja template string, a built-in template name, or None"),
    ("chat_template_kwargs", "x", "a dict, or None"),
    ("response_format", "json", "a dict, or None"),
    ("user", 5, "a string, or None"),
    ("ignore_eos", "no", "True or False"),
    ("logit_bias", [1], "a dict of token id -> bias"),
]


class TestRanges:
    @pytest.mark.parametrize(("name", "value", "allowed"), OUT_OF_RANGE)
    def test_out_of_range(self, name: str, value: Any, allowed: str) -> None:
        with pytest.raises(ValidationError) as info:
            create(**{name: value})
        assert not isinstance(info.value, InvalidTypeError)
        assert info.value.argument == name
        assert info.value.allowed and allowed in info.value.allowed
        assert_names(info.value, name, value, allowed)

    @pytest.mark.parametrize(("name", "value", "allowed"), WRONG_TYPE)
    def test_wrong_type(self, name: str, value: Any, allowed: str) -> None:
        with pytest.raises(InvalidTypeError) as info:
            create(**{name: value})
        assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
        assert info.value.argument == name
        assert_names(info.value, name, value, allowed)

    @pytest.mark.parametrize(
        ("name", "values"),
        [
            ("logprobs", [1, 5]),
            ("top_logprobs", [0, 5]),
            ("temperature", [0, 0.0, 2, 2.0, 1.3]),
            ("top_p", [0, 1, 0.5]),
            ("min_p", [0, 1]),
            ("top_k", [0, 100, 40]),
            ("presence_penalty", [-2, 2, 0]),
            ("frequency_penalty", [-2.0, 2.0]),
            ("repetition_penalty", [0, 2, 1.1]),
            ("max_tokens", [0, 1, 100_000]),
            ("max_retries", [0, 10]),
            ("timeout", [0.001, 600]),
        ],
    )
    def test_boundaries_are_accepted(self, name: str, values: list[Any]) -> None:
        for value in values:
            settings = create(**{name: value})
            assert getattr(settings, name) == value

    @pytest.mark.parametrize(
        "name",
        ["temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
         "repetition_penalty", "max_tokens", "logprobs", "top_logprobs", "typical_p", "user"],
    )
    def test_none_is_accepted(self, name: str) -> None:
        settings = create(**{name: None})
        assert getattr(settings, name) is None
        assert name not in settings.body("p")

    def test_numbers_are_stored_as_floats(self) -> None:
        settings = create(temperature=1, top_p=1)
        assert type(settings.temperature) is float and type(settings.top_p) is float

    def test_logprobs_zero_means_off(self) -> None:
        assert create(logprobs=0).logprobs is None

    def test_stop_string_becomes_a_tuple(self) -> None:
        assert create(stop="\n\n").stop == ("\n\n",)
        assert create(stop=["a", "b", "c", "d"]).stop == ("a", "b", "c", "d")
        assert create(stop=None).stop == ()

    def test_logit_bias_keys_become_strings(self) -> None:
        assert create(logit_bias={42: -100, "7": 2}).logit_bias == {"42": -100.0, "7": 2.0}

    def test_model_is_resolved(self) -> None:
        assert create(model="llama-v3p1-8b").model == FW + "llama-v3p1-8b-instruct"

    def test_model_is_required(self) -> None:
        with pytest.raises(ValidationError) as info:
            Settings.create(temperature=0.5)
        assert info.value.argument == "model"

    def test_replace_validates(self) -> None:
        settings = create(temperature=0.5)
        assert settings.replace() is settings
        assert settings.replace(temperature=1.0).temperature == 1.0
        assert settings.temperature == 0.5
        with pytest.raises(ValidationError, match="temperature=3"):
            settings.replace(temperature=3)

    def test_replace_keeps_and_clears_service_fields(self) -> None:
        settings = create(top_logprobs=3, user="me")
        body = settings.replace(temperature=0.1).body("p")
        assert body["top_logprobs"] == 3 and body["user"] == "me"
        cleared = settings.replace(top_logprobs=None).body("p")
        assert "top_logprobs" not in cleared and cleared["user"] == "me"

    def test_for_call_takes_call_options_and_refuses_client_options(self) -> None:
        settings = create(temperature=0.5)
        assert settings.for_call({}) is settings
        assert settings.for_call({"temperature": 0.1, "use_cache": False}).temperature == 0.1
        for name in sorted(CLIENT_OPTIONS):
            with pytest.raises(ValidationError) as info:
                settings.for_call({name: getattr(settings, name)})
            assert info.value.argument == name
            assert f"with_options({name}=" in str(info.value)

    def test_settings_are_frozen(self) -> None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            create().temperature = 1.0  # type: ignore[misc]


class TestBaseUrl:
    @pytest.mark.parametrize(
        "url",
        ["api.fireworks.ai", "ftp://x", "http://", "https://", "//api.fireworks.ai/v1", "https://h/v1?x=1", "https://h/v1#f"],
    )
    def test_unusable_base_url(self, url: str) -> None:
        with pytest.raises(ConfigurationError) as info:
            create(base_url=url)
        assert isinstance(info.value, ValueError)
        message = str(info.value)
        assert f"base_url={url!r}" in message
        assert "http://" in message or "query" in message

    def test_base_url_is_normalised(self) -> None:
        assert create(base_url=" http://127.0.0.1:8000/v1/ ").base_url == "http://127.0.0.1:8000/v1"

    def test_default_base_url(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("FIREWORKS_BASE_URL", raising=False)
        assert create().resolved_base_url == DEFAULT_BASE_URL == "https://api.fireworks.ai/inference/v1"

    def test_environment_base_url_is_honoured(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FIREWORKS_BASE_URL", "http://localhost:9000/inference/v1/")
        assert create().resolved_base_url == "http://localhost:9000/inference/v1"
        assert create(base_url="https://other.example/v1").resolved_base_url == "https://other.example/v1"

    def test_bad_environment_base_url_raises(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FIREWORKS_BASE_URL", "localhost:9000")
        with pytest.raises(ConfigurationError, match="base_url='localhost:9000'"):
            create().resolved_base_url  # noqa: B018


class TestUnknownOptions:
    def test_unknown_option_lists_the_valid_ones(self) -> None:
        with pytest.raises(ValidationError) as info:
            create(best_of=2)
        message = str(info.value)
        assert info.value.argument == "best_of"
        assert "unknown option 'best_of'" in message
        assert "rejects unknown fields" in message
        for name in ("temperature", "top_p", "logprobs", "echo", "stop", "max_tokens"):
            assert name in message
        assert set(Settings.option_names()) <= set(message.replace(",", " ").replace(".", " ").split())

    def test_typo_is_rejected_naming_the_typo(self) -> None:
        with pytest.raises(ValidationError, match="unknown option 'temprature'"):
            create(temprature=0.5)

    def test_several_unknown_options_are_all_named(self) -> None:
        with pytest.raises(ValidationError) as info:
            create(zzz=1, aaa=2)
        assert "'aaa'" in str(info.value) and "'zzz'" in str(info.value)

    def test_replace_rejects_unknown_options(self) -> None:
        with pytest.raises(ValidationError, match="unknown option 'n'"):
            create().replace(n=4)

    def test_every_listed_option_is_accepted(self) -> None:
        assert Settings.option_names() == tuple(o.name for o in OPTIONS)
        assert len(Settings.option_names()) == len(set(Settings.option_names()))

    def test_a_typo_gets_a_suggestion(self) -> None:
        with pytest.raises(ValidationError, match="did you mean 'temperature'"):
            create(temprature=0.5)
        with pytest.raises(ValidationError, match="did you mean 'max_tokens'"):
            create().replace(max_token=5)


class TestSecrets:
    def test_api_key_is_not_in_repr(self) -> None:
        settings = create(api_key=SECRET, temperature=0.3, user="u")
        assert settings.api_key == SECRET
        assert SECRET not in repr(settings)
        assert SECRET not in str(settings)
        assert "api_key" not in repr(settings)

    def test_api_key_is_not_in_any_body(self) -> None:
        settings = create(api_key=SECRET)
        for body in (settings.body("p"), settings.key_body("p"), settings.sampling_summary()):
            assert SECRET not in repr(body)

    @pytest.mark.parametrize(
        "options",
        [
            {"temperature": 9},
            {"top_k": "x"},
            {"base_url": "nope"},
            {"bogus_option": 1},
            {"stop": ["a"] * 5},
            {"model": ""},
        ],
    )
    def test_api_key_is_not_in_error_messages(self, options: dict[str, Any]) -> None:
        with pytest.raises(FwRolloutsError) as info:
            create(api_key=SECRET, **options)
        assert SECRET not in str(info.value)
        assert SECRET not in repr(info.value)
        with pytest.raises(FwRolloutsError) as info:
            create(api_key=SECRET).replace(**options)
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)

    @pytest.mark.parametrize("key", ["   ", "", 12345, [SECRET]])
    def test_invalid_api_key_is_not_echoed(self, key: Any) -> None:
        with pytest.raises(ConfigurationError, match="invalid api_key") as info:
            create(api_key=key)
        assert SECRET not in str(info.value)
        assert "12345" not in str(info.value)

    def test_misspelt_api_key_option_is_not_echoed(self) -> None:
        with pytest.raises(ValidationError) as info:
            create(apikey=SECRET)
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)

    def test_api_key_is_stripped(self) -> None:
        assert create(api_key=f"  {SECRET}\n").api_key == SECRET

    def test_missing_key_names_both_sources(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("FIREWORKS_API_KEY", raising=False)
        with pytest.raises(ConfigurationError) as info:
            create().require_api_key()
        assert "api_key" in str(info.value)
        assert "FIREWORKS_API_KEY" in str(info.value)

    def test_blank_environment_key_counts_as_missing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FIREWORKS_API_KEY", "  ")
        with pytest.raises(ConfigurationError, match="FIREWORKS_API_KEY"):
            create().require_api_key()

    def test_key_sources(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FIREWORKS_API_KEY", " env-key ")
        assert create().require_api_key() == "env-key"
        assert create(api_key=SECRET).require_api_key() == SECRET


class TestBody:
    def test_default_body(self) -> None:
        assert create().body("PROMPT") == {
            "model": FW + "deepseek-r1-distill-qwen-1p5b",
            "prompt": "PROMPT",
            "max_tokens": 4096,
            "temperature": 0.7,
            "top_p": 0.95,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "logprobs": 5,
            "echo": True,
        }

    def test_only_known_fields_and_no_none_values(self) -> None:
        settings = create(
            api_key=SECRET,
            base_url="http://localhost:1/v1",
            top_k=40,
            min_p=0.05,
            repetition_penalty=1.1,
            stop=["\n"],
            typical_p=None,
            top_logprobs=2,
            logit_bias={1: 2},
            ignore_eos=False,
            context_length_exceeded_behavior="error",
            mirostat_target=None,
            response_format={"type": "json_object"},
            user="me",
            service_tier="priority",
            prompt_cache_key="session-1",
            use_cache=False,
            cache_dir="/tmp/x",
            timeout=5,
            raw=True,
            chat_template="llama3.1",
            max_concurrency=3,
            requests_per_minute=60,
            prompt_tokens_per_minute=60_000,
            generated_tokens_per_minute=6_000,
        )
        body = settings.body("p")
        assert set(body) <= FIREWORKS_FIELDS, set(body) - FIREWORKS_FIELDS
        assert None not in body.values()
        assert "typical_p" not in body and "mirostat_target" not in body
        assert body["top_k"] == 40 and body["stop"] == ["\n"] and body["top_logprobs"] == 2
        assert body["ignore_eos"] is False
        assert body["logit_bias"] == {"1": 2.0}

    def test_none_sampling_values_are_not_sent(self) -> None:
        body = create(temperature=None, top_p=None, max_tokens=None, presence_penalty=None,
                      frequency_penalty=None).body("p")
        assert body == {"model": FW + "deepseek-r1-distill-qwen-1p5b", "prompt": "p", "logprobs": 5, "echo": True}

    @pytest.mark.parametrize("logprobs", [0, None])
    def test_logprobs_off_sends_neither_logprobs_nor_echo(self, logprobs: int | None) -> None:
        settings = create(logprobs=logprobs, echo=True)
        body = settings.body("p")
        assert "logprobs" not in body and "echo" not in body
        assert settings.wants_logprobs is False and settings.wants_echo is False

    def test_echo_only_with_logprobs(self) -> None:
        assert "echo" not in create(logprobs=3, echo=False).body("p")
        body = create(logprobs=3, echo=True).body("p")
        assert body["logprobs"] == 3 and body["echo"] is True
        assert create(logprobs=1).wants_echo is True

    def test_echo_last_only_with_echo_and_logprobs(self) -> None:
        body = create(logprobs=2, echo_last=7).body("p")
        assert body["echo"] is True and body["echo_last"] == 7
        assert create(logprobs=2, echo_last=7).key_body("p")["echo_last"] == 7  # it shapes the reply
        assert "echo_last" not in create(logprobs=2, echo=False, echo_last=7).body("p")
        assert "echo_last" not in create(logprobs=0, echo=True, echo_last=7).body("p")

    def test_stop_is_sent_as_a_list(self) -> None:
        assert create(stop="###").body("p")["stop"] == ["###"]
        assert create(stop=("a", "b")).body("p")["stop"] == ["a", "b"]
        assert "stop" not in create().body("p")

    def test_key_body_omits_non_output_fields(self) -> None:
        settings = create(user="me", service_tier="priority", prompt_cache_key="k", top_logprobs=2, stop="x")
        assert {"user", "service_tier", "prompt_cache_key"} <= set(settings.body("p"))
        key_body = settings.key_body("p")
        assert {"user", "service_tier", "prompt_cache_key"} == NON_OUTPUT_FIELDS
        assert not NON_OUTPUT_FIELDS & set(key_body)
        assert key_body == {k: v for k, v in settings.body("p").items() if k not in NON_OUTPUT_FIELDS}
        assert key_body["top_logprobs"] == 2 and key_body["stop"] == ["x"]

    def test_sampling_summary_has_no_prompt(self) -> None:
        summary = create(temperature=0.2).sampling_summary()
        assert "prompt" not in summary
        assert summary["temperature"] == 0.2
