"""fw_rollouts: sample many completions with full token log-probabilities from Fireworks.

>>> from fw_rollouts import Fireworks
>>> client = Fireworks(model="qwen-15b", logprobs=5, echo=True)   # doctest: +SKIP
>>> for response in client.generate("What is 2+2?", n_samples=5):   # doctest: +SKIP
...     response.get_generation_logprobs().token_logprobs
"""

from ._client import AsyncFireworks
from ._compat import FireworksClient
from ._config import DEFAULT_BASE_URL, DEFAULT_CACHE_DIR, Settings
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
from ._logprobs import Logprobs, TokenLogprob
from ._models import FwResponse, FwRollouts, Usage
from ._prompts import MODEL_ALIASES, resolve_model
from ._sync import Fireworks
from ._templates import (
    ChatTemplate,
    DeepSeekR1DistillTemplate,
    HarmonyTemplate,
    JinjaTemplate,
    Llama31Template,
)
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
    "ChatTemplate",
    "ConfigurationError",
    "DeepSeekR1DistillTemplate",
    "Fireworks",
    "FireworksClient",
    "FwResponse",
    "FwRollouts",
    "FwRolloutsError",
    "HarmonyTemplate",
    "InvalidTypeError",
    "JinjaTemplate",
    "Llama31Template",
    "Logprobs",
    "MalformedResponseError",
    "MissingLogprobsError",
    "NotFoundError",
    "RateLimitError",
    "ResponseError",
    "ServerError",
    "Settings",
    "TokenLogprob",
    "Usage",
    "ValidationError",
    "__version__",
    "resolve_model",
]
