"""Cache lookup: the samples of a call that its store already holds, decoded from their records."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ._models import FwResponse
from ._parsing import ResponseSpec
from ._record import RecordError, decode_record
from ._store import SampleStore, describe_failure

__all__ = ["cached_samples"]

log = logging.getLogger("fw_rollouts.cache")


async def cached_samples(
    store: SampleStore, keys: Sequence[str], seeds: Sequence[int], prompt: str, spec: ResponseSpec
) -> dict[int, FwResponse]:
    """The samples of ``seeds`` the store already holds.

    A cache never stops a call: a record that cannot be read (damaged, written under another
    key, from another version) is a miss, and so is every key when the store itself fails;
    the caller fetches the misses and stores them again. The lookup logs at most one warning
    per call, with the count. Every record returned has passed its CRC32 (which misses no burst of up
    to 32 flipped bits, and other damage once in 2**32) under its own key, so nothing read
    from it later (its logprobs are unpacked on first use) fails or differs from what was stored.
    """
    try:
        records = await store.get_many(keys)
        if len(records) != len(keys):
            raise RuntimeError(f"the store returned {len(records)} records for {len(keys)} keys")
    except Exception as exc:  # a store that cannot be read is an empty one, for this call
        log.warning(
            "could not read the cache at %s (%s); fetching all %d sample%s",
            store.location,
            describe_failure(exc),
            len(keys),
            "" if len(keys) == 1 else "s",
        )
        return {}
    found: dict[int, FwResponse] = {}
    unreadable = 0
    first: RecordError | None = None
    for seed, key, data in zip(seeds, keys, records, strict=True):
        if data is None:
            continue
        try:
            hit = decode_record(data, prompt, key)
        except RecordError as exc:
            unreadable += 1
            first = first or exc
            continue
        if hit.logprobs is not None or not spec.logprobs:
            found[seed] = hit
    if unreadable:
        log.warning(
            "%d cache entr%s in %s could not be read and %s fetched again (%s)",
            unreadable,
            "y" if unreadable == 1 else "ies",
            store.location,
            "is" if unreadable == 1 else "are",
            first,
        )
    return found
