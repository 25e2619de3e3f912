"""Plots of results with matplotlib, imported when first used (the ``plot`` extra).

Each helper draws on the Axes it is given (or a new figure's) and returns that Axes, so plots
compose into a user's own figures.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._exceptions import InvalidTypeError
from ._logprobs import Logprobs
from ._models import FwResponse
from ._optional import optional_module

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_logprobs"]


def _pyplot(needed_by: str) -> Any:
    return optional_module("matplotlib.pyplot", needed_by=needed_by, extra="plot")


def plot_logprobs(response: FwResponse | Logprobs, ax: Axes | None = None) -> Axes:
    """Logprob and top-k entropy along a sample's generated tokens, the residual mass shaded; returns the Axes.

    ``response``: a sample (its generated tokens are drawn) or a :class:`Logprobs` (all of its
    positions). The logprob (at most 0) and the top-k entropy (at least 0) share the y axis, in
    nats; the residual mass, the probability the returned alternatives leave out, is shaded on a
    second axis from 0 to 1: where it is large, the top-k entropy is far below the full entropy.
    ``ax``: where to draw (None: a new figure). Needs ``pip install 'fw-rollouts[plot]'``.
    """
    plt = _pyplot("plot_logprobs")
    if isinstance(response, FwResponse):
        if response.logprobs is None:
            raise InvalidTypeError("response", response, "a sample with logprobs (generate with logprobs=1..5)")
        lp = response.logprobs.get_generation_logprobs()
        label = f"seed {response.seed}"
    elif isinstance(response, Logprobs):
        lp, label = response, "logprobs"
    else:
        raise InvalidTypeError("response", response, "an FwResponse or a Logprobs")
    if ax is None:
        ax = plt.subplots(figsize=(10, 3.2))[1]
    positions = list(range(len(lp)))
    nan = math.nan
    values = [nan if v is None else v for v in lp.token_logprobs]
    entropy = [nan if v is None else v for v in lp.topk_entropy()]
    residual = [nan if v is None else v for v in lp.residual_mass()]
    mass = ax.twinx()
    mass.fill_between(positions, residual, step="mid", color="tab:grey", alpha=0.25, linewidth=0, label="residual mass")
    mass.set_ylim(0, 1)
    mass.set_ylabel("residual mass (not in top k)")
    ax.set_zorder(mass.get_zorder() + 1)  # the lines over the shading
    ax.patch.set_visible(False)
    ax.plot(positions, values, color="tab:red", linewidth=1.2, label="logprob")
    ax.plot(positions, entropy, color="tab:blue", linewidth=1.2, label="top-k entropy")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("generated token" if isinstance(response, FwResponse) else "position")
    ax.set_ylabel("nats")
    ax.set_xlim(-0.5, max(len(lp) - 0.5, 0.5))
    ax.set_title(f"{label}: logprob and top-k entropy per token", loc="left", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = mass.get_legend_handles_labels()
    # Above the plot, beside the title: inside it, a legend hides the very tokens one looks for.
    ax.legend(handles + more, labels + more_labels, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3,
              fontsize=8, frameon=False, borderaxespad=0.2)  # fmt: skip
    return ax
