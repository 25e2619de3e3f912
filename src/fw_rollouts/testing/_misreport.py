"""A server that answers 200 with wrong logprobs: what each ``logprobs_fault`` changes in a reply.

Each fault is one way a server can get logprobs wrong while its reply still parses (see ``docs/testing.md``);
``AsyncFireworks.verify_logprobs`` must catch every one. The engine asks this module how a request is read
and which steps a reply reports; the model's own steps (memoised, shared by many replies) are never
changed: each fault builds new ones.

* ``missing``: ``logprobs`` is null, as a server that ignores the parameter sends it.
* ``shifted``: each generated position reports the logprob and alternatives of the next one (an
  off-by-one in the server's arrays; the last wraps to the first).
* ``not-greedy``: temperature 0 picks the second candidate, not the top one (the engine passes
  ``greedy_rank=1`` to the model).
* ``echo-drift``: echoed prompt positions are scored by another model (a server scoring echo under a
  different model or template), so they disagree with the logprobs generation reports for the same text.
* ``echo-short``: echo leaves out the middle prompt position (its text too).
* ``no-echo``: echo is ignored: only the generated positions come back.
* ``noisy``: every logprob of a reply is lower by an amount that changes from request to request
  (0.25 to 1), so the same request twice disagrees with itself.
* ``processed``: each generated token reports its sampling logprob (after temperature, top_p, ...)
  instead of the model's, while its alternatives keep the model's numbers.
"""

from __future__ import annotations

import dataclasses

from ._config import LogprobsFault
from ._model import Generation, Step
from ._validate import CompletionRequest

__all__ = ["DRIFT_SUFFIX", "noise_of", "reported_echo", "reported_generation", "reported_request"]

#: Appended to the model name to score an ``echo-drift`` echo under another model (same tokens, other numbers).
DRIFT_SUFFIX = "@drift"

_NOISE_STEP = 0.25
_NOISE_LEVELS = 4


def noise_of(request_number: int) -> float:
    """How much lower a ``noisy`` server reports every logprob of its ``request_number``-th reply.

    Four levels a quarter apart, so any two of four consecutive replies differ by at least 0.25.
    """
    return _NOISE_STEP * (1 + request_number % _NOISE_LEVELS)


def reported_request(fault: LogprobsFault | None, req: CompletionRequest) -> CompletionRequest:
    """The request as a ``missing`` (no logprobs) or ``no-echo`` (no echo) server reads it."""
    if fault == "missing":
        return dataclasses.replace(req, legacy_k=None, content_k=None)
    if fault == "no-echo":
        return dataclasses.replace(req, echo_last=None)
    return req


def _lowered(st: Step, by: float) -> Step:
    if st.lp is None:
        return st
    dist = st.dist.lowered(by) if st.dist is not None else None
    return Step(st.text, st.tid, st.lp - by, st.slp, dist)


def reported_generation(fault: LogprobsFault | None, gen: Generation, noise: float) -> Generation:
    """The generated steps a reply reports under ``fault`` (``gen`` itself when the fault leaves them alone)."""
    steps = gen.steps
    if fault == "shifted" and len(steps) > 1:
        moved = steps[1:] + steps[:1]
        steps = [Step(st.text, st.tid, nxt.lp, nxt.slp, nxt.dist) for st, nxt in zip(steps, moved, strict=True)]
    elif fault == "noisy":
        steps = [_lowered(st, noise) for st in steps]
    elif fault == "processed":
        steps = [Step(st.text, st.tid, st.lp if st.slp is None else st.slp, st.slp, st.dist) for st in steps]
    else:
        return gen
    return Generation(steps, gen.text, gen.finish_reason)


def reported_echo(
    fault: LogprobsFault | None, steps: list[Step], drifted: list[Step] | None, noise: float
) -> list[Step]:
    """The echoed prompt steps a reply reports under ``fault``.

    ``drifted`` is the same prompt scored by another model, position for position (for ``echo-drift``).
    """
    if fault == "echo-short" and len(steps) > 2:
        middle = len(steps) // 2
        return steps[:middle] + steps[middle + 1 :]
    if fault == "echo-drift" and drifted is not None:
        return drifted
    if fault == "noisy":
        return [_lowered(st, noise) for st in steps]
    return steps
