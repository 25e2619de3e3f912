"""The API key never appears in a cache file, a log line, a repr, an exception message or a progress bar."""

from __future__ import annotations

import asyncio
import logging
import pickle
from pathlib import Path
from typing import Any

import pytest

from _virtual_time import VirtualTime
from fw_rollouts import (
    APIStatusError,
    AsyncFireworks,
    AuthenticationError,
    Fireworks,
    FireworksClient,
    FwRolloutsError,
)
from fw_rollouts.testing import Fault, FireworksSimulator

KEY = "fw-SECRET-0123456789abcdef"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs() -> Any:
    """Every log line of every library (openai, httpx2, aiohttp, ours) at DEBUG."""
    handler = Collect()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_key_never_leaks_through_a_faulty_run(
    tmp_path: Path, all_logs: Collect, capsys: pytest.CaptureFixture[str]
) -> None:
    with FireworksSimulator(api_key=KEY) as sim:
        sim.faults.push(
            Fault.status(429, retry_after="1"), Fault.reset(), Fault.status(500), Fault.malformed("html"),
            Fault.status(503, message=f"upstream said: bad key {KEY}"),
        )  # fmt: skip
        client = AsyncFireworks(
            model="qwen-15b", api_key=KEY, base_url=sim.base_url, cache_dir=str(tmp_path / "cache"), max_tokens=8,
            clock=VirtualTime(),
        )  # fmt: skip
        shown = [repr(client), str(client), repr(client.settings), str(vars(client))]

        async def main() -> Any:
            async with client:
                return await client.generate("Keep it secret", n_samples=4)  # progress bar on

        rollouts = asyncio.run(main())
        shown += [repr(rollouts), str(rollouts.to_dict()), repr(list(rollouts))]

        sim.faults.push(*[Fault.status(502, message=f"echoing {KEY}")] * 3)

        async def failing() -> None:
            async with AsyncFireworks(
                model="qwen-15b", api_key=KEY, base_url=sim.base_url, use_cache=False, max_retries=2,
                progress_bar=False, clock=VirtualTime(),
            ) as failing_client:  # fmt: skip
                await failing_client.generate("Fail")

        with pytest.raises(FwRolloutsError) as info:
            asyncio.run(failing())
        shown += [str(info.value), repr(info.value), info.value.message]
        assert "[REDACTED]" in str(info.value)

    assert any("retrying in" in line for line in all_logs.lines)  # retries were logged ...
    for text in [*shown, *all_logs.lines, capsys.readouterr().err]:
        assert KEY not in text  # ... without the key
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes()


def test_wrong_key_error_does_not_show_either_key(tmp_path: Path) -> None:
    with FireworksSimulator(api_key=KEY) as sim:
        wrong = "fw-WRONG-key-987"

        async def main() -> None:
            async with AsyncFireworks(
                model="qwen-15b", api_key=wrong, base_url=sim.base_url, use_cache=False, progress_bar=False,
            ) as client:  # fmt: skip
                await client.generate("Who am I?")

        with pytest.raises(AuthenticationError) as info:
            asyncio.run(main())
    for text in (str(info.value), repr(info.value), str(info.value.body)):
        assert wrong not in text and KEY not in text
    assert info.value.status_code == 401


def test_sync_and_dropin_reprs_hide_the_key(tmp_path: Path) -> None:
    sync = Fireworks(model="qwen-15b", api_key=KEY, cache_dir=str(tmp_path))
    dropin = FireworksClient(model="qwen-15b", api_key=KEY, cache_dir=str(tmp_path))
    for text in (repr(sync), repr(sync.settings), repr(dropin), str(vars(dropin))):
        assert KEY not in text
    sync.close()


# -- a server that echoes the key back -------------------------------------------------------------------------


def escaped(text: str) -> str:
    """``text`` as JSON \\u escapes: the bytes never contain it, the parsed value does."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


def echoing(template: str) -> str:
    """``template`` with each ``@`` replaced by the key, JSON-escaped."""
    return template.replace("@", escaped(KEY))


ECHOES: dict[str, tuple[int, dict[str, str], str]] = {
    "every field of a JSON error, escaped": (
        401,
        {"x-request-id": f"req-{KEY}"},
        echoing('{"error": {"message": "bad key @", "code": "@", "param": "@", "type": "auth @", '
                '"extra": [[{"k": "@"}]]}, "request_id": "@"}'),
    ),
    "a raw key in an HTML body": (400, {}, f"<html><body>Bad request from {KEY}</body></html>"),
    "a request id echoing the key, retried": (500, {"x-request-id": KEY}, echoing('{"error": {"message": "@"}}')),
    "a 2xx body that is not a completion": (200, {"x-request-id": KEY}, echoing('{"detail": "@", "choices": 5}')),
    "a flat detail list": (422, {}, echoing('{"detail": [{"loc": ["body", "@"], "msg": "@"}]}')),
}  # fmt: skip


async def echo_server(status: int, headers: dict[str, str], body: str) -> tuple[asyncio.AbstractServer, str]:
    """A completions server that answers every request with exactly this reply (and closes the connection)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        await reader.readexactly(length)
        data = body.encode()
        lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(data)}", "Content-Type: application/json",
                 "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1"


def every_text_of(error: FwRolloutsError) -> list[str]:
    texts = [str(error), repr(error), error.message, repr(vars(error)), repr(pickle.dumps(error))]
    for each in error.errors.values():
        texts += every_text_of(each)
    return texts


@pytest.mark.parametrize("case", list(ECHOES))
def test_a_server_echoing_the_key_back_anywhere_never_gets_it_into_an_error_or_a_log(
    case: str, all_logs: Collect, tmp_path: Path
) -> None:
    status, headers, body = ECHOES[case]
    assert KEY not in body or "HTML" in case  # the escaped cases hide it from any byte-level scrubbing

    async def main() -> FwRolloutsError:
        server, base_url = await echo_server(status, headers, body)
        options: dict[str, Any] = {"max_retries": 2, "progress_bar": False, "clock": VirtualTime()}
        async with server, AsyncFireworks("qwen-15b", api_key=KEY, base_url=base_url, cache_dir=str(tmp_path),
                                          **options) as client:  # fmt: skip
            with pytest.raises(FwRolloutsError) as info:
                await client.generate("Tell me my key", n_samples=2)
            return info.value

    error = asyncio.run(main())
    texts = every_text_of(error)
    if status >= 400:
        assert "[REDACTED]" in " ".join(texts)  # the echo was there, and was replaced
    for text in [*texts, *all_logs.lines]:
        assert KEY not in text, text
    if isinstance(error, APIStatusError):
        for field in (error.code, error.param, error.type, error.request_id, repr(error.body)):
            assert field is None or KEY not in field


def test_every_sdk_logger_scrubs_the_key_at_every_level(all_logs: Collect) -> None:
    import logging as stdlib_logging

    AsyncFireworks("qwen-15b", api_key=KEY)  # a client remembers its key for the log filter
    names = [n for n in stdlib_logging.Logger.manager.loggerDict if n == "fw_rollouts" or n.startswith("fw_rollouts.")]
    names = [n for n in names if not n.startswith("fw_rollouts.testing")]  # the simulator is not the SDK
    assert {"fw_rollouts", "fw_rollouts.retry", "fw_rollouts.cache"} <= set(names)
    for name in names:
        logger = stdlib_logging.getLogger(name)
        for level in (stdlib_logging.DEBUG, stdlib_logging.INFO, stdlib_logging.WARNING, stdlib_logging.ERROR):
            logger.log(level, "echo %s and %r", KEY, {"key": KEY})
        try:
            raise RuntimeError(f"inside {KEY}")
        except RuntimeError:
            logger.exception("failed")
    assert len(all_logs.lines) >= 5 * len(names) and all(KEY not in line for line in all_logs.lines)


def test_a_key_too_short_to_be_real_does_not_mangle_messages(all_logs: Collect) -> None:
    import logging as stdlib_logging

    from fw_rollouts._redact import MIN_SECRET_LENGTH, redactor

    AsyncFireworks("qwen-15b", api_key="k")  # a test's placeholder key
    stdlib_logging.getLogger("fw_rollouts.cache").warning("the disk is full")
    assert any("the disk is full" in line for line in all_logs.lines)
    assert redactor("k")("disk") == "disk" and redactor("k" * MIN_SECRET_LENGTH)("k" * 9) == "[REDACTED]k"
