"""docs/cli.md runs as written: its shell examples against a simulator, its output and error lines as printed.

The examples run in this process (a small runner for the shell constructs the page uses), so the page's dozen
commands take a second, not a dozen interpreter starts."""

from __future__ import annotations

import io
import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from fw_rollouts.cli import main
from fw_rollouts.testing import FireworksSimulator

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _blocks(language: str) -> list[str]:
    return [body for kind, body in re.findall(r"```(\w*)\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
            if kind == language]  # fmt: skip


def _sh(script: str, cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """Run ``script`` as bash would, for the constructs the page uses (``cat > f <<'EOF'``, ``printf``, ``cat f |``,
    ``| head -n N``, ``> f``), with ``fw-rollouts`` called in this process: its stdout and stderr. Anything else
    fails the test, so an example written otherwise is noticed and this runner taught it."""
    out: list[str] = []
    err: list[str] = []
    lines = iter(script.splitlines())
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        heredoc = re.fullmatch(r"cat > (\S+) <<'EOF'", line)
        if heredoc:
            body = []
            for text in lines:
                if text == "EOF":
                    break
                body.append(text + "\n")
            (cwd / heredoc.group(1)).write_text("".join(body), encoding="utf-8")
            continue
        stages = [shlex.split(stage) for stage in line.split(" | ")]
        target = None
        if len(stages[-1]) > 2 and stages[-1][-2] == ">":
            target, stages[-1] = stages[-1][-1], stages[-1][:-2]
        data = ""
        for words in stages:
            if words[0] == "cat" and len(words) == 2:
                data = (cwd / words[1]).read_text(encoding="utf-8")
            elif words[0] == "printf" and len(words) == 2:
                data = words[1].replace("\\n", "\n").replace("\\t", "\t")
            elif words[:2] == ["head", "-n"]:
                data = "".join(data.splitlines(keepends=True)[: int(words[2])])
            elif words[0] == "fw-rollouts":
                monkeypatch.setattr(sys, "stdin", io.StringIO(data))
                assert main(words[1:]) == 0, (line, capsys.readouterr().err)
                captured = capsys.readouterr()
                data = captured.out
                err.append(captured.err)
            else:
                raise AssertionError(f"the docs runner does not know {words[0]!r}: {line}")
        if target is None:
            out.append(data)
        else:
            (cwd / target).write_text(data, encoding="utf-8")
    return "".join(out), "".join(err)


def test_the_shell_examples_run_as_written(sim: FireworksSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    blocks = [b for b in _blocks("bash") if not b.startswith("fw-rollouts demo")]  # the demo: see test_cli.py
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FIREWORKS_BASE_URL", sim.base_url)
    monkeypatch.setenv("FIREWORKS_API_KEY", sim.api_key)
    out, err = _sh("\n".join(blocks), tmp_path, monkeypatch, capsys)
    counts = {name: len((tmp_path / name).read_text().splitlines()) for name in
              ("one.jsonl", "samples.jsonl", "items-out.jsonl", "scores.jsonl", "cached.jsonl")}  # fmt: skip
    # 10 distinct samples of prompts.txt (one.jsonl's 3 among them) and items.jsonl's 2 at temperature 1.0.
    assert counts == {"one.jsonl": 3, "samples.jsonl": 10, "items-out.jsonl": 3, "scores.jsonl": 2,
                      "cached.jsonl": 12}  # fmt: skip
    printed = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [p.get("id", p.get("continuation")) for p in printed] == ["sum", " Paris"]  # head -n 1 of stdin; the TSV
    assert "entries  " in out and "on disk" in out  # cache stats
    for said in re.findall(r"^# (fw-rollouts: .*)$", "\n".join(blocks), re.M):  # what the page says is printed
        assert said in err
    assert "1 score of 1 pair -> stdout (1 from the cache, 0 requests sent)" in err
    assert re.search(r"removed \d+ entries from ", err)


def test_the_output_line_shown_has_the_fields_of_a_line() -> None:
    (shown,) = _blocks("json")
    from test_cli import LINE_KEYS

    assert set(json.loads(shown)) == LINE_KEYS | {"id"}


def test_the_error_lines_shown_are_what_the_command_prints(
    sim: FireworksSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (shown,) = [b for b in _blocks("") if "error:" in b]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FIREWORKS_BASE_URL", sim.base_url)
    monkeypatch.delenv("FIREWORKS_API_KEY", raising=False)
    (tmp_path / "items.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b", "temperature": 5}\n', encoding="utf-8")
    printed = []
    for args in (["generate", "-m", "qwen-15b", "hi"], ["generate", "-m", "qwen-15b", "--file", "items.jsonl"],
                 ["generate", "-m", "mistral-7b", "hi"]):  # fmt: skip
        assert main(args) == 2
        printed.append(capsys.readouterr().err.strip())
        monkeypatch.setenv("FIREWORKS_API_KEY", sim.api_key)
    assert printed == shown.strip().splitlines()
