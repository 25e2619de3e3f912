"""Built-in chat templates against the Hugging Face renderings, reasoning splits and template selection."""

from __future__ import annotations

import datetime
import json
import types
from typing import Any

import pytest

from _helpers import TEMPLATE_DATA
from fw_rollouts import (
    ChatTemplate,
    ConfigurationError,
    DeepSeekR1DistillTemplate,
    HarmonyTemplate,
    JinjaTemplate,
    Llama31Template,
    _templates,
)
from fw_rollouts._templates import BUILTIN_TEMPLATES, HARMONY_DEFAULT_DATE, split_think, template_for_model

Messages = list[dict[str, Any]]

# The conversations behind tests/data/templates/rendered.json (see SOURCES.md there).
CONVERSATIONS: dict[str, Messages] = {
    "user_only": [{"role": "user", "content": "What is 2+2?"}],
    "system_user": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
    ],
    "multi_turn": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\nGreeting.\n</think>\n\nHello!"},
        {"role": "user", "content": "What is 2+2?"},
    ],
    "two_systems": [
        {"role": "system", "content": "First."},
        {"role": "system", "content": "Second."},
        {"role": "user", "content": "Q?"},
    ],
    "whitespace": [
        {"role": "system", "content": "  padded system \n"},
        {"role": "user", "content": "  hello  \n"},
    ],
    "unicode": [{"role": "user", "content": "Qu'est-ce que 2+2 ? 🤔 数学"}],
    "system_mid": [
        {"role": "user", "content": "A"},
        {"role": "assistant", "content": "B"},
        {"role": "system", "content": "S"},
        {"role": "user", "content": "C"},
    ],
}

HF_SYSTEM_LINES = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
HF_EMPTY_SYSTEM_BLOCK = f"<|start_header_id|>system<|end_header_id|>\n\n{HF_SYSTEM_LINES}<|eot_id|>"
LLAMA_USER_ONLY = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def rendered() -> dict[str, dict[str, str]]:
    data: dict[str, dict[str, str]] = json.loads((TEMPLATE_DATA / "rendered.json").read_text(encoding="utf-8"))
    return data


def cases(family: str) -> list[Any]:
    return [pytest.param(name, expected, id=name) for name, expected in rendered()[family].items()]


def without_hf_system_block(expected: str) -> str:
    """What Fireworks' serving template gives: no "Cutting Knowledge Date" block, a system message kept."""
    return expected.replace(HF_EMPTY_SYSTEM_BLOCK, "").replace(HF_SYSTEM_LINES, "")


def clock_at(day: datetime.date) -> Any:
    """A stand-in for the ``datetime`` module whose clock reads noon UTC of ``day`` (what the templates import)."""

    class Datetime(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> Datetime:
            return cls(day.year, day.month, day.day, 12, tzinfo=datetime.timezone.utc).astimezone(tz)

    return types.SimpleNamespace(datetime=Datetime, timezone=datetime.timezone)


class TestGoldenRenderings:
    def test_every_golden_conversation_is_known(self) -> None:
        data = rendered()
        assert set(data) == {"deepseek_r1_distill", "llama31_instruct", "gpt_oss"}
        for family in data.values():
            assert set(family) == set(CONVERSATIONS)

    @pytest.mark.parametrize(("name", "expected"), cases("deepseek_r1_distill"))
    def test_deepseek_r1_distill(self, name: str, expected: str) -> None:
        assert DeepSeekR1DistillTemplate().render(CONVERSATIONS[name]) == expected

    @pytest.mark.parametrize(("name", "expected"), cases("gpt_oss"))
    def test_harmony(self, name: str, expected: str) -> None:
        assert HarmonyTemplate(current_date="2026-11-24").render(CONVERSATIONS[name]) == expected

    @pytest.mark.parametrize(("name", "expected"), cases("llama31_instruct"))
    def test_llama31_with_hf_system_block(self, name: str, expected: str) -> None:
        assert Llama31Template(hf_system_block=True).render(CONVERSATIONS[name]) == expected

    @pytest.mark.parametrize(("name", "expected"), cases("llama31_instruct"))
    def test_llama31_default_leaves_out_the_hf_system_block(self, name: str, expected: str) -> None:
        got = Llama31Template().render(CONVERSATIONS[name])
        assert got == without_hf_system_block(expected)
        assert "Cutting Knowledge Date" not in got

    def test_llama31_default_user_only_exact(self) -> None:
        assert Llama31Template().render(CONVERSATIONS["user_only"]) == LLAMA_USER_ONLY

    def test_llama31_default_keeps_a_system_message(self) -> None:
        assert Llama31Template().render(CONVERSATIONS["system_user"]) == (
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )

    def test_llama31_date_string(self) -> None:
        got = Llama31Template(hf_system_block=True, date_string="01 Jan 2026").render(CONVERSATIONS["user_only"])
        assert "Today Date: 01 Jan 2026\n\n" in got

    def test_r1_user_only_exact(self) -> None:
        assert DeepSeekR1DistillTemplate().render(CONVERSATIONS["user_only"]) == (
            "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"
        )

    def test_harmony_reasoning_effort_and_identity(self) -> None:
        template = HarmonyTemplate(reasoning_effort="high", current_date="2026-01-02", model_identity="You are X.")
        got = template.render(CONVERSATIONS["user_only"])
        assert got.startswith(
            "<|start|>system<|message|>You are X.\nKnowledge cutoff: 2024-06\nCurrent date: 2026-01-02\n"
        )
        assert "\n\nReasoning: high\n\n" in got
        assert got.endswith("<|start|>user<|message|>What is 2+2?<|end|><|start|>assistant")

    def test_harmony_default_date_is_fixed_and_not_the_clocks(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The date is part of the prompt, so of the cache key: it must not change at midnight.
        got = HarmonyTemplate().render(CONVERSATIONS["user_only"])
        assert f"Current date: {HARMONY_DEFAULT_DATE}\n" in got and HARMONY_DEFAULT_DATE == "2025-06-28"
        for day in (datetime.date(2031, 1, 1), datetime.date(2031, 1, 2)):
            monkeypatch.setattr(_templates, "datetime", clock_at(day))
            assert HarmonyTemplate().render(CONVERSATIONS["user_only"]) == got
            chosen = template_for_model("accounts/fireworks/models/gpt-oss-20b")
            assert chosen is not None and chosen.render(CONVERSATIONS["user_only"]) == got

    def test_harmony_today_is_the_clocks_date_in_utc(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(_templates, "datetime", clock_at(datetime.date(2031, 1, 2)))
        assert "Current date: 2031-01-02\n" in HarmonyTemplate(current_date="today").render(CONVERSATIONS["user_only"])
        today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        monkeypatch.undo()
        assert f"Current date: {today}\n" in HarmonyTemplate(current_date="today").render(CONVERSATIONS["user_only"])

    def test_harmony_date_from_chat_template_kwargs(self) -> None:
        template = template_for_model("gpt-oss-20b", "harmony", {"current_date": "2026-03-01"})
        assert template is not None and "Current date: 2026-03-01\n" in template.render(CONVERSATIONS["user_only"])

    @pytest.mark.parametrize("date", ["", "  ", 20260301, datetime.date(2026, 3, 1)])
    def test_harmony_rejects_a_date_that_is_not_a_string(self, date: Any) -> None:
        with pytest.raises(ConfigurationError, match="current_date"):
            HarmonyTemplate(current_date=date)

    def test_harmony_developer_role_is_the_instructions(self) -> None:
        got = HarmonyTemplate(current_date="2026-11-24").render(
            [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Q"}]
        )
        assert "<|start|>developer<|message|># Instructions\n\nBe brief.\n\n<|end|><|start|>user" in got

    def test_harmony_rejects_unknown_reasoning_effort(self) -> None:
        with pytest.raises(ConfigurationError, match="reasoning_effort='none'"):
            HarmonyTemplate(reasoning_effort="none")

    @pytest.mark.parametrize(
        "template",
        [DeepSeekR1DistillTemplate(), Llama31Template(), Llama31Template(hf_system_block=True), HarmonyTemplate()],
        ids=lambda t: t.name,
    )
    def test_tool_messages_raise_configuration_error(self, template: ChatTemplate) -> None:
        messages = [
            {"role": "user", "content": "Weather?"},
            {"role": "tool", "content": '{"temp": 20}'},
        ]
        with pytest.raises(ConfigurationError, match="does not render tool messages"):
            template.render(messages)

    def test_builtins_are_chat_templates(self) -> None:
        for template in (DeepSeekR1DistillTemplate(), Llama31Template(), HarmonyTemplate()):
            assert isinstance(template, ChatTemplate)


# -- reasoning splits ------------------------------------------------------------------------------

R1_PROMPT = DeepSeekR1DistillTemplate().render(CONVERSATIONS["user_only"])
LLAMA_PROMPT = Llama31Template().render(CONVERSATIONS["user_only"])


class TestSplitThink:
    def test_open_think_in_prompt_makes_everything_reasoning(self) -> None:
        assert split_think("Okay, so I need to add", R1_PROMPT) == ("Okay, so I need to add", "", False)

    def test_close_tag_splits_reasoning_from_content(self) -> None:
        generated = "Okay, 2+2=4.\n</think>\n\nThe answer is 4."
        reasoning, content, completed = split_think(generated, R1_PROMPT)
        assert (reasoning, content, completed) == ("Okay, 2+2=4.\n", "\n\nThe answer is 4.", True)
        assert reasoning + "</think>" + content == generated

    def test_output_opening_its_own_think(self) -> None:
        assert split_think("<think>\nHmm.\n</think>\n\n4", LLAMA_PROMPT) == ("\nHmm.\n", "\n\n4", True)
        assert split_think("  <think>Hmm", LLAMA_PROMPT) == ("Hmm", "", False)

    def test_no_reasoning(self) -> None:
        assert split_think("The answer is 4.", LLAMA_PROMPT) == ("", "The answer is 4.", None)
        assert split_think("", LLAMA_PROMPT) == ("", "", None)

    def test_closed_think_in_prompt_is_not_open(self) -> None:
        prompt = R1_PROMPT + "Done.\n</think>\n\n"
        assert split_think("The answer is 4.", prompt) == ("", "The answer is 4.", None)

    def test_split_at_the_first_close(self) -> None:
        assert split_think("a</think>b</think>c", R1_PROMPT) == ("a", "b</think>c", True)

    def test_template_split_reasoning_uses_split_think(self) -> None:
        for template in (DeepSeekR1DistillTemplate(), Llama31Template()):
            assert template.split_reasoning("x</think>y", R1_PROMPT) == ("x", "y", True)


HARMONY = HarmonyTemplate(current_date="2026-11-24")
HARMONY_PROMPT = HARMONY.render(CONVERSATIONS["user_only"])


class TestHarmonySplit:
    def test_special_tokens_present(self) -> None:
        generated = (
            "<|channel|>analysis<|message|>User asks 2+2. Answer 4.<|end|>"
            "<|start|>assistant<|channel|>final<|message|>4<|return|>"
        )
        assert HARMONY.split_reasoning(generated, HARMONY_PROMPT) == ("User asks 2+2. Answer 4.", "4", True)

    def test_stop_token_not_in_text(self) -> None:
        generated = (
            "<|channel|>analysis<|message|>Think.<|end|>"
            "<|start|>assistant<|channel|>final<|message|>The answer is 4."
        )
        assert HARMONY.split_reasoning(generated, HARMONY_PROMPT) == ("Think.", "The answer is 4.", True)

    def test_injected_analysis_prefix_in_prompt(self) -> None:
        prompt = HARMONY.open_reasoning(HARMONY_PROMPT, "Let me calculate: 2")
        assert prompt.endswith("<|start|>assistant<|channel|>analysis<|message|>Let me calculate: 2")
        generated = "+2=4.<|end|><|start|>assistant<|channel|>final<|message|>4"
        assert HARMONY.split_reasoning(generated, prompt) == ("+2=4.", "4", True)
        assert HARMONY.split_reasoning("+2 is", prompt) == ("+2 is", "", False)

    def test_stripped_token_form(self) -> None:
        generated = "analysisUser asks 2+2. Answer 4.assistantfinal4"
        assert HARMONY.split_reasoning(generated, HARMONY_PROMPT) == ("User asks 2+2. Answer 4.", "4", True)

    def test_cut_off_mid_analysis(self) -> None:
        assert HARMONY.split_reasoning("<|channel|>analysis<|message|>User asks", HARMONY_PROMPT) == (
            "User asks",
            "",
            False,
        )
        assert HARMONY.split_reasoning("analysisUser asks", HARMONY_PROMPT) == ("User asks", "", False)

    def test_final_only(self) -> None:
        assert HARMONY.split_reasoning("<|channel|>final<|message|>4<|return|>", HARMONY_PROMPT) == ("", "4", None)
        assert HARMONY.split_reasoning("finalThe answer", HARMONY_PROMPT) == ("", "The answer", None)
        assert HARMONY.split_reasoning("Just text", HARMONY_PROMPT) == ("", "Just text", None)

    def test_final_prefill_continues_the_content(self) -> None:
        prompt = HARMONY.continue_assistant(HARMONY_PROMPT, "The answer")
        assert prompt.endswith("<|start|>assistant<|channel|>final<|message|>The answer")
        assert HARMONY.split_reasoning(" is 4.", prompt) == ("", " is 4.", None)

    def test_prompt_with_closed_past_turns_is_not_open(self) -> None:
        prompt = HARMONY.render(CONVERSATIONS["multi_turn"])
        assert HARMONY.split_reasoning("<|channel|>final<|message|>4", prompt) == ("", "4", None)


# -- template selection --------------------------------------------------------------------------------

FW = "accounts/fireworks/models/"


class TestTemplateForModel:
    @pytest.mark.parametrize(
        ("model", "kind", "name"),
        [
            (FW + "deepseek-r1-distill-qwen-1p5b", DeepSeekR1DistillTemplate, "deepseek-r1-distill"),
            (FW + "deepseek-r1-distill-qwen-7b", DeepSeekR1DistillTemplate, "deepseek-r1-distill"),
            (FW + "deepseek-r1-distill-llama-70b", DeepSeekR1DistillTemplate, "deepseek-r1-distill"),
            (FW + "llama-v3p1-8b-instruct", Llama31Template, "llama3.1"),
            (FW + "llama-v3p3-70b-instruct", Llama31Template, "llama3.1"),
            (FW + "gpt-oss-20b", HarmonyTemplate, "harmony"),
            (FW + "gpt-oss-120b", HarmonyTemplate, "harmony"),
            (FW + "gpt-oss-20b#accounts/me/deployments/abc123", HarmonyTemplate, "harmony"),
            (FW + "llama-v3p1-8b-instruct#accounts/me/deployments/d1", Llama31Template, "llama3.1"),
            (
                FW + "deepseek-r1-distill-qwen-1p5b#accounts/me/deployments/x",
                DeepSeekR1DistillTemplate,
                "deepseek-r1-distill",
            ),
        ],
    )
    def test_known_families(self, model: str, kind: type[ChatTemplate], name: str) -> None:
        template = template_for_model(model)
        assert isinstance(template, kind)
        assert template.name == name

    def test_llama_default_is_without_hf_block(self) -> None:
        template = template_for_model(FW + "llama-v3p1-8b-instruct")
        assert isinstance(template, Llama31Template) and template.hf_system_block is False

    @pytest.mark.parametrize(
        "model",
        [
            FW + "qwen3-8b",
            FW + "deepseek-r1",
            FW + "mixtral-8x22b-instruct",
            "accounts/me/deployments/abc123",
            FW + "my-gpt-oss-20b",
        ],
    )
    def test_unknown_models_have_no_template(self, model: str) -> None:
        assert template_for_model(model) is None

    def test_builtin_names(self) -> None:
        assert BUILTIN_TEMPLATES == ("deepseek-r1-distill", "harmony", "llama3.1", "llama3.1-hf")
        hf = template_for_model(FW + "unknown", "llama3.1-hf")
        assert isinstance(hf, Llama31Template) and hf.hf_system_block is True and hf.name == "llama3.1-hf"
        assert isinstance(template_for_model(FW + "unknown", "deepseek-r1-distill"), DeepSeekR1DistillTemplate)

    def test_explicit_name_overrides_the_family(self) -> None:
        assert isinstance(template_for_model(FW + "gpt-oss-20b", "llama3.1"), Llama31Template)

    def test_template_instance_is_used_as_is(self) -> None:
        mine = Llama31Template(hf_system_block=True)
        assert template_for_model(FW + "gpt-oss-20b", mine) is mine

    def test_kwargs_reach_builtins(self) -> None:
        kwargs = {"reasoning_effort": "low", "current_date": "2026-01-01"}
        harmony = template_for_model(FW + "gpt-oss-20b", kwargs=kwargs)
        assert harmony is not None
        got = harmony.render(CONVERSATIONS["user_only"])
        assert "Current date: 2026-01-01\n\nReasoning: low\n\n" in got
        llama = template_for_model(FW + "llama-v3p1-8b-instruct", "llama3.1-hf", {"date_string": "02 Feb 2026"})
        assert llama is not None and "Today Date: 02 Feb 2026" in llama.render(CONVERSATIONS["user_only"])

    @pytest.mark.parametrize(
        ("model", "kwargs"),
        [
            (FW + "deepseek-r1-distill-qwen-1p5b", {"bos_token": "<s>"}),
            (FW + "llama-v3p1-8b-instruct", {"reasoning_effort": "low"}),
            (FW + "gpt-oss-20b", {"date_string": "x"}),
        ],
    )
    def test_kwargs_a_builtin_does_not_take_raise(self, model: str, kwargs: dict[str, Any]) -> None:
        with pytest.raises(ConfigurationError, match=f"chat_template_kwargs \\['{next(iter(kwargs))}'\\]"):
            template_for_model(model, kwargs=kwargs)

    def test_jinja_string_renders_with_bos_from_kwargs(self) -> None:
        source = (
            "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}"
        )
        template = template_for_model(FW + "unknown", source, {"bos_token": "<s>"})
        assert isinstance(template, JinjaTemplate)
        assert template.render(CONVERSATIONS["system_user"]) == (
            "<s><|system|>You are terse.\n<|user|>What is 2+2?\n<|assistant|>"
        )

    def test_jinja_bos_defaults_to_empty(self) -> None:
        assert JinjaTemplate("{{ bos_token }}[{{ messages[0]['content'] }}]").render(CONVERSATIONS["user_only"]) == (
            "[What is 2+2?]"
        )

    def test_jinja_rendering_of_the_r1_template_matches_the_builtin(self) -> None:
        # The R1-distill template's non-tool branches (reference §5), rendered like transformers does.
        source = (
            "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
            "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}"
            "{%- for message in messages %}{%- if message['role'] == 'system' %}"
            "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}"
            "{{bos_token}}{{ns.system_prompt}}"
            "{%- for message in messages %}"
            "{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}"
            "{%- endif %}"
            "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
            "{% set content = message['content'] %}{% if '</think>' in content %}"
            "{% set content = content.split('</think>')[-1] %}{% endif %}"
            "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}"
            "{%- endfor -%}"
            "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
        )
        jinja = template_for_model(FW + "unknown", source, {"bos_token": "<｜begin▁of▁sentence｜>"})
        assert jinja is not None
        expected = rendered()["deepseek_r1_distill"]
        for name in ("user_only", "system_user", "multi_turn", "two_systems", "unicode", "system_mid"):
            assert jinja.render(CONVERSATIONS[name]) == expected[name], name

    def test_jinja_template_splits_think(self) -> None:
        jinja = JinjaTemplate("{{ messages[0]['content'] }}<think>\n")
        prompt = jinja.render(CONVERSATIONS["user_only"])
        assert jinja.split_reasoning("Hmm</think>4", prompt) == ("Hmm", "4", True)
        assert jinja.split_reasoning("Hmm", prompt) == ("Hmm", "", False)

    @pytest.mark.parametrize("source", ["{% for m in messages %}", "{{ messages[0] }", "{% if %}x{% endif %}"])
    def test_bad_jinja_raises_configuration_error(self, source: str) -> None:
        with pytest.raises(ConfigurationError, match="not a valid Jinja template"):
            template_for_model(FW + "unknown", source)

    def test_jinja_raise_exception_raises_configuration_error_at_render(self) -> None:
        template = template_for_model(FW + "unknown", "{{ raise_exception('only user messages') }}")
        assert template is not None
        with pytest.raises(ConfigurationError, match="only user messages"):
            template.render(CONVERSATIONS["user_only"])

    @pytest.mark.parametrize("name", ["chatml", "llama3", "Llama3.1", "harmony2", ""])
    def test_non_template_non_builtin_string_raises(self, name: str) -> None:
        with pytest.raises(ConfigurationError, match="neither a built-in template") as info:
            template_for_model(FW + "gpt-oss-20b", name)
        for builtin in BUILTIN_TEMPLATES:
            assert builtin in str(info.value)
