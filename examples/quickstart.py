"""Five samples of "What is 2+2?" with the logprobs of every token, the prompt's included.

The usage example of fw_rollouts' original design note, as a script: a `FireworksClient` (the drop-in for the
`rollouts` package's `RolloutsClient`) with five alternatives per position and echo, five samples, and for each
one the generated and prompt logprobs and the raw columns.

    python examples/quickstart.py

With FIREWORKS_API_KEY set it samples from Fireworks (and caches in ./.fw_rollouts, so a second run sends
nothing). Without it, it starts the simulated server that ships with the package (`fw_rollouts.testing`), whose
toy model writes random words: the numbers are real logprobs of that text, the text means nothing.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack
from typing import Any

from fw_rollouts import FireworksClient


def server(stack: ExitStack) -> dict[str, Any]:
    """Fireworks when FIREWORKS_API_KEY is set; else the simulated server, with a throw-away cache."""
    if os.environ.get("FIREWORKS_API_KEY"):
        return {}
    from fw_rollouts.testing import FireworksSimulator

    sim = stack.enter_context(FireworksSimulator())
    print(f"FIREWORKS_API_KEY is not set: sampling from the simulated server at {sim.base_url}\n")
    # The simulator's port changes with every run, and so would the cache key: keep its cache out of the way.
    cache_dir = stack.enter_context(tempfile.TemporaryDirectory())
    return {"base_url": sim.base_url, "api_key": sim.api_key, "cache_dir": cache_dir}


def main() -> None:
    """Run the design note's example and print what it reads."""
    with ExitStack() as stack:
        # Create client with logprobs enabled
        client = FireworksClient(
            model="qwen-15b",
            temperature=0.7,
            max_tokens=64,  # the design note left the default (4096); a short answer keeps the run quick
            logprobs=5,  # Get top 5 alternatives
            echo=True,  # Include prompt logprobs
            **server(stack),
        )
        stack.callback(client.close)  # before the server it talks to stops

        # Generate responses with logprobs
        rollouts = client.generate("What is 2+2?", n_samples=5)
        print(f"{len(rollouts)} samples of {rollouts.prompt_text!r}\n")

        # Access logprobs data
        for response in rollouts:
            if response.logprobs:
                # Get logprobs for generated tokens only
                gen_logprobs = response.get_generation_logprobs()

                # Get logprobs for prompt tokens
                prompt_logprobs = response.get_prompt_logprobs()

                # Access raw logprobs data
                tokens = response.logprobs.tokens
                token_logprobs = response.logprobs.token_logprobs
                top_alternatives = response.logprobs.top_logprobs

                print(f"seed {response.seed}: {response.finish_reason}, answer {response.content.strip()[:60]!r}")
                if prompt_logprobs is None or gen_logprobs is None:
                    continue  # echo or logprobs turned off
                print(f"  prompt:    {len(prompt_logprobs)} tokens, log P = {prompt_logprobs.sum():.2f}"
                      " (its first token has no logprob)")
                print(f"  generated: {len(gen_logprobs)} tokens, log P = {gen_logprobs.sum():.2f}")
                first = len(prompt_logprobs)  # the columns hold the prompt's positions, then the generated ones
                if first < len(tokens):
                    alternatives = ", ".join(f"{t!r} {lp:.2f}" for t, lp in (top_alternatives[first] or {}).items())
                    print(f"  first generated token {tokens[first]!r} {token_logprobs[first]:.2f}; "
                          f"alternatives: {alternatives}")
                print()

        again = client.generate("What is 2+2?", n_samples=5, progress_bar=False)
        print(f"again: {sum(r.cached for r in again)} of {len(again)} samples from the cache")


if __name__ == "__main__":
    main()
