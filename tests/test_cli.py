"""The fw-rollouts command, against a simulator started in the test: every subcommand, its files, errors and help.

Most tests call ``main([...])`` in this process (real HTTP to the simulator, real files); those about the
process itself (stdin, ``python -m fw_rollouts``, exit statuses, tracebacks, the key, help time) run it as a
subprocess.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import fw_rollouts
from fw_rollouts import load_study
from fw_rollouts._options import OPTIONS, by_name
from fw_rollouts.cli import build_parser, main
from fw_rollouts.testing import Fault, FireworksSimulator

SRC = Path(fw_rollouts.__file__).resolve().parents[1]

LINE_KEYS = {"item", "seed", "prompt", "text", "reasoning", "content", "finish_reason", "completed_reasoning",
             "usage", "model", "logprobs", "prompt_logprobs"}  # fmt: skip


@pytest.fixture
def env(sim: FireworksSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FireworksSimulator:
    """The command pointed at ``sim`` through the environment, run in ``tmp_path`` (its cache there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FIREWORKS_BASE_URL", sim.base_url)
    monkeypatch.setenv("FIREWORKS_API_KEY", sim.api_key)
    return sim


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("fw-rollouts"), err
    assert "Traceback" not in err
    return lines[0]


# -- help ----------------------------------------------------------------------------------------------------------

HELP_COMMANDS = [[], ["generate"], ["sample"], ["score"], ["cache"], ["cache", "stats"], ["cache", "clear"],
                 ["cache", "export"], ["demo"], ["serve-fake"], ["serve"]]  # fmt: skip


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_of_every_subcommand_has_an_example_and_no_markup(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    shown = {"serve": "serve-fake", "sample": "generate"}.get(" ".join(command), " ".join(command))
    assert out.startswith(f"usage: fw-rollouts {shown}".rstrip()), out[:200]
    assert "\nexamples:\n  fw-rollouts " in out
    # No reStructuredText or Markdown markup from docstrings and doc lines, no Python spellings of options.
    for markup in ("``", "`", ":class:", ":meth:", ":func:", ":data:", "api_key=", "max_tokens="):
        assert markup not in out, (markup, out)
    assert not re.search(r"(?m)^\s*\.\. \w", out)  # an RST directive


def test_every_client_option_is_a_flag_with_the_tables_default_and_doc_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["generate", "-m", "qwen-15b", "hi"])
    for option in OPTIONS:
        if option.name == "model":
            continue
        expected = None if option.name == "stop" else option.default  # --stop appends to nothing
        assert getattr(args, option.name) == expected, option.name
    assert args.max_tokens == by_name("max_tokens").default == 4096
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for option in OPTIONS:
        flag = "--cache" if option.name == "use_cache" else "--" + option.name.replace("_", "-")
        assert f" {flag} " in out or f" {flag}," in out, flag
    assert "Generation budget per sample. (default: 4096)" in out
    assert "--api-key KEY API key; default FIREWORKS_API_KEY. Never logged or cached." in out


def test_flags_parse_to_the_values_the_client_takes(tmp_path: Path) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages[0].content }}", encoding="utf-8")
    args = build_parser().parse_args([
        "generate", "-m", "qwen-15b", "hi", "--stop", "\n\n", "--stop", "END", "--no-echo", "--temperature", "none",
        "--logit-bias", '{"50256": -100}', "--chat-template", f"@{template}", "--no-cache", "--max-tokens", "64",
        "--raw", "--ignore-eos",
    ])  # fmt: skip
    assert args.stop == ["\n\n", "END"]
    assert args.echo is False and args.raw is True and args.use_cache is False and args.ignore_eos is True
    assert args.temperature is None and args.max_tokens == 64
    assert args.logit_bias == {"50256": -100}
    assert args.chat_template == "{{ messages[0].content }}"


# -- generate --------------------------------------------------------------------------------------------------------


def test_generate_one_prompt_prints_one_line_per_sample(env: FireworksSimulator,
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main(["generate", "-m", "qwen-15b", "What is 2+2?", "-n", "3", "--max-tokens", "8"]) == 0
    captured = capsys.readouterr()
    lines = _lines(captured.out)
    assert [line["seed"] for line in lines] == [0, 1, 2]
    for line in lines:
        assert set(line) == LINE_KEYS
        assert line["item"] == 0 and line["prompt"] == "What is 2+2?"
        assert "".join(line["logprobs"]["tokens"]) == line["text"]
        assert len(line["logprobs"]["token_logprobs"]) == line["usage"]["completion_tokens"] == 8
        assert len(line["logprobs"]["top_logprobs"][0]) == 5
        assert line["prompt_logprobs"]["tokens"]  # echo is on by default
    assert "Generating" in captured.err and "3/3" in captured.err  # the progress bar, on stderr
    assert "3 samples of 1 prompt -> stdout (0 from the cache, " in captured.err
    main(["generate", "-m", "qwen-15b", "What is 2+2?", "--no-echo", "--max-tokens", "8", "-q"])
    (line,) = _lines(capsys.readouterr().out)
    assert line["prompt_logprobs"] is None


def test_a_rerun_sends_nothing_and_rewrites_the_same_file(env: FireworksSimulator, tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text("What is 2+2?\n\nName a prime number.\n", encoding="utf-8")
    command = ["generate", "-m", "qwen-15b", "--file", "prompts.txt", "-n", "3", "--max-tokens", "8", "-o", "out.jsonl"]
    assert main(command) == 0
    sent = len(env.requests)
    first = (tmp_path / "out.jsonl").read_bytes()
    lines = _lines(first.decode())
    assert [(line["item"], line["seed"]) for line in lines] == [(i, s) for i in (0, 1) for s in (0, 1, 2)]
    assert [lines[0]["prompt"], lines[3]["prompt"]] == ["What is 2+2?", "Name a prime number."]
    assert main(command) == 0
    assert len(env.requests) == sent  # every sample from the cache
    assert (tmp_path / "out.jsonl").read_bytes() == first  # replaced whole: the same lines, none twice


def test_many_prompts_run_as_one_study_with_one_bar(env: FireworksSimulator, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    (tmp_path / "p.txt").write_text("a\nb\nc\n", encoding="utf-8")
    assert main(["generate", "-m", "qwen-15b", "--file", "p.txt", "-n", "2", "--max-tokens", "4"]) == 0
    err = capsys.readouterr().err
    totals = set(re.findall(r"\d+/(\d+) \[", err))
    assert totals == {"6"}, err  # one bar over all 6 samples, not one per prompt


def test_jsonl_file_with_messages_ids_and_per_line_options(env: FireworksSimulator, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    rows: list[dict[str, Any]] = [
        {"prompt": "What is 2+2?", "id": "q1"},
        {"messages": [{"role": "user", "content": "Name a prime."}], "n_samples": 2, "seed": 10,
         "temperature": 1.0, "max_tokens": 3, "id": 7},
    ]  # fmt: skip
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert main(["generate", "-m", "qwen-15b", "--file", "items.jsonl", "--max-tokens", "6", "-q"]) == 0
    lines = _lines(capsys.readouterr().out)
    assert [(line["item"], line["id"], line["seed"]) for line in lines] == [(0, "q1", 0), (1, 7, 10), (1, 7, 11)]
    assert lines[1]["prompt"] == rows[1]["messages"]
    assert [line["usage"]["completion_tokens"] for line in lines] == [6, 3, 3]
    temperatures = sorted(float((r.body or {})["temperature"]) for r in env.requests)
    assert temperatures == [0.7, 1.0, 1.0]


def test_failed_samples_exit_1_keep_the_rest_and_a_rerun_fetches_only_them(
    env: FireworksSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env.faults.push(Fault.status(400))  # the first request: a 400 is not retried
    command = ["generate", "-m", "qwen-15b", "hi", "-n", "4", "--max-tokens", "4", "--no-echo", "-o", "o.jsonl",
               "-q"]  # fmt: skip
    assert main(command) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "1 of 4 samples failed; the 3 that came back are in o.jsonl and the cache" in line
    assert len(_lines((tmp_path / "o.jsonl").read_text())) == 3
    before = len(env.requests)
    assert main(command) == 0
    assert len(env.requests) == before + 1
    assert [line["seed"] for line in _lines((tmp_path / "o.jsonl").read_text())] == [0, 1, 2, 3]


def test_study_file_resumes_without_the_cache(env: FireworksSimulator, tmp_path: Path) -> None:
    command = ["generate", "-m", "qwen-15b", "hi", "-n", "3", "--max-tokens", "4", "--no-cache", "--study-file",
               "study.jsonl", "-o", "out.jsonl", "-q"]  # fmt: skip
    assert main(command) == 0
    sent = len(env.requests)
    assert main(command) == 0
    assert len(env.requests) == sent
    (study,) = load_study(tmp_path / "study.jsonl")
    assert [r.full for r in study] == [line["text"] for line in _lines((tmp_path / "out.jsonl").read_text())]


# -- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["generate", "-m", "qwen-15b", "hi", "--temperature", "5"], "invalid --temperature 5.0: must be in [0.0, 2"),
        (["generate", "-m", "qwen-15b", "hi", "--temperature", "hot"], "argument --temperature: invalid float"),
        (["generate", "-m", "qwen-15b"], "give a prompt, or --file PATH"),
        (["generate", "-m", "qwen-15b", "hi", "--file", "p.txt"], "give a prompt or --file, not both"),
        (["generate", "-m", "qwen-15b", "--file", "missing.txt"], "--file missing.txt: no such file"),
        (["generate", "-m", "qwen-15b", "--file", "bad.jsonl"], "line 2 of bad.jsonl: unknown field 'temprature' "
                                                                "(did you mean 'temperature'?)"),
        (["generate", "-m", "qwen-15b", "--file", "client.jsonl"], "line 1 of client.jsonl: 'timeout' applies to "
                                                                   "the whole run, not to one prompt: pass --timeout"),
        (["generate", "-m", "qwen-15b", "--file", "range.jsonl"], "line 1 of range.jsonl: invalid --max-tokens -1"),
        (["generate", "-m", "mistral-7b", "hi"], "Pass --raw to send a string prompt verbatim, or --chat-template"),
        (["generate", "-m", "qwen-15b", "hi", "-n", "0"], "invalid --n-samples 0"),
        (["generate", "-m", "qwen-15b", "hi", "--base-url", "ftp://x"], "invalid --base-url 'ftp://x'"),
        (["generate", "-m", "qwen-15b", "hi", "--study-file", "s.txt"], "--study-file s.txt: must end in .jsonl"),
        (["score", "-m", "qwen-15b", "--file", "bad.tsv"], "line 1 of bad.tsv: 1 tab-separated fields"),
        (["generate", "-m", "qwen-15b", "hi", "-o", "no/such/dir/o.jsonl"], "/no/such/dir does not exist"),
        (["generate", "-m", "qwen-15b", "--file", "p.txt", "-o", "p.txt"], "--output p.txt is the input file"),
        (["cache", "stats", "--cache-dir", "p.txt"], "--cache-dir p.txt: is a file"),
        (["generate", "-m", "qwen-15b", "hi", "--temprature", "1"], "did you mean '--temperature'?"),
        (["cache", "stats", "--cache-dri", "x"], "did you mean '--cache-dir'?"),
    ],
)
def test_usage_errors_exit_2_with_one_line_in_cli_terms(
    args: list[str], says: str, env: FireworksSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.txt").write_text("hi\n", encoding="utf-8")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b", "temprature": 1}\n', encoding="utf-8")
    (tmp_path / "client.jsonl").write_text('{"prompt": "a", "timeout": 5}\n', encoding="utf-8")
    (tmp_path / "range.jsonl").write_text('{"prompt": "a", "max_tokens": -1}\n', encoding="utf-8")
    (tmp_path / "bad.tsv").write_text("no tab here\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:  # argparse's own errors exit from inside parse_args
        raise SystemExit(main(args))
    assert exit_.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert says in line
    assert not re.search(r"[a-z_]=", line), line  # no keyword=value spellings
    assert env.requests == []


def test_no_key_names_the_flag_and_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FIREWORKS_API_KEY", raising=False)
    assert main(["generate", "-m", "qwen-15b", "hi", "--no-cache"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == ("fw-rollouts: error: no API key: pass --api-key ... or set the FIREWORKS_API_KEY environment "
                    "variable")  # fmt: skip


SECRET = "fw-SECRET-0123456789abcdef"


def test_a_failed_run_exits_1_with_one_line_and_never_the_key(
    env: FireworksSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "-m", "qwen-15b", "hi", "--api-key", SECRET, "--no-cache", "-q"]) == 1
    captured = capsys.readouterr()
    assert "HTTP 401: The API key you provided is invalid." in _one_error_line(captured.err)
    assert captured.out == "" and SECRET not in captured.err


def test_demo_with_a_model_without_a_template_is_one_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--model", "mistral-7b", "--latency", "0"]) == 2
    err = capsys.readouterr().err
    line = _one_error_line(err.replace("simulated Fireworks server at", "").strip().split("\n", 1)[-1])
    assert "no chat template is known for model 'accounts/fireworks/models/mistral-7b'. Pass --raw" in line
    assert main(["demo", "--model", "mistral-7b", "--raw", "--latency", "0", "-n", "2", "--max-tokens", "4"]) == 0


def test_demo_runs_offline_and_prints_samples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--latency", "0", "-n", "3", "--max-tokens", "12"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("── seed ") == 3
    assert "reasoning:" in captured.out and "top alternatives" in captured.out and "log P(prompt)" in captured.out
    assert "re-run: 3 of 3 samples came from the cache, 3 requests in all" in captured.out
    assert "3/3" in captured.err  # the progress bar


# -- score -----------------------------------------------------------------------------------------------------------


def test_score_jsonl_and_tsv_give_the_same_scores_and_a_rerun_sends_nothing(
    env: FireworksSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = [{"prompt": "The capital of France is", "continuation": " Paris", "id": "fr"},
             {"prompt": "2 + 2 =", "continuation": " 4", "suffix": "."}]  # fmt: skip
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    (tmp_path / "pairs.tsv").write_text("prompt\tcontinuation\tsuffix\nThe capital of France is\t Paris\t\n"
                                        "2 + 2 =\t 4\t.\n", encoding="utf-8")  # fmt: skip
    base = ["score", "-m", "llama-v3p1-8b", "--raw", "-q"]
    assert main([*base, "--file", "pairs.jsonl", "-o", "s.jsonl"]) == 0
    sent = len(env.requests)
    assert sent == 2
    scores = _lines((tmp_path / "s.jsonl").read_text())
    assert [s["item"] for s in scores] == [0, 1] and scores[0]["id"] == "fr" and "id" not in scores[1]
    for s in scores:
        assert s["sum_logprob"] == pytest.approx(sum(s["token_logprobs"]))
        assert s["num_tokens"] == len(s["tokens"]) >= 1
    assert scores[1]["suffix"] == "."
    assert main([*base, "--file", "pairs.tsv"]) == 0
    from_tsv = _lines(capsys.readouterr().out)
    assert len(env.requests) == sent  # the same pairs: served from the cache
    drop = ("id",)
    assert [{k: v for k, v in s.items() if k not in drop} for s in scores] == from_tsv


# -- cache -----------------------------------------------------------------------------------------------------------


def test_cache_stats_export_and_clear(env: FireworksSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main(["generate", "-m", "qwen-15b", "hi", "-n", "3", "--max-tokens", "5", "-o", "g.jsonl", "-q"]) == 0
    assert main(["generate", "-m", "llama-v3p1-8b", "hi", "--max-tokens", "5", "--no-echo", "-q"]) == 0
    capsys.readouterr()
    assert main(["cache", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == 4 and stats["unreadable"] == 0 and stats["size_bytes"] > 0
    assert stats["entries"] == stats["samples"] + stats["prompt_parts"]
    assert {m: v["samples"] for m, v in stats["models"].items()} == {
        "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b": 3,
        "accounts/fireworks/models/llama-v3p1-8b-instruct": 1,
    }
    assert stats["models"]["accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b"]["generated_tokens"] == 15
    assert main(["cache", "stats"]) == 0
    out = capsys.readouterr().out
    assert "entries  " in out and "on disk" in out and "deepseek-r1-distill-qwen-1p5b" in out

    assert main(["cache", "export", "--model", "qwen-15b", "-o", "e.jsonl"]) == 0
    exported = _lines((tmp_path / "e.jsonl").read_text())
    generated = _lines((tmp_path / "g.jsonl").read_text())
    assert sorted((e["seed"], e["text"]) for e in exported) == [(g["seed"], g["text"]) for g in generated]
    assert all(e["logprobs"] == g["logprobs"] for e in exported for g in generated if e["seed"] == g["seed"])

    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    assert main(["cache", "clear"]) == 0
    assert "nothing removed" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["cache", "clear"]) == 2  # no one to ask
    assert "pass --yes" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert main(["cache", "clear"]) == 0
    assert main(["cache", "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["entries"] == 0
    sent = len(env.requests)
    assert main(["generate", "-m", "qwen-15b", "hi", "-n", "3", "--max-tokens", "5", "-q"]) == 0
    assert len(env.requests) > sent  # cleared: fetched again


def test_reading_a_cache_never_runs_what_it_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import diskcache

    marker = tmp_path / "ran"
    with diskcache.Cache(str(tmp_path / "cache")) as cache:  # diskcache's default Disk pickles values
        cache.set("evil", _Planted(str(marker)))
        cache.set("text", "not bytes")
        cache.set("junk", b"not a record")
    monkeypatch.chdir(tmp_path)
    assert main(["cache", "stats", "--json", "--cache-dir", "cache"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == 0 and stats["unreadable"] == 1  # the bytes; the pickle and the str are not read
    assert main(["cache", "export", "--cache-dir", "cache"]) == 0
    assert capsys.readouterr().out == ""
    assert not marker.exists()


class _Planted:
    """A value whose unpickling would create a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


# -- serve-fake ------------------------------------------------------------------------------------------------------


def test_serve_fake_errors_name_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve-fake", "--workers", "0"])
    assert exit_.value.code == 2
    assert "fw-rollouts serve-fake: error: --workers must be >= 1" in capsys.readouterr().err


