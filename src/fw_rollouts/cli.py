"""Command line: ``fw-rollouts demo`` (offline), ``fw-rollouts sample`` (real service), ``fw-rollouts serve``.

``demo`` starts the simulated Fireworks server in-process and samples from it with
logprobs and echo, so it needs no key and no network. ``sample`` talks to the real
service (or any ``--base-url``) and prints one JSON line per sample. ``serve`` runs
the simulator in the foreground for other programs to use.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from ._exceptions import FwRolloutsError
from ._models import FwResponse, FwRollouts
from ._sync import Fireworks

__all__ = ["main"]

_DEMO_PROMPT = "What is 2+2?"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _format_logprob(value: float | None) -> str:
    return "   —   " if value is None else f"{value:7.3f}"


def describe(rollouts: FwRollouts, *, tokens_shown: int = 8) -> str:
    """A readable report of a call's samples: text, reasoning split and the first tokens' logprobs."""
    lines = [
        f"model   {rollouts.model}",
        f"prompt  {_clip(rollouts.prompt_text, 100)!r}",
        f"samples {len(rollouts)} of {rollouts.num_responses}  (logprobs={rollouts.logprobs}, "
        f"echo={rollouts.echo_enabled}, cache={rollouts.cache_dir})",
        "",
    ]
    for r in rollouts:
        lines.extend(_describe_one(r, tokens_shown))
    return "\n".join(lines)


def _describe_one(r: FwResponse, tokens_shown: int) -> list[str]:
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


def _demo(args: argparse.Namespace) -> int:
    from .testing import FireworksSimulator

    # Latency makes the progress bar visible; the simulator answers instantly otherwise.
    with FireworksSimulator(latency=args.latency) as sim, tempfile.TemporaryDirectory() as cache_dir:
        print(f"simulated Fireworks server at {sim.base_url}\n", file=sys.stderr)
        with Fireworks(
            model=args.model,
            logprobs=5,
            echo=True,
            max_tokens=args.max_tokens,
            base_url=sim.base_url,
            api_key=sim.api_key,
            cache_dir=cache_dir,
            max_concurrency=2,
        ) as client:
            rollouts = client.generate(args.prompt, n_samples=args.n)
            print(describe(rollouts))
            again = client.generate(args.prompt, n_samples=args.n, progress_bar=False)
            cached = sum(r.cached for r in again)
            print(f"re-run: {cached} of {len(again)} samples came from the cache, {len(sim.requests)} requests in all")
    return 0


def _sample(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {
        "logprobs": args.logprobs,
        "echo": args.echo,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "raw": args.raw,
        "use_cache": not args.no_cache,
    }
    if args.base_url:
        options["base_url"] = args.base_url
    try:
        with Fireworks(model=args.model, **options) as client:
            rollouts = client.generate(args.prompt, n_samples=args.n, seed=args.seed)
    except FwRolloutsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for r in rollouts:
        print(json.dumps(r.to_dict(), ensure_ascii=False))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fw-rollouts", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="sample from the built-in simulated server (no key, no network)")
    demo.add_argument("--model", default="qwen-15b")
    demo.add_argument("--prompt", default=_DEMO_PROMPT)
    demo.add_argument("-n", "--n", type=int, default=5, help="samples (default: %(default)s)")
    demo.add_argument("--max-tokens", type=int, default=48)
    demo.add_argument("--latency", type=float, default=0.3, help="simulated seconds per request")
    demo.set_defaults(run=_demo)

    sample = sub.add_parser("sample", help="sample from Fireworks (needs FIREWORKS_API_KEY) and print JSON lines")
    sample.add_argument("prompt")
    sample.add_argument("--model", required=True)
    sample.add_argument("-n", "--n", type=int, default=1)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--logprobs", type=int, default=5)
    sample.add_argument("--no-echo", dest="echo", action="store_false")
    sample.add_argument("--temperature", type=float, default=0.7)
    sample.add_argument("--max-tokens", type=int, default=512)
    sample.add_argument("--raw", action="store_true", help="send the prompt verbatim (no chat template)")
    sample.add_argument("--no-cache", action="store_true")
    sample.add_argument("--base-url", default=None)
    sample.set_defaults(run=_sample)

    serve = sub.add_parser("serve", help="run the simulated server in the foreground", add_help=False)
    serve.set_defaults(run=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fw-rollouts`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        from .testing import main as serve_main

        return serve_main(argv[1:])
    args = _parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
