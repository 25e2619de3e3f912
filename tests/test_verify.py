"""verify_logprobs (issue 10, item 10): the probes over loopback HTTP against the honest simulator and against
each of its ``logprobs_fault`` s, and the checks themselves on hand-made logprobs."""

from __future__ import annotations

import asyncio
import json
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers import MakeClient, client_for, docs_block, post_completion
from _virtual_time import VirtualTime
from fw_rollouts import (
    AsyncFireworks,
    AuthenticationError,
    Fireworks,
    InvalidTypeError,
    Logprobs,
    LogprobsCheck,
    LogprobsReport,
    ValidationError,
)
from fw_rollouts._verify import (
    DEFAULT_VERIFY_PROMPT,
    check_consistency,
    check_determinism,
    check_echo,
    check_greedy,
    check_well_formed,
)
from fw_rollouts.testing import FireworksSimulator
from fw_rollouts.testing._cli import build_parser

NAMES = ["well_formed", "echo", "greedy", "consistency", "determinism"]


def _client(sim: FireworksSimulator, tmp_path: Path, **options: Any) -> AsyncFireworks:
    return client_for(sim, tmp_path, **{"max_retries": 0, **options})


def _verify(
    sim: FireworksSimulator, tmp_path: Path, *, client: dict[str, Any] | None = None, **kw: Any
) -> LogprobsReport:
    async def main() -> LogprobsReport:
        async with _client(sim, tmp_path, **(client or {})) as c:
            return await c.verify_logprobs(**kw)

    return asyncio.run(main())


@pytest.fixture
def make_sim() -> Iterator[Any]:
    """Simulators with given options, each stopped at the end of the test."""
    started: list[FireworksSimulator] = []

    def make(**options: Any) -> FireworksSimulator:
        sim = FireworksSimulator(**options).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


def _failing(report: LogprobsReport) -> dict[str, bool | None]:
    return {c.name: c.passed for c in report.checks if c.passed is not True}


# -- the honest simulator --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bos", "base"), [("none", "completion"), ("echo", "completion"), ("count", "completion"), ("none", "prompt")]
)
def test_an_honest_server_passes_every_check(make_sim: Any, tmp_path: Path, bos: str, base: str) -> None:
    sim = make_sim(bos=bos, text_offset_base=base)
    report = _verify(sim, tmp_path)
    assert report.ok, str(report)
    assert [c.name for c in report.checks] == NAMES
    assert all(c.passed is True for c in report.checks)
    echo = report.check("echo").details
    assert echo["hidden_bos"] is (bos == "count")
    assert echo["leading_bos"] is (bos == "echo")
    assert echo["text_offset_unit"] == "characters"  # the default prompt's "é" tells characters from bytes
    if bos == "count":
        assert "counts a BOS it does not echo" in report.check("echo").finding
    if bos == "echo":  # the R1 template's prompt has its own BOS: the server's makes two
        assert echo["double_bos"] is True and "double BOS" in report.check("echo").finding
    consistency = report.check("consistency").details
    assert consistency["compared"] == consistency["generated"] == 12 and consistency["max_abs_diff"] == 0
    assert report.check("determinism").details["same_text"] is True


def test_raw_prompts_fewer_alternatives_and_a_given_length(sim: FireworksSimulator, tmp_path: Path) -> None:
    report = _verify(
        sim, tmp_path, client={"samples_per_request": 4}, prompt="The quick brown fox", raw=True, logprobs=3,
        max_tokens=5,
    )  # fmt: skip
    assert report.ok, str(report)
    assert report.prompt == "The quick brown fox"
    assert report.check("well_formed").details["requested"] == 3
    # Three alternatives, four where a sampled token was outside them (the legacy format adds it).
    assert report.check("well_formed").details["alternatives_min"] == 3
    assert report.check("well_formed").details["alternatives_max"] == 4
    bodies = [r.body for r in sim.requests]
    assert all(b is not None and b["prompt"].startswith("The quick brown fox") for b in bodies)
    assert sorted(b["max_tokens"] for b in bodies if b is not None) == [1, 5, 5, 5]
    assert all(b is not None and b.get("n", 1) == 1 for b in bodies)  # one choice each, whatever the client's default


def test_the_probes_go_to_the_server_not_the_cache(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> tuple[LogprobsReport, LogprobsReport]:
        async with _client(sim, tmp_path) as c:
            return await c.verify_logprobs(), await c.verify_logprobs()

    first, second = asyncio.run(main())
    assert first.ok and second.ok
    bodies = [r.body for r in sim.requests]
    assert len(bodies) == 8  # four probes each time: none answered from (or stored in) the cache
    probes = [b for b in bodies[:4] if b is not None]
    echoed = [b for b in probes if b.get("echo")]
    assert len(echoed) == 1 and echoed[0]["max_tokens"] == 1 and echoed[0]["temperature"] == 0
    seeded = [b for b in probes if b["temperature"] == 1]
    assert len(seeded) == 2 and seeded[0]["seed"] == seeded[1]["seed"]
    greedy = next(b for b in probes if b["temperature"] == 0 and not b.get("echo"))
    # The echo scores the prompt followed by what the greedy probe generated.
    assert echoed[0]["prompt"].startswith(greedy["prompt"]) and len(echoed[0]["prompt"]) > len(greedy["prompt"])


def test_the_sync_twin_and_the_report_forms(sim: FireworksSimulator, tmp_path: Path) -> None:
    with Fireworks(
        "qwen-15b", base_url=sim.base_url, api_key=sim.api_key, cache_dir=str(tmp_path / "c"), progress_bar=False
    ) as client:
        report = client.verify_logprobs()
    assert isinstance(report, LogprobsReport) and report.ok
    assert report.server == sim.base_url and report.model.endswith("deepseek-r1-distill-qwen-1p5b")
    assert sim.api_key not in str(report) + repr(report) + json.dumps(report.to_dict())
    text = str(report)
    assert text.splitlines()[0].endswith("ok (5 of 5 checks passed)")
    assert all(re.search(rf"^  pass\s+{name}\s", text, re.M) for name in NAMES)
    assert json.loads(json.dumps(report.to_dict()))["checks"][1]["name"] == "echo"
    assert "<table>" in report._repr_html_() and "well_formed" in report._repr_html_()
    assert pickle.loads(pickle.dumps(report)) == report
    with pytest.raises(TypeError):
        report.check("echo").details["echoed"] = 0  # type: ignore[index]


# -- servers that answer 200 with wrong logprobs -----------------------------------------------------------------

FAULTS = [
    # fault, the checks that do not pass (False: failed, None: could not run), words of the first one's finding
    ("missing", dict.fromkeys(["well_formed", "echo"], False) | dict.fromkeys(["greedy", "consistency", "determinism"]),
     "MissingLogprobsError"),
    ("shifted", {"well_formed": False, "greedy": False, "consistency": False}, "probability"),
    ("not-greedy", {"greedy": False}, "not the top alternative"),
    ("echo-drift", {"consistency": False}, "differs from the echo's for the same text"),
    ("echo-short", {"echo": False, "consistency": None}, "do not spell the prompt"),
    ("no-echo", {"echo": None, "consistency": None}, "could not check"),
    ("noisy", {"consistency": False, "determinism": False}, "differs from the echo's"),
    ("processed", {"well_formed": False, "consistency": False}, "among its alternatives"),
]  # fmt: skip


@pytest.mark.parametrize(("fault", "failing", "words"), FAULTS, ids=[f[0] for f in FAULTS])
def test_each_wrong_server_is_caught_by_the_right_check(
    make_sim: Any, tmp_path: Path, fault: str, failing: dict[str, bool | None], words: str
) -> None:
    report = _verify(make_sim(logprobs_fault=fault), tmp_path)
    assert not report.ok
    assert _failing(report) == failing, str(report)
    first = next(c for c in report.checks if c.passed is not True)
    assert words in first.finding, str(report)
    assert "NOT OK" in str(report).splitlines()[0]


def test_a_server_that_does_not_echo_cannot_be_checked_and_is_not_ok(make_sim: Any, tmp_path: Path) -> None:
    report = _verify(make_sim(logprobs_fault="no-echo"), tmp_path)
    assert not report.ok
    for name in ("echo", "consistency"):
        check = report.check(name)
        assert check.passed is None and check.status == "not checked"
        assert check.finding.startswith("could not check: ") and "echo" in check.finding
    assert report.check("greedy").passed is True


def test_the_fault_findings_name_the_numbers(make_sim: Any, tmp_path: Path) -> None:
    drift = _verify(make_sim(logprobs_fault="echo-drift"), tmp_path).check("consistency")
    assert drift.details["max_abs_diff"] > 1 and drift.details["compared"] == 12
    assert re.search(r"token \d+ '.+' generated -[\d.]+, echoed -[\d.]+", drift.finding)
    noisy = _verify(make_sim(logprobs_fault="noisy"), tmp_path).check("determinism")
    assert noisy.details["same_text"] is True and noisy.details["max_abs_diff"] >= 0.25 - 1e-9
    greedy = _verify(make_sim(logprobs_fault="not-greedy"), tmp_path).check("greedy")
    assert re.search(r"token 0 '.+' -[\d.]+ is below the top alternative '.+' -[\d.]+", greedy.finding)


def test_missing_logprobs_are_found_after_the_clients_retries_on_virtual_time(make_sim: Any, tmp_path: Path) -> None:
    sim = make_sim(logprobs_fault="missing")
    clock = VirtualTime()
    report = _verify(sim, tmp_path, client={"max_retries": 2, "clock": clock})
    assert report.check("well_formed").passed is False
    assert len(sim.requests) == 4 * 3 and clock.sleeps  # every probe retried twice, without waiting


def test_the_simulator_faults_at_the_http_level(make_sim: Any) -> None:
    body = {"model": "accounts/fireworks/models/x", "prompt": "The quick brown fox", "max_tokens": 4,
            "temperature": 0, "logprobs": 2, "echo": True}  # fmt: skip
    honest = json.loads(post_completion(make_sim(), body))["choices"][0]
    missing = json.loads(post_completion(make_sim(logprobs_fault="missing"), body))["choices"][0]
    no_echo = json.loads(post_completion(make_sim(logprobs_fault="no-echo"), body))["choices"][0]
    short = json.loads(post_completion(make_sim(logprobs_fault="echo-short"), body))["choices"][0]
    assert missing["logprobs"] is None and missing["text"] == honest["text"]
    assert len(no_echo["logprobs"]["tokens"]) == 4 and not no_echo["text"].startswith("The quick")
    assert len(short["logprobs"]["tokens"]) == len(honest["logprobs"]["tokens"]) - 1
    with pytest.raises(ValueError, match="logprobs_fault"):
        FireworksSimulator(logprobs_fault="wrong")  # type: ignore[arg-type]
    assert build_parser().parse_args(["--logprobs-fault", "echo-drift"]).logprobs_fault == "echo-drift"


# -- what is the caller's, not a finding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"tolerance": -0.1}, "tolerance"),
        ({"tolerance": float("nan")}, "tolerance"),
        ({"temperature": 0.5}, "temperature"),
        ({"echo": False}, "echo"),
        ({"use_cache": True}, "use_cache"),
        ({"logprobs": 0}, "logprobs"),
        ({"top_logprobs": 0}, "top_logprobs"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_p": 3.0}, "top_p"),
    ],
)
def test_bad_arguments_raise_before_any_request(
    make_client: MakeClient, sim: FireworksSimulator, kwargs: dict[str, Any], argument: str
) -> None:
    async def main() -> None:
        async with make_client() as client:
            await client.verify_logprobs(**kwargs)

    with pytest.raises(ValidationError) as caught:
        asyncio.run(main())
    assert caught.value.argument == argument
    assert sim.requests == []


def test_a_tolerance_that_is_no_number_is_a_type_error(make_client: MakeClient) -> None:
    async def main() -> None:
        async with make_client() as client:
            await client.verify_logprobs(tolerance="0.1")  # type: ignore[arg-type]

    with pytest.raises(InvalidTypeError):
        asyncio.run(main())


def test_an_error_about_the_caller_is_raised_not_reported(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> None:
        async with _client(sim, tmp_path, api_key="wrong-key") as client:
            await client.verify_logprobs()

    with pytest.raises(AuthenticationError):
        asyncio.run(main())


# -- the checks on hand-made logprobs --------------------------------------------------------------------------


def _gen(tokens: list[str], lps: list[float | None], tops: list[dict[str, float] | None]) -> Logprobs:
    return Logprobs(tokens, lps, tops)


def _echoed(tokens: list[str], lps: list[float | None], k: int, offsets: list[int] | None = None) -> Logprobs:
    return Logprobs(tokens, lps, None, offsets, num_prompt_tokens=k, prompt_length=1, echo=True)


def test_well_formed_accepts_n_alternatives_or_n_plus_the_sampled_one() -> None:
    good = _gen([" a", " b"], [-0.5, -3.0], [{" a": -0.5, " c": -1.2}, {" c": -0.2, " d": -1.9, " b": -3.0}])
    check = check_well_formed({"p": good}, 2, 0.1)
    assert check.passed is True and check.details["alternatives_min"] == 2 and check.details["alternatives_max"] == 3


@pytest.mark.parametrize(
    ("lps", "tops", "words"),
    [
        ([None], [{" a": -0.5, " c": -1.0}], "has no logprob"),
        ([-0.5], [None], "has no alternatives"),
        ([-0.5], [{" a": -0.5}], "1 alternatives where 2 were asked for"),
        ([-0.5], [{" x": -0.5, " y": -1.0, " z": -2.0}], "3 alternatives where 2"),  # N+1 without the sampled one
        ([-0.1], [{" a": -0.1, " c": -0.2}], "probability 1.724 > 1"),
        ([-0.5], [{" a": -0.9, " c": -1.0}], "logprob -0.5 but -0.9 among its alternatives"),
    ],
)
def test_well_formed_names_each_problem(
    lps: list[float | None], tops: list[dict[str, float] | None], words: str
) -> None:
    check = check_well_formed({"probe": _gen([" a"], lps, tops)}, 2, 0.1)
    assert check.passed is False and words in check.finding and "probe[0] ' a'" in check.finding


def test_well_formed_with_no_positions_could_not_check() -> None:
    assert check_well_formed({"p": Logprobs()}, 5, 0.1).passed is None


def test_echo_spelling_count_and_bos() -> None:
    prompt = "Hi there"
    plain = check_echo(_echoed(["Hi", " there", "!"], [None, -1.0, -2.0], 2, [0, 2, 8]), prompt, 2)
    assert plain.passed is True
    assert plain.details["text_offset_unit"] == "characters or bytes (no non-ASCII text to tell them apart)"
    hidden = check_echo(_echoed(["Hi", " there", "!"], [None, -1.0, -2.0], 2, [0, 2, 8]), prompt, 3)
    assert hidden.passed is True and hidden.details["hidden_bos"] is True and "counts a BOS" in hidden.finding
    bos = check_echo(_echoed(["<s>", "Hi", " there"], [None, -1.0, -2.0], 3, [0, 0, 2]), prompt, 3)
    assert bos.passed is True and bos.details["leading_bos"] is True and bos.details["double_bos"] is False
    # An echoed BOS and one fewer than usage: two tokens unaccounted for.
    assert check_echo(_echoed(["<s>", "Hi", " there"], [None, -1.0, -2.0], 3, [0, 0, 2]), prompt, 4).passed is False
    missing = check_echo(_echoed(["Hi", " there", "!"], [None, None, -2.0], 2, [0, 2, 8]), prompt, 2)
    assert missing.passed is False and "have no logprob" in missing.finding


@pytest.mark.parametrize(
    ("tokens", "offsets", "words"),
    [
        (["Hi", " th"], [0, 2], "do not spell the prompt (they differ from character 5: '' vs 'ere')"),
        (["Hi", " there", " there"], [0, 2, 8], "do not spell the prompt"),
        # A repeated first token reads as an echoed BOS: the count against usage gives it away.
        (["Hi", "Hi", " there"], [0, 0, 2], "3 echoed positions for usage.prompt_tokens = 2"),
    ],
    ids=["dropped", "duplicated", "duplicated-first"],
)
def test_echo_that_drops_or_repeats_a_position_fails(tokens: list[str], offsets: list[int], words: str) -> None:
    echoed = _echoed([*tokens, "!"], [None] + [-1.0] * len(tokens), len(tokens), [*offsets, 99])
    check = check_echo(echoed, "Hi there", 2)  # the server's usage counts the prompt's two tokens
    assert check.passed is False and words in check.finding


def test_echo_byte_pieces_are_covered_by_offsets_in_characters_or_bytes() -> None:
    prompt = "a café"
    pieces = ["a", " caf", "\ufffd", "\ufffd"]  # "é" as two byte pieces
    by_bytes = check_echo(_echoed([*pieces, "!"], [None, -1.0, -1.0, -1.0, -1.0], 4, [0, 1, 5, 6, 7]), prompt, 4)
    assert by_bytes.passed is True and by_bytes.details["text_offset_unit"] == "bytes"
    assert "cover the prompt by text_offset" in by_bytes.finding
    whole = check_echo(_echoed(["a", " café", "!"], [None, -1.0, -1.0], 2, [0, 1, 6]), prompt, 2)
    assert whole.details["text_offset_unit"] == "characters"
    as_bytes = check_echo(_echoed(["a", " café", "!"], [None, -1.0, -1.0], 2, [0, 1, 7]), prompt, 2)
    assert as_bytes.details["text_offset_unit"] == "bytes"  # told by the offset of the generated token after them
    wrong = check_echo(_echoed(["a", " café", "!"], [None, -1.0, -1.0], 2, [0, 3, 9]), prompt, 2)
    assert wrong.passed is True and wrong.details["text_offset_unit"] == "neither characters nor bytes"


def test_echo_without_positions_could_not_check() -> None:
    check = check_echo(Logprobs([" a"], [-1.0], None), "prompt", 3)
    assert check.passed is None and check.finding.startswith("could not check")


def test_greedy_allows_ties_and_refuses_lower_or_added_tokens() -> None:
    tie = _gen([" a"], [-0.70], [{" b": -0.69, " a": -0.70}])
    assert check_greedy(tie, 2, 0.05).passed is True
    assert check_greedy(tie, 2, 0.0).passed is False
    lower = check_greedy(_gen([" a"], [-1.5], [{" b": -0.3, " a": -1.5}]), 2, 0.1)
    assert lower.passed is False and "' a' -1.5 is below the top alternative ' b' -0.3" in lower.finding
    added = check_greedy(_gen([" a"], [-0.1], [{" b": -0.3, " c": -0.4, " a": -0.1}]), 2, 0.1)
    assert added.passed is False and "came as alternative 3, outside the top 2" in added.finding
    absent = check_greedy(_gen([" a"], [-0.1], [{" b": -0.3, " c": -0.4}]), 2, 0.1)
    assert absent.passed is False and "not among its alternatives" in absent.finding
    assert check_greedy(_gen([" a"], [-0.1], [None]), 2, 0.1).passed is None


def test_consistency_compares_the_same_tokens_at_the_same_place() -> None:
    prompt, text = "Say", " hi there"
    generated = _gen([" hi", " there"], [-0.5, -1.0], [None, None])
    same = _echoed(["S", "ay", " hi", " there", "!"], [None, -2.0, -0.52, -1.0, -3.0], 4)
    check = check_consistency(generated, text, same, prompt, 0.1)
    assert check.passed is True and check.details["compared"] == 2
    assert check.details["max_abs_diff"] == pytest.approx(0.02)
    # The echo merges the prompt's end with the first generated token: that one is not compared.
    merged = _echoed(["Say hi", " there", "!"], [None, -1.04, -3.0], 2)
    check = check_consistency(generated, text, merged, prompt, 0.1)
    assert check.passed is True and check.details["compared"] == 1 and check.details["unmatched"] == (0,)
    assert "1 retokenised differently" in check.finding
    drift = _echoed(["S", "ay", " hi", " there", "!"], [None, -2.0, -0.5, -2.5, -3.0], 4)
    check = check_consistency(generated, text, drift, prompt, 0.1)
    assert check.passed is False and "token 1 ' there' generated -1, echoed -2.5" in check.finding
    # A BOS ahead of the echo takes no characters.
    bos = _echoed(["<s>", "Say", " hi", " there", "!"], [None, -2.0, -0.5, -1.0, -3.0], 4)
    assert check_consistency(generated, text, bos, prompt, 0.1).details["compared"] == 2
    nothing = _echoed(["Say hi there", "!"], [None, -3.0], 1)
    assert check_consistency(generated, text, nothing, prompt, 0.1).passed is None
    assert check_consistency(generated, text, Logprobs(), prompt, 0.1).passed is None


def test_determinism_reports_a_different_text_and_fails_on_different_logprobs() -> None:
    a = _gen([" a", " b", " c"], [-0.1, -0.2, -0.3], [{" a": -0.1, " x": -2.0}, {" b": -0.2}, {" c": -0.3}])
    assert check_determinism(a, a, 0.01).passed is True
    # The texts part at token 1; its alternatives (same context) agree, the rest is not compared.
    b = _gen([" a", " y", " z"], [-0.1, -4.0, -0.9], [{" a": -0.1, " x": -2.0}, {" b": -0.2, " y": -4.0}, {" z": -0.9}])
    check = check_determinism(a, b, 0.01)
    assert check.passed is True and check.details["same_text"] is False and check.details["diverged_at"] == 1
    assert check.details["compared"] == 2 and "different texts from token 1" in check.finding
    c = _gen([" a", " b", " c"], [-0.1, -0.5, -0.3], [{" a": -0.1, " x": -2.0}, {" b": -0.5}, {" c": -0.3}])
    check = check_determinism(a, c, 0.01)
    assert check.passed is False and check.details["max_abs_diff"] == pytest.approx(0.3)
    assert check_determinism(Logprobs(), Logprobs(), 0.1).passed is None


def test_a_report_is_ok_only_when_every_check_passed() -> None:
    def report(*passed: bool | None) -> LogprobsReport:
        checks = tuple(LogprobsCheck(f"c{i}", p, "f", {}) for i, p in enumerate(passed))
        return LogprobsReport(checks=checks, server="s", model="m", prompt="p", tolerance=0.1)

    assert report(True, True).ok
    assert not report(True, None).ok and not report(False, True).ok
    assert "not checked" in str(report(True, None))
    with pytest.raises(KeyError):
        report(True).check("echo")


def test_the_default_prompt_tells_characters_from_bytes() -> None:
    assert len(DEFAULT_VERIFY_PROMPT) != len(DEFAULT_VERIFY_PROMPT.encode("utf-8"))


def test_the_worked_example_in_docs_prints_what_the_docs_show(tmp_path: Path) -> None:
    """docs/verify.md's example, run as written in a fresh directory: its output is the page's, port aside."""
    import subprocess
    import sys

    shown = docs_block("verify.md", "text")
    script = tmp_path / "example.py"
    script.write_text(docs_block("verify.md"), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.sub(r"127\.0\.0\.1:\d+/", "127.0.0.1:PORT/", done.stdout) == shown
