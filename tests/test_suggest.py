"""'Did you mean ...?' hints for mistyped names."""

from __future__ import annotations

import pytest

from fw_rollouts._suggest import closest, did_you_mean

OPTIONS = ("temperature", "top_p", "top_k", "max_tokens", "logprobs", "n_samples")


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("temprature", "temperature"),
        ("max_token", "max_tokens"),
        ("Temperature", "temperature"),
        ("logprob", "logprobs"),
    ],
)
def test_a_near_miss_names_the_candidate(typed: str, meant: str) -> None:
    assert closest(typed, OPTIONS) == meant
    assert did_you_mean(typed, OPTIONS) == f" (did you mean {meant!r}?)"


@pytest.mark.parametrize("typed", ["seed_offset", "x", "", "frequency_penalty"])
def test_nothing_close_gives_no_hint(typed: str) -> None:
    assert closest(typed, OPTIONS) is None
    assert did_you_mean(typed, OPTIONS) == ""


def test_an_exact_name_needs_no_correction() -> None:
    assert closest("top_p", OPTIONS) is None
    assert did_you_mean("top_p", OPTIONS) == ""


def test_no_candidates() -> None:
    assert did_you_mean("temperature", []) == ""


def test_the_closest_of_several_wins() -> None:
    assert closest("top_q", ["top_p", "top_k", "temperature"]) in {"top_p", "top_k"}
    assert closest("top_kk", ["top_p", "top_k"]) == "top_k"


def test_any_iterable_of_candidates() -> None:
    assert did_you_mean("temprature", iter(OPTIONS)) == " (did you mean 'temperature'?)"
    assert did_you_mean("temprature", dict.fromkeys(OPTIONS)) == " (did you mean 'temperature'?)"


def test_key_and_cutoff() -> None:
    def squash(name: str) -> str:
        return name.replace("_", "").lower()

    assert closest("TOPP", ["top_p", "top_k"], key=squash) == "top_p"
    assert closest("top_x", ["top_p"], cutoff=0.9) is None
    assert closest("top_x", ["top_p"], cutoff=0.5) == "top_p"
