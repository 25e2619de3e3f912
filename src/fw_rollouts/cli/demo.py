"""``fw-rollouts demo``: the design note's usage example, offline, against the simulated server.

It starts the simulator in-process, samples 5 completions of "What is 2+2?" from ``qwen-15b`` with
``temperature=0.7``, ``logprobs=5`` and ``echo=True`` (a progress bar on stderr), prints each
sample's reasoning, answer, prompt log-probability and first tokens with their top alternatives,
then runs the same call again to show every sample coming from the cache. No key, no network.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Final

from ._flags import Formatter

__all__ = ["describe", "register", "run"]

NAME: Final = "demo"

DESCRIPTION: Final = """\
Sample from the built-in simulated Fireworks server: no key, no network. The same call as

  client = Fireworks(model="qwen-15b", temperature=0.7, logprobs=5, echo=True)
  rollouts = client.generate("What is 2+2?", n_samples=5)

against a server started for the demo, then each sample's reasoning and answer, the prompt's
log-probability (echo) and the first generated tokens with their top alternatives; then the
same call again, served from the cache (a temporary directory, removed at the end).
"""

EPILOG: Final = """\
examples:
  fw-rollouts demo
  fw-rollouts demo --model llama-v3p1-8b -n 3 --prompt "Name a prime number."
  fw-rollouts demo --model mistral-7b --raw --prompt "The capital of France is"
"""

_PROMPT: Final = "What is 2+2?"


def register(sub: Any) -> argparse.ArgumentParser:
    """Add ``demo`` to the subcommands."""
    parser: argparse.ArgumentParser = sub.add_parser(
        NAME,
        help="sample from the built-in simulated server and show the logprobs (no key, no network)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    parser.add_argument("-m", "--model", default="qwen-15b", help="the model to simulate (default: %(default)s)")
    parser.add_argument("--prompt", default=_PROMPT, help="the prompt (default: %(default)r)")
    parser.add_argument("-n", "--n-samples", type=int, default=5, metavar="N", help="samples (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=48, metavar="N",
                        help="tokens per sample (default: %(default)s)")  # fmt: skip
    parser.add_argument("--temperature", type=float, default=0.7, metavar="X",
                        help="sampling temperature (default: %(default)s)")  # fmt: skip
    parser.add_argument("--raw", action="store_true", help="send the prompt verbatim, without a chat template")
    parser.add_argument("--chat-template", metavar="TEMPLATE",
                        help="a built-in template name or a Jinja template string (default: the model's)")  # fmt: skip
    parser.add_argument("--latency", type=float, default=0.3, metavar="SECONDS",
                        help="simulated seconds per request, so the bar shows (default: %(default)s)")  # fmt: skip
    parser.set_defaults(run=run, terms={})
    return parser


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _format_logprob(value: float | None) -> str:
    return "   —   " if value is None else f"{value:7.3f}"


def describe(rollouts: Any, *, tokens_shown: int = 8) -> str:
    """A readable report of a call's samples (an ``FwRollouts``): text, reasoning split, the first tokens' logprobs."""
    lines = [
        f"model   {rollouts.model}",
        f"prompt  {_clip(rollouts.prompt_text, 100)!r}",
        f"samples {len(rollouts)} of {rollouts.num_responses}  (logprobs={rollouts.logprobs}, "
        f"echo={rollouts.echo_enabled}, temperature={rollouts.temperature})",
        "",
    ]
    for r in rollouts:
        lines.extend(_describe_one(r, tokens_shown))
    return "\n".join(lines)


def _describe_one(r: Any, tokens_shown: int) -> list[str]:
    out = [
        f"── seed {r.seed} · finish={r.finish_reason} · {r.usage.completion_tokens} tokens"
        + (" · cached" if r.cached else ""),
        f"   reasoning: {_clip(r.reasoning, 90)!r}" + ("" if r.completed_reasoning is not False else " (unfinished)"),
        f"   content:   {_clip(r.content, 90)!r}",
    ]
    gen = r.get_generation_logprobs()
    prompt = r.get_prompt_logprobs()
    if prompt is not None and len(prompt):
        total = prompt.sum()
        out.append(f"   prompt:    {len(prompt)} tokens, log P(prompt) = {total:.3f} (first token has no logprob)")
    if gen is not None and len(gen):
        out.append(f"   generated: log P = {gen.sum():.3f}, perplexity = {math.exp(-gen.mean()):.2f}")
        out.append("     token             logprob   top alternatives")
        for position in list(gen)[:tokens_shown]:
            alternatives = ", ".join(
                f"{_clip(tok, 10)!r} {lp:.2f}" for tok, lp in list((position.top_logprobs or {}).items())[:3]
            )
            token = _clip(repr(position.token), 16)
            out.append(f"     {token:<16} {_format_logprob(position.logprob)}   {alternatives}")
        if len(gen) > tokens_shown:
            out.append(f"     … {len(gen) - tokens_shown} more")
    out.append("")
    return out


def run(args: argparse.Namespace) -> int:
    """Run the demo; the exit status."""
    import sys
    import tempfile

    from .._sync import Fireworks
    from ..testing import FireworksSimulator

    with FireworksSimulator(latency=args.latency) as sim, tempfile.TemporaryDirectory() as cache_dir:
        print(f"simulated Fireworks server at {sim.base_url}\n", file=sys.stderr)
        with Fireworks(
            model=args.model,
            temperature=args.temperature,
            logprobs=5,
            echo=True,
            max_tokens=args.max_tokens,
            raw=args.raw,
            chat_template=args.chat_template,
            base_url=sim.base_url,
            api_key=sim.api_key,
            cache_dir=cache_dir,
            max_concurrency=2,
        ) as client:
            rollouts = client.generate(args.prompt, n_samples=args.n_samples)
            print(describe(rollouts))
            again = client.generate(args.prompt, n_samples=args.n_samples, progress_bar=False)
            cached = sum(r.cached for r in again)
            print(f"re-run: {cached} of {len(again)} samples came from the cache, {len(sim.requests)} requests in all")
    return 0
