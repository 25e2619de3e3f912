"""The command's shards: ``generate --shard I/N`` (or ``slurm``), ``merge`` and ``cache merge``, against a simulator.

As in test_cli.py, ``main([...])`` runs in this process (real HTTP to the simulator, real files).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from fw_rollouts import Fireworks, load_study
from fw_rollouts.cli import main
from fw_rollouts.cli.generate import parse_shard
from fw_rollouts.testing import FireworksSimulator

PROMPTS = [f"Question number {i}?" for i in range(8)]


@pytest.fixture
def env(sim: FireworksSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FireworksSimulator:
    """The command pointed at ``sim`` through the environment, run in ``tmp_path`` with ``prompts.txt`` there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FIREWORKS_BASE_URL", sim.base_url)
    monkeypatch.setenv("FIREWORKS_API_KEY", sim.api_key)
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_COUNT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "prompts.txt").write_text("".join(p + "\n" for p in PROMPTS), encoding="utf-8")
    return sim


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _completions(sim: FireworksSimulator) -> int:
    return sum(1 for r in sim.requests if r.path.endswith("/completions"))


GENERATE = ["generate", "-m", "qwen-15b", "--file", "prompts.txt", "-n", "2", "--max-tokens", "4"]


def test_shards_merged_are_the_whole_study_and_their_merged_cache_sends_nothing(
    env: FireworksSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(2):
        assert main([*GENERATE, "--shard", f"{i}/2", "--cache-dir", f"cache-{i}", "--study-file", f"shard-{i}.jsonl",
                     "-o", f"out-{i}.jsonl"]) == 0  # fmt: skip
        assert f"(shard {i} of 2, of 8 prompts)" in capsys.readouterr().err
    assert _completions(env) == 16
    with Fireworks(model="qwen-15b", max_tokens=4, cache_dir=str(tmp_path / "c")) as client:
        split = [client.shard_indices(PROMPTS, 2, shard=(i, 2)) for i in range(2)]
    for i in range(2):  # each output line names its prompt by its index in the input
        lines = _lines(tmp_path / f"out-{i}.jsonl")
        assert sorted({line["item"] for line in lines}) == split[i]
        assert all(line["prompt"] == PROMPTS[line["item"]] for line in lines)

    assert main(["merge", "-o", "study.jsonl", "shard-0.jsonl", "shard-1.jsonl"]) == 0
    assert "merged 2 of 2 shards: 16 samples -> study.jsonl" in capsys.readouterr().err
    merged = load_study(tmp_path / "study.jsonl")
    assert [r.prompt for r in merged] == PROMPTS and all(r.complete for r in merged)

    assert main(["cache", "merge", "--into", "merged", "cache-0", "cache-1"]) == 0
    assert re.search(r"copied \d+ records from 2 caches into .*merged \(0 already there\)", capsys.readouterr().err)
    # The whole study against the merged cache: nothing sent, and its study file is the merged one.
    assert main([*GENERATE, "--cache-dir", "merged", "--study-file", "whole.jsonl", "-o", "whole-out.jsonl"]) == 0
    assert "(16 from the cache, 0 requests sent)" in capsys.readouterr().err
    assert _completions(env) == 16
    header = (tmp_path / "whole.jsonl").read_text().splitlines()[0]
    assert header == (tmp_path / "study.jsonl").read_text().splitlines()[0]
    cached = [dataclasses.replace(r, responses=[dataclasses.replace(s, cached=True) for s in r]) for r in merged]
    assert load_study(tmp_path / "whole.jsonl") == cached  # the shards' samples, from the merged cache


def test_a_missing_shard_is_refused_and_partial_merges_the_rest(
    env: FireworksSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in (0, 2):
        assert main([*GENERATE, "--shard", f"{i}/3", "--study-file", f"shard-{i}.jsonl", "-q", "-o", "o.jsonl"]) == 0
    capsys.readouterr()
    assert main(["merge", "-o", "study.jsonl", "shard-0.jsonl", "shard-2.jsonl"]) == 2
    err = capsys.readouterr().err
    line = err.strip()
    assert "\n" not in line and "1 of 3 missing (shard 1)" in line and "--partial" in line, err
    assert not re.search(r"[a-z_]=", line), line
    assert not (tmp_path / "study.jsonl").exists()
    assert main(["merge", "--partial", "-o", "study.jsonl", "shard-0.jsonl", "shard-2.jsonl"]) == 0
    assert "merged 2 of 3 shards" in capsys.readouterr().err and "shards 1 missing" not in err


def test_shard_slurm_reads_the_job_array(env: FireworksSimulator, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    array = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "2", "SLURM_ARRAY_TASK_MAX": "4",
             "SLURM_ARRAY_TASK_COUNT": "3"}  # fmt: skip
    assert parse_shard("slurm", array) == (1, 3)  # --array=2-4: the second task
    assert parse_shard(" 2 / 5 ", {}) == (2, 5)
    for name, value in array.items():
        monkeypatch.setenv(name, value)
    assert main([*GENERATE, "--shard", "slurm", "-o", "o.jsonl"]) == 0
    assert "(shard 1 of 3, of 8 prompts)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("shard", "environ", "says"),
    [
        ("3/3", {}, "--shard 3/3: I must be in 0..N-1"),
        ("0/0", {}, "--shard 0/0: I must be in 0..N-1 and N at least 1"),
        ("one/two", {}, "--shard one/two: give I/N"),
        ("-1/2", {}, "--shard -1/2: give I/N"),
        ("slurm", {}, "--shard slurm: SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_MAX, "
                      "SLURM_ARRAY_TASK_COUNT not set"),
        ("slurm", {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "10",
                   "SLURM_ARRAY_TASK_COUNT": "6"}, "not one range of consecutive task ids (0..10 holds 6 tasks)"),
    ],
)  # fmt: skip
def test_bad_shard_flags_exit_2_with_one_line_before_any_request(
    shard: str, environ: dict[str, str], says: str, env: FireworksSimulator, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main([*GENERATE, f"--shard={shard}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and says in err, err
    assert env.requests == []


@pytest.mark.parametrize("command", [["merge"], ["cache", "merge"]], ids=" ".join)
def test_help_has_an_example(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: fw-rollouts {' '.join(command)}")
    assert "\nexamples:\n  fw-rollouts " in out and "`" not in out
