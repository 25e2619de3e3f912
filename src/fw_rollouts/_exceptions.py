"""The one exception tree of fw_rollouts.

Every error the SDK raises on purpose derives from :class:`FwRolloutsError`::

    FwRolloutsError
    ├── ConfigurationError            bad client settings (no key, unusable base_url or cache_dir, no template)
    ├── ValidationError               a bad argument, raised before any request is sent
    │   └── InvalidTypeError          ... of the wrong type (also a TypeError)
    └── APIError                      the service could not give us a sample
        ├── APIConnectionError        no usable HTTP response (refused, reset, unreachable, cut short)
        │   └── APITimeoutError       no response within ``timeout``
        ├── APIStatusError            an HTTP error status, one class per family:
        │   ├── BadRequestError       400, 405, 413, 422 and other 4xx: the request is wrong
        │   ├── AuthenticationError   401, 403: the key is missing, wrong or not allowed
        │   ├── AccountError          402, 412: account suspended or out of credit
        │   ├── NotFoundError         404: model unknown or not deployed on this account
        │   ├── RateLimitError        429
        │   └── ServerError           5xx, and the transient 408 / 409 / 425
        └── ResponseError             a 2xx whose body we cannot use
            ├── MalformedResponseError    not JSON, cut short, or not a completions body
            └── MissingLogprobsError      logprobs were asked for but not returned

``ValidationError`` and ``ConfigurationError`` are also ``ValueError`` so that code
written against the peer ``rollouts`` package (which raised ``ValueError``) keeps working.

When a multi-sample ``generate`` fails, the raised error carries what did succeed:
``error.rollouts`` holds every finished sample (already cached) and ``error.errors``
maps each failed sample's seed to its own error.

Errors are values: each is built complete where it is raised and never changed after.
Where a later layer knows more (the retry layer the number of attempts, the client the
samples that did succeed), it raises a new instance of the same class with those fields
(:meth:`FwRolloutsError._evolve`), so an error seen by one sample is never altered under
another. Errors pickle (they cross process boundaries in worker pools).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._models import FwRollouts

E = TypeVar("E", bound="FwRolloutsError")

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AccountError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "FwRolloutsError",
    "InvalidTypeError",
    "MalformedResponseError",
    "MissingLogprobsError",
    "NotFoundError",
    "RateLimitError",
    "ResponseError",
    "ServerError",
    "ValidationError",
    "status_error_class",
]


class FwRolloutsError(Exception):
    """Root of every error fw_rollouts raises."""

    rollouts: FwRollouts | None = None
    """The samples of the failed ``generate`` call that did succeed (already cached), if any."""

    errors: Mapping[int, FwRolloutsError]
    """Seed -> error for each sample of the failed ``generate`` call that did not succeed."""

    results: list[Any] | None = None
    """For a failed study, every item's result in order: ``generate_many`` gives each item's
    :class:`FwRollouts`, complete or not (each one's ``errors`` names its failed seeds); ``score_many``
    each pair's :class:`Score`, or the error of a pair that failed. None otherwise."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self._message = message
        self.errors = {}

    @property
    def message(self) -> str:
        """The error's description (also ``args[0]``, so ``repr`` always agrees with it)."""
        return self._message

    def __str__(self) -> str:
        return self.message

    def _evolve(self, **changes: Any) -> Self:
        """A new error of the same class with ``changes`` to its attributes (``message`` included).

        The way later layers add what they know without altering an error already raised.
        """
        state = dict(self.__dict__)
        if "message" in changes:
            state["_message"] = changes.pop("message")
        unknown = set(changes) - set(state) - {"rollouts", "results"}
        if unknown:
            raise AttributeError(f"{type(self).__name__} has no field {sorted(unknown)[0]!r}")
        state.update(changes)
        return _restore(type(self), state)

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take keyword-only arguments that Exception's default pickling cannot pass back.
        return _restore, (type(self), dict(self.__dict__))


def _restore(cls: type[E], state: dict[str, Any]) -> E:
    error = cls.__new__(cls)
    Exception.__init__(error, state["_message"])
    error.__dict__.update(state)
    return error


class ConfigurationError(FwRolloutsError, ValueError):
    """The client is configured in a way that cannot work (missing key, bad base_url, no template)."""


class ValidationError(FwRolloutsError, ValueError):
    """An argument is out of range or malformed; raised before any request is sent.

    ``argument`` names the offending argument, ``value`` is what was given and
    ``allowed`` describes what would be accepted.
    """

    def __init__(self, argument: str, value: Any, allowed: str, *, message: str | None = None) -> None:
        self.argument = argument
        self.value = value
        self.allowed = allowed
        shown = _short_repr(value)
        super().__init__(message or f"invalid {argument}={shown}: {allowed}")

    def __reduce__(self) -> tuple[Any, ...]:
        # The bad value may be anything (a lambda, a lock, an open file): an error that cannot be pickled
        # reaches a process pool's parent as "terminated abruptly". Such a value crosses as its repr.
        state = dict(self.__dict__)
        try:
            pickle.dumps(self.value)
        except Exception:
            state["value"] = _short_repr(self.value, limit=200)
        return _restore, (type(self), state)


class InvalidTypeError(ValidationError, TypeError):
    """An argument has the wrong type."""


class APIError(FwRolloutsError):
    """The service did not give us a usable sample.

    ``attempts`` is how many requests were made for the sample before giving up.
    """

    def __init__(self, message: str, *, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts

    @property
    def retryable(self) -> bool:
        """Whether retrying the same request may succeed."""
        return True

    def __str__(self) -> str:
        if self.attempts > 1:
            return f"{self.message} (after {self.attempts} attempts)"
        return self.message


class APIConnectionError(APIError):
    """No usable HTTP response arrived: connection refused or reset, host unreachable, or a body cut short.

    ``connected`` is False when no connection to the server could be made at all (refused,
    unreachable, name not resolved, connect timeout): a call whose every attempt failed that
    way ends within seconds instead of retrying for minutes.
    """

    def __init__(self, message: str, *, attempts: int = 1, connected: bool = True) -> None:
        super().__init__(message, attempts=attempts)
        self.connected = connected


class APITimeoutError(APIConnectionError):
    """The service did not answer within the configured ``timeout``."""


class APIStatusError(APIError):
    """The service answered with an HTTP error status.

    ``status_code``, ``request_id`` (from ``x-request-id``), ``code``/``param``/``type``
    from the error body when present, ``body`` (the parsed body or its text),
    ``retry_after`` (seconds, from the ``Retry-After`` family of headers) and ``url``
    (the endpoint) are kept.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        request_id: str | None = None,
        body: object = None,
        code: str | None = None,
        param: str | None = None,
        error_type: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        url: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message, attempts=attempts)
        self.url = url
        self.status_code = status_code
        self.request_id = request_id
        self.body = body
        self.code = code
        self.param = param
        self.type = error_type
        self.retry_after = retry_after
        self.should_retry = should_retry

    @property
    def retryable(self) -> bool:
        """Whether retrying the same request may succeed (``x-should-retry`` wins when sent)."""
        if self.should_retry is not None:
            return self.should_retry
        return _status_retryable(self.status_code)

    def __str__(self) -> str:
        parts = [f"HTTP {self.status_code}: {self.message}"]
        if self.url and self.status_code in (404, 405):
            parts.append(f"POST {self.url}")  # a wrong base_url shows up here
        if self.request_id:
            parts.append(f"request id {self.request_id}")
        if self.attempts > 1:
            parts.append(f"after {self.attempts} attempts")
        return parts[0] if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"


class BadRequestError(APIStatusError):
    """400, 405, 413, 422 or another 4xx: the service rejected the request itself."""


class AuthenticationError(APIStatusError):
    """401 or 403: the API key is missing, wrong, or not allowed to use this model."""


class AccountError(APIStatusError):
    """402 or 412: the account is out of credit, over its spending limit or suspended."""


class NotFoundError(APIStatusError):
    """404: the model does not exist or is not deployed on this account (or a wrong base_url)."""


class RateLimitError(APIStatusError):
    """429: over the account's request or token rate limit."""


class ServerError(APIStatusError):
    """5xx, or the transient 408 (timeout), 409 (conflict) and 425 (weights loading)."""


class ResponseError(APIError):
    """A successful HTTP status whose body cannot be used."""


class MalformedResponseError(ResponseError):
    """The body is not JSON, was cut short, or lacks the fields of a completions response."""


class MissingLogprobsError(ResponseError):
    """Logprobs were asked for but the server returned none; the sample is not cached.

    Retried like any unusable body; a call stops at the first sample that still lacks
    them after its retries if no sample of the call had them (the server does not
    support logprobs).
    """


_TRANSIENT_4XX = frozenset({408, 409, 425, 429})


def _status_retryable(status: int) -> bool:
    return status in _TRANSIENT_4XX or status >= 500


def status_error_class(status: int) -> type[APIStatusError]:
    """The exception class for an HTTP error status (one per status family)."""
    if status == 429:
        return RateLimitError
    if status >= 500 or status in _TRANSIENT_4XX:
        return ServerError
    if status in (401, 403):
        return AuthenticationError
    if status in (402, 412):
        return AccountError
    if status == 404:
        return NotFoundError
    return BadRequestError


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
