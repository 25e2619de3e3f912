"""Logprobs and samples of many shapes, built the same way in every version (for round trips and old records).

Plain functions of the public constructors only, so that an older fw_rollouts can build them too: the
records in ``tests/data/records/`` were written from these by the version named in their README.
"""

from __future__ import annotations

import math
import random
import struct
import zlib
from collections.abc import Callable

from fw_rollouts import FwResponse, Usage
from fw_rollouts._logprobs import Logprobs


def f32(x: float) -> float:
    """``x`` rounded to the nearest float32, as a server computing in float32 prints it."""
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def model_like(n: int, *, seed: int = 0, top: int = 5, ids: bool = True, sampling: bool = False,
               float64: bool = False, echo: int = 0) -> Logprobs:  # fmt: skip
    """``n`` positions as a model samples them: the token among ``top`` float32 alternatives (sometimes one more)."""
    rng = random.Random(seed)
    vocab = [f" w{i}" for i in range(300)] + ["é", " 🙂", "\n", "", " the", "ing"]
    tokens: list[str] = []
    lps: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    samp: list[float | None] = []
    rounding = (lambda x: x) if float64 else f32
    for i in range(n):
        alternatives: dict[str, float] = {}
        value = -rng.random() * 0.5
        while len(alternatives) < top:
            alternatives.setdefault(rng.choice(vocab), rounding(value))
            value -= rng.random() * 3
        choice = rng.random()
        if choice < 0.9:
            token = list(alternatives)[min(int(rng.expovariate(1.5)), top - 1)]
            lp = alternatives[token]
        else:  # sampled outside the top: the server adds it
            token = rng.choice(vocab)
            lp = rounding(value - 1.0)
            alternatives[token] = lp
        tokens.append(token)
        lps.append(None if i == 0 and echo else lp)
        tops.append(None if i == 0 and echo else alternatives)
        samp.append(None if i == 0 and echo else (lp if rng.random() < 0.7 else rounding(lp * 1.3)))
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(n)]
    return Logprobs(
        tokens,
        lps,
        tops,
        offsets,
        [zlib.crc32(t.encode("utf-8", "surrogatepass")) % 150_000 for t in tokens] if ids else None,
        sampling_logprobs=samp if sampling else None,
        num_prompt_tokens=echo,
        prompt_length=sum(len(t) for t in tokens[:echo]),
        echo=bool(echo),
    )


SHAPES: dict[str, Callable[[], Logprobs]] = {
    "empty": lambda: Logprobs(),
    "one token": lambda: Logprobs(["a"], [-0.5], [{"a": -0.5, "b": -1.5}]),
    "model-like 32": lambda: model_like(32, seed=1),
    "model-like 256 with sampling": lambda: model_like(256, seed=2, sampling=True),
    "model-like without ids": lambda: model_like(40, seed=3, ids=False),
    "model-like float64": lambda: model_like(40, seed=4, float64=True, sampling=True),
    "model-like echo": lambda: model_like(30, seed=5, echo=4, sampling=True),
    "top 1": lambda: model_like(20, seed=6, top=1),
    "no top": lambda: Logprobs(["a", "bc", "d"], [-1.0, -2.0, -3.0]),
    "missing top": lambda: Logprobs(["a", "b", "c"], [None, -1.0, -2.0], [None, {"b": -1.0}, None]),
    "None positions": lambda: Logprobs(["a", "b", "c"], [None, -1.0, None], [{"a": -3.0}, {"b": -1.0}, {}]),
    "token not among alternatives": lambda: Logprobs(["x", "y"], [-0.25, -0.5], [{"a": -0.1}, {"y": -0.75}]),
    "same key, other value": lambda: Logprobs(["a"], [-0.25], [{"a": -0.2500001, "b": -3.0}]),
    "signed zeros and NaN": lambda: Logprobs(
        ["a", "b", "c"], [-0.0, math.nan, 0.0], [{"a": 0.0}, {"b": math.nan}, {"c": -0.0, "d": -1.0}]
    ),
    "non-ASCII and NUL": lambda: Logprobs(
        ["é", "\0", "🤔", "\ud83d", ""], [-1.0] * 5, [{"é": -1.0, "\0x": -2.0}] * 5, None, [1, 2, 3, 4, 5]
    ),
    "explicit offsets": lambda: Logprobs(["ab", "c"], [-1.0, -2.0], None, [3, 90], [7, 7]),
    "ids not a function of the string": lambda: Logprobs(["a", "a", "b"], [-1.0] * 3, None, None, [1, 2, 3]),
    "ids over int32": lambda: Logprobs(["a", "b", "a"], [-1.0] * 3, None, None, [2**40, -1, 2**40]),
    "sampling differs everywhere": lambda: Logprobs(["a", "b"], [-1.0, -2.0], None, sampling_logprobs=[-1.5, None]),
    "sampling float64 beside float32": lambda: Logprobs(["a", "b"], [-1.0, -2.0], sampling_logprobs=[-0.21, -1.0]),
    "ragged and empty": lambda: Logprobs(
        ["a", "b", "c", "d"], [-1.0, -2.0, -3.0, -4.0], [{"a": -1.0}, {}, None, {"x": -1.0, "d": -4.0, "y": -5.0}]
    ),
}


def sample(logprobs: Logprobs | None, *, content_is_full: bool = True) -> FwResponse:
    """A cached-looking sample around ``logprobs``."""
    text = "" if logprobs is None else "".join(logprobs.get_generation_logprobs().tokens)
    text = text.encode("utf-8", "replace").decode("utf-8") if text else "ok"
    return FwResponse(
        full=text if content_is_full else "<think>x</think>" + text,
        content=text,
        reasoning="" if content_is_full else "x",
        finish_reason="length",
        usage=Usage(4, 7, 11, None),
        seed=3,
        model="accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b",
        response_id="cmpl-1",
        created=1_700_000_000,
        logprobs=logprobs,
        echo=False if logprobs is None else logprobs.echo,
        prompt="Once upon a time",
        index=0,
    )
