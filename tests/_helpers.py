"""Shared helpers for the tests (fixtures on disk, synthetic response bodies, client options).

Plain functions and constants, imported by name; the pytest fixtures (``sim``, ``make_client``) live in
``conftest.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from fw_rollouts import AsyncFireworks

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "data" / "fixtures"
"""Response-body fixtures committed with the tests (``fireworks/...``, ``llamacpp/...``; origins in SOURCES.md)."""
TEMPLATE_DATA = Path(__file__).resolve().parent / "data" / "templates"

R1_PROMPT = "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"
"""The exact prompt string the Fireworks echo fixtures were produced from (12 tokens)."""
R1_GENERATED = "Okay, so I need to add"
"""The 7 generated tokens of the Fireworks fixtures."""


class MakeClient(Protocol):
    """The type of the ``make_client`` fixture (conftest.py): options in, a client for the test's ``sim`` out."""

    def __call__(self, **options: Any) -> AsyncFireworks: ...


def client_for(sim: Any, tmp_path: Path, **options: Any) -> AsyncFireworks:
    """A client of the simulator ``sim``, caching under ``tmp_path / "cache"``: model ``qwen-15b``, the simulator's
    base URL and API key, no progress bar; any keyword overrides them (``make_client`` is this for the ``sim``
    fixture)."""
    from fw_rollouts import AsyncFireworks

    settings: dict[str, Any] = {
        "model": "qwen-15b",
        "base_url": sim.base_url,
        "api_key": sim.api_key,
        "cache_dir": str(tmp_path / "cache"),
        "progress_bar": False,
        **options,
    }
    return AsyncFireworks(**settings)


def fixture_path(relative: str) -> Path:
    """Path of a fixture file under ``FIXTURES``; fails the test if it is missing.

    A missing fixture is a broken checkout, not an environment to tolerate: skipping would hide the very tests
    (echo splitting, error bodies) the fixtures exist for.
    """
    path = FIXTURES / relative
    if not path.is_file():
        pytest.fail(f"fixture {relative!r} is missing: expected {path} (committed under tests/data/fixtures)")
    return path


def load_json_fixture(relative: str) -> dict[str, Any]:
    """A JSON fixture under ``FIXTURES``, parsed."""
    data: dict[str, Any] = json.loads(fixture_path(relative).read_text(encoding="utf-8"))
    return data


def fixture_text(relative: str) -> str:
    """A fixture's text (UTF-8) under ``FIXTURES``."""
    return fixture_path(relative).read_text(encoding="utf-8")


def completion_body(
    text: str,
    logprobs: Any = None,
    *,
    finish_reason: str | None = "length",
    usage: dict[str, Any] | None = None,
    index: int = 0,
) -> dict[str, Any]:
    """A one-choice completions body, shaped like Fireworks' (for synthetic server behaviours)."""
    body: dict[str, Any] = {
        "id": "cmpl-test",
        "object": "text_completion",
        "created": 1795500000,
        "model": "accounts/fireworks/models/test-model",
        "choices": [{"index": index, "text": text, "finish_reason": finish_reason, "logprobs": logprobs}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def legacy_logprobs(
    tokens: list[str],
    token_logprobs: list[float | None],
    *,
    text_offset: list[int] | None = None,
    top_logprobs: list[dict[str, float] | None] | None = None,
    token_ids: list[int] | None = None,
) -> dict[str, Any]:
    """A legacy-shape logprobs object (integer ``logprobs`` requests)."""
    out: dict[str, Any] = {"tokens": tokens, "token_logprobs": token_logprobs}
    if text_offset is not None:
        out["text_offset"] = text_offset
    if top_logprobs is not None:
        out["top_logprobs"] = top_logprobs
    if token_ids is not None:
        out["token_ids"] = token_ids
    return out


def char_offsets(tokens: list[str], start: int = 0) -> list[int]:
    """Character offsets of ``tokens`` laid end to end from ``start``."""
    offsets = []
    pos = start
    for token in tokens:
        offsets.append(pos)
        pos += len(token)
    return offsets


def client_options(sim: Any, cache_dir: Path, concurrency: int) -> dict[str, Any]:
    """Client options for a run against ``sim`` (JSON-safe: a child process gets them too)."""
    return {
        "model": "qwen-15b",
        "base_url": sim.base_url,
        "api_key": sim.api_key,
        "cache_dir": str(cache_dir),
        "max_concurrency": concurrency,
        "max_tokens": 16,
        "logprobs": 5,
        "echo": True,
        "progress_bar": False,
    }


def read_cache(cache_dir: Path, prompt: str = "") -> dict[str, Any]:
    """Every sample entry of a cache directory, through a fresh diskcache handle; each must be one whole sample.

    A prompt-part record (the echoed prompt stored once for its samples) is not a sample: it is read
    first and given to the samples that hold only their generated positions (one prompt per directory).
    """
    import diskcache

    from fw_rollouts._record import decode_prompt_record, decode_record

    with diskcache.Cache(str(cache_dir)) as cache:
        assert cache.check() == []  # SQLite integrity, and no value file missing or left over
        records = {key: cache[key] for key in cache.iterkeys()}
    parts = [decode_prompt_record(data, prompt, key) for key, data in records.items() if data[:4] == b"FWPR"]
    assert len(parts) <= 1, "read_cache reads directories of one prompt"
    part = parts[0] if parts else None
    entries = {key: decode_record(data, prompt, key, part) for key, data in records.items() if data[:4] != b"FWPR"}
    for sample in entries.values():
        assert sample.logprobs is not None and sample.finish_reason in ("stop", "length")
        assert len(sample.logprobs.tokens) == len(sample.logprobs.token_logprobs) > 0
        assert sample.full and sample.usage.completion_tokens > 0
    return entries


def exact(value: Any) -> Any:
    """``value`` with every float as its repr, so that -0.0 and 0.0 (equal as floats) differ here."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [exact(v) for v in value]
    return value


def same_rollouts(a: Any, b: Any) -> None:
    """Two ``FwRollouts`` equal, every float bit for bit (-0.0 is not 0.0 here), alternatives in the same order."""
    assert a == b
    assert exact(a.to_dict()) == exact(b.to_dict())
    for x, y in zip(a, b, strict=True):
        assert (x.logprobs is None) == (y.logprobs is None)
        if x.logprobs is not None and y.logprobs is not None:
            assert exact(x.logprobs.sampling_logprobs) == exact(y.logprobs.sampling_logprobs)
            assert [list(alts or {}) for alts in x.logprobs.top_logprobs] == [
                list(alts or {}) for alts in y.logprobs.top_logprobs
            ]
            assert x.get_prompt_logprobs() == y.get_prompt_logprobs()


def post_completion(sim: Any, body: dict[str, Any], *, path: str = "/v1/completions") -> bytes:
    """``body`` posted straight to ``sim``'s completions endpoint (no client in between); the reply body, which
    must come with status 200."""
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {sim.api_key}"}
        conn.request("POST", path, json.dumps(body).encode(), headers)
        reply = conn.getresponse()
        data = reply.read()
    finally:
        conn.close()
    assert reply.status == 200, data[:300]
    return data


DOCS = Path(__file__).resolve().parent.parent / "docs"


def docs_block(page: str, language: str = "python") -> str:
    """The first fenced block of ``language`` in ``docs/<page>`` (``""`` for a bare fence): a worked example a
    test runs as written, or the output the page says it prints."""
    text = (DOCS / page).read_text(encoding="utf-8")
    for kind, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if kind == language:
            return str(body)
    raise AssertionError(f"docs/{page} has no ```{language} block")


SRC = REPO_ROOT / "src"


def run_together(
    commands: Sequence[Sequence[str]], *, env: dict[str, str] | None = None, timeout: float = 120
) -> list[Any]:
    """Start a process per command, each of which prints "ready" and then waits for a line on stdin; release them
    all at once and return each one's report (the JSON it prints), in order. Each must exit 0 with nothing on
    stderr (no "database is locked", no unreadable entry, no retried request). Any still running is killed."""
    children = [
        subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for command in commands
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n", child.communicate()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = []
        for child in children:
            out, err = child.communicate(timeout=timeout)
            assert child.returncode == 0 and err == "", err
            reports.append(json.loads(out))
        return reports
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()


def run_python(
    code: str,
    *args: str,
    flags: Sequence[str] = (),
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python [flags] -c code args...`` in a new process importing this tree's package (its own interpreter
    state: nothing imported yet, warnings and exit handlers as a user's script has them); ``env`` is added.

    The output is decoded as written, carriage returns kept (a progress bar redraws its line after each).
    """
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, *flags, "-c", code, *args]
    done = subprocess.run(command, cwd=cwd, env=environ, capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(
        command, done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")
    )


def screen(stderr: str) -> list[str]:
    """What a terminal shows of ``stderr``, line by line: a progress bar redraws its line in place after each
    carriage return (padding with spaces), so a line shows its last drawing; one a bar erased shows blank."""
    lines = stderr.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the cursor on a new line after the last one
    return [next((part for part in reversed(line.split("\r")) if part), "").strip() for line in lines]
