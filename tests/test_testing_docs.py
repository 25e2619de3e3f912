"""docs/testing.md's pytest example runs as written: saved to a file of its own and run with ``python -m pytest``
in a directory of its own, as a user would, it passes (it needs the async plugin the page names)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from _helpers import REPO_ROOT
from test_docs_pages import blocks


def test_the_pytest_example_passes_as_written(tmp_path: Path) -> None:
    example = next(code for code in blocks("testing.md", section="In your own tests") if "def test_" in code)
    (tmp_path / "test_with_fireworks.py").write_text(example, encoding="utf-8")
    env = dict(os.environ)
    # The user's run, not this suite's: this tree's package first, nothing inherited from the outer pytest.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), env.get("PYTHONPATH")]))
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_CURRENT_TEST", "FIREWORKS_API_KEY", "FIREWORKS_BASE_URL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout and "warning" not in done.stdout.lower(), done.stdout[-3000:]
