"""The synchronous facade: :class:`Fireworks`, the async core run on a private loop thread."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, overload

from ._client import AsyncFireworks
from ._exceptions import ConfigurationError
from ._models import FwResponse
from ._runner import get_runner
from ._settings import Settings
from ._templates import ChatTemplate
from ._usage import UsageTotals

if TYPE_CHECKING:
    from ._exceptions import FwRolloutsError
    from ._scoring import Score

__all__ = ["Fireworks"]

P = ParamSpec("P")
S = TypeVar("S")
T = TypeVar("T")


def same_options_as(
    source: Callable[Concatenate[Any, P], None],
) -> Callable[[Callable[Concatenate[S, ...], None]], Callable[Concatenate[S, P], None]]:
    """Give a constructor ``source``'s signature, for type checkers and for ``help()``."""

    def apply(init: Callable[Concatenate[S, ...], None]) -> Callable[Concatenate[S, P], None]:
        init.__signature__ = inspect.signature(source)  # type: ignore[attr-defined]
        init.__doc__ = init.__doc__ or source.__doc__
        return init

    return apply


def refuse_own_loop_server(client: AsyncFireworks) -> None:
    """Raise :class:`ConfigurationError` when this thread's running event loop serves the simulator ``client``
    would send to (started there with ``await sim.astart()``): blocking the thread for the answer would stop
    the loop, so the answer could never come, and the call would wait until its timeout.

    Only the project's simulator is recognised (asyncio has no public way to list the servers a loop runs).
    The testing package is consulted only if something imported it.
    """
    server = sys.modules.get("fw_rollouts.testing._server")
    if server is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    url = client.settings.resolved_base_url
    sim = server.simulator_on_loop(loop, url)
    if sim is not None:
        raise ConfigurationError(
            f"the sync client was called on the event loop that runs the simulator at {url} (started with "
            "`await sim.astart()`): waiting here for its answer would block that loop, so it could never answer. "
            "Run the simulator on its own thread (`sim.start()`, or `with FireworksSimulator() as sim:`), or use "
            "AsyncFireworks and `await` the call"
        )


def blocking(
    method: Callable[Concatenate[AsyncFireworks, P], Coroutine[Any, Any, T]], *, sends: bool = True
) -> Callable[Concatenate[Fireworks, P], T]:
    """The sync twin of an ``AsyncFireworks`` method: the same signature, run on the private loop.

    One line per method in :class:`Fireworks`, so the twins cannot drift apart. A method that ``sends``
    requests first checks that it would not wait for a server it blocks (:func:`refuse_own_loop_server`).
    """
    name = method.__name__

    def call(self: Fireworks, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if sends:
            refuse_own_loop_server(self._async)
        return get_runner().run(method(self._async, *args, **kwargs))

    call.__name__ = call.__qualname__ = name
    call.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    call.__doc__ = f"Blocking :meth:`AsyncFireworks.{name}`.\n\n{inspect.cleandoc(method.__doc__ or '')}"
    return call


class Fireworks:
    """Synchronous twin of :class:`AsyncFireworks`, with the same constructor options.

    Each call runs the async core on a private event loop in a background thread, so it
    works in scripts, in Jupyter (where a loop is already running) and from several
    threads at once. Ctrl-C stops in-flight requests. Use ``with Fireworks(...) as
    client:`` or call :meth:`close`.

    The loop thread is looked up on every call, never kept: a client made before
    ``os.fork()`` (``multiprocessing`` with the fork start method, ``Pool``,
    ``ProcessPoolExecutor``) runs in the child on the child's own loop thread, since the
    parent's does not exist there.
    """

    @same_options_as(AsyncFireworks.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._async = AsyncFireworks(*args, **kwargs)

    @classmethod
    def _wrap(cls, core: AsyncFireworks) -> Fireworks:
        client = cls.__new__(cls)
        client._async = core
        return client

    @property
    def settings(self) -> Settings:
        """The client's validated settings (the defaults of every call)."""
        return self._async.settings

    @property
    def model(self) -> str:
        """The resolved model id."""
        return self._async.model

    def with_options(self, **options: Any) -> Fireworks:
        """:meth:`AsyncFireworks.with_options`: a sibling client with ``options`` changed."""
        return Fireworks._wrap(self._async.with_options(**options))

    def render(self, prompt: Any, /, *, raw: bool | None = None, **options: Any) -> str:
        """:meth:`AsyncFireworks.render`: the exact prompt string a call would send."""
        return self._async.render(prompt, raw=raw, **options)

    def template_for(self, *, raw: bool | None = None, **options: Any) -> ChatTemplate | None:
        """:meth:`AsyncFireworks.template_for`: the chat template a call would render with."""
        return self._async.template_for(raw=raw, **options)

    def shard_indices(
        self,
        items: Sequence[Any],
        /,
        n_samples: int = 1,
        *,
        shard: tuple[int, int],
        seed: int | None = None,
        raw: bool | None = None,
        **sampling: Any,
    ) -> list[int]:
        """:meth:`AsyncFireworks.shard_indices`: which items ``generate_many(..., shard=(i, N))`` runs."""
        return self._async.shard_indices(items, n_samples, shard=shard, seed=seed, raw=raw, **sampling)

    generate = blocking(AsyncFireworks.generate)
    generate_many = blocking(AsyncFireworks.generate_many)
    estimate = blocking(AsyncFireworks.estimate, sends=False)
    resample_steps = blocking(AsyncFireworks.resample_steps)
    next_token_distribution = blocking(AsyncFireworks.next_token_distribution)
    next_token_distributions = blocking(AsyncFireworks.next_token_distributions)
    forced_answer_distribution = blocking(AsyncFireworks.forced_answer_distribution)
    forced_answer_distributions = blocking(AsyncFireworks.forced_answer_distributions)
    fork = blocking(AsyncFireworks.fork)
    forks = blocking(AsyncFireworks.forks)
    verify_logprobs = blocking(AsyncFireworks.verify_logprobs)
    score = blocking(AsyncFireworks.score)
    if TYPE_CHECKING:
        # A ParamSpec takes an overloaded method's first overload only: both are spelled out for type checkers.
        @overload
        def score_many(
            self,
            pairs: Sequence[Any],
            /,
            *,
            raw: bool | None = ...,
            use_cache: bool | None = ...,
            progress_bar: bool | None = ...,
            on_error: Literal["raise"] = ...,
            max_tokens: int | None = ...,
            **options: Any,
        ) -> list[Score]: ...

        @overload
        def score_many(
            self,
            pairs: Sequence[Any],
            /,
            *,
            raw: bool | None = ...,
            use_cache: bool | None = ...,
            progress_bar: bool | None = ...,
            on_error: Literal["return"],
            max_tokens: int | None = ...,
            **options: Any,
        ) -> list[Score | FwRolloutsError]: ...

        def score_many(self, pairs: Sequence[Any], /, **kwargs: Any) -> list[Any]:
            """Blocking :meth:`AsyncFireworks.score_many`."""
            ...

    else:
        score_many = blocking(AsyncFireworks.score_many)

    @property
    def usage(self) -> UsageTotals:
        """:attr:`AsyncFireworks.usage`: running totals of every call this client made."""
        return self._async.usage

    def cost(self, prices: Any) -> float:
        """:meth:`AsyncFireworks.cost`: dollars of :attr:`usage` at ``prices``."""
        return self._async.cost(prices)

    def iter_generate(self, /, prompt_or_items: Any, n_samples: int = 1, **kwargs: Any) -> Iterator[FwResponse]:
        """Blocking :meth:`AsyncFireworks.iter_generate`: a plain iterator over each sample as it finishes.

        Breaking out of the loop (or closing the iterator) stops the requests in flight; what
        finished is cached. Samples cross from the loop thread in batches of whatever is ready.
        """
        refuse_own_loop_server(self._async)
        stream = self._async.iter_generate(prompt_or_items, n_samples, **kwargs)
        runner = get_runner()
        try:
            while True:
                batch = runner.run(stream.next_ready(256))
                if not batch:
                    return
                yield from batch
        finally:
            runner.run(stream.aclose())

    def close(self) -> None:
        """Close connections and the cache."""
        get_runner().run(self._async.aclose())

    def __enter__(self) -> Fireworks:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncFireworks(", "Fireworks(", 1)
