"""HTML views for notebooks (``_repr_html_``): pure functions from results to HTML strings.

Everything shown is escaped (tokens are model output: ``<script>`` in a sample is text). Styles
are inline, so a view looks the same wherever it is pasted (Jupyter, VS Code, an exported page).
The building blocks are meant for every view of results, the step-resampling ones included:

* :func:`visible` escapes text and makes its whitespace visible (``↵`` for a newline, ``⇥`` for a tab);
* :func:`probability_colour`, :func:`value_colour` and :func:`signed_colour` shade by a number;
* :func:`token_span` is one shaded token with a hover title, :func:`alternatives_title` that title;
* :func:`table` is a summary table of :class:`Cell` s, at most ``max_rows`` rows then "... and M more";
* :func:`header`, :func:`legend` and :func:`panel` frame a view.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Final

from . import _uncertainty
from ._frames import sample_summary

if TYPE_CHECKING:
    from ._logprobs import Logprobs
    from ._models import FwResponse, FwRollouts

__all__ = [
    "Cell",
    "alternatives_title",
    "format_number",
    "header",
    "legend",
    "panel",
    "probability_colour",
    "response_html",
    "rollouts_html",
    "signed_colour",
    "table",
    "token_span",
    "truncate",
    "value_colour",
    "visible",
]

# Single quotes only: these go inside style="..." attributes.
MONO: Final = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', 'Liberation Mono', monospace"
"""The font of tokens and sample text: whitespace and token boundaries line up."""
SANS: Final = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', 'Liberation Sans', sans-serif"
"""The font of headers and tables."""
MUTED: Final = "#6e7781"
"""Text colour of what is set apart (the prompt, notes)."""

_LOW: Final = (235, 87, 70)  # an unlikely token: a strong warm red, against white for a likely one
_HIGH: Final = (70, 120, 190)  # a large value (importance): steel blue
_MISSING: Final = "#eeeeee"


@dataclass(frozen=True, slots=True)
class Cell:
    """One table cell: ``text`` (escaped, whitespace made visible), an optional background and hover title."""

    text: str
    """What the cell shows, as plain text."""
    background: str | None = None
    """A CSS colour (from :func:`probability_colour` or :func:`value_colour`), or None."""
    title: str | None = None
    """Shown on hover (plain text, escaped), or None."""
    align: str = "left"
    """``"left"`` or ``"right"`` (numbers)."""


# -- text and numbers -------------------------------------------------------------------------------------------------


def visible(text: str, *, breaks: bool = True) -> str:
    """``text`` HTML-escaped, with newlines shown as ``↵`` (followed by a line break if ``breaks``) and tabs as ``⇥``.

    For a container with ``white-space: pre-wrap``: spaces are kept as they are.
    """
    escaped = html.escape(text, quote=True).replace("\r", "␍").replace("\t", "⇥\t")
    return escaped.replace("\n", "↵\n" if breaks else "↵")


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``…`` when cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def format_number(value: float | None, digits: int = 3) -> str:
    """A number for a table: ``digits`` decimals, a true minus sign, ``–`` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).replace("-", "−")
    return f"{value:.{digits}f}".replace("-", "−")


# -- colours ----------------------------------------------------------------------------------------------------------


def _mix(colour: tuple[int, int, int], amount: float) -> str:
    """``colour`` mixed into white by ``amount`` (0: white, 1: the colour), as ``rgb(...)``."""
    a = min(max(amount, 0.0), 1.0)
    r, g, b = (round(255 + (c - 255) * a) for c in colour)
    return f"rgb({r},{g},{b})"


def probability_colour(p: float | None) -> str:
    """The shade of a token of probability ``p``: white for 1, a strong red for 0; light grey for None (no logprob)."""
    if p is None or math.isnan(p):
        return _MISSING
    return _mix(_LOW, 1.0 - p)


def value_colour(value: float | None, lo: float = 0.0, hi: float = 1.0) -> str:
    """A sequential shade for ``value`` in ``[lo, hi]``: white at ``lo``, blue at ``hi`` (clipped); grey for None."""
    if value is None or math.isnan(value) or hi <= lo:
        return _MISSING
    return _mix(_HIGH, (value - lo) / (hi - lo))


def signed_colour(value: float | None, limit: float) -> str:
    """A diverging shade: blue at ``-limit``, white at 0, red at ``+limit`` (clipped); grey for None or NaN."""
    if value is None or math.isnan(value) or limit <= 0:
        return _MISSING
    return _mix(_LOW if value > 0 else _HIGH, abs(value) / limit)


# -- tokens -----------------------------------------------------------------------------------------------------------


def alternatives_title(
    token: str,
    logprob: float | None,
    alternatives: Mapping[str, float] | None,
    *,
    rank: int | None = None,
    sampling_logprob: float | None = None,
) -> str:
    """A token's hover text (plain): its probability and rank, the alternatives with theirs, the residual mass."""
    if logprob is None:
        lines = [f"{token!r}  (no logprob: the first position)"]
    else:
        where = "beyond the top k" if rank is None else f"rank {rank}"
        lines = [f"{token!r}  p={math.exp(logprob):.4f}  logprob={logprob:.4f}  {where}"]
    if sampling_logprob is not None:
        lines.append(f"sampling_logprob={sampling_logprob:.4f}")
    if alternatives:
        lines.append("alternatives:")
        for alt, lp in sorted(alternatives.items(), key=lambda kv: -kv[1]):
            mark = "  <- chosen" if alt == token else ""
            lines.append(f"  {math.exp(lp):.4f}  {alt!r}{mark}")
        residual = _uncertainty.residual_mass(alternatives)
        entropy = _uncertainty.topk_entropy(alternatives)
        lines.append(f"residual mass {residual:.4f}, top-k entropy {entropy:.4f} nats")
    return "\n".join(lines)


def token_span(
    text: str, *, background: str | None = None, title: str | None = None, muted: bool = False, marked: bool = False
) -> str:
    """One token as an inline box: ``text`` escaped (whitespace visible), shaded ``background``, ``title`` on hover.

    ``muted``: grey text (the prompt); ``marked``: underlined (a token that was not the most likely one).
    """
    style = "padding:0 1px;margin:0 0.5px;border-radius:2px;box-shadow:inset 0 0 0 1px rgba(0,0,0,0.10)"
    if background is not None:
        style += f";background:{background}"
    if muted:
        style += f";color:{MUTED}"
    if marked:
        style += ";text-decoration:underline;text-decoration-thickness:2px;text-underline-offset:3px"
    hover = "" if title is None else f' title="{html.escape(title, quote=True)}"'
    shown = visible(text) if text else "∅"
    return f'<span style="{style}"{hover}>{shown}</span>'


def _token_spans(lp: Logprobs, start: int, stop: int, *, shade: bool, ranks: Sequence[int | None]) -> str:
    tokens, values, top = lp.tokens, lp.token_logprobs, lp.top_logprobs
    sampling = lp.sampling_logprobs
    out = []
    for i in range(start, stop):
        value = values[i]
        title = alternatives_title(
            tokens[i], value, top[i], rank=ranks[i], sampling_logprob=None if sampling is None else sampling[i]
        )
        background = probability_colour(None if value is None else math.exp(value)) if shade else None
        marked = shade and ranks[i] != 0 and top[i] is not None
        out.append(token_span(tokens[i], background=background, title=title, muted=not shade, marked=marked))
    return "".join(out)


# -- framing ----------------------------------------------------------------------------------------------------------


def header(title: str, facts: Iterable[tuple[str, str]]) -> str:
    """A view's header line: ``title`` in bold, then ``name value`` facts (plain text, escaped)."""
    # A space between the facts: the line may wrap there, never inside one.
    parts = " ".join(
        f'<span style="margin-left:10px;white-space:nowrap"><span style="color:{MUTED}">{html.escape(name)}</span> '
        f"{html.escape(value)}</span>"
        for name, value in facts
    )
    return f'<div style="font-family:{SANS};font-size:13px;margin-bottom:6px"><b>{html.escape(title)}</b> {parts}</div>'


def legend() -> str:
    """The probability scale of the token shading: a gradient from 0 to 1."""
    stops = ",".join(probability_colour(p / 4) for p in range(5))
    bar = (
        f'<span style="display:inline-block;width:120px;height:10px;vertical-align:middle;margin:0 4px;'
        f'border:1px solid #ccc;background:linear-gradient(to right,{stops})"></span>'
    )
    return (
        f'<div style="font-family:{SANS};font-size:11px;color:{MUTED};margin-top:6px">'
        f"token probability 0{bar}1 · <u>underlined</u>: not the most likely token · "
        "hover a token for its alternatives</div>"
    )


def panel(body: str) -> str:
    """``body`` in the light box every view is drawn in (legible in a dark notebook theme too)."""
    return (
        '<div style="background:#ffffff;color:#1f2328;padding:10px 12px;border:1px solid #d0d7de;'
        f'border-radius:6px;max-width:100%;overflow-x:auto">{body}</div>'
    )


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Cell | str | float | int | bool | None]],
    *,
    max_rows: int = 20,
    total: int | None = None,
) -> str:
    """A summary table: a header of ``columns``, at most ``max_rows`` rows, then a row "... and M more".

    Each cell is a :class:`Cell` or a plain value (numbers through :func:`format_number`, right-aligned).
    ``total``: how many rows there are when ``rows`` is not all of them (else counted).
    """
    head = "".join(
        f'<th style="text-align:left;padding:3px 8px;border-bottom:1px solid #d0d7de">{html.escape(c)}</th>'
        for c in columns
    )
    body, seen = [], 0
    for row in rows:
        seen += 1
        if seen <= max_rows:
            body.append("<tr>" + "".join(_cell(value) for value in row) + "</tr>")
    count = seen if total is None else total
    if count > max_rows:
        body.append(
            f'<tr><td colspan="{len(columns)}" style="padding:3px 8px;color:{MUTED}">'
            f"… and {count - max_rows} more</td></tr>"
        )
    return (
        f'<table style="border-collapse:collapse;font-family:{SANS};font-size:12px">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _cell(value: Cell | str | float | int | bool | None) -> str:
    if not isinstance(value, Cell):
        if isinstance(value, bool) or value is None:
            value = Cell("–" if value is None else "yes" if value else "no")
        elif isinstance(value, (int, float)):
            value = Cell(format_number(value), align="right")
        else:
            value = Cell(value)
    style = f"padding:3px 8px;border-bottom:1px solid #eaeef2;text-align:{value.align};vertical-align:top"
    if value.background is not None:
        style += f";background:{value.background}"
    hover = "" if value.title is None else f' title="{html.escape(value.title, quote=True)}"'
    return f'<td style="{style}"{hover}>{visible(value.text, breaks=False)}</td>'


# -- the views --------------------------------------------------------------------------------------------------------


def _block(body: str, *, muted: bool = False) -> str:
    colour = f"color:{MUTED};" if muted else ""
    return (
        f'<div style="font-family:{MONO};font-size:13px;line-height:1.75;white-space:pre-wrap;'
        f'word-break:break-word;{colour}">{body}</div>'
    )


def response_html(response: FwResponse, *, max_tokens: int = 2000, open_prompt_tokens: int = 64) -> str:
    """A sample as HTML: a header of figures, the prompt apart (collapsed when long), the generated tokens shaded.

    Generated tokens are shaded by probability (white: likely, red: unlikely) with the alternatives
    on hover; the prompt's tokens are grey. At most ``max_tokens`` tokens of each part are drawn
    (the prompt's last ones, the generation's first ones). The prompt block starts open when it has
    at most ``open_prompt_tokens`` tokens.
    """
    summary = sample_summary(response)
    facts = [("seed", str(response.seed)), ("finish_reason", response.finish_reason or "–")]
    if summary["num_tokens"] is not None:
        facts += [
            ("tokens", str(summary["num_tokens"])),
            ("sum logprob", format_number(summary["sum_logprob"])),
            ("mean logprob", format_number(summary["mean_logprob"])),
            ("mean top-k entropy", format_number(summary["mean_topk_entropy"]) + " nats"),
            ("mean residual mass", format_number(summary["mean_residual_mass"])),
        ]
    if response.cached:
        facts.append(("cached", "yes"))
    parts = [header("FwResponse", facts)]
    lp = response.logprobs
    if lp is None:
        if response.prompt:
            parts.append(_prompt_block(_block(visible(response.prompt), muted=True), "prompt", open_=False))
        parts.append(_block(visible(response.full)))
        return panel("".join(parts))
    ranks = lp.ranks()
    k = lp.num_prompt_tokens
    if k:
        first = max(0, k - max_tokens)
        note = _note(f"… {first} earlier prompt tokens not shown") if first else ""
        body = note + _block(_token_spans(lp, first, k, shade=False, ranks=ranks), muted=True)
        parts.append(_prompt_block(body, f"prompt · {k} tokens (echoed)", open_=k <= open_prompt_tokens))
    elif response.prompt:
        parts.append(_prompt_block(_block(visible(response.prompt), muted=True), "prompt (not echoed)", open_=False))
    end = min(len(lp), k + max_tokens)
    parts.append(_block(_token_spans(lp, k, end, shade=True, ranks=ranks)))
    if end < len(lp):
        parts.append(_note(f"… {len(lp) - end} more generated tokens not shown"))
    parts.append(legend())
    return panel("".join(parts))


def _note(text: str) -> str:
    return f'<div style="font-family:{SANS};font-size:11px;color:{MUTED}">{html.escape(text)}</div>'


def _prompt_block(body: str, label: str, *, open_: bool) -> str:
    opened = " open" if open_ else ""
    return (
        f'<details{opened} style="margin-bottom:8px;padding:4px 8px;background:#f6f8fa;border-radius:4px">'
        f'<summary style="font-family:{SANS};font-size:12px;color:{MUTED};cursor:pointer">'
        f"{html.escape(label)}</summary>{body}</details>"
    )


def rollouts_html(rollouts: FwRollouts, *, max_rows: int = 20, text_chars: int = 80) -> str:
    """A call as HTML: its settings, then one row per sample (at most ``max_rows``, then "... and M more").

    Each row: seed, finish reason, generated tokens, mean logprob (shaded by the geometric-mean
    probability it stands for), mean top-k entropy and residual mass, cached, and the text cut to
    ``text_chars`` characters (whole on hover).
    """
    facts = [
        ("model", rollouts.model),
        ("samples", f"{len(rollouts.responses)}/{rollouts.num_responses}"),
        ("temperature", format_number(rollouts.temperature, 2)),
        ("top_p", format_number(rollouts.top_p, 2)),
        ("max_tokens", format_number(rollouts.max_tokens)),
    ]
    if rollouts.errors:
        facts.append(("failed", str(len(rollouts.errors))))
    columns = ["#", "seed", "finish", "tokens", "mean logprob", "top-k entropy", "residual", "cached", "text"]

    def rows() -> Iterable[list[Cell | str | float | int | bool | None]]:
        for number, r in enumerate(rollouts.responses):
            s = sample_summary(r)
            mean = s["mean_logprob"]
            shade = probability_colour(math.exp(mean)) if not math.isnan(mean) else None
            yield [
                number,
                r.seed,
                r.finish_reason or "–",
                s["num_tokens"],
                Cell(format_number(mean), background=shade, align="right"),
                s["mean_topk_entropy"],
                s["mean_residual_mass"],
                r.cached,
                Cell(truncate(r.full, text_chars), title=truncate(r.full, 2000)),
            ]

    # Only the rows shown are summarised: a table of 10,000 samples costs max_rows summaries.
    body = table(columns, islice(rows(), max_rows), max_rows=max_rows, total=len(rollouts.responses))
    return panel(header("FwRollouts", facts) + body)
