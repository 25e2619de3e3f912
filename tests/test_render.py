"""``render`` and ``template_for``: the exact prompt a call would send, with nothing sent."""

from __future__ import annotations

import pytest

from _helpers import MakeClient
from fw_rollouts import ConfigurationError, DeepSeekR1DistillTemplate, Fireworks, HarmonyTemplate
from fw_rollouts.testing import FireworksSimulator

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_render_is_the_prompt_generate_sends(sim: FireworksSimulator, make_client: MakeClient) -> None:
    async with make_client(max_tokens=4) as client:
        for prompt, raw in (("What is 2+2?", None), ([{"role": "user", "content": "hi"}], None), ("x y", True)):
            rendered = client.render(prompt, raw=raw)
            rollouts = await client.generate(prompt, raw=raw)
            assert rollouts.prompt_text == rendered
        before = len(sim.requests)
        client.render("again")
        assert len(sim.requests) == before


async def test_render_takes_the_call_options(make_client: MakeClient) -> None:
    async with make_client() as client:
        assert isinstance(client.template_for(), DeepSeekR1DistillTemplate)
        assert client.template_for(raw=True) is None
        harmony = client.template_for(chat_template="harmony", chat_template_kwargs={"current_date": "2026-01-01"})
        assert isinstance(harmony, HarmonyTemplate)
        text = client.render("hi", chat_template="harmony", chat_template_kwargs={"current_date": "2026-01-01"})
        assert text.startswith("<|start|>system") and "2026-01-01" in text
        with pytest.raises(ConfigurationError, match="raw=True"):
            client.template_for(model="some-unknown-model")


def test_sync_twins_render_without_a_loop(sim: FireworksSimulator) -> None:
    with Fireworks("qwen-15b", base_url=sim.base_url, api_key=sim.api_key, use_cache=False) as client:
        assert client.render("hi").endswith("<think>\n")
        assert isinstance(client.template_for(), DeepSeekR1DistillTemplate)


async def test_a_gpt_oss_cache_survives_midnight(make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # The harmony prompt states a date; the cache keys the prompt: a new day must not turn every sample into a miss.
    import datetime
    import types

    from fw_rollouts import _templates

    def day(date: int) -> types.SimpleNamespace:
        class Datetime(datetime.datetime):
            @classmethod
            def now(cls, tz: datetime.tzinfo | None = None) -> Datetime:
                return cls(2031, 1, date, 23, 59, tzinfo=datetime.timezone.utc).astimezone(tz)

        return types.SimpleNamespace(datetime=Datetime, timezone=datetime.timezone)

    async with make_client(model="gpt-oss-20b", max_tokens=4) as client:
        monkeypatch.setattr(_templates, "datetime", day(1))
        first = await client.generate("What is 2+2?", n_samples=3)
        monkeypatch.setattr(_templates, "datetime", day(2))
        again = await client.generate("What is 2+2?", n_samples=3)
    assert not any(r.cached for r in first) and all(r.cached for r in again)
    assert again.prompt_text == first.prompt_text and "Current date: 2025-06-28\n" in first.prompt_text
