"""A study split into N shards by a stable hash, for independent processes without shared state.

``generate_many(items, shard=(i, N))`` runs the items of shard ``i`` only. An item's shard is
the SHA-256 of its identity, taken modulo ``N``: the JSON (sorted keys) of the output-shaping
request body (the prompt as sent, text or token ids, the model and every option that shapes the
output: the cache key's body) and its first seed. It is the same on every machine, process and
Python version (Python's own ``hash`` is salted per process), and it does not depend on the
item's place in the list, its ``n_samples`` (a re-run asking for more samples keeps each item on
its shard, whose cache then holds its first samples) or the endpoint (as the study fingerprint).

A shard's study file (``output=``) holds the whole study's header (every item's call fields, so
item indices are the study's) with a fingerprint of its own, so that a shard's file resumes only
that shard, and a ``"shard"`` object: ``{"index": i, "count": N, "study": <the whole study's
fingerprint>, "items": [the study indices of its items]}``. :func:`~._merge.merge_studies` checks
those before combining shards into the file the unsharded run writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from ._exceptions import InvalidTypeError, ValidationError

__all__ = ["SHARD_KEY", "check_shard", "shard_header", "shard_of"]

SHARD_KEY: Final = "shard"
"""The header key of a shard's study file."""

_ALLOWED: Final = "a tuple (i, N) of integers, N >= 1 and 0 <= i < N: run shard i of N (or None: the whole study)"


def check_shard(shard: Any, argument: str = "shard") -> tuple[int, int] | None:
    """``shard`` as ``(index, count)``, or None; an error naming ``argument`` and the allowed values otherwise."""
    if shard is None:
        return None
    if isinstance(shard, (str, bytes)) or not isinstance(shard, (tuple, list)) or len(shard) != 2:
        raise InvalidTypeError(argument, shard, _ALLOWED)
    index, count = shard
    if type(index) is not int or type(count) is not int:  # type(), not isinstance: True is no shard number
        raise InvalidTypeError(argument, shard, _ALLOWED)
    if count < 1:
        raise ValidationError(argument, shard, f"N (the number of shards) must be at least 1; {_ALLOWED}")
    if not 0 <= index < count:
        raise ValidationError(argument, shard, f"i must be in 0..{count - 1} for N={count}; {_ALLOWED}")
    return index, count


def shard_of(key_body: Mapping[str, Any], first_seed: int, count: int) -> int:
    """The shard (of ``count``) of the item whose output-shaping body is ``key_body`` and first seed ``first_seed``."""
    identity = json.dumps([key_body, first_seed], sort_keys=True)
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


def shard_header(header: Mapping[str, Any], shard: tuple[int, int], items: list[int]) -> dict[str, Any]:
    """The study file header of shard ``shard`` (``(i, N)``) holding the study items ``items`` of ``header``'s study."""
    index, count = shard
    whole = header["study"]
    own = hashlib.sha256(f"{whole}/shard {index} of {count}".encode("ascii")).hexdigest()
    return {
        **header,
        "study": own,
        SHARD_KEY: {"index": index, "count": count, "study": whole, "items": items},
    }
