"""fw_rollouts: sample many completions with full token log-probabilities from Fireworks.

>>> from fw_rollouts import Fireworks
>>> client = Fireworks(model="qwen-15b", logprobs=5, echo=True)   # doctest: +SKIP
>>> for response in client.generate("What is 2+2?", n_samples=5):   # doctest: +SKIP
...     response.get_generation_logprobs().token_logprobs

Importing the package is cheap: each public name's module is imported when the name is first asked for
(``fw_rollouts.Fireworks``, ``from fw_rollouts import Fireworks``; PEP 562), and the HTTP libraries when the
first request is sent. The errors are imported at once, so that every error names the package wherever it
is raised. Type checkers and editors read the imports in the ``TYPE_CHECKING`` block, which ``_LAZY`` holds
as data; ``tests/test_lazy_import.py`` keeps the two and ``__all__`` in step.
"""

import importlib as _importlib
import sys as _sys
import threading as _threading
import typing as _typing

from . import _exceptions
from ._exceptions import (
    AccountError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    FwRolloutsError,
    InvalidTypeError,
    MalformedResponseError,
    MissingLogprobsError,
    NotFoundError,
    RateLimitError,
    ResponseError,
    ServerError,
    ValidationError,
)
from ._redact import install_log_filter as _install_log_filter
from ._version import __version__

if _typing.TYPE_CHECKING:
    from ._answers import extract_answer, extract_boxed, normalize_answer
    from ._budget import Budget, Cost, Spent
    from ._chunks import Chunk, first_chunk, prefix_before, prefix_through, split_reasoning
    from ._client import AsyncFireworks, SampleStream
    from ._clock import Clock, SystemClock
    from ._compat import FireworksClient
    from ._forks import Fork, ForkPoint, fork_points, fork_prompt, fork_prompt_ids
    from ._frames import to_pandas
    from ._importance import (
        accuracy,
        answer_distribution,
        counterfactual_importance,
        different_trajectories_fraction,
        embedding_similarity,
        forced_answer_importance,
        kl_divergence,
        lexical_similarity,
        overdeterminedness,
        resampling_importance,
    )
    from ._logprobs import Logprobs, TokenLogprob
    from ._merge import MergedCache, MergedStudy, merge_caches, merge_studies
    from ._models import FwResponse, FwRollouts, Usage
    from ._next_token import TokenDistribution
    from ._options import DEFAULT_BASE_URL, DEFAULT_CACHE_DIR
    from ._plots import plot_logprobs
    from ._prompts import MODEL_ALIASES, resolve_model
    from ._ratelimit import Limiter
    from ._redis_budget import RedisBudget
    from ._redis_store import RedisStore
    from ._scoring import BoundaryInsideToken, Score, score_span
    from ._settings import Settings
    from ._steps import StepImportance, StepResampling, StepResult, plot_importance
    from ._store import ClaimingStore, DiskStore, SampleStore, StoreStats
    from ._study import StudyItem
    from ._study_file import load_study
    from ._sync import Fireworks
    from ._templates import (
        ChatTemplate,
        DeepSeekR1DistillTemplate,
        HarmonyTemplate,
        JinjaTemplate,
        Llama31Template,
    )
    from ._transport import HTTPTransport, OpenAITransport, Reply, Transport
    from ._uncertainty import semantic_entropy
    from ._usage import Budgets, Prices, PriceTable, StudyEstimate, UsageTotals
    from ._verify import LogprobsCheck, LogprobsReport

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CACHE_DIR",
    "MODEL_ALIASES",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AccountError",
    "AsyncFireworks",
    "AuthenticationError",
    "BadRequestError",
    "BoundaryInsideToken",
    "Budget",
    "Budgets",
    "ChatTemplate",
    "Chunk",
    "ClaimingStore",
    "Clock",
    "ConfigurationError",
    "Cost",
    "DeepSeekR1DistillTemplate",
    "DiskStore",
    "Fireworks",
    "FireworksClient",
    "Fork",
    "ForkPoint",
    "FwResponse",
    "FwRollouts",
    "FwRolloutsError",
    "HTTPTransport",
    "HarmonyTemplate",
    "InvalidTypeError",
    "JinjaTemplate",
    "Limiter",
    "Llama31Template",
    "Logprobs",
    "LogprobsCheck",
    "LogprobsReport",
    "MalformedResponseError",
    "MergedCache",
    "MergedStudy",
    "MissingLogprobsError",
    "NotFoundError",
    "OpenAITransport",
    "PriceTable",
    "Prices",
    "RateLimitError",
    "RedisBudget",
    "RedisStore",
    "Reply",
    "ResponseError",
    "SampleStore",
    "SampleStream",
    "Score",
    "ServerError",
    "Settings",
    "Spent",
    "StepImportance",
    "StepResampling",
    "StepResult",
    "StoreStats",
    "StudyEstimate",
    "StudyItem",
    "SystemClock",
    "TokenDistribution",
    "TokenLogprob",
    "Transport",
    "Usage",
    "UsageTotals",
    "ValidationError",
    "__version__",
    "accuracy",
    "answer_distribution",
    "counterfactual_importance",
    "different_trajectories_fraction",
    "embedding_similarity",
    "extract_answer",
    "extract_boxed",
    "first_chunk",
    "forced_answer_importance",
    "fork_points",
    "fork_prompt",
    "fork_prompt_ids",
    "kl_divergence",
    "lexical_similarity",
    "load_study",
    "merge_caches",
    "merge_studies",
    "normalize_answer",
    "overdeterminedness",
    "plot_importance",
    "plot_logprobs",
    "prefix_before",
    "prefix_through",
    "resampling_importance",
    "resolve_model",
    "score_span",
    "semantic_entropy",
    "split_reasoning",
    "to_pandas",
]

_LAZY: dict[str, tuple[str, ...]] = {
    "_answers": ("extract_answer", "extract_boxed", "normalize_answer"),
    "_budget": ("Budget", "Cost", "Spent"),
    "_chunks": ("Chunk", "first_chunk", "prefix_before", "prefix_through", "split_reasoning"),
    "_client": ("AsyncFireworks", "SampleStream"),
    "_clock": ("Clock", "SystemClock"),
    "_compat": ("FireworksClient",),
    "_forks": ("Fork", "ForkPoint", "fork_points", "fork_prompt", "fork_prompt_ids"),
    "_frames": ("to_pandas",),
    "_importance": (
        "accuracy", "answer_distribution", "counterfactual_importance", "different_trajectories_fraction",
        "embedding_similarity", "forced_answer_importance", "kl_divergence", "lexical_similarity",
        "overdeterminedness", "resampling_importance",
    ),
    "_logprobs": ("Logprobs", "TokenLogprob"),
    "_merge": ("MergedCache", "MergedStudy", "merge_caches", "merge_studies"),
    "_models": ("FwResponse", "FwRollouts", "Usage"),
    "_next_token": ("TokenDistribution",),
    "_options": ("DEFAULT_BASE_URL", "DEFAULT_CACHE_DIR"),
    "_plots": ("plot_logprobs",),
    "_prompts": ("MODEL_ALIASES", "resolve_model"),
    "_ratelimit": ("Limiter",),
    "_redis_budget": ("RedisBudget",),
    "_redis_store": ("RedisStore",),
    "_scoring": ("BoundaryInsideToken", "Score", "score_span"),
    "_settings": ("Settings",),
    "_steps": ("StepImportance", "StepResampling", "StepResult", "plot_importance"),
    "_store": ("ClaimingStore", "DiskStore", "SampleStore", "StoreStats"),
    "_study": ("StudyItem",),
    "_study_file": ("load_study",),
    "_sync": ("Fireworks",),
    "_templates": ("ChatTemplate", "DeepSeekR1DistillTemplate", "HarmonyTemplate", "JinjaTemplate", "Llama31Template"),
    "_transport": ("HTTPTransport", "OpenAITransport", "Reply", "Transport"),
    "_uncertainty": ("semantic_entropy",),
    "_usage": ("Budgets", "Prices", "PriceTable", "StudyEstimate", "UsageTotals"),
    "_verify": ("LogprobsCheck", "LogprobsReport"),
}  # fmt: skip
"""Module -> the public names it defines that are imported when first asked for (the imports above, as data)."""


def _publish(module: str) -> None:
    # Public names report the package as their home, so reprs, docs and tracebacks read
    # `fw_rollouts.AsyncFireworks` rather than naming the private module that defines it, and
    # pickle finds them at that name. typing.get_type_hints looks a class's string annotations up
    # in sys.modules[cls.__module__], which would now be this namespace (which holds only the names
    # loaded so far, and no `Any`, no `Mapping`): each annotation is resolved once here, in its own
    # module with the public names in scope (a name not loaded yet is imported for it); one that
    # cannot be (a TYPE_CHECKING-only import) stays a string for this namespace to resolve.
    import contextlib
    import inspect
    from types import FunctionType

    home = _sys.modules[f"{__name__}.{module}"]
    public = globals()
    for name in _LAZY.get(module, ()) or _EAGER[module]:
        obj = getattr(home, name)
        public[name] = obj
        if not isinstance(obj, (type, FunctionType)) or not obj.__module__.startswith(__name__ + "._"):
            continue
        if obj.__qualname__ != name:  # an alias: pickle could not find it under the package
            continue
        annotations = inspect.get_annotations(obj) if isinstance(obj, type) else {}
        if annotations:
            for field, annotation in annotations.items():
                if isinstance(annotation, str):
                    with contextlib.suppress(Exception):
                        annotations[field] = eval(annotation, vars(home), _PublicNames())
            obj.__annotations__ = annotations
        obj.__module__ = __name__


class _PublicNames(dict[str, object]):
    """The package's public names for resolving an annotation, each imported when the annotation names it."""

    def __missing__(self, name: str) -> object:
        public = globals()
        if name in public and not name.startswith("_"):
            return public[name]
        if name not in _HOMES:
            raise KeyError(name)
        return getattr(_importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


def _publish_loaded() -> None:
    """Publish the names of every module of the table that has been imported, whoever imported it.

    Run after every import the package makes for a name, so a class is published before its first
    instance is handed out: a client's module imports those of the results and errors it returns.
    A module still being imported (a cycle) is left for the next run.
    """
    with _publishing:  # another thread's first use waits for the names it needs, rather than skip them
        published = True
        while published:  # resolving an annotation may have imported another module
            published = False
            for module in (*_EAGER, *_LAZY):
                if module in _published:
                    continue
                home = _sys.modules.get(f"{__name__}.{module}")
                names = _LAZY.get(module, ()) or _EAGER[module]
                if home is None or not all(hasattr(home, name) for name in names):
                    continue
                _publish(module)
                _published.add(module)
                published = True
        _install_log_filter()


def _attribute(name: str) -> object:
    """``fw_rollouts.<name>``: its module imported and published on first use (PEP 562 ``__getattr__``)."""
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    home = _importlib.import_module(f"{__name__}.{module}")
    _publish_loaded()
    try:
        return globals()[name]
    except KeyError:  # asked for while its module is still being imported (a cycle): as plain Python would
        return getattr(home, name)


def _names() -> list[str]:
    """``dir(fw_rollouts)``: what is loaded and every public name, loaded or not."""
    return sorted({*globals(), *_HOMES})


if not _typing.TYPE_CHECKING:  # type checkers read the imports above, and flag a name that is not there
    __getattr__ = _attribute
    __dir__ = _names

_HOMES: dict[str, str] = {name: module for module, names in _LAZY.items() for name in names}
_EAGER: dict[str, tuple[str, ...]] = {
    "_exceptions": tuple(name for name in __all__ if name not in _HOMES and hasattr(_exceptions, name)),
    "_version": ("__version__",),
}
"""Module -> the public names imported with the package: the errors (``tests/test_lazy_import.py`` checks that
these and ``_LAZY`` make up ``__all__``)."""
_published: set[str] = set()
_publishing = _threading.RLock()

# The errors are loaded: published now (with what their annotations name), and the key-scrubbing
# filter put on every SDK logger before any SDK code can log (each later import adds any new one).
_publish_loaded()
