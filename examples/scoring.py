"""Scoring: which of a few answers does the model find most likely? (lm-eval's multiple choice by log-likelihood)

    python examples/scoring.py

Every (question, answer) pair is scored as one study: one echoed request each at temperature 0, nothing
generated, every reply cached. For each question it prints each answer's log-likelihood (sum and mean per token),
whether every token of it was the model's top choice, and its share of the probability among the answers. Then it
scores one sentence in the middle of a reasoning trace, and shows that scoring again sends nothing.

With FIREWORKS_API_KEY set it scores on Fireworks. Without it, it starts the simulated server that ships with the
package, whose toy model knows no geography: the numbers are its real logprobs, the ranking means nothing.
"""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import ExitStack
from typing import Any

from fw_rollouts import Fireworks

QUESTIONS = [
    ("Q: What is the capital of France?\nA:", [" Paris", " Lyon", " Marseille"]),
    ("Q: What is 2 + 2?\nA:", [" 4", " 5", " 22"]),
    ("Q: What is the chemical symbol for gold?\nA:", [" Au", " Ag", " Gd"]),
]


def server(stack: ExitStack) -> dict[str, Any]:
    """Fireworks when FIREWORKS_API_KEY is set; else the simulated server, with a throw-away cache."""
    if os.environ.get("FIREWORKS_API_KEY"):
        return {}
    from fw_rollouts.testing import FireworksSimulator

    sim = stack.enter_context(FireworksSimulator())
    print(f"FIREWORKS_API_KEY is not set: scoring on the simulated server at {sim.base_url}\n")
    # The simulator's port changes with every run, and so would the cache key: keep its cache out of the way.
    cache_dir = stack.enter_context(tempfile.TemporaryDirectory())
    return {"base_url": sim.base_url, "api_key": sim.api_key, "cache_dir": cache_dir}


def main() -> None:
    """Score the answers, a span, and the answers again."""
    pairs = [(question, answer) for question, answers in QUESTIONS for answer in answers]
    with ExitStack() as stack:
        # raw=True: each question is sent exactly as written, with no chat template around it.
        client = stack.enter_context(Fireworks("qwen-15b", raw=True, progress_bar=False, **server(stack)))

        scores = iter(client.score_many(pairs))
        for question, answers in QUESTIONS:
            print(question.replace("\n", " "))
            scored = [next(scores) for _ in answers]
            # The answers' shares of the probability the model gives any of them (a softmax over the sums).
            top = max(s.sum_logprob for s in scored)
            weights = [math.exp(s.sum_logprob - top) for s in scored]
            best = max(range(len(scored)), key=lambda i: scored[i].sum_logprob)
            for i, (answer, s) in enumerate(zip(answers, scored, strict=True)):
                pick = "  <- the pick" if i == best else ""
                print(f"  {answer!r:12} {s.num_tokens} token(s)  sum {s.sum_logprob:7.2f}  mean {s.mean_logprob:6.2f}  "
                      f"greedy {s.greedy_all!s:5}  share {weights[i] / sum(weights):4.0%}{pick}")

        # A sentence in the middle of a text: the whole text is sent, only the sentence's tokens count.
        prefix, sentence, suffix = "17 * 23 is 17 * 20 plus 17 * 3.", " That is 340 plus 51.", " So it is 391."
        s = client.score(prefix, sentence, suffix)
        print(f"\n{sentence!r} inside the trace: {s.num_tokens} tokens, sum {s.sum_logprob:.2f}")

        requests = client.usage.requests
        client.score_many(pairs)
        print(f"scored again: {client.usage.requests - requests} requests (every score came from the cache)")


if __name__ == "__main__":
    main()
