"""Model names, prompt rendering, thinking injection (as the peer ``rollouts`` does it) and prompt validation."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest

from fw_rollouts import (
    MODEL_ALIASES,
    ConfigurationError,
    DeepSeekR1DistillTemplate,
    HarmonyTemplate,
    InvalidTypeError,
    Llama31Template,
    ValidationError,
    resolve_model,
)
from fw_rollouts._prompts import model_hint, render_prompt, validate_prompt

FW = "accounts/fireworks/models/"

R1 = DeepSeekR1DistillTemplate()
LLAMA = Llama31Template()
HARMONY = HarmonyTemplate(current_date="2026-11-24")

R1_USER_ONLY = "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"
LLAMA_USER_ONLY = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
HARMONY_USER_ONLY = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\nCurrent date: 2026-11-24\n\nReasoning: medium\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
    "<|start|>user<|message|>What is 2+2?<|end|><|start|>assistant"
)

# The peer's warning, word for word (rollouts/think_handler.py).
PEER_TRAILING_SPACE_WARNING = (
    "You have included a <think> token, but your post-<think> text has a trailing space. "
    "This is likely to create tokenization issues (e.g., increases the likelihood of the next token being a "
    "number). You should probably change your prompt."
)


def render(prompt: Any, template: Any = R1, *, raw: bool = False) -> str:
    return render_prompt(prompt, template=template, raw=raw).text


class TestResolveModel:
    @pytest.mark.parametrize(
        ("alias", "model_id"),
        [
            ("qwen-15b", FW + "deepseek-r1-distill-qwen-1p5b"),
            ("llama-v3p1-8b", FW + "llama-v3p1-8b-instruct"),
            ("gpt-oss-20b", FW + "gpt-oss-20b"),
            ("gpt-oss-120b", FW + "gpt-oss-120b"),
        ],
    )
    def test_aliases(self, alias: str, model_id: str) -> None:
        assert resolve_model(alias) == model_id
        assert MODEL_ALIASES[alias] == model_id

    def test_peer_aliases_are_all_present(self) -> None:
        assert {"qwen-15b", "llama-v3p1-8b", "gpt-oss-20b"} <= set(MODEL_ALIASES)

    @pytest.mark.parametrize(
        ("given", "model_id"),
        [
            ("qwen/qwen3-30b-a3b", FW + "qwen3-30b-a3b"),
            ("deepseek-ai/deepseek-r1-distill-qwen-1p5b", FW + "deepseek-r1-distill-qwen-1p5b"),
            ("meta-llama/llama-v3p3-70b-instruct", FW + "llama-v3p3-70b-instruct"),
        ],
    )
    def test_org_slash_name(self, given: str, model_id: str) -> None:
        assert resolve_model(given) == model_id

    @pytest.mark.parametrize("name", ["llama-v3p3-70b-instruct", "deepseek-r1", "qwen3-8b"])
    def test_bare_names(self, name: str) -> None:
        assert resolve_model(name) == FW + name

    @pytest.mark.parametrize(
        "model_id",
        [
            FW + "gpt-oss-20b",
            "accounts/my-account/models/my-fine-tune",
            "accounts/my-account/deployments/abc123",
            FW + "llama-v3p1-8b-instruct#accounts/my-account/deployments/abc123",
        ],
    )
    def test_full_ids_pass_unchanged(self, model_id: str) -> None:
        assert resolve_model(model_id) == model_id

    def test_surrounding_whitespace_is_ignored(self) -> None:
        assert resolve_model("  qwen-15b\n") == FW + "deepseek-r1-distill-qwen-1p5b"

    @pytest.mark.parametrize("model", ["", "   ", "a/b/c", "/name", "org/", "//"])
    def test_bad_names(self, model: str) -> None:
        with pytest.raises(ValidationError) as info:
            resolve_model(model)
        assert info.value.argument == "model"
        assert info.value.value == model
        assert "model=" in str(info.value)

    @pytest.mark.parametrize("model", [None, 15, ["qwen-15b"], b"qwen-15b"])
    def test_wrong_types(self, model: Any) -> None:
        with pytest.raises(InvalidTypeError) as info:
            resolve_model(model)
        assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
        assert info.value.argument == "model"
        assert "accounts/fireworks/models/" in str(info.value)


class TestThinkingInjection:
    PROMPT = "What is 2+2? <think>Let me calculate: 2"

    def test_r1_continues_the_templates_own_think(self) -> None:
        assert render(self.PROMPT, R1) == (
            "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\nLet me calculate: 2"
        )

    def test_llama31_appends_think_after_the_assistant_header(self) -> None:
        assert render(self.PROMPT, LLAMA) == LLAMA_USER_ONLY + "<think>Let me calculate: 2"

    def test_gpt_oss_opens_the_analysis_channel(self) -> None:
        assert render(self.PROMPT, HARMONY) == HARMONY_USER_ONLY + "<|channel|>analysis<|message|>Let me calculate: 2"

    def test_r1_thought_starting_with_newline_does_not_double_it(self) -> None:
        assert render("What is 2+2?<think>\nLet me", R1) == R1_USER_ONLY + "Let me"

    def test_thought_is_kept_verbatim(self) -> None:
        assert render("What is 2+2?<think>  two  spaces\nand lines", LLAMA) == (
            LLAMA_USER_ONLY + "<think>  two  spaces\nand lines"
        )

    def test_trailing_space_warns_with_the_peer_message(self) -> None:
        with pytest.warns(UserWarning, match=re.escape(PEER_TRAILING_SPACE_WARNING)):
            text = render(self.PROMPT + " ", R1)
        assert text.endswith("Let me calculate: 2 ")  # still sent as given

    def test_no_warning_without_trailing_space(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            render(self.PROMPT, R1)
            render("What is 2+2? ", R1)  # a trailing space with no <think> is nobody's business

    def test_multiple_think_tags_warn_and_split_at_the_first(self) -> None:
        with pytest.warns(UserWarning, match="Multiple <think> tags detected"):
            text = render("What is 2+2? <think>First <think>second", R1)
        assert text == R1_USER_ONLY + "First <think>second"

    def test_empty_user_part(self) -> None:
        assert render("<think>Let me think", R1) == "<｜begin▁of▁sentence｜><｜Assistant｜><think>\nLet me think"
        assert render("  <think>Let me think", LLAMA) == (
            "<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>\n\n<think>Let me think"
        )

    def test_empty_thought(self) -> None:
        assert render("What is 2+2?<think>", R1) == R1_USER_ONLY
        assert render("What is 2+2?<think>", LLAMA) == LLAMA_USER_ONLY + "<think>"

    def test_user_part_is_stripped(self) -> None:
        assert render("\n  What is 2+2?   <think>x", R1) == R1_USER_ONLY + "x"

    def test_split_of_the_continued_reasoning(self) -> None:
        rendered = render_prompt(self.PROMPT, template=LLAMA, raw=False)
        assert rendered.template is LLAMA
        assert rendered.split_reasoning("+2 = 4.</think>4", rendered.text) == ("+2 = 4.", "4", True)
        assert rendered.split_reasoning("+2 = ", rendered.text) == ("+2 = ", "", False)


class TestChatPrompts:
    def test_string_is_one_user_message(self) -> None:
        assert render("What is 2+2?", R1) == R1_USER_ONLY
        assert render("What is 2+2?", LLAMA) == LLAMA_USER_ONLY
        assert render("What is 2+2?", HARMONY) == HARMONY_USER_ONLY

    def test_chat_list(self) -> None:
        messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}]
        assert render(messages, R1) == R1_USER_ONLY.replace("<｜User｜>", "You are terse.<｜User｜>")

    def test_string_prompt_equals_the_one_message_list(self) -> None:
        for template in (R1, LLAMA, HARMONY):
            assert render("What is 2+2?", template) == render([{"role": "user", "content": "What is 2+2?"}], template)

    def test_assistant_final_prefill_r1_closes_the_empty_thought(self) -> None:
        messages = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "The answer is"}]
        assert render(messages, R1) == (
            "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n\n</think>\n\nThe answer is"
        )

    def test_assistant_final_prefill_llama_and_harmony(self) -> None:
        messages = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "The answer is"}]
        assert render(messages, LLAMA) == LLAMA_USER_ONLY + "The answer is"
        assert render(messages, HARMONY) == HARMONY_USER_ONLY + "<|channel|>final<|message|>The answer is"

    def test_assistant_prefill_with_think_continues_the_reasoning(self) -> None:
        messages = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "<think>Let me"}]
        assert render(messages, R1) == R1_USER_ONLY + "Let me"
        assert render(messages, LLAMA) == LLAMA_USER_ONLY + "<think>Let me"
        assert render(messages, HARMONY) == HARMONY_USER_ONLY + "<|channel|>analysis<|message|>Let me"

    def test_think_in_a_chat_message_is_not_injection(self) -> None:
        messages = [{"role": "user", "content": "Explain <think> tags"}]
        assert render(messages, LLAMA) == LLAMA_USER_ONLY.replace("What is 2+2?", "Explain <think> tags")

    def test_tool_message_with_builtin_template_raises(self) -> None:
        with pytest.raises(ConfigurationError, match="tool"):
            render([{"role": "user", "content": "x"}, {"role": "tool", "content": "{}"}], LLAMA)

    def test_no_template_raises_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="no chat template"):
            render("Hello", None)


class TestRaw:
    def test_raw_string_is_sent_verbatim(self) -> None:
        prompt = "  <|begin_of_text|>anything <think>goes \n"
        rendered = render_prompt(prompt, template=R1, raw=True)
        assert rendered.text == prompt
        assert rendered.template is None

    def test_raw_without_template(self) -> None:
        assert render("Hello world", None, raw=True) == "Hello world"

    def test_raw_split_reasoning_is_think_tags(self) -> None:
        rendered = render_prompt("Q: <think>", template=None, raw=True)
        assert rendered.split_reasoning("a</think>b", rendered.text) == ("a", "b", True)
        assert rendered.split_reasoning("abc", rendered.text) == ("abc", "", False)

    def test_raw_with_a_list_raises(self) -> None:
        with pytest.raises(ValidationError, match="raw=True") as info:
            render_prompt([{"role": "user", "content": "Hi"}], template=R1, raw=True)
        assert info.value.argument == "prompt"

    def test_raw_still_rejects_an_empty_prompt(self) -> None:
        with pytest.raises(ValidationError):
            render_prompt("", template=None, raw=True)


ROLES = "system, developer, user, assistant, tool"


class TestValidation:
    @pytest.mark.parametrize("prompt", ["", []], ids=["empty-string", "empty-list"])
    def test_empty_prompt(self, prompt: Any) -> None:
        with pytest.raises(ValidationError) as info:
            validate_prompt(prompt)
        assert info.value.argument == "prompt"
        assert "non-empty string or a non-empty list of chat messages" in str(info.value)
        assert str(info.value).startswith("invalid prompt=")

    @pytest.mark.parametrize("prompt", [None, 42, b"bytes", {"role": "user", "content": "x"}])
    def test_prompt_of_the_wrong_type(self, prompt: Any) -> None:
        with pytest.raises(InvalidTypeError) as info:
            validate_prompt(prompt)
        assert info.value.argument == "prompt"
        assert "a string or a list of messages" in str(info.value)

    @pytest.mark.parametrize("message", ["Hi", None, ("user", "Hi")])
    def test_message_not_a_dict(self, message: Any) -> None:
        with pytest.raises(InvalidTypeError) as info:
            validate_prompt([{"role": "user", "content": "ok"}, message])
        assert info.value.argument == "prompt[1]"
        assert "message dict like {'role': 'user', 'content': '...'}" in str(info.value)

    @pytest.mark.parametrize("role", ["bot", "User", None, 1])
    def test_bad_role(self, role: Any) -> None:
        with pytest.raises(ValidationError) as info:
            validate_prompt([{"role": role, "content": "Hi"}])
        assert info.value.argument == "prompt[0]['role']"
        assert info.value.value == role
        assert f"one of {ROLES}" in str(info.value)
        assert repr(role) in str(info.value)

    @pytest.mark.parametrize("content", [None, 5, ["Hi"], {"text": "Hi"}])
    def test_content_not_a_string(self, content: Any) -> None:
        with pytest.raises(InvalidTypeError) as info:
            validate_prompt([{"role": "user", "content": content}])
        assert info.value.argument == "prompt[0]['content']"
        assert str(info.value).endswith("a string")

    def test_missing_content(self) -> None:
        with pytest.raises(InvalidTypeError, match=r"prompt\[0\]\['content'\]"):
            validate_prompt([{"role": "user"}])

    def test_valid_prompts_pass(self) -> None:
        validate_prompt("x")
        validate_prompt([{"role": r, "content": ""} for r in ROLES.split(", ")])
        validate_prompt(({"role": "user", "content": "tuple of messages"},))

    def test_render_validates_first(self) -> None:
        with pytest.raises(ValidationError, match="role"):
            render([{"role": "narrator", "content": "x"}], R1)


class TestModelHint:
    @pytest.mark.parametrize(
        ("given", "meant"),
        [
            ("qwen-1.5b", "qwen-15b"),
            ("qwen15b", "qwen-15b"),
            ("qwen-1p5b", "qwen-15b"),
            ("Qwen-15B", "qwen-15b"),  # aliases are case-sensitive
            ("llama-3.1-8b", "llama-v3p1-8b"),
            ("llama3.1-8b", "llama-v3p1-8b"),
            ("lama-v3p1-8b", "llama-v3p1-8b"),
            ("gpt-oss20b", "gpt-oss-20b"),
            ("gtp-oss-120b", "gpt-oss-120b"),
            ("llama-v3.1-8b-instruct", "llama-v3p1-8b-instruct"),  # an alias target's own name
            ("deepseek-r1-distill-qwen-1.5b", "deepseek-r1-distill-qwen-1p5b"),
        ],
    )
    def test_a_near_miss_names_the_alias(self, given: str, meant: str) -> None:
        assert model_hint(given) == f"did you mean {meant!r}?"

    @pytest.mark.parametrize("given", [FW + "qwen-1.5b", "fireworks/qwen-1.5b", FW + "qwen-1.5b#my-deployment"])
    def test_resolved_ids_are_read_by_their_last_segment(self, given: str) -> None:
        assert model_hint(given) == "did you mean 'qwen-15b'?"

    @pytest.mark.parametrize("name", [*MODEL_ALIASES, *(target.rsplit("/", 1)[1] for target in MODEL_ALIASES.values())])
    def test_known_names_get_no_hint(self, name: str) -> None:
        assert model_hint(name) is None
        assert model_hint(FW + name) is None

    @pytest.mark.parametrize(
        "name",
        [
            "qwen-7b",  # other sizes and versions are other models, however alike they are spelt
            "qwen3-8b",
            "llama-v3p1-70b",
            "llama-v3p3-70b-instruct",
            "gpt-oss-12b",
            "gpt-oss-safeguard-20b",
            "gpt-4o",
            "mistral-7b-instruct",
            "my-finetune",
            "",
        ],
    )
    def test_other_models_get_no_hint(self, name: str) -> None:
        assert model_hint(name) is None

    def test_an_alias_added_at_run_time_is_suggested(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(MODEL_ALIASES, "kimi-k2", FW + "kimi-k2-instruct")
        assert model_hint("kimi-k-2") == "did you mean 'kimi-k2'?"
        assert model_hint("kimi-k2") is None
