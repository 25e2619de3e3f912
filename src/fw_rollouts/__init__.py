"""fw_rollouts: sample many completions with full token log-probabilities from Fireworks.

>>> from fw_rollouts import Fireworks
>>> client = Fireworks(model="qwen-15b", logprobs=5, echo=True)   # doctest: +SKIP
>>> for response in client.generate("What is 2+2?", n_samples=5):   # doctest: +SKIP
...     response.get_generation_logprobs().token_logprobs
"""

from ._answers import extract_answer, extract_boxed, normalize_answer
from ._budget import Budget, Cost, Spent
from ._chunks import Chunk, first_chunk, prefix_before, prefix_through, split_reasoning
from ._client import AsyncFireworks, SampleStream
from ._clock import Clock, SystemClock
from ._compat import FireworksClient
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
from ._models import FwResponse, FwRollouts, Usage
from ._next_token import TokenDistribution
from ._options import DEFAULT_BASE_URL, DEFAULT_CACHE_DIR
from ._plots import plot_logprobs
from ._prompts import MODEL_ALIASES, resolve_model
from ._ratelimit import Limiter
from ._redact import install_log_filter as _install_log_filter
from ._scoring import BoundaryInsideToken, Score, score_span
from ._settings import Settings
from ._steps import StepImportance, StepResampling, StepResult, plot_importance
from ._store import DiskStore, SampleStore, StoreStats
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
from ._version import __version__

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
    "MissingLogprobsError",
    "NotFoundError",
    "OpenAITransport",
    "PriceTable",
    "Prices",
    "RateLimitError",
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


def _publish() -> None:
    # Public names report the package as their home, so reprs, docs and tracebacks read
    # `fw_rollouts.AsyncFireworks` rather than naming the private module that defines it, and
    # pickle finds them at that name. typing.get_type_hints looks a class's string annotations up
    # in sys.modules[cls.__module__], which would now be this namespace (no `Any`, no `Mapping`):
    # each annotation is resolved once here, in its own module with the public names in scope;
    # one that cannot be (a TYPE_CHECKING-only import) stays a string for this namespace to resolve.
    import contextlib
    import inspect
    import sys
    from types import FunctionType

    public = globals()
    for name in __all__:
        obj = public[name]
        if not isinstance(obj, (type, FunctionType)) or not obj.__module__.startswith(__name__ + "._"):
            continue
        if obj.__qualname__ != name:  # an alias: pickle could not find it under the package
            continue
        annotations = inspect.get_annotations(obj) if isinstance(obj, type) else {}
        if annotations:
            home = vars(sys.modules[obj.__module__])
            for field, annotation in annotations.items():
                if isinstance(annotation, str):
                    with contextlib.suppress(Exception):
                        annotations[field] = eval(annotation, home, public)
            obj.__annotations__ = annotations
        obj.__module__ = __name__


_publish()
del _publish

# Every SDK logger exists now (each module makes its own at import): each gets the key-scrubbing filter.
_install_log_filter()
del _install_log_filter
