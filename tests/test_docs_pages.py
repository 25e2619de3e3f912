"""The examples of the site's guide pages run as written and print what the pages say they print.

Each block runs in this process as a script would (``__name__ == "__main__"``, the current directory a fresh one,
so the default ``.fw_rollouts`` cache starts empty). A block written for Fireworks itself runs against the
simulated server through the environment variables a user would set (``FIREWORKS_BASE_URL``,
``FIREWORKS_API_KEY``), so it runs unchanged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from _helpers import REPO_ROOT
from fw_rollouts.testing import FireworksSimulator

DOCS = REPO_ROOT / "docs"
SRC = REPO_ROOT / "src"


def blocks(page: str, language: str = "python", *, section: str | None = None) -> list[str]:
    """The fenced blocks of ``language`` in ``docs/<page>`` (``""``: bare fences), in order; with ``section``, only
    those under the ``## section`` heading."""
    text = (DOCS / page).read_text(encoding="utf-8")
    if section is not None:
        start = text.index(f"\n## {section}\n")
        end = text.find("\n## ", start + 1)
        text = text[start : end if end != -1 else len(text)]
    found = [body for kind, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M) if kind == language]
    assert found, f"docs/{page} has no ```{language} block" + (f" under '## {section}'" if section else "")
    return found


def run(page: str, code: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``code`` from ``docs/<page>`` as a script; what it printed."""
    capsys.readouterr()
    exec(compile(code, f"docs/{page}", "exec"), {"__name__": "__main__"})
    return capsys.readouterr().out


@pytest.fixture(autouse=True)
def _fresh_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FIREWORKS_BASE_URL", raising=False)
    monkeypatch.delenv("FIREWORKS_API_KEY", raising=False)


@pytest.fixture
def fireworks_env(sim: FireworksSimulator, monkeypatch: pytest.MonkeyPatch) -> FireworksSimulator:
    """The environment of a Fireworks user, with the simulated server behind it."""
    monkeypatch.setenv("FIREWORKS_BASE_URL", sim.base_url)
    monkeypatch.setenv("FIREWORKS_API_KEY", sim.api_key)
    return sim


def test_the_home_page_example_runs(fireworks_env: FireworksSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    printed = run("index.md", blocks("index.md")[0], capsys)
    assert len(printed.splitlines()) == 5 and fireworks_env.status_counts[200] == 5


def test_the_quickstart_runs_offline_against_fireworks_and_async(
    fireworks_env: FireworksSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    offline, against_fireworks, from_async = blocks("quickstart.md")
    printed = run("quickstart.md", offline, capsys)
    assert "requests sent: 5 | cached the second time: True" in printed
    assert "prompt sent: '<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\\n'" in printed
    assert len(re.findall(r"^\d (stop|length) ", printed, re.M)) == 5
    assert (Path.cwd() / ".fw_rollouts").is_dir()  # where the page says the cache is
    printed = run("quickstart.md", against_fireworks, capsys)
    assert len(printed.splitlines()) == 5 and fireworks_env.status_counts[200] == 5
    assert run("quickstart.md", from_async, capsys) == "['length', 'stop', 'stop']\n"


def test_the_sync_and_async_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    script = blocks("sync-async.md", section="In a script")[0]
    printed = run("sync-async.md", script, capsys).splitlines()
    assert printed[-1] == "4 [2, 2]" and len(printed) == 4
    printed = run("sync-async.md", blocks("sync-async.md", section="In async code")[0], capsys).splitlines()
    assert printed[-1] == "4" and sorted(line.split()[0] for line in printed[:-1]) == ["0", "0", "1", "1"]


def test_the_notebook_cells_run_in_a_jupyter_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat", reason="the dev extra installs nbformat, nbclient and ipykernel")
    nbclient = pytest.importorskip("nbclient")
    cells = blocks("sync-async.md", section="In Jupyter")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells])
    # The kernel is a new process: it must import this tree's package, whichever copy is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()  # raises CellExecutionError, naming the cell and its traceback, if any cell fails
    first, second = (cell.outputs for cell in notebook.cells[:2])
    assert any("<table" in out.get("data", {}).get("text/html", "") for out in first), first
    assert any(out.get("data", {}).get("text/plain") == "[True, True, True, True]" for out in second), second


def test_the_logprobs_examples_print_what_the_page_shows(capsys: pytest.CaptureFixture[str]) -> None:
    formats, bos = blocks("logprobs.md")
    printed = run("logprobs.md", formats, capsys).splitlines()
    assert printed[0] == "None None"
    model, sampling = (eval(line) for line in printed[1:3])  # lists of floats, as printed
    assert len(model) == len(sampling) == 3 and model != sampling
    assert isinstance(eval(printed[3]), dict) and len(eval(printed[3])) == 5
    assert run("logprobs.md", bos, capsys) == blocks("logprobs.md", "")[0]


def test_the_caching_example_prints_what_the_page_says(capsys: pytest.CaptureFixture[str]) -> None:
    printed = run("caching.md", blocks("caching.md")[0], capsys).splitlines()
    assert printed == ["18 [True, True, True, True, True, False, False, False]", "18 5"]
    page = (DOCS / "caching.md").read_text(encoding="utf-8")
    said = "It prints `18` (5 + 3 + 5 + 5 requests), then eight flags of which the first five are True, then `18 5`."
    assert said in page
    assert (Path.cwd() / "my-cache").is_dir()


def test_the_prompt_renderings_are_exactly_the_pages(capsys: pytest.CaptureFixture[str]) -> None:
    for code, shown in zip(blocks("prompts.md"), blocks("prompts.md", ""), strict=True):
        assert run("prompts.md", code, capsys) == shown


def test_the_migration_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    printed = run("migrating.md", blocks("migrating.md")[0], capsys).splitlines()
    assert printed[0].startswith("5 {") and printed[1] == "[100, 101] fireworks"
