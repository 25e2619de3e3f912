"""Command line of the simulator: ``python -m fw_rollouts.testing`` (reusable by the project's CLI)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import select
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ._config import LOGPROBS_FAULTS
from ._server import FireworksSimulator, http_url

__all__ = ["build_parser", "main"]

_LoopFactory = Callable[[], asyncio.AbstractEventLoop]
_READY_TIMEOUT = 60.0


_PROG = "python -m fw_rollouts.testing"

_EPILOG = """\
examples:
  {prog} --port 8000
  {prog} --port 8000 --latency 0.05 --fault-rate 0.1 --requests-per-minute 600

then, in another shell:
  export FIREWORKS_BASE_URL=http://127.0.0.1:8000/inference/v1 FIREWORKS_API_KEY=sim-key
  fw-rollouts generate -m qwen-15b "What is 2+2?" -n 3
"""


def build_parser(prog: str = _PROG) -> argparse.ArgumentParser:
    """The argument parser of :func:`main` (exposed so another CLI can embed it as a subcommand)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run a simulated Fireworks inference server (completions and chat completions) on real "
        "loopback HTTP, until Ctrl-C or SIGTERM: deterministic samples with logprobs, no key, no network.",
        epilog=_EPILOG.format(prog=prog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    p.add_argument(
        "--lenient",
        action="store_true",
        help="ignore body fields outside the Fireworks schema instead of answering 400 (OpenRouter-style clients)",
    )
    p.add_argument(
        "--replay-cache-mb",
        type=int,
        default=0,
        metavar="N",
        help="replay identical successful requests byte for byte from a memo of up to N MB (for benchmarks)",
    )
    p.add_argument(
        "--requests-per-minute", type=float, metavar="N", help="answer 429 above N requests (choices) a minute"
    )
    p.add_argument(
        "--prompt-tokens-per-minute", type=float, metavar="N", help="answer 429 above N prompt tokens a minute"
    )
    p.add_argument(
        "--generated-tokens-per-minute", type=float, metavar="N", help="answer 429 above N generated tokens a minute"
    )
    p.add_argument(
        "--ratelimit-headers", action="store_true", help="send x-ratelimit-limit-* and x-ratelimit-remaining-* headers"
    )
    p.add_argument(
        "--logprobs-fault",
        choices=LOGPROBS_FAULTS,
        help="answer 200 with logprobs wrong in this way (what verify_logprobs catches); default: honest",
    )
    p.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop if it is installed")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes sharing the port with SO_REUSEPORT (Linux; default: 1)",
    )
    return p


def _simulator(args: argparse.Namespace, port: int, worker: int) -> FireworksSimulator:
    sim = FireworksSimulator(
        host=args.host,
        port=port,
        api_key=None if args.any_key else args.api_key,
        latency=args.latency,
        known_models=args.models,
        bos=args.bos,
        echo_text=not args.no_echo_text,
        stop_included=args.stop_included,
        default_max_tokens=args.default_max_tokens,
        record=False,
        strict_fields=not args.lenient,
        replay_cache_mb=args.replay_cache_mb,
        requests_per_minute=args.requests_per_minute,
        prompt_tokens_per_minute=args.prompt_tokens_per_minute,
        generated_tokens_per_minute=args.generated_tokens_per_minute,
        ratelimit_headers=args.ratelimit_headers,
        logprobs_fault=args.logprobs_fault,
    )
    if args.fault_rate:
        sim.faults.random(args.fault_rate, seed=args.fault_seed + worker)
    return sim


def _banner(base_url: str, args: argparse.Namespace, suffix: str = "") -> None:
    key = "any" if args.any_key else args.api_key
    print(f"fw_rollouts simulator listening on {base_url} (api key: {key}){suffix}", flush=True)


async def _serve(args: argparse.Namespace, port: int, worker: int = 0, ready_fd: int | None = None) -> None:
    sim = _simulator(args, port, worker)
    sim._reuse_port = ready_fd is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers on Windows
            loop.add_signal_handler(sig, stop.set)
    async with sim:
        if ready_fd is None:
            _banner(sim.base_url, args)
        else:
            os.write(ready_fd, b"1")
            os.close(ready_fd)
        await stop.wait()


def _loop_factory(want_uvloop: bool) -> _LoopFactory | None:
    """uvloop's loop factory when asked for and installed; None (the default loop) otherwise."""
    if not want_uvloop:
        return None
    try:
        uvloop: Any = importlib.import_module("uvloop")
    except ImportError:
        print("warning: --uvloop: uvloop is not installed (pip install uvloop); using asyncio's loop", file=sys.stderr)
        return None
    factory: _LoopFactory = uvloop.new_event_loop
    return factory


def _run(coro: Coroutine[Any, Any, None], factory: _LoopFactory | None) -> int:
    try:
        if factory is None:
            asyncio.run(coro)
        elif sys.version_info >= (3, 11):
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(coro)
        else:  # pragma: no cover - Python 3.10
            loop = factory()
            try:
                loop.run_until_complete(coro)
            finally:
                loop.close()
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGTERM this worker when the parent dies, even by SIGKILL (Linux, best effort)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _serve_workers(args: argparse.Namespace, factory: _LoopFactory | None) -> int:
    """Fork ``args.workers`` servers that share one port (SO_REUSEPORT); stop them all on SIGINT/SIGTERM."""
    if not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"):
        print("error: --workers needs fork() and SO_REUSEPORT (Linux)", file=sys.stderr)
        return 1
    # A bound, non-listening SO_REUSEPORT socket reserves the port (and picks it when --port is 0).
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((args.host, args.port))
    except OSError as e:
        holder.close()
        print(f"error: {e}", file=sys.stderr)
        return 1
    port = holder.getsockname()[1]
    signals = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # kept pending for sigwait below
    pids: list[int] = []
    failed = False
    parent = os.getpid()
    try:
        for worker in range(args.workers):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child (covered by the CLI test)
                code = 1
                try:
                    os.close(r)
                    holder.close()
                    _die_with_parent(parent)
                    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
                    code = _run(_serve(args, port, worker, w), factory)
                finally:
                    os._exit(code)
            os.close(w)
            pids.append(pid)
            ready, _, _ = select.select([r], [], [], _READY_TIMEOUT)
            failed = not ready or os.read(r, 1) != b"1"
            os.close(r)
            if failed:
                print(f"error: worker {worker} did not start", file=sys.stderr)
                break
        holder.close()
        if not failed:
            _banner(http_url(args.host, port) + "/inference/v1", args, f" [{args.workers} workers]")
            while True:
                sig = signal.sigwait(signals)
                if sig != signal.SIGCHLD:
                    break
                with contextlib.suppress(ChildProcessError):
                    pid, status = os.waitpid(-1, os.WNOHANG)
                    if pid:
                        print(f"error: a worker exited (status {status}); stopping", file=sys.stderr)
                        pids.remove(pid)
                        failed = True
                        break
    finally:
        holder.close()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None, *, prog: str = _PROG) -> int:
    """Run the simulator in the foreground until Ctrl-C or SIGTERM; returns the exit status.

    ``prog`` names the command in usage and errors (``fw-rollouts serve-fake`` embeds this one).
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.replay_cache_mb < 0:
        parser.error("--replay-cache-mb must be >= 0")
    for name in ("requests_per_minute", "prompt_tokens_per_minute", "generated_tokens_per_minute"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    limited = args.ratelimit_headers or any(
        getattr(args, n) is not None
        for n in ("requests_per_minute", "prompt_tokens_per_minute", "generated_tokens_per_minute")
    )
    if args.replay_cache_mb and limited:
        parser.error("--replay-cache-mb cannot be combined with rate limits or --ratelimit-headers")
    factory = _loop_factory(args.uvloop)
    if args.workers > 1:
        return _serve_workers(args, factory)
    return _run(_serve(args, args.port), factory)
