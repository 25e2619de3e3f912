"""Several processes sharing one ``cache_dir`` at once: no corruption, no crash, no lost entry.

Child processes (fresh interpreters, like separate scripts or the workers of a job array) run the sync client
against one simulated server in this process, all writing the same cache directory at the same time; then a
fresh diskcache handle reads every entry back, and a last run in this process must be served from the cache.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from _helpers import client_options, read_cache, run_together
from fw_rollouts import Fireworks, FwResponse
from fw_rollouts._cache_key import CacheKeyer
from fw_rollouts.testing import FireworksSimulator, RecordedRequest

CONCURRENCY = 16
PROMPT = "Write one sentence about the sea."

# Each child builds its client, says "ready", waits for "go" so that all of them write at the same time, runs
# its jobs (prompt, first seed, n_samples) and prints what it got: when it ran, and each sample's fingerprint.
CHILD = textwrap.dedent(
    """
    import json, sys, time
    from fw_rollouts import Fireworks

    options, jobs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    with Fireworks(**options) as client:
        print("ready", flush=True)
        sys.stdin.readline()
        reports = []
        for prompt, seed, n in jobs:
            started = time.time()
            rollouts = client.generate(prompt, n_samples=n, seed=seed)
            samples = {r.seed: [r.full, r.logprobs.tokens, r.logprobs.token_logprobs] for r in rollouts}
            reports.append({"started": started, "ended": time.time(), "samples": samples})
    print(json.dumps(reports), flush=True)
    """
)


@pytest.fixture(scope="module")
def sim() -> Iterator[FireworksSimulator]:
    # A little latency so that each child's run lasts long enough to overlap the others'.
    with FireworksSimulator(latency=0.02) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(sim: FireworksSimulator) -> None:
    sim.reset()


def completions(sim: FireworksSimulator) -> list[RecordedRequest]:
    return [r for r in sim.requests if r.path.endswith("/completions")]


def fingerprint(response: FwResponse) -> Any:
    """What a child reports for a sample, in its JSON form."""
    assert response.logprobs is not None
    return json.loads(json.dumps([response.full, response.logprobs.tokens, response.logprobs.token_logprobs]))


def run_children(options: dict[str, Any], jobs_per_child: Sequence[list[tuple[str, int, int]]]) -> list[Any]:
    """Start one child per job list, release them together, and return each one's reports (all must exit 0)."""
    commands = [[sys.executable, "-c", CHILD, json.dumps(options), json.dumps(jobs)] for jobs in jobs_per_child]
    reports = run_together(commands)
    # They did write at the same time: every child's first run began before any had ended.
    assert max(rs[0]["started"] for rs in reports) < min(rs[0]["ended"] for rs in reports)
    return reports


def test_overlapping_seed_ranges_from_three_processes(sim: FireworksSimulator, tmp_path: Path) -> None:
    opts = client_options(sim, tmp_path / "common", CONCURRENCY)
    ranges = [(0, 300), (150, 300), (75, 300)]  # seeds 0-299, 150-449 and 75-374: 450 in all
    reports = run_children(opts, [[(PROMPT, seed, n)] for seed, n in ranges])
    union = range(450)

    fetched: dict[int, list[Any]] = {}
    for (first, n), [report] in zip(ranges, reports, strict=True):
        assert sorted(int(seed) for seed in report["samples"]) == list(range(first, first + n))
        for seed, sample in report["samples"].items():
            fetched.setdefault(int(seed), []).append(sample)
    # The same seed is the same sample whichever process fetched it (or found it cached).
    assert all(samples == samples[:1] * len(samples) for samples in fetched.values())
    asked = completions(sim)
    assert len(union) <= len(asked) <= sum(n for _, n in ranges)
    assert sim.status_counts == {200: len(asked)}

    sim.reset()
    with Fireworks(**opts) as client:
        rollouts = client.generate(PROMPT, n_samples=len(union), seed=0)
        keyer = CacheKeyer(client.settings.resolved_base_url, client.settings.key_body(rollouts.prompt_text))
    assert completions(sim) == []  # not a single request: every seed came from the cache

    entries = read_cache(tmp_path / "common", rollouts.prompt_text)  # the samples, beside the prompt's part
    assert len(entries) == len(union) and sorted(s.seed for s in entries.values()) == list(union)
    assert set(entries) == {keyer(seed) for seed in union}
    assert [r.seed for r in rollouts] == list(union) and all(r.cached for r in rollouts)
    assert [fingerprint(r) for r in rollouts] == [fetched[seed][0] for seed in union]


def test_different_prompts_from_three_processes(sim: FireworksSimulator, tmp_path: Path) -> None:
    # Whole samples in every record, so that read_cache can read a directory of several prompts.
    opts = {**client_options(sim, tmp_path / "common", CONCURRENCY), "echo_once": False}
    n = 200
    prompts = [f"{PROMPT} Variant {i}." for i in range(3)]
    # Each child writes its own prompt; the last one then reads back what the first wrote meanwhile.
    jobs = [[(prompts[0], 0, n)], [(prompts[1], 0, n)], [(prompts[2], 0, n), (prompts[0], 0, n)]]
    reports = run_children(opts, jobs)
    assert len(completions(sim)) >= len(prompts) * n and set(sim.status_counts) == {200}
    assert reports[2][1]["samples"] == reports[0][0]["samples"]

    entries = read_cache(tmp_path / "common")
    assert len(entries) == len(prompts) * n

    sim.reset()
    with Fireworks(**opts) as client:
        for prompt, child in zip(prompts, reports, strict=True):
            rollouts = client.generate(prompt, n_samples=n)
            assert [r.seed for r in rollouts] == list(range(n)) and all(r.cached for r in rollouts)
            assert {str(r.seed): fingerprint(r) for r in rollouts} == child[0]["samples"]
    assert completions(sim) == []
