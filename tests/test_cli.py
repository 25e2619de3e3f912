"""The fw-rollouts command: the README's demo and the sample subcommand, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fw_rollouts.cli import main
from fw_rollouts.testing import FireworksSimulator


def test_demo_runs_offline_and_prints_samples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--latency", "0", "-n", "3", "--max-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert out.count("── seed ") == 3
    assert "reasoning:" in out and "top alternatives" in out and "log P(prompt)" in out
    assert "re-run: 3 of 3 samples came from the cache, 3 requests in all" in out


def test_sample_prints_json_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with FireworksSimulator() as sim:
        monkeypatch.setenv("FIREWORKS_API_KEY", sim.api_key)
        code = main(["sample", "What is 2+2?", "--model", "qwen-15b", "-n", "2", "--base-url", sim.base_url,
                     "--max-tokens", "8"])  # fmt: skip
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["seed"] for line in lines] == [0, 1]
    assert all(line["logprobs"]["tokens"] for line in lines)
    assert sim.api_key not in json.dumps(lines)


def test_sample_reports_errors_without_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIREWORKS_API_KEY", raising=False)
    assert main(["sample", "hi", "--model", "qwen-15b", "--no-cache"]) == 1
    assert "FIREWORKS_API_KEY" in capsys.readouterr().err
