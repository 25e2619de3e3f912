"""plot_logprobs (fw_rollouts._plots): what it draws, on a real sample from the simulator.

With ``FW_ROLLOUTS_DOCS_IMAGES=1`` it also rewrites ``docs/images/logprobs.png``.
"""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path
from typing import Any

import pytest

from _helpers import MakeClient
from fw_rollouts import FwResponse, FwRollouts, InvalidTypeError, Logprobs, plot_logprobs

matplotlib: Any = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
plt: Any = pytest.importorskip("matplotlib.pyplot")

DOCS_IMAGE = Path(__file__).resolve().parent.parent / "docs" / "images" / "logprobs.png"


def nan_list(values: list[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def sample(make_client: MakeClient) -> FwResponse:
    async def main() -> FwRollouts:
        async with make_client(model="gpt-oss-20b", max_tokens=80, temperature=1.0) as client:
            return await client.generate("What is 17 * 23? Think it through.", 1, seed=0)

    return asyncio.run(main())[0]


def test_plot_logprobs_draws_the_generated_tokens(make_client: MakeClient, tmp_path: Path) -> None:
    response = sample(make_client)
    lp = response.get_generation_logprobs()
    assert lp is not None and len(lp) > 10
    ax: Any = plot_logprobs(response)  # Any: matplotlib's stubs type the artists' data loosely
    try:
        logprob, entropy = ax.lines[0], ax.lines[1]
        assert logprob.get_label() == "logprob" and entropy.get_label() == "top-k entropy"
        assert list(logprob.get_xdata()) == list(range(len(lp)))
        assert list(logprob.get_ydata()) == pytest.approx(nan_list(lp.token_logprobs), nan_ok=True)
        assert list(entropy.get_ydata()) == pytest.approx(nan_list(lp.topk_entropy()), nan_ok=True)
        (mass,) = [other for other in ax.figure.axes if other is not ax]
        assert mass.get_ylim() == (0.0, 1.0) and len(mass.collections) == 1  # the residual mass, shaded
        assert {t.get_text() for t in ax.get_legend().get_texts()} == {"logprob", "top-k entropy", "residual mass"}
        target = DOCS_IMAGE if os.environ.get("FW_ROLLOUTS_DOCS_IMAGES") == "1" else tmp_path / "logprobs.png"
        target.parent.mkdir(exist_ok=True)
        ax.figure.savefig(target, dpi=80, bbox_inches="tight")
        assert 5_000 < target.stat().st_size < 150_000
    finally:
        plt.close(ax.figure)


def test_plot_logprobs_on_given_axes_and_on_logprobs() -> None:
    figure, given = plt.subplots()
    drawn: Any
    try:
        lp = Logprobs(["<s>", "a", "b"], [None, -0.5, -2.0], [None, {"a": -0.5}, {"c": -0.1, "b": -2.0}])
        drawn = plot_logprobs(lp, ax=given)
        assert drawn is given
        assert list(drawn.lines[0].get_ydata()) == pytest.approx([math.nan, -0.5, -2.0], nan_ok=True)
        assert given.get_xlabel() == "position"
    finally:
        plt.close(figure)
    with pytest.raises(InvalidTypeError, match="response"):
        plot_logprobs(FwResponse(full="no logprobs"))
    with pytest.raises(InvalidTypeError, match="response"):
        plot_logprobs("text")  # type: ignore[arg-type]


def test_the_docs_image_is_there() -> None:
    assert DOCS_IMAGE.exists() and DOCS_IMAGE.stat().st_size < 150_000
