"""The API key never appears in a cache file, a log line, a repr, an exception message or a progress bar."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from _virtual_time import VirtualTime
from fw_rollouts import AsyncFireworks, AuthenticationError, Fireworks, FireworksClient, FwRolloutsError
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
