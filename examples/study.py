"""A study: six questions, eight samples each, as one call with one budget, written to a study file as it runs.

    python examples/study.py [STUDY_FILE]        # default: study.jsonl in the current directory

It prints the estimate first (requests, tokens at most, dollars, minutes), then each question's answer
distribution and accuracy, then the usage. Run it again with the same file: every sample is read back from the
file and nothing is sent; interrupt it half way and run it again: only the missing samples are requested.
`fw_rollouts.load_study(path)` reads the file back, logprobs included.

With FIREWORKS_API_KEY set it samples from Fireworks. Without it, it starts the simulated server that ships with
the package, with `answers="boxed"`: its toy model writes random words but ends each answer with a `\\boxed{}`
answer drawn from 12, 7, 36, 1/2, -3 and 5, so the counting below has something to count.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import ExitStack
from typing import Any

from fw_rollouts import Fireworks, Prices, accuracy, answer_distribution, extract_answer, load_study

QUESTIONS = [
    ("What is 3 times 4?", "12"),
    ("What is 15 minus 8?", "7"),
    ("What is 6 squared?", "36"),
    ("What is 1 divided by 2, as a fraction?", "\\frac{1}{2}"),
    ("What is 2 minus 5?", "-3"),
    ("What is 10 divided by 2?", "5"),
]
INSTRUCTION = " Put the final answer in \\boxed{}."
N_SAMPLES = 8


def server(stack: ExitStack) -> dict[str, Any]:
    """Fireworks when FIREWORKS_API_KEY is set; else the simulated server, with a throw-away cache."""
    if os.environ.get("FIREWORKS_API_KEY"):
        return {}
    from fw_rollouts.testing import FireworksSimulator

    sim = stack.enter_context(FireworksSimulator(answers="boxed"))
    print(f"FIREWORKS_API_KEY is not set: sampling from the simulated server at {sim.base_url}")
    # The study file, not the cache, is what a second run reads back: the simulator's port (part of the cache
    # key) changes with every run.
    cache_dir = stack.enter_context(tempfile.TemporaryDirectory())
    return {"base_url": sim.base_url, "api_key": sim.api_key, "cache_dir": cache_dir}


def main(argv: list[str]) -> None:
    """Estimate, run (or resume) the study into ``argv[0]`` (default ``study.jsonl``), and summarise it."""
    path = argv[0] if argv else "study.jsonl"
    items = [question + INSTRUCTION for question, _ in QUESTIONS]
    with ExitStack() as stack:
        client = stack.enter_context(
            Fireworks(
                "qwen-15b",  # DeepSeek-R1-Distill-Qwen-1.5B: it reasons in <think>, then answers
                temperature=0.6,
                max_tokens=2048,
                requests_per_minute=3000,  # your account's limit (a lower one the service reports wins)
                **server(stack),
            )
        )

        if not os.path.exists(path):
            # A dry run: nothing is sent. It counts the cache, not the study file, so it is shown for a new study
            # only. Prices are dollars per million tokens: put your model's.
            guess = client.estimate(items, n_samples=N_SAMPLES, prices=Prices(prompt=0.2, generated=0.2))
            print(f"estimate: {guess.requests} requests, at most {guess.total_tokens:,} tokens, at most "
                  f"${guess.dollars:.4f}, at least {guess.minutes:.1f} min (bound by {guess.binding})")

        results = client.generate_many(items, n_samples=N_SAMPLES, output=path)
        for (question, correct), rollouts in zip(QUESTIONS, results, strict=True):
            answers = [extract_answer(r.content) for r in rollouts]
            shares = ", ".join(f"{answer} {share:.0%}" for answer, share in answer_distribution(answers).items())
            right = accuracy(answers, correct)
            print(f"{question:40} correct {'-' if right is None else f'{right:.0%}':>4}   answers: {shares or 'none'}")
        used = client.usage
        print(f"usage: {used.requests} requests, {used.samples} samples fetched, {used.cached_samples} read back, "
              f"{used.prompt_tokens:,} prompt and {used.generated_tokens:,} generated tokens")

    study = load_study(path)
    samples = sum(len(rollouts) for rollouts in study)
    print(f"{path}: {len(study)} items, {samples} samples; run again to read them back without a request")


if __name__ == "__main__":
    main(sys.argv[1:])
