"""``FireworksClient``: a drop-in for the ``rollouts`` package's ``RolloutsClient``.

It takes every ``RolloutsClient`` constructor argument (plus ``logprobs`` and ``echo``,
as the peer's unreleased Fireworks variant did) and has ``generate`` (sync) and
``agenerate`` (async). Arguments that mean nothing on Fireworks warn or raise; none is
silently ignored.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

from ._client import AsyncFireworks, Prompt
from ._exceptions import ConfigurationError
from ._models import FwRollouts
from ._options import CLIENT_OPTIONS, check_known
from ._runner import get_runner
from ._services import SEAMS
from ._sync import refuse_own_loop_server

__all__ = ["FireworksClient"]

# Per-call arguments of RolloutsClient.agenerate where None means "use the client's value".
_NONE_MEANS_DEFAULT = (
    "temperature",
    "top_p",
    "max_tokens",
    "top_k",
    "presence_penalty",
    "frequency_penalty",
    "progress_bar",
)

# OpenRouter-only sampling options that Fireworks does not have.
_UNSUPPORTED = {"top_a": "top_a is an OpenRouter sampler; Fireworks has no equivalent (try min_p or top_k)"}


def _use_cache(value: bool | str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("json", "sql"):
        return True  # the storage differs (diskcache), the meaning does not: samples are cached
    raise ConfigurationError(f"invalid use_cache={value!r}: must be True, False, 'json' or 'sql'")


class FireworksClient:
    """Drop-in replacement for ``rollouts.RolloutsClient`` that samples from Fireworks with logprobs.

    Defaults follow the peer's Fireworks variant (``top_k=40``, ``logprobs=5``,
    ``echo=True``, ``cache_dir=".fw_rollouts"``). OpenRouter-only arguments: ``provider``
    warns and is ignored (there is no routing on Fireworks); ``reasoning={"effort": ...}``
    sets gpt-oss's reasoning effort and warns for other models; ``reasoning={"max_tokens": ...}``
    and ``include_reasoning=False`` warn (reasoning is always part of the generated text:
    read ``response.content`` for the answer alone); ``top_a`` raises. ``verbose=True``
    turns on DEBUG logging for the ``fw_rollouts`` logger.
    """

    def __init__(
        self,
        model: str,
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_tokens: int = 4096,
        top_k: int | None = 40,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        provider: Mapping[str, Any] | None = None,
        reasoning: Mapping[str, Any] | None = None,
        include_reasoning: bool | None = None,
        api_key: str | None = None,
        max_retries: int = 100,
        timeout: int | float = 300,
        verbose: bool = False,
        use_cache: bool | str = "json",
        cache_dir: str = ".fw_rollouts",
        requests_per_minute: int | None = None,
        progress_bar: bool = True,
        logprobs: int | None = 5,
        echo: bool = True,
        **kwargs: Any,
    ) -> None:
        for name, why in _UNSUPPORTED.items():
            if kwargs.get(name) is not None:
                raise ConfigurationError(f"{name}={kwargs[name]!r} is not supported: {why}")
            kwargs.pop(name, None)
        if provider is not None:
            warnings.warn(
                f"provider={provider!r} is OpenRouter routing and is ignored: Fireworks serves the model itself",
                UserWarning,
                stacklevel=2,
            )
        check_known(kwargs, extra=SEAMS)
        template_kwargs = dict(kwargs.pop("chat_template_kwargs", None) or {})
        if reasoning:
            template_kwargs.update(self._reasoning_options(model, reasoning))
        if include_reasoning is False:
            warnings.warn(
                "include_reasoning=False has no effect: the reasoning is part of the generated text; "
                "use response.content for the answer without it",
                UserWarning,
                stacklevel=2,
            )
        if verbose:
            logger = logging.getLogger("fw_rollouts")
            logger.setLevel(logging.DEBUG)
            if not logger.handlers:
                logger.addHandler(logging.StreamHandler())
        self.model = model
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.top_k = top_k
        self.presence_penalty = presence_penalty
        self.frequency_penalty = frequency_penalty
        self.provider = provider
        self.reasoning = reasoning
        self.include_reasoning = include_reasoning
        self.max_retries = max_retries
        self.timeout = timeout
        self.verbose = verbose
        self.use_cache = use_cache
        self.cache_dir = cache_dir
        self.requests_per_minute = requests_per_minute
        self.progress_bar = progress_bar
        self.logprobs = logprobs
        self.echo = echo
        self._client = AsyncFireworks(
            model,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            top_k=top_k,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            api_key=api_key,
            max_retries=max_retries,
            timeout=timeout,
            use_cache=_use_cache(use_cache),
            cache_dir=cache_dir,
            requests_per_minute=requests_per_minute,
            progress_bar=progress_bar,
            logprobs=logprobs,
            echo=echo,
            chat_template_kwargs=template_kwargs or None,
            **kwargs,
        )
        # RolloutsClient takes every option per call, api_key included: a call that changes the
        # client's own configuration runs on a sibling client (made once per distinct change).
        self._siblings: dict[tuple[tuple[str, Any], ...], AsyncFireworks] = {}

    @staticmethod
    def _reasoning_options(model: str, reasoning: Mapping[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {}
        for key, value in reasoning.items():
            if key == "effort" and "gpt-oss" in model:
                options["reasoning_effort"] = value
            else:
                warnings.warn(
                    f"reasoning[{key!r}]={value!r} has no effect on Fireworks completions for {model!r}"
                    + ("; only gpt-oss models take an effort" if key == "effort" else ""),
                    UserWarning,
                    stacklevel=3,
                )
        return options

    def _overrides(self, n_samples: int | None, kwargs: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for name in _NONE_MEANS_DEFAULT:
            if name in kwargs and kwargs[name] is None:
                del kwargs[name]
        for name, why in _UNSUPPORTED.items():
            if kwargs.get(name) is not None:
                raise ConfigurationError(f"{name}={kwargs[name]!r} is not supported: {why}")
            kwargs.pop(name, None)
        if "use_cache" in kwargs:
            kwargs["use_cache"] = _use_cache(kwargs["use_cache"])
        return (1 if n_samples is None else n_samples), kwargs

    def _client_for(self, kwargs: dict[str, Any]) -> AsyncFireworks:
        """The client to run a call on: ours, or a sibling for the client options the call changes."""
        changes = {name: kwargs.pop(name) for name in list(kwargs) if name in CLIENT_OPTIONS}
        if not changes:
            return self._client
        try:
            key = tuple(sorted(changes.items()))
            hash(key)
        except TypeError:
            key = tuple(sorted((name, repr(value)) for name, value in changes.items()))
        sibling = self._siblings.get(key)
        if sibling is None:
            sibling = self._siblings[key] = self._client.with_options(**changes)
        return sibling

    async def agenerate(
        self,
        prompt: Prompt,
        n_samples: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        top_k: int | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        seed: int | None = None,
        progress_bar: bool | None = None,
        **kwargs: Any,
    ) -> FwRollouts:
        """Generate ``n_samples`` responses asynchronously (sample ``i`` uses seed ``seed + i``)."""
        n, overrides = self._overrides(
            n_samples,
            dict(
                kwargs,
                temperature=temperature,
                top_p=top_p,
                max_tokens=max_tokens,
                top_k=top_k,
                presence_penalty=presence_penalty,
                frequency_penalty=frequency_penalty,
                progress_bar=progress_bar,
            ),
        )
        client = self._client_for(overrides)
        return await client.generate(prompt, n, seed=seed, **overrides)

    def generate(
        self, prompt: Prompt, n_samples: int | None = None, progress_bar: bool | None = None, **kwargs: Any
    ) -> FwRollouts:
        """Generate ``n_samples`` responses synchronously (works inside Jupyter too)."""
        refuse_own_loop_server(self._client)
        return get_runner().run(self.agenerate(prompt, n_samples, progress_bar=progress_bar, **kwargs))

    async def aclose(self) -> None:
        """Close connections and the cache (async)."""
        siblings = list(self._siblings.values())
        self._siblings.clear()
        for sibling in siblings:
            await sibling.aclose()
        await self._client.aclose()

    def close(self) -> None:
        """Close connections and the cache."""
        get_runner().run(self.aclose())

    def __repr__(self) -> str:
        return f"FireworksClient(model='{self.model}', temperature={self.temperature})"

