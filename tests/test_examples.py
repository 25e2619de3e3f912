"""Every example runs as a user would run it: each script as its own process, offline, and each notebook top to
bottom in a real Jupyter kernel (nbclient); what they print is checked.

A script or notebook listed below with its checks must exist; one found in examples/ and not listed still has to
run without an error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fw_rollouts import load_study
from fw_rollouts.testing import FireworksSimulator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SRC = Path(__file__).resolve().parent.parent / "src"
OFFLINE_BANNER = "FIREWORKS_API_KEY is not set"

Run = Callable[[], str]
"""Runs the script again in the same directory; returns its standard output (None: a check that would run it again
leaves that part out)."""


def _run_script(name: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``examples/<name>`` in ``cwd`` with this tree's package, no Fireworks variables but ``env``'s."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("FIREWORKS_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    environ.update(env or {})
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], cwd=cwd, env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stderr}"
    # Nothing but the progress bar goes to stderr: no traceback, no warning, no aiohttp "Unclosed ...".
    for sign in ("Traceback", "Warning", "Unclosed"):
        assert sign not in done.stderr, done.stderr
    return done.stdout


def _check_quickstart(out: str, cwd: Path, again: Run | None) -> None:
    samples = re.findall(r"^seed (\d+): (stop|length), answer ", out, re.MULTILINE)
    assert [int(seed) for seed, _ in samples] == [0, 1, 2, 3, 4], out
    # Echo: the prompt's logprobs (the first has none), then the generated ones, then the alternatives.
    assert len(re.findall(r"^  prompt: +\d+ tokens, log P = -\d+\.\d\d \(its first", out, re.MULTILINE)) == 5, out
    assert len(re.findall(r"^  generated: +\d+ tokens, log P = -?\d+\.\d\d$", out, re.MULTILINE)) == 5, out
    alternatives = re.findall(r"^  first generated token .*; alternatives: (.*)$", out, re.MULTILINE)
    assert len(alternatives) == 5 and all(line.count(", ") == 4 for line in alternatives), out  # logprobs=5
    assert out.rstrip().endswith("again: 5 of 5 samples from the cache"), out


def _check_study(out: str, cwd: Path, again: Run | None) -> None:
    assert re.search(r"^estimate: 48 requests, at most [\d,]+ tokens, at most \$\d+\.\d{4}, at least", out, re.M), out
    assert len(re.findall(r"^What is .*\?\s+correct +(\d+%|-)   answers: ", out, re.MULTILINE)) == 6, out
    assert "\nusage: 48 requests, 48 samples fetched, 0 read back" in out, out
    study = load_study(cwd / "study.jsonl")
    assert [len(rollouts) for rollouts in study] == [8] * 6
    if again is None:
        return
    # The second run reads every sample back from the study file: nothing is sent, and no estimate is shown.
    second = again()
    assert "estimate:" not in second
    assert "\nusage: 0 requests, 0 samples fetched, 48 read back, 0 prompt and 0 generated tokens" in second, second
    # The answers are the ones the file holds.
    assert [line for line in out.splitlines() if "correct" in line] == [
        line for line in second.splitlines() if "correct" in line
    ]


def _check_scoring(out: str, cwd: Path, again: Run | None) -> None:
    for question in ("the capital of France", "2 + 2", "the chemical symbol for gold"):
        assert re.search(rf"^Q: What is {re.escape(question)}\? A:$", out, re.MULTILINE), out
    row = r"^  '[^']+' +\d token\(s\)  sum +-\d+\.\d\d  mean +-\d+\.\d\d  greedy (True|False)  share +(\d+)%"
    rows = re.findall(row, out, re.MULTILINE)
    assert len(rows) == 9, out
    assert out.count("<- the pick") == 3, out
    assert re.search(r"^' That is 340 plus 51\.' inside the trace: \d+ tokens, sum -\d+\.\d\d$", out, re.MULTILINE), out
    assert out.rstrip().endswith("scored again: 0 requests (every score came from the cache)"), out


def _runs(out: str, cwd: Path, again: Run | None) -> None:
    """The check of a script with none of its own: that it ran (``_run_script`` checked the exit and stderr)."""


SCRIPT_CHECKS: dict[str, Callable[[str, Path, Run | None], None]] = {
    "quickstart.py": _check_quickstart,  # the original design note's usage example
    "study.py": _check_study,
    "scoring.py": _check_scoring,
}
SCRIPTS = sorted({path.name for path in EXAMPLES.glob("*.py")} | set(SCRIPT_CHECKS))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_runs_offline_against_the_simulator(name: str, tmp_path: Path) -> None:
    assert (EXAMPLES / name).is_file(), f"examples/{name} is missing"
    out = _run_script(name, tmp_path)
    assert out.startswith(OFFLINE_BANNER), out
    SCRIPT_CHECKS.get(name, _runs)(out, tmp_path, lambda: _run_script(name, tmp_path))


@pytest.mark.parametrize("name", SCRIPTS)
def test_with_a_key_set_every_script_uses_the_service_the_environment_names(name: str, tmp_path: Path) -> None:
    """FIREWORKS_API_KEY set: no simulator of its own; FIREWORKS_BASE_URL (here our simulator) is where it goes."""
    with FireworksSimulator(answers="boxed", api_key="key-from-the-environment") as service:
        env = {"FIREWORKS_API_KEY": "key-from-the-environment", "FIREWORKS_BASE_URL": service.base_url}
        out = _run_script(name, tmp_path, env)
        assert OFFLINE_BANNER not in out and "simulated server" not in out
        assert service.requests, f"{name} sent nothing to FIREWORKS_BASE_URL"
        SCRIPT_CHECKS.get(name, _runs)(out, tmp_path, None)  # the offline test covers a second run
    assert "key-from-the-environment" not in out


def _check_thought_anchors(outputs: list[dict[str, Any]]) -> None:
    data = [o.get("data", {}) for o in outputs]
    # The step table renders as HTML, the frame as a table, the importance as a picture.
    assert any("text/html" in d and "<table" in d["text/html"] for d in data)
    assert any("image/png" in d for d in data), "the importance plot did not render"
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "re-run: 0 requests" in text
    assert "counterfactual:" in text


def _ran(outputs: list[dict[str, Any]]) -> None:
    """The check of a notebook with none of its own: that no cell failed (checked by the test)."""


NOTEBOOK_CHECKS: dict[str, Callable[[list[dict[str, Any]]], None]] = {
    "thought_anchors.ipynb": _check_thought_anchors,
}
NOTEBOOKS = sorted({path.name for path in EXAMPLES.glob("*.ipynb")} | set(NOTEBOOK_CHECKS))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_runs_top_to_bottom(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat", reason="the dev extra installs nbformat, nbclient and ipykernel")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    # The kernel is a new process (jupyter_client starts the "python3" kernel with this interpreter): it must
    # import this tree's package, whichever copy is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    for key in [key for key in os.environ if key.startswith("FIREWORKS_")]:
        monkeypatch.delenv(key)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell and its traceback, if any cell fails
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    NOTEBOOK_CHECKS.get(name, _ran)(outputs)


def test_the_examples_readme_lists_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"\]\(([^)#]+)\)", readme))
    examples = {path.name for path in EXAMPLES.iterdir() if path.suffix in (".py", ".ipynb")}
    assert examples <= listed, f"examples/README.md does not list {sorted(examples - listed)}"
