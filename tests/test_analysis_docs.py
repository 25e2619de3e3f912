"""docs/analysis.md's worked example runs as written and prints what the page says it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import docs_block

DOCS = Path(__file__).resolve().parent.parent / "docs" / "analysis.md"


def test_the_worked_example_runs_and_prints_what_the_page_shows(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    shown = docs_block("analysis.md", "")  # the "It prints" block after the example
    script = tmp_path / "example.py"
    script.write_text(docs_block("analysis.md"), encoding="utf-8")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout.splitlines()
    for line in shown.splitlines():
        if line and line != "...":
            assert line in printed, f"the page shows {line!r}, the example printed:\n{done.stdout}"
    assert (tmp_path / "logprobs.png").stat().st_size > 5_000 and (tmp_path / "study.jsonl").exists()
    assert "mean_topk_entropy" in done.stdout and re.search(r"^item\s*$", done.stdout, re.M)


def test_the_page_shows_its_images() -> None:
    for image in re.findall(r"\]\((images/[^)]+)\)", DOCS.read_text(encoding="utf-8")):
        path = DOCS.parent / image
        assert path.exists() and path.stat().st_size < 150_000, image
