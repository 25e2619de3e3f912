"""Cache lookup: the samples of a call that its store already holds, decoded from their records."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ._models import FwResponse
from ._parsing import ResponseSpec
from ._record import RecordError, decode_record
from ._store import SampleStore

__all__ = ["cached_samples"]

log = logging.getLogger("fw_rollouts")


async def cached_samples(
    store: SampleStore, keys: Sequence[str], seeds: Sequence[int], prompt: str, spec: ResponseSpec
) -> dict[int, FwResponse]:
    """The samples of ``seeds`` the store already holds (a record that cannot be read is a miss)."""
    found: dict[int, FwResponse] = {}
    for seed, key, data in zip(seeds, keys, await store.get_many(keys), strict=True):
        if data is None:
            continue
        try:
            hit = decode_record(data, prompt)
        except RecordError as exc:
            log.warning("ignoring unreadable cache entry %s in %s: %s", key[:12], store.location, exc)
            continue
        if hit.logprobs is not None or not spec.logprobs:
            found[seed] = hit
    return found
