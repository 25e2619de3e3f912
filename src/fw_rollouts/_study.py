"""Studies: many prompts in one call. The items a user passes, and what a run reports back.

:class:`StudyItem` is one prompt with what it changes for itself (its number of samples, its first
seed, sampling overrides, a session-affinity key); :func:`coerce_items` turns what users pass
(strings, chat message lists, mappings, items) into items, naming the bad one. :class:`Collected`
gathers a run's samples per item for ``generate_many``; :class:`Streamed` hands them to
``iter_generate``'s consumer one at a time and keeps none.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._budget import Spent
from ._exceptions import FwRolloutsError, InvalidTypeError, ValidationError
from ._models import FwResponse
from ._study_file import StudyWriter
from ._usage import UsageTotals

__all__ = ["Collected", "Streamed", "StudyItem", "coerce_items", "is_single_prompt"]

# Batches the study file's thread may have in hand before the run waits for the disk.
_WRITER_BACKLOG = 8

# The fields an item mapping may carry besides sampling options.
_ITEM_FIELDS = ("prompt", "messages", "prompt_ids", "n_samples", "seed", "affinity")


@dataclass(frozen=True, slots=True)
class StudyItem:
    """One prompt of a study and what it changes for itself.

    ``n_samples`` and ``seed`` default to the call's; ``options`` override the call's sampling
    options for this item only (``{"temperature": 0.2}``). ``affinity`` is a session-affinity
    key: items that share a long prefix and carry the same key are sent to the same replica, so
    they share its prompt cache (by default each distinct prompt has its own key).

    ``prompt_ids`` sends token ids as the prompt instead of text, exactly as given (with ``raw=True``
    only: no template applies to ids, and nothing is re-tokenised); ``prompt`` is then the text they
    stand for, shown in results (``FwRollouts.prompt_text``, ``FwResponse.prompt``) but never sent.
    Such items are sent without echo (the echo split reads the prompt's text), and cached under the ids.
    """

    prompt: str | Sequence[Mapping[str, Any]]
    """A string (one user message, or the raw prompt with ``raw=True``) or a list of chat messages."""
    n_samples: int | None = None
    """Samples of this item (None: the call's ``n_samples``)."""
    seed: int | None = None
    """First seed of this item (None: the call's ``seed``)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Sampling overrides for this item (any call-scoped option)."""
    affinity: str | None = None
    """Session-affinity key shared by items with a common prefix (None: one per distinct prompt)."""
    prompt_ids: tuple[int, ...] | None = None
    """Token ids to send as the prompt (``raw=True`` only; ``prompt`` is then their text, for display)."""


def is_single_prompt(value: Any) -> bool:
    """Whether ``value`` is one prompt (a string, or a list of chat messages) rather than items."""
    if isinstance(value, str):
        return True
    return bool(isinstance(value, Sequence) and value and all(isinstance(m, Mapping) and "role" in m for m in value))


def coerce_items(items: Any, *, argument: str = "items") -> list[StudyItem]:
    """``items`` as :class:`StudyItem` s: each a prompt string, a chat message list, a mapping or an item."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise InvalidTypeError(
            argument,
            items,
            "a list of prompts (strings or chat message lists), of mappings with a 'prompt', or of StudyItem",
        )
    out = [_coerce(item, f"{argument}[{i}]") for i, item in enumerate(items)]
    if not out:
        raise ValidationError(argument, items, "must hold at least one prompt")
    return out


def _coerce(item: Any, where: str) -> StudyItem:
    if isinstance(item, StudyItem):
        if item.prompt_ids is not None:
            checked = _check_ids(item.prompt_ids, f"{where}.prompt_ids")
            _check_display(item.prompt, where)
            return item if checked is item.prompt_ids else dataclasses.replace(item, prompt_ids=checked)
        _check_prompt(item.prompt, where)
        return item
    if isinstance(item, str):
        return StudyItem(prompt=item)
    if isinstance(item, Mapping):
        if "role" in item and "prompt" not in item and "messages" not in item:
            raise ValidationError(
                where,
                item,
                "is a chat message, not an item: pass a conversation as one list of messages "
                "inside the list of items ([messages]), or a mapping {'prompt': messages, ...}",
            )
        if "prompt" in item and "messages" in item:
            raise ValidationError(where, item, "has both 'prompt' and 'messages': give one")
        given = item.get("prompt_ids")
        prompt = item.get("prompt", item.get("messages"))
        ids: tuple[int, ...] | None = None
        if given is not None:
            ids = _check_ids(given, f"{where}['prompt_ids']")
            prompt = "" if prompt is None else prompt
            _check_display(prompt, where)
        elif prompt is None:
            raise ValidationError(where, item, "needs a 'prompt' (a string or a list of chat messages) or 'prompt_ids'")
        else:
            _check_prompt(prompt, where)
        affinity = item.get("affinity")
        if affinity is not None and not isinstance(affinity, str):
            raise InvalidTypeError(f"{where}['affinity']", affinity, "a string, or None")
        options = {k: v for k, v in item.items() if k not in _ITEM_FIELDS}
        return StudyItem(
            prompt=prompt,
            n_samples=item.get("n_samples"),
            seed=item.get("seed"),
            options=options,
            affinity=affinity,
            prompt_ids=ids,
        )
    if isinstance(item, Sequence) and not isinstance(item, (bytes, bytearray)):
        _check_prompt(item, where)
        return StudyItem(prompt=item)
    raise InvalidTypeError(
        where, item, "a prompt string, a list of chat messages, a mapping with 'prompt', or a StudyItem"
    )


def _check_ids(ids: Any, where: str) -> tuple[int, ...]:
    """``ids`` as a tuple of token ids (non-negative integers, at least one)."""
    if isinstance(ids, (str, bytes, Mapping)) or not isinstance(ids, Iterable):
        raise InvalidTypeError(where, ids, "a list of token ids (non-negative integers)")
    out = ids if isinstance(ids, tuple) else tuple(ids)
    if not out:
        raise ValidationError(where, ids, "at least one token id")
    if not set(map(type, out)) <= {int}:  # type(), not isinstance: True is no token id
        bad = next(i for i in out if type(i) is not int)
        raise InvalidTypeError(where, bad, "a list of token ids (non-negative integers)")
    if min(out) < 0:
        raise ValidationError(where, min(out), "token ids are non-negative integers")
    return out


def _check_display(prompt: Any, where: str) -> None:
    if not isinstance(prompt, str):
        raise InvalidTypeError(f"{where} prompt", prompt, "the text the prompt_ids stand for (a string, or '')")


def _check_prompt(prompt: Any, where: str) -> None:
    if isinstance(prompt, str):
        return
    if isinstance(prompt, Sequence) and not isinstance(prompt, (bytes, bytearray)):
        return  # the renderer checks each message and names it
    raise InvalidTypeError(f"{where} prompt", prompt, "a string or a list of chat messages")


class Progress(Protocol):
    """The part of the study's progress bar the collectors use."""

    def fetched(self, n: int = 1) -> None:
        """``n`` samples arrived from the service."""
        ...

    def cached(self, n: int = 1) -> None:
        """``n`` samples were served from the local cache."""
        ...

    def failed(self, n: int = 1) -> None:
        """``n`` samples failed for good."""
        ...


class _Outcomes:
    """Per-item failures and sample counts, kept by both collectors (failures are few; samples are what must
    not pile up), and the study file each sample goes to when there is one."""

    def __init__(self, progress: Progress, writer: StudyWriter | None = None) -> None:
        self.progress = progress
        self.writer = writer
        self.errors: dict[int, dict[int, FwRolloutsError]] = {}
        self.stopped: dict[int, FwRolloutsError] = {}
        self.fetched = 0
        self.from_cache = 0

    def failed(self, item: int, seed: int, error: FwRolloutsError) -> None:
        self.errors.setdefault(item, {})[seed] = error
        self.progress.failed(1)

    def stop(self, item: int, error: FwRolloutsError) -> None:
        self.stopped.setdefault(item, error)

    async def _write(self, item: int, response: FwResponse) -> None:
        writer = self.writer
        if writer is None:
            return
        writer.add(item, response)
        while writer.backlog > _WRITER_BACKLOG:
            # A disk slower than the service holds the run back, instead of samples piling up in memory.
            await asyncio.sleep(0.005)

    def totals(self, spent: Spent, requests: int) -> UsageTotals:
        """What the run used, as :class:`UsageTotals`: ``requests`` sent (retries included) and the tokens
        ``spent`` by those that succeeded, as the server reported them per request."""
        return UsageTotals(
            requests=requests,
            samples=self.fetched,
            cached_samples=self.from_cache,
            prompt_tokens=spent.prompt_tokens,
            cached_prompt_tokens=min(spent.cached_tokens, spent.prompt_tokens),
            generated_tokens=spent.completion_tokens,
        )


class Collected(_Outcomes):
    """A run's samples kept per item, for results returned all at once (``generate``, ``generate_many``)."""

    def __init__(self, n_items: int, progress: Progress, writer: StudyWriter | None = None) -> None:
        super().__init__(progress, writer)
        self.results: list[dict[int, FwResponse]] = [{} for _ in range(n_items)]

    async def sample(self, item: int, seed: int, response: FwResponse) -> None:
        """A sample fetched from the service."""
        self.results[item][seed] = response
        self.fetched += 1
        self.progress.fetched(1)
        await self._write(item, response)

    async def hits(self, item: int, found: Mapping[int, FwResponse]) -> None:
        """Samples of ``item`` served from the cache (or read back from the study file)."""
        if found:
            self.results[item].update(found)
            self.from_cache += len(found)
            self.progress.cached(len(found))
            for response in found.values():
                await self._write(item, response)


class Streamed(_Outcomes):
    """A run's samples handed one at a time to a consumer through a bounded queue, none kept.

    The bound is what keeps memory flat: a consumer slower than the service holds the run's
    workers at ``put`` until it catches up.
    """

    def __init__(self, progress: Progress, *, bound: int) -> None:
        super().__init__(progress)
        self.queue: asyncio.Queue[FwResponse | None] = asyncio.Queue(maxsize=bound)

    async def sample(self, item: int, seed: int, response: FwResponse) -> None:
        """A sample fetched from the service."""
        self.fetched += 1
        self.progress.fetched(1)
        await self.queue.put(response)

    async def hits(self, item: int, found: Mapping[int, FwResponse]) -> None:
        """Samples of ``item`` served from the cache, in seed order."""
        for seed in sorted(found):
            self.from_cache += 1
            self.progress.cached(1)
            await self.queue.put(found[seed])
