"""The HTML views (fw_rollouts._html) as markup: escaped, well formed, shaded, truncated; the browser check is in
test_html_render.py."""

from __future__ import annotations

import asyncio
import math
import re
from html.parser import HTMLParser

import pytest

from _helpers import MakeClient
from fw_rollouts import FwResponse, FwRollouts, Logprobs
from fw_rollouts._html import (
    Cell,
    alternatives_title,
    probability_colour,
    response_html,
    rollouts_html,
    signed_colour,
    table,
    value_colour,
    visible,
)

ATTRIBUTES = {"style", "title", "open", "colspan"}


class Markup(HTMLParser):
    """Every start tag with its attributes, and the text outside tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(markup: str) -> Markup:
    parser = Markup()
    parser.feed(markup)
    parser.close()
    assert not parser.open, f"unclosed: {parser.open}"
    for tag, attrs in parser.tags:
        # A quote inside a style value would end the attribute early and leave stray attributes behind.
        assert set(attrs) <= ATTRIBUTES, (tag, attrs)
        style = attrs.get("style")
        if style is not None:
            for declaration in filter(None, (d.strip() for d in style.split(";"))):
                assert re.fullmatch(r"[a-z-]+:[^:]+", declaration), (tag, declaration)
    return parser


def sample(tokens: list[str], values: list[float | None], top: list[dict[str, float] | None], k: int = 0) -> FwResponse:
    lp = Logprobs(tokens, values, top, num_prompt_tokens=k, prompt_length=len("".join(tokens[:k])), echo=k > 0)
    return FwResponse(full="".join(tokens[k:]), prompt="".join(tokens[:k]), echo=k > 0, logprobs=lp, seed=4,
                      finish_reason="length")  # fmt: skip


def test_every_token_is_escaped_in_text_and_titles() -> None:
    evil = "<script>alert(1)</script>"
    r = sample(["<s>", '"q"', evil, " &amp;"], [None, -1.0, -0.5, -0.1],
               [None, {'"q"': -1.0}, {evil: -0.5, "<b>": -1.5}, {" &amp;": -0.1}], k=2)  # fmt: skip
    markup = response_html(r)
    assert "<script" not in markup and markup.count("<b>") == 1  # the header's title only
    parsed = parse(markup)
    text = "".join(parsed.text)
    assert evil in text and " &amp;" in text and '"q"' in text  # shown as the text it is
    titles = [title for _, attrs in parsed.tags if (title := attrs.get("title"))]
    assert any(evil in t and "'<b>'" in t for t in titles)


def test_whitespace_is_visible() -> None:
    assert visible("a\nb\tc") == "a↵\nb⇥\tc"
    assert visible("a\nb", breaks=False) == "a↵b"
    assert visible("<&>") == "&lt;&amp;&gt;"
    r = sample(["x", "\n\n", " ", "y"], [-0.1, -0.2, -0.3, -0.4], [None] * 4)
    text = "".join(parse(response_html(r)).text)
    assert "↵\n↵\n" in text


def test_generated_tokens_are_shaded_by_probability_and_the_prompt_is_grey() -> None:
    values = [None, -0.01, math.log(0.9), math.log(0.5), math.log(0.1), math.log(0.01)]
    r = sample(["<s>", "P", "a", "b", "c", "d"], values, [None] + [{"x": -1.0}] * 5, k=2)
    parsed = parse(response_html(r))
    spans = [attrs["style"] or "" for tag, attrs in parsed.tags if tag == "span" and "title" in attrs]
    assert len(spans) == 6
    prompt, generated = spans[:2], spans[2:]
    assert all("background" not in s and "color:#6e7781" in s for s in prompt)
    backgrounds = [re.search(r"background:(rgb\([^)]*\))", s).group(1) for s in generated]  # type: ignore[union-attr]
    assert backgrounds == [probability_colour(p) for p in (0.9, 0.5, 0.1, 0.01)]
    assert len(set(backgrounds)) == 4


def test_colour_scales() -> None:
    assert probability_colour(1.0) == "rgb(255,255,255)" and probability_colour(0.0) == "rgb(235,87,70)"
    greens = [int(probability_colour(p / 10).split(",")[1]) for p in range(11)]
    assert greens == sorted(greens) and len(set(greens)) == 11  # lighter as p grows, each step its own
    assert probability_colour(None) == value_colour(math.nan) == signed_colour(None, 1.0) == "#eeeeee"
    assert value_colour(0.0) == "rgb(255,255,255)" and value_colour(2.0, 0.0, 1.0) == value_colour(1.0)
    assert signed_colour(0.5, 0.5) == probability_colour(0.0) and signed_colour(-0.5, 0.5) == value_colour(1.0)


def test_a_long_prompt_starts_collapsed_and_a_short_one_open() -> None:
    short = sample(["<s>", "Hi", " there"], [None, -1.0, -0.5], [None, None, None], k=2)
    long = sample(["<s>", *["w"] * 100, " end"], [None, *[-1.0] * 100, -0.5], [None] * 102, k=101)
    assert "<details open" in response_html(short)
    assert "<details style" in response_html(long) and "<details open" not in response_html(long)
    assert "… 41 earlier prompt tokens not shown" in response_html(long, max_tokens=60)


def test_at_most_max_tokens_generated_tokens_are_drawn() -> None:
    r = sample([f"t{i}" for i in range(30)], [-0.5] * 30, [None] * 30)
    markup = response_html(r, max_tokens=10)
    assert markup.count("title=") == 10 and "… 20 more generated tokens not shown" in markup


def test_the_header_and_legend() -> None:
    r = sample(["<s>", "a", "b"], [None, math.log(0.5), math.log(0.25)], [None, {"a": math.log(0.5)}, None], k=1)
    text = "".join(parse(response_html(r)).text)
    assert "seed 4" in text and "finish_reason length" in text and "tokens 2" in text
    assert f"sum logprob {-math.log(8):.3f}".replace("-", "−") in text and "token probability 0" in text
    assert "mean top-k entropy" in text and "mean residual mass 0.500" in text
    plain = FwResponse(full="no <logprobs>", prompt="p", seed=1)
    assert "no &lt;logprobs&gt;" in response_html(plain) and "tokens" not in "".join(parse(response_html(plain)).text)


def test_alternatives_title() -> None:
    title = alternatives_title(" b", math.log(0.25), {" a": math.log(0.5), " b": math.log(0.25)}, rank=1,
                               sampling_logprob=-1.0)  # fmt: skip
    assert title.splitlines() == [
        "' b'  p=0.2500  logprob=-1.3863  rank 1",
        "sampling_logprob=-1.0000",
        "alternatives:",
        "  0.5000  ' a'",
        "  0.2500  ' b'  <- chosen",
        "residual mass 0.2500, top-k entropy 0.6931 nats",
    ]
    assert "beyond the top k" in alternatives_title("x", -9.0, {"a": -0.1}, rank=None)
    assert alternatives_title("<s>", None, None) == "'<s>'  (no logprob: the first position)"


def test_table_shows_at_most_max_rows_then_how_many_more() -> None:
    markup = table(["n", "value", "note"], ([i, i / 3, Cell("x\ny", background="#abcdef")] for i in range(25)),
                   max_rows=20)  # fmt: skip
    parsed = parse(markup)
    assert sum(tag == "tr" for tag, _ in parsed.tags) == 1 + 20 + 1
    text = "".join(parsed.text)
    assert "… and 5 more" in text and "0.333" in text and "x↵y" in text
    assert "… and" not in table(["n"], [[1], [2]], max_rows=2)
    assert "… and 98 more" in table(["n"], [[1], [2]], max_rows=2, total=100)


def test_rollouts_table_from_the_simulator(make_client: MakeClient) -> None:
    async def main() -> FwRollouts:
        async with make_client(max_tokens=12, temperature=1.0) as client:
            return await client.generate("Tabulate <me>", 25, seed=0)

    rollouts = asyncio.run(main())
    markup = rollouts_html(rollouts, max_rows=20, text_chars=30)
    parsed = parse(markup)
    text = "".join(parsed.text)
    assert "samples 25/25" in text and "… and 5 more" in text and rollouts.model in text
    assert sum(tag == "tr" for tag, _ in parsed.tags) == 1 + 20 + 1
    assert rollouts._repr_html_() == rollouts_html(rollouts)
    assert rollouts[0]._repr_html_() == response_html(rollouts[0])
    # The sample's text, cut, in its row; the whole of it (up to 2,000 characters) on hover.
    titles = [attrs.get("title") for tag, attrs in parsed.tags if tag == "td" and attrs.get("title")]
    assert titles[0] == rollouts[0].full[:2000]


@pytest.mark.parametrize("digits", [2, 3])
def test_numbers_in_tables(digits: int) -> None:
    from fw_rollouts._html import format_number

    assert format_number(-0.5, digits) == "−0.5" + "0" * (digits - 1)
    assert format_number(None) == format_number(math.nan) == "–" and format_number(-3) == "−3"
