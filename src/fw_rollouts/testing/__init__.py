"""A simulated Fireworks inference server for offline tests: ``fw_rollouts.testing``.

>>> from fw_rollouts.testing import FireworksSimulator, Fault
>>> with FireworksSimulator() as sim:  # doctest: +SKIP
...     sim.faults.push(Fault.status(429, retry_after="1"))
...     ...  # point a client at sim.base_url with sim.api_key

The server speaks the Fireworks ``/inference/v1/completions`` and ``/inference/v1/chat/completions`` APIs
over real loopback HTTP/1.1: validation and error bodies, legacy and content-format logprobs, echo,
streaming, reasoning split for chat, and scripted or random faults. It uses only the standard library.
See ``docs/testing.md``.
"""

from ._cli import main
from ._faults import DEFAULT_RANDOM_KINDS, Fault, FaultPlan
from ._redis import RedisServer
from ._server import FireworksSimulator, RecordedRequest
from ._tokenizer import tokenize

__all__ = [
    "DEFAULT_RANDOM_KINDS",
    "Fault",
    "FaultPlan",
    "FireworksSimulator",
    "RecordedRequest",
    "RedisServer",
    "main",
    "tokenize",
]
