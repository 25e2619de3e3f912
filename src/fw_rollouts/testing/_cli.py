"""Command line of the simulator: ``python -m fw_rollouts.testing`` (reusable by the project's CLI)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from ._server import FireworksSimulator

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "python -m fw_rollouts.testing") -> argparse.ArgumentParser:
    """The argument parser of :func:`main` (exposed so another CLI can embed it as a subcommand)."""
    p = argparse.ArgumentParser(prog=prog, description="Run a simulated Fireworks completions server.")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default)")
    p.add_argument("--api-key", default="sim-key", help="the Bearer key to accept (default: %(default)s)")
    p.add_argument("--any-key", action="store_true", help="accept any non-empty Bearer key")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")
    p.add_argument("--bos", choices=("none", "count", "echo"), default="none", help="implicit BOS handling")
    p.add_argument("--no-echo-text", action="store_true", help="echo returns logprobs but not the prompt text")
    p.add_argument("--stop-included", action="store_true", help="keep the matched stop sequence in the text")
    p.add_argument("--default-max-tokens", type=int, default=16, help="max_tokens when omitted (default: 16)")
    p.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="accept only this model (repeatable); default: any well-formed name",
    )
    p.add_argument("--fault-rate", type=float, default=0.0, help="fault this fraction of requests at random")
    p.add_argument("--fault-seed", type=int, default=0, help="seed of the random faults")
    return p


async def _serve(args: argparse.Namespace) -> None:
    sim = FireworksSimulator(
        host=args.host,
        port=args.port,
        api_key=None if args.any_key else args.api_key,
        latency=args.latency,
        known_models=args.models,
        bos=args.bos,
        echo_text=not args.no_echo_text,
        stop_included=args.stop_included,
        default_max_tokens=args.default_max_tokens,
        record=False,
    )
    if args.fault_rate:
        sim.faults.random(args.fault_rate, seed=args.fault_seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers on Windows
            loop.add_signal_handler(sig, stop.set)
    async with sim:
        key = "any" if args.any_key else sim.api_key
        print(f"fw_rollouts simulator listening on {sim.base_url} (api key: {key})", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator in the foreground until Ctrl-C or SIGTERM; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
