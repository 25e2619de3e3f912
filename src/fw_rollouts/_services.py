"""The services a client's calls use, and which of them a sibling client shares.

:class:`Services` holds the cache store, the budget and the transport (one per event loop,
unless given), the clock, and two memories (which model name each server accepted, the
chat templates built so far). Each is a seam with a default: a client made with
``cache=``, ``budget=``, ``transport=`` or ``clock=`` uses what it was given and never
closes it. ``with_options`` builds a sibling's services from its parent's: a part whose
inputs did not change is shared (borrowed), the others are made anew (owned).
"""

from __future__ import annotations

from typing import Any

from ._budget import Budget
from ._clock import SYSTEM_CLOCK, Clock
from ._exceptions import ConfigurationError, InvalidTypeError, ValidationError
from ._loop_local import LoopLocal
from ._ratelimit import Limiter
from ._run import ModelNames
from ._settings import Settings
from ._store import DiskStore, SampleStore
from ._templates import ChatTemplate
from ._transport import Transport, default_transport

__all__ = ["SEAMS", "Services"]

SEAMS = ("cache", "budget", "transport", "clock")
"""Constructor arguments that are objects rather than options: the services a client uses."""

# Settings each default service is built from: a sibling that changes none of them shares the parent's.
# A service the user gave is shared by every sibling whatever changes (the options do not apply to it).
_TRANSPORT_INPUTS = ("api_key", "base_url", "max_concurrency", "connect_timeout", "max_response_bytes")
_LIMITS = ("requests_per_minute", "tokens_per_minute", "prompt_tokens_per_minute", "generated_tokens_per_minute")
_BUDGET_INPUTS = ("max_concurrency", *_LIMITS)
_STORE_INPUTS = ("cache_dir",)


class _StoreSlot:
    """The cache store of a client: given, or a :class:`DiskStore` on ``cache_dir`` made on first use."""

    __slots__ = ("_closed", "_directory", "_owns", "_store", "given")

    def __init__(self, store: SampleStore | None, directory: str, *, check: bool, owns: bool = False) -> None:
        self._store = store
        self._directory = directory
        self._closed = False
        self.given = store is not None
        self._owns = owns  # a store made from a cache= URL: given, yet this client's to close
        if store is None and check:
            DiskStore.check(directory)  # a bad cache_dir is a ConfigurationError now, not an SQLite error later

    def get(self) -> SampleStore:
        if self._closed:
            raise ConfigurationError("the cache store is closed (it was closed with the client that opened it)")
        if self._store is None:
            self._store = DiskStore(self._directory)
        return self._store

    async def aclose(self) -> None:
        self._closed = True
        if self._store is not None and (self._owns or not self.given):  # a given store is its owner's to close
            await self._store.aclose()


class Services:
    """What a client's calls use: the cache store, the budget and transport (one per event loop
    unless given), the clock and the model-name memory. Each part is owned (closed by this
    client's ``aclose``) or borrowed from the client it was derived from."""

    __slots__ = (
        "budget",
        "budget_given",
        "budget_url",
        "clock",
        "models",
        "owned",
        "store",
        "templates",
        "transport",
        "transport_given",
    )

    def __init__(
        self,
        *,
        store: _StoreSlot,
        budget: LoopLocal[Budget],
        budget_given: bool,
        transport: LoopLocal[Transport],
        budget_url: str | None = None,
        transport_given: bool,
        clock: Clock,
        models: ModelNames,
        templates: dict[Any, ChatTemplate | None],
        owned: frozenset[str],
    ) -> None:
        self.store = store
        self.budget = budget
        self.budget_given = budget_given
        self.budget_url = budget_url
        """The Redis URL the budget was made from (``budget="redis://..."``), kept for siblings; None: not one."""
        self.transport = transport
        self.transport_given = transport_given
        self.clock = clock
        self.models = models
        self.templates = templates
        self.owned = owned

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        cache: SampleStore | str | None = None,
        budget: Budget | str | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
        parent: Services | None = None,
        changed: frozenset[str] = frozenset(),
    ) -> Services:
        """The services for ``settings``: those given, those of ``parent`` that ``changed`` leaves
        valid, and new defaults for the rest."""
        # A Redis URL makes a shared budget with this client's limits (a sibling keeps the URL).
        new_url = isinstance(budget, str)
        budget_url = _budget_url(budget) if isinstance(budget, str) else None
        if isinstance(budget, str):
            budget = None
        elif budget is None and parent is not None:
            budget_url = parent.budget_url
        _check_seams(cache, budget, transport, clock)
        the_clock = clock or (parent.clock if parent is not None else SYSTEM_CLOCK)
        owned: set[str] = set()

        def keep(inputs: tuple[str, ...], new: object, parent_given: bool) -> bool:
            return new is None and (parent_given or not changed.intersection(inputs))

        if parent is not None and keep(_STORE_INPUTS, cache, parent.store.given):
            store = parent.store
        else:
            store = _store_slot(cache, settings)
            owned.add("store")
        if parent is not None and parent.budget_given and budget is None and not new_url:
            limits = sorted(changed.intersection(_LIMITS))
            if limits:
                raise ConfigurationError(
                    f"{limits[0]} cannot change for a client given budget=: the budget sets the limits. "
                    "Pass with_options(budget=...) with another budget"
                )
        same_url = parent is not None and budget_url == parent.budget_url
        if parent is not None and same_url and keep(_BUDGET_INPUTS, budget, parent.budget_given) and (
            clock is None or parent.budget_given
        ):
            budgets, budget_given = parent.budget, parent.budget_given
        else:
            budgets, budget_given = _budgets(settings, budget, the_clock, budget_url), budget is not None
            owned.add("budget")
        if parent is not None and keep(_TRANSPORT_INPUTS, transport, parent.transport_given):
            transports, transport_given = parent.transport, parent.transport_given
        else:
            transports, transport_given = _transports(settings, transport), transport is not None
            owned.add("transport")
        return cls(
            store=store,
            budget=budgets,
            budget_given=budget_given,
            budget_url=budget_url,
            transport=transports,
            transport_given=transport_given,
            clock=the_clock,
            models=parent.models if parent is not None else ModelNames(),
            templates=parent.templates if parent is not None else {},
            owned=frozenset(owned),
        )

    async def aclose(self) -> None:
        """Close the parts this client owns."""
        if "transport" in self.owned:
            await self.transport.aclose()
        if "budget" in self.owned:
            await self.budget.aclose()
        if "store" in self.owned:
            await self.store.aclose()


def _store_slot(cache: SampleStore | str | None, settings: Settings) -> _StoreSlot:
    if isinstance(cache, str):
        from ._redis_store import RedisStore

        return _StoreSlot(RedisStore(cache), settings.cache_dir, check=False, owns=True)
    return _StoreSlot(cache, settings.cache_dir, check=settings.use_cache)


def _check_seams(cache: object, budget: object, transport: object, clock: object) -> None:
    if isinstance(cache, str):
        from ._redis_store import ALLOWED_URLS, is_redis_url, redact_url

        if not is_redis_url(cache):
            raise ValidationError(
                "cache",
                redact_url(cache),
                f"{ALLOWED_URLS}, a SampleStore, or None (a directory goes to cache_dir=)",
            )
        return _check_seams(None, budget, transport, clock)
    for name, value, kind in (
        ("cache", cache, SampleStore),
        ("budget", budget, Budget),
        ("transport", transport, Transport),
        ("clock", clock, Clock),
    ):
        if value is not None and not isinstance(value, kind):
            url = ", a Redis URL ('redis://host:port/db')" if name in ("cache", "budget") else ""
            raise InvalidTypeError(name, value, f"a {kind.__name__} (see fw_rollouts.{kind.__name__}){url}, or None")


def _budget_url(url: str) -> str:
    from ._redis_budget import parse_budget_url

    # A bad URL is an error naming budget now, before any request.
    parse_budget_url(url, also=", or a Budget object (see fw_rollouts.Budget)")
    return url


def _budgets(settings: Settings, budget: Budget | None, clock: Clock, url: str | None = None) -> LoopLocal[Budget]:
    def make() -> Budget:
        if budget is not None:
            return budget
        if url is not None:
            from ._redis_budget import RedisBudget

            return RedisBudget(
                url,
                max_concurrency=settings.max_concurrency,
                requests_per_minute=settings.requests_per_minute,
                tokens_per_minute=settings.tokens_per_minute,
                prompt_tokens_per_minute=settings.prompt_tokens_per_minute,
                generated_tokens_per_minute=settings.generated_tokens_per_minute,
            )
        return Limiter(
            max_concurrency=settings.max_concurrency,
            requests_per_minute=settings.requests_per_minute,
            tokens_per_minute=settings.tokens_per_minute,
            prompt_tokens_per_minute=settings.prompt_tokens_per_minute,
            generated_tokens_per_minute=settings.generated_tokens_per_minute,
            clock=clock,
        )

    async def close(value: Budget) -> None:
        if value is not budget:  # a given budget is its owner's to close
            await value.aclose()

    return LoopLocal(make, close)


def _transports(settings: Settings, transport: Transport | None) -> LoopLocal[Transport]:
    def make() -> Transport:
        if transport is not None:
            return transport
        return default_transport(
            base_url=settings.resolved_base_url,
            api_key=settings.require_api_key(),
            max_connections=settings.max_concurrency,
            connect_timeout=settings.connect_timeout,
            max_response_bytes=settings.max_response_bytes,
        )

    async def close(value: Transport) -> None:
        if value is not transport:
            await value.aclose()

    return LoopLocal(make, close)
