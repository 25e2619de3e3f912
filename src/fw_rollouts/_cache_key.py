"""Cache keys: a SHA-256 over everything that shapes a sample's output.

The key hashes the endpoint and the exact request body (model, the exact prompt string,
every sampling parameter, stop, logprobs, echo) plus the seed and, with ``n`` > 1, the
choice index. The API key is never part of it. The echoed prompt's logprobs, shared by every
sample of a prompt, have a key of their own (:meth:`CacheKeyer.prompt_key`). Changing what
goes into the hash changes every key, so ``_KEY_VERSION`` is part of it and must change with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["CacheKeyer"]

_KEY_VERSION = "fw_rollouts/1"


class CacheKeyer:
    """Cache keys for the samples of one request: hash the output-shaping body once, then add each seed.

    ``body`` must hold every field that changes the output and nothing else (no seed, no n).
    """

    __slots__ = ("_prefix",)

    def __init__(self, endpoint: str, body: Mapping[str, Any]) -> None:
        canonical = json.dumps(
            {"v": _KEY_VERSION, "endpoint": endpoint, "body": body},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        self._prefix = hashlib.sha256(canonical.encode("utf-8"))

    def __call__(self, seed: int, choice: int | None = None) -> str:
        """The key of the sample sent with ``seed`` (and, with ``n`` > 1, of its ``choice``)."""
        h = self._prefix.copy()
        h.update(b"|seed=%d" % seed if choice is None else b"|seed=%d|choice=%d" % (seed, choice))
        return h.hexdigest()

    def prompt_key(self) -> str:
        """The key of the prompt record: the echoed prompt's logprobs, shared by every sample of this body.

        Derived from the same endpoint and body, so anything that changes a sample's key
        changes it too; distinct from every sample key (their hashes end in a seed, this one does not).
        """
        h = self._prefix.copy()
        h.update(b"|prompt")
        return h.hexdigest()
