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
