"""The fw-rollouts command as a process: ``python -m fw_rollouts``, stdin, exit statuses, tracebacks, the key,
the simulator in the foreground, and how fast ``--help`` answers.

Each test starts fresh interpreters (``tests/test_cli.py`` has the in-process tests of every subcommand).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import fw_rollouts
from fw_rollouts.cli import main
from fw_rollouts.testing import FireworksSimulator

SRC = Path(fw_rollouts.__file__).resolve().parents[1]
SECRET = "fw-SECRET-0123456789abcdef"


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def child_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of the commands run as processes: this tree's sources first on the path, no FIREWORKS_*
    variables, and bytecode kept (outside the tree) as an installed package has it, so that each process does
    not compile every module again."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FIREWORKS_")}
    environ.pop("PYTHONDONTWRITEBYTECODE", None)
    environ["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.mktemp("pycache"))
    environ["PYTHONPATH"] = os.pathsep.join([str(SRC), environ.get("PYTHONPATH", "")])
    return environ


def _run(args: list[str], *, environ: dict[str, str], sim: FireworksSimulator | None, cwd: Path, stdin: str = "",
         extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``python -m fw_rollouts ARGS`` in a fresh process."""
    environ = dict(environ)
    if sim is not None:
        environ.update(FIREWORKS_BASE_URL=sim.base_url, FIREWORKS_API_KEY=sim.api_key)
    environ.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "fw_rollouts", *args], input=stdin, capture_output=True,
                          text=True, cwd=cwd, env=environ, timeout=120)  # fmt: skip


def test_stdin_python_m_and_progress_on_stderr(sim: FireworksSimulator, tmp_path: Path,
                                               child_env: dict[str, str]) -> None:  # fmt: skip
    done = _run(["generate", "-m", "qwen-15b", "--file", "-", "--max-tokens", "4"], environ=child_env, sim=sim,
                cwd=tmp_path,
                stdin="What is 2+2?\nName a prime.\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = _lines(done.stdout)  # stdout holds the JSON Lines only
    assert [line["prompt"] for line in lines] == ["What is 2+2?", "Name a prime."]
    assert "2/2" in done.stderr  # the bar
    assert "2 samples of 2 prompts -> stdout (0 from the cache, 2 requests sent)" in done.stderr


def test_debug_shows_the_traceback_but_never_the_key(sim: FireworksSimulator, tmp_path: Path,
                                                     child_env: dict[str, str]) -> None:  # fmt: skip
    done = _run(["generate", "-m", "qwen-15b", "hi", "--api-key", SECRET, "--no-cache", "-q", "--debug"],
                environ=child_env, sim=sim, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "AuthenticationError" in done.stderr  # the cause's traceback too
    assert done.stderr.splitlines()[-1].startswith("fw-rollouts: error: HTTP 401")
    assert SECRET not in done.stdout + done.stderr


def test_serve_fake_serves_until_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, child_env: dict[str, str],
                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "fw_rollouts", "serve-fake", "--port", "0", "--api-key", "k-123",
                             "--latency", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env)  # fmt: skip
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        match = re.search(r"listening on (\S+) \(api key: k-123\)", banner)
        assert match, banner
        monkeypatch.chdir(tmp_path)
        code = main(["generate", "-m", "qwen-15b", "hi", "--base-url", match.group(1), "--api-key", "k-123",
                     "--max-tokens", "4", "-q"])  # fmt: skip
        assert code == 0
        assert _lines(capsys.readouterr().out)[0]["usage"]["completion_tokens"] == 4
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0


# -- help time -------------------------------------------------------------------------------------------------------

_HELP_PROBE = """
import sys, time, types
start = time.perf_counter()
if sys.argv[1] == "stub":  # the package's __init__ left out: what the command itself costs
    package = types.ModuleType("fw_rollouts")
    package.__path__ = [sys.argv[2]]
    sys.modules["fw_rollouts"] = package
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()) as out:
    from fw_rollouts.cli import main
    for command in ([], ["generate"], ["score"], ["cache", "stats"], ["demo"]):
        try:
            main([*command, "--help"])
        except SystemExit:
            pass
heavy = sorted(m for m in ("openai", "aiohttp", "httpx2", "tqdm", "jinja2", "diskcache", "orjson", "numpy",
                           "fw_rollouts._client", "fw_rollouts.testing") if m in sys.modules)
print(time.perf_counter() - start, ",".join(heavy), len(out.getvalue()))
"""


def _help_probe(mode: str, environ: dict[str, str]) -> tuple[float, list[str]]:
    """Seconds to import the command and print five --help pages in a fresh process (bytecode already written),
    and the heavy modules that were imported meanwhile."""
    for attempt in range(2):  # the first run writes the bytecode an installed package has
        done = subprocess.run([sys.executable, "-c", _HELP_PROBE, mode, str(SRC / "fw_rollouts")],
                              capture_output=True, text=True, env=environ, timeout=60, check=True)  # fmt: skip
        seconds, heavy, size = done.stdout.split(" ")
        assert int(size) > 1000
        if "openai" in heavy and attempt == 0:  # slow for a reason a second run cannot change
            break
    return float(seconds), [m for m in heavy.split(",") if m]


def test_the_commands_help_imports_nothing_heavy(child_env: dict[str, str]) -> None:
    seconds, heavy = _help_probe("stub", child_env)
    assert heavy == []  # no HTTP client, no simulator, no cache library: argparse and the option table
    assert seconds < 1.0  # 0.05-0.1 s here; generous for a loaded machine


def test_fw_rollouts_help_answers_in_well_under_a_second(child_env: dict[str, str]) -> None:
    # The whole command as installed, the package's __init__ included. While `import fw_rollouts` itself imports
    # the HTTP client (the first-hour frictions fix makes it lazy), --help cannot be fast: say so, with the figure.
    seconds, heavy = _help_probe("package", child_env)
    if "openai" in heavy:
        pytest.xfail(f"`import fw_rollouts` imports the HTTP client ({', '.join(heavy)}): {seconds:.2f} s for --help")
    assert not {"aiohttp", "httpx2", "fw_rollouts._client", "fw_rollouts.testing"} & set(heavy), heavy
    assert seconds < 1.0  # the issue asks for 0.3 s; generous for a loaded machine
