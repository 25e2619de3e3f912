"""The README's Python examples run as written against the simulated server, and what they show is clean: the
progress bar ends showing the final count, and nothing printed is a blank line.

Each example runs in a new interpreter, as a user pasting it into a file would, with ``FIREWORKS_BASE_URL`` and
``FIREWORKS_API_KEY`` pointing at a simulator (the examples name no server and no key).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers import REPO_ROOT, run_python, screen
from fw_rollouts.testing import FireworksSimulator

README = REPO_ROOT / "README.md"


def python_blocks() -> list[str]:
    """The README's ```python blocks, in order."""
    return [str(body) for body in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)]


@pytest.fixture(scope="module")
def sim() -> Iterator[FireworksSimulator]:
    with FireworksSimulator() as server:
        yield server


@pytest.fixture(scope="module")
def ran(sim: FireworksSimulator, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str, str]]:
    """(code, stdout, stderr) of each example, each run in a directory of its own (the cache goes there)."""
    blocks = python_blocks()
    assert len(blocks) >= 3, "the README's examples moved: update this test"
    env = {"FIREWORKS_BASE_URL": sim.base_url, "FIREWORKS_API_KEY": sim.api_key}
    runs = []
    for code in blocks:
        process = run_python(code, cwd=Path(tmp_path_factory.mktemp("example")), env=env, timeout=120)
        assert process.returncode == 0, f"{code}\n{process.stderr}"
        runs.append((code, process.stdout, process.stderr))
    return runs


def test_each_example_runs_and_its_bar_ends_at_the_final_count(ran: list[tuple[str, str, str]]) -> None:
    for code, _, stderr in ran:
        match = re.search(r"n_samples=(\d+)", code)
        assert match is not None
        n = int(match.group(1))
        shown = screen(stderr)
        assert shown, f"no progress bar shown for\n{code}"
        assert f"{n}/{n}" in shown[-1], shown  # the bar stays, showing the whole count
        assert all(line.startswith("Generating") for line in shown), stderr  # and nothing else: no warnings


def test_what_the_examples_print_has_no_blank_lines(ran: list[tuple[str, str, str]]) -> None:
    printed = [(code, stdout) for code, stdout, _ in ran if stdout]
    assert printed, "no example prints anything: the check below checks nothing"
    for code, stdout in printed:
        lines = stdout.rstrip("\n").split("\n")
        assert all(line.strip() for line in lines), f"{code}\nprinted:\n{stdout}"
