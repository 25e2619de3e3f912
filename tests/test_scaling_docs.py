"""docs/scaling.md's examples run as written: four processes sharing a Redis cache and budget, and the shards of a
study run by a process pool, merged, and read back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from _helpers import REPO_ROOT, docs_block
from _redis import require_redis
from fw_rollouts.testing import FireworksSimulator


def _blocks(language: str) -> list[str]:
    text = (REPO_ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    return [body for kind, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S) if kind == language]


def _run(script: Path, env: dict[str, str] | None = None) -> str:
    paths = [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_worked_example_prints_what_the_page_says(tmp_path: Path) -> None:
    """Every prompt asked for twice by four processes: half the samples come from the shared cache, and the
    simulator counts one request per sample paid for."""
    require_redis()
    script = tmp_path / "example.py"
    script.write_text(docs_block("scaling.md"), encoding="utf-8")
    assert _run(script) == docs_block("scaling.md", "")


def test_the_multiprocessing_shards_example_runs_and_its_merged_cache_serves_the_study(tmp_path: Path) -> None:
    """The shards example, pointed at the simulator by the environment, as a user would point it at a server."""
    example = next(b for b in _blocks("python") if "merge_studies" in b)
    script = tmp_path / "shards.py"
    script.write_text(example, encoding="utf-8")
    with FireworksSimulator() as sim:
        env = {"FIREWORKS_BASE_URL": sim.base_url, "FIREWORKS_API_KEY": sim.api_key}
        assert _run(script, env) == "160 samples; 40 of 40 items complete\n"
        sent = len([r for r in sim.requests if r.path.endswith("/completions")])
        assert sent == 160
        # The merged cache serves the whole study at the same server: nothing more is sent.
        again = tmp_path / "again.py"
        again.write_text(
            "from fw_rollouts import Fireworks\n"
            "ITEMS = [f'What is {i} + {i}?' for i in range(40)]\n"
            "with Fireworks(model='qwen-15b', max_tokens=64, progress_bar=False) as client:\n"
            "    print(sum(r.cached for rs in client.generate_many(ITEMS, n_samples=4) for r in rs))\n",
            encoding="utf-8",
        )
        assert _run(again, env) == "160\n"
        assert len([r for r in sim.requests if r.path.endswith("/completions")]) == sent
