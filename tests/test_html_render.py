"""The HTML views rendered in headless Chromium: the screenshot shows the shaded tokens and the table's shades.

Skipped where Chromium is not installed (CI installs it: ``apt-get install -y chromium``). With
``FW_ROLLOUTS_DOCS_IMAGES=1`` the test also rewrites ``docs/images/response.png``.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from pathlib import Path

import pytest

from _browser import chromium, pixels, render_png
from _helpers import MakeClient
from fw_rollouts import FwResponse, FwRollouts
from fw_rollouts._html import probability_colour

# CI installs Chromium and sets FW_ROLLOUTS_REQUIRE_BROWSER=1, so there a missing browser fails rather than skips.
pytestmark = pytest.mark.skipif(
    chromium() is None and os.environ.get("FW_ROLLOUTS_REQUIRE_BROWSER") != "1",
    reason="chromium is not installed (apt-get install -y chromium, or set CHROMIUM=<path>)",
)

DOCS_IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


def rgb(colour: str) -> tuple[int, int, int]:
    r, g, b = map(int, re.findall(r"\d+", colour))
    return r, g, b


def shades(response: FwResponse) -> set[tuple[int, int, int]]:
    """The backgrounds of the generated tokens drawn (the first 2,000)."""
    lp = response.get_generation_logprobs()
    assert lp is not None
    return {rgb(probability_colour(math.exp(v))) for v in lp.token_logprobs[:2000] if v is not None}


def sample(make_client: MakeClient, model: str = "qwen-15b") -> FwRollouts:
    async def main() -> FwRollouts:
        async with make_client(model=model, max_tokens=60, temperature=1.0) as client:
            return await client.generate("What is 17 * 23? Think it through.", 8, seed=0)

    return asyncio.run(main())


def test_the_views_render_with_their_shades(make_client: MakeClient, tmp_path: Path) -> None:
    rollouts = sample(make_client)
    response = rollouts[0]
    # Both views on one page: one browser start (seconds) for the two.
    page = response._repr_html_() + '<div style="height:16px"></div>' + rollouts._repr_html_()
    png = render_png(page, tmp_path / "views.png", size=(1000, 900))
    width, height, px = pixels(png)
    assert (width, height) == (1000, 900)
    seen = set(px)
    assert len(seen) > 50, "a blank (or nearly blank) screenshot"
    top, bottom = set(px[: width * 100]), set(px[-width * 100 :])
    assert len(top) > 10 and top != bottom  # drawn from the top, and not one pattern everywhere

    wanted = shades(response)
    drawn = wanted & seen
    assert len(wanted) >= 10 and len(drawn) >= 0.8 * len(wanted), f"{len(drawn)} of {len(wanted)} shades drawn"
    # The table shades each sample's mean logprob by the probability it stands for.
    means = {rgb(probability_colour(math.exp(r.get_generation_logprobs().mean()))) for r in rollouts}  # type: ignore[union-attr]
    assert len(means & seen) >= len(means) - 1


def test_docs_screenshot(make_client: MakeClient, tmp_path: Path) -> None:
    """``docs/images/response.png``: rewritten with FW_ROLLOUTS_DOCS_IMAGES=1, else checked to exist and be small."""
    target = DOCS_IMAGES / "response.png"
    if os.environ.get("FW_ROLLOUTS_DOCS_IMAGES") != "1":
        assert target.exists() and target.stat().st_size < 150_000
        return
    # gpt-oss: its special tokens are ASCII, and a sample whose characters every machine's fonts have (the
    # simulator's vocabulary has CJK and emoji too), so the picture shows no missing-glyph boxes.
    rollouts = sample(make_client, "gpt-oss-20b")
    response = next(r for r in rollouts if r.full.isascii())
    DOCS_IMAGES.mkdir(exist_ok=True)
    render_png(response._repr_html_(), target, size=(900, 200))
    assert target.stat().st_size < 150_000
