"""In-flight claims: two workers asking a shared store for the same missing sample at once do not both pay for it.

A run whose store is a :class:`~._store.ClaimingStore` claims the keys of the samples it is about
to fetch. A sample another worker has claimed is set aside while the run goes
on with the others; at the end of its items, the run polls the store for the set-aside samples
(short backoff) until each one's record appears (a cache hit), its claim disappears without a
record (the other worker failed or died: claim it and fetch it), or ``claim_timeout`` passes
(fetch it anyway). Claims of samples whose fetch failed are dropped at once; the rest when the
run ends (by then the records are written).

A claim is a convenience like the cache: a store that cannot claim grants every claim (each
worker then fetches what it is missing, as without claims).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence

from ._store import ClaimingStore, SampleStore, describe_failure

__all__ = ["POLL_FIRST", "POLL_MAX", "Claims"]

log = logging.getLogger("fw_rollouts.cache")

POLL_FIRST, POLL_MAX = 0.02, 0.5
"""Seconds between polls for samples another worker is fetching: the first wait, and at most."""


class Claims:
    """One run's claims on a :class:`~._store.ClaimingStore`, under an owner id of its own."""

    __slots__ = ("_held", "_releasing", "owner", "store", "timeout")

    def __init__(self, store: ClaimingStore) -> None:
        self.store = store
        self.owner = uuid.uuid4().hex  # per run: two runs sharing a store never drop each other's claims
        self.timeout = float(store.claim_timeout)
        self._held: set[str] = set()
        self._releasing: set[asyncio.Task[None]] = set()  # strong references: the loop keeps weak ones

    @classmethod
    def of(cls, store: SampleStore | None) -> Claims | None:
        """Claims on ``store``, or None for a store that does not claim."""
        return cls(store) if isinstance(store, ClaimingStore) else None

    async def claim(self, keys: Sequence[str]) -> list[bool]:
        """Claim ``keys``: True where the key is now this run's to fetch, False where another worker has it."""
        try:
            mine = await self.store.claim(keys, self.owner)
            if len(mine) != len(keys):
                raise RuntimeError(f"the store answered {len(mine)} claims for {len(keys)} keys")
        except Exception as exc:  # a claim is a convenience: without one, fetch
            log.debug("could not claim %d keys in %s (%s)", len(keys), self.store.location, describe_failure(exc))
            return [True] * len(keys)
        self._held.update(key for key, ok in zip(keys, mine, strict=True) if ok)
        return list(mine)

    def release_soon(self, keys: Sequence[str]) -> None:
        """Drop this run's claims of ``keys`` now, without waiting (their fetch failed: let another worker try)."""
        held = [key for key in keys if key in self._held]
        if not held:
            return
        self._held.difference_update(held)
        task = asyncio.ensure_future(self._release(held))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def release_all(self) -> None:
        """Drop every claim this run still holds, and wait for the drops already on their way."""
        held, self._held = sorted(self._held), set()
        if held:
            await self._release(held)
        while self._releasing:
            await asyncio.wait(tuple(self._releasing))

    async def _release(self, keys: list[str]) -> None:
        try:
            await self.store.unclaim(keys, self.owner)
        except Exception as exc:  # they expire by themselves
            log.debug("could not drop %d claims in %s (%s)", len(keys), self.store.location, describe_failure(exc))
