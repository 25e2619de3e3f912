"""The example notebooks run top to bottom in a real Jupyter kernel (nbclient), as a user would run them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="the dev extra installs nbformat, nbclient and ipykernel")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SRC = Path(__file__).resolve().parent.parent / "src"


def _run(name: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    # The kernel is a new process (jupyter_client starts the "python3" kernel with this interpreter): it must
    # import this tree's package, whichever copy is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell and its traceback, if any cell fails
    return notebook


def _outputs(notebook: Any) -> list[dict[str, Any]]:
    return [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def test_thought_anchors_notebook_runs_and_plots_importance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = _run("thought_anchors.ipynb", tmp_path, monkeypatch)
    outputs = _outputs(notebook)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    data = [o.get("data", {}) for o in outputs]
    # The step table renders as HTML, the frame as a table, the importance as a picture.
    assert any("text/html" in d and "<table" in d["text/html"] for d in data)
    assert any("image/png" in d for d in data), "the importance plot did not render"
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "re-run: 0 requests" in text
    assert "counterfactual:" in text
