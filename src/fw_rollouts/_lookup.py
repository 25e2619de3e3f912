"""Cache lookup: the samples of a call that its store already holds, decoded from their records.

With echo and logprobs on, the samples of a prompt may share its echoed positions, stored once in
the prompt record (under ``CacheKeyer.prompt_key()``); the lookup reads it with the sample records,
in the same store call, and hands it back so that the samples still to fetch can be asked for
without echo.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

from ._echo import PromptPart
from ._models import FwResponse
from ._parsing import ResponseSpec
from ._record import PromptPartMissing, RecordError, decode_prompt_record, decode_record
from ._store import SampleStore, describe_failure

__all__ = ["CacheHits", "cached_hits", "cached_samples"]

log = logging.getLogger("fw_rollouts.cache")


class CacheHits(NamedTuple):
    """What the store holds of a call: its samples, and the prompt part they (and the samples to fetch) share."""

    samples: dict[int, FwResponse]
    """The samples found, by seed."""
    part: PromptPart | None
    """The call's prompt part: the caller's, else the prompt record's, else the one an older full echo hit
    carries; None when none is known (or echo or logprobs are off)."""
    part_stored: bool
    """Whether the store holds a readable prompt record (False: write one with the first shared samples)."""


async def cached_hits(
    store: SampleStore,
    keys: Sequence[str],
    seeds: Sequence[int],
    prompt: str,
    spec: ResponseSpec,
    *,
    prompt_key: str | None = None,
    part: PromptPart | None = None,
) -> CacheHits:
    """The samples of ``seeds`` the store already holds, and the call's prompt part.

    ``prompt_key`` (``CacheKeyer.prompt_key()``) is read with the sample keys when echo and
    logprobs are on. A record that holds only its generated positions is decoded with the
    caller's ``part`` if given (say, from an earlier item of the same prompt), else with the
    prompt record's; without either, with the part of an older record that holds a whole echo;
    without any, it is a miss (the sample is fetched again). Hits whose records hold a whole echo
    keep their own copy of the prompt's positions (re-pointing them would unpack every hit).

    A cache never stops a call: a record that cannot be read (damaged, written under another
    key, from another version) is a miss, and so is every key when the store itself fails;
    the caller fetches the misses and stores them again. The lookup logs at most one warning
    per call, with the count. Every record returned has passed its CRC32 (which misses no burst of up
    to 32 flipped bits, and other damage once in 2**32) under its own key, so nothing read
    from it later (its logprobs are unpacked on first use) fails or differs from what was stored.
    """
    shared = prompt_key is not None and spec.echo and spec.logprobs
    wanted = [*keys, prompt_key] if shared and prompt_key is not None else list(keys)
    try:
        records = await store.get_many(wanted)
        if len(records) != len(wanted):
            raise RuntimeError(f"the store returned {len(records)} records for {len(wanted)} keys")
    except Exception as exc:  # a store that cannot be read is an empty one, for this call
        log.warning(
            "could not read the cache at %s (%s); fetching all %d sample%s",
            store.location,
            describe_failure(exc),
            len(keys),
            "" if len(keys) == 1 else "s",
        )
        return CacheHits({}, part, False)
    unreadable = 0
    first: RecordError | None = None
    stored: PromptPart | None = None
    if shared and prompt_key is not None:
        data = records.pop()
        if data is not None:
            try:
                stored = decode_prompt_record(data, prompt, prompt_key)
            except RecordError as exc:
                unreadable, first = 1, exc
    use = part if part is not None else stored
    found: dict[int, FwResponse] = {}
    waiting: list[tuple[int, str, bytes]] = []
    for seed, key, data in zip(seeds, keys, records, strict=True):
        if data is None:
            continue
        try:
            hit = decode_record(data, prompt, key, use)
        except PromptPartMissing:
            waiting.append((seed, key, data))
            continue
        except RecordError as exc:
            unreadable += 1
            first = first or exc
            continue
        if hit.logprobs is not None or not spec.logprobs:
            found[seed] = hit
    if shared and use is None and (waiting or len(found) < len(keys)):
        # Records from before the prompt record, or a lost prompt record: a whole echo hit carries the part.
        use = next((p for p in map(PromptPart.of, found.values()) if p is not None), None)
    for seed, key, data in waiting:
        try:
            if use is None:
                raise PromptPartMissing(
                    "cache record holds the generated positions only, and its prompt's record is missing"
                )
            found[seed] = decode_record(data, prompt, key, use)
        except RecordError as exc:
            unreadable += 1
            first = first or exc
    if unreadable:
        log.warning(
            "%d cache entr%s in %s could not be read and %s fetched again (%s)",
            unreadable,
            "y" if unreadable == 1 else "ies",
            store.location,
            "is" if unreadable == 1 else "are",
            first,
        )
    return CacheHits(found, use, stored is not None)


async def cached_samples(
    store: SampleStore, keys: Sequence[str], seeds: Sequence[int], prompt: str, spec: ResponseSpec
) -> dict[int, FwResponse]:
    """The samples of ``seeds`` the store already holds (:func:`cached_hits` without the prompt record)."""
    return (await cached_hits(store, keys, seeds, prompt, spec)).samples
