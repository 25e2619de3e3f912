"""The transport: the only module that builds the HTTP/openai client and touches the wire.

:class:`Transport` is the seam: anything with ``post_completions(body, timeout=...)`` and
``aclose()`` can be passed to a client as ``transport=``. :class:`HTTPTransport`, the
default, is an ``openai.AsyncOpenAI`` client (with its own retries off: the retry policy is
the only retry layer) on its aiohttp-backed HTTP client, which supplies the URL, headers and
connection pool; the reply bytes are parsed by us, never into pydantic models.
:class:`OpenAITransport` sends every request through ``AsyncOpenAI.post`` instead.

Every failure leaves this module as an exception of our own tree, built complete: the
status, request id, the service's message and any Retry-After the server sent, with the
API key redacted from every field before the error exists.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import math
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import aiohttp
import httpx2
import openai
from multidict import CIMultiDict
from yarl import URL

from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    status_error_class,
)

__all__ = [
    "HTTPTransport",
    "OpenAITransport",
    "Reply",
    "Transport",
    "default_transport",
    "error_from_response",
    "parse_retry_after",
    "redactor",
]

COMPLETIONS_PATH = "/completions"
CONNECT_TIMEOUT = 10.0
"""Seconds to establish a connection (within ``timeout``): an unreachable host fails fast, not at ``timeout``."""
REDACTED = "[REDACTED]"


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful HTTP reply: the raw body and what we need from the headers."""

    content: bytes
    request_id: str | None
    headers: Mapping[str, str]


@runtime_checkable
class Transport(Protocol):
    """Posts completions requests. Pass one as ``transport=`` to a client to replace the HTTP layer.

    ``post_completions`` sends one JSON body and returns the :class:`Reply`, or raises one of
    the SDK's :class:`~fw_rollouts.APIError` subclasses (a transport that raises anything else
    ends the call: it is a bug, not a transient failure). A transport is used on the event loop
    of the client's first call.
    """

    @property
    def url(self) -> str:
        """The endpoint, for error messages."""
        ...

    async def post_completions(self, body: bytes, *, timeout: float) -> Reply:
        """POST ``body`` to the completions endpoint; the exchange must finish within ``timeout`` seconds."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def redactor(secret: str | None) -> Callable[[Any], Any]:
    """A function that replaces ``secret`` in a string, or in every string inside JSON-like data."""

    def redact(value: Any) -> Any:
        if not secret:
            return value
        if isinstance(value, str):
            return value.replace(secret, REDACTED) if secret in value else value
        if isinstance(value, Mapping):
            return {redact(k): redact(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [redact(item) for item in value]
        return value

    return redact


def parse_retry_after(headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asks us to wait, from ``retry-after-ms``, or ``Retry-After`` as
    seconds or an HTTP date; None when absent or unreadable. Never negative."""
    lowered = {k.lower(): v for k, v in headers.items()} if not isinstance(headers, httpx2.Headers) else headers
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = lowered.get(name)
        if value is None:
            continue
        try:
            seconds = float(value.strip()) / scale
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    value = lowered.get("retry-after")
    if value:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:
            return None
        return max(0.0, when.timestamp() - now())
    return None


def _should_retry_header(headers: Mapping[str, str]) -> bool | None:
    value = headers.get("x-should-retry")
    if value is None:
        return None
    value = value.strip().lower()
    return True if value == "true" else False if value == "false" else None


def _request_id(headers: Mapping[str, str], body: Any = None) -> str | None:
    for name in ("x-request-id", "x-fireworks-request-id"):
        if headers.get(name):
            return headers[name]
    if isinstance(body, Mapping) and isinstance(body.get("request_id"), str):
        return str(body["request_id"])
    return None


def _error_message(body: Any, status: int) -> tuple[str, str | None, str | None, str | None]:
    """(message, code, param, type) from any of the error body shapes seen in the wild."""
    if isinstance(body, Mapping):
        if "detail" in body and "error" not in body:
            detail = body["detail"]
            if isinstance(detail, list):
                parts = []
                for item in detail:
                    if isinstance(item, Mapping):
                        loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                        parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
                    else:
                        parts.append(str(item))
                return "; ".join(parts) or f"HTTP {status}", None, None, None
            return str(detail), None, None, None
        err = body.get("error")
        if err is None:  # a flat body, or {"error": null, "message": ...}
            err = body
        if isinstance(err, Mapping):
            message = err.get("message")
            return (
                str(message) if message else json.dumps(err)[:500],
                _opt_str(err.get("code")),
                _opt_str(err.get("param")),
                _opt_str(err.get("type")),
            )
        # {"error": "Too Many Requests", "message": "..."}: the string is a title, the message the detail.
        message = body.get("message")
        title = str(err)
        return (f"{title}: {message}" if message else title), None, None, None
    if body is not None and not isinstance(body, str):  # a JSON list, number or boolean
        body = json.dumps(body, ensure_ascii=False)
    if isinstance(body, str) and body.strip():
        text = " ".join(body.split())
        return (text[:300] + "...") if len(text) > 300 else text, None, None, None
    return f"HTTP {status} with an empty body", None, None, None


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    content: bytes | str | None,
    *,
    url: str | None = None,
    now: Callable[[], float] = time.time,
    redact: Callable[[Any], Any] | None = None,
) -> APIStatusError:
    """Our exception for an HTTP error response (pure: no I/O); ``redact`` cleans every field first."""
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else (content or "")
    if redact is not None:
        text = redact(text)
    body: Any
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError:
        body = text
    message, code, param, error_type = _error_message(body, status)
    request_id = _request_id(headers, body)
    if redact is not None:  # headers too: a server may echo the key anywhere
        request_id = redact(request_id)
    cls = status_error_class(status)
    return cls(
        message,
        status_code=status,
        request_id=request_id,
        body=body,
        code=code,
        param=param,
        error_type=error_type,
        retry_after=parse_retry_after(headers, now=now),
        should_retry=_should_retry_header(headers),
        url=url,
    )


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    return exc


_TIMEOUT_ROOTS: tuple[type[BaseException], ...] = (asyncio.TimeoutError, TimeoutError, httpx2.TimeoutException)


# Failures before any byte reached the server: refused, unreachable, name not resolved, connect timeout.
_CONNECT_FAILURES: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
    ConnectionRefusedError,
    httpx2.ConnectError,
)


def _connection_error(exc: BaseException, url: str, redact: Callable[[Any], Any]) -> APIConnectionError:
    root = _root_cause(exc)
    detail = redact(f"{type(root).__name__}: {root}" if str(root) else type(root).__name__)
    connected = not (isinstance(exc, _CONNECT_FAILURES) or isinstance(root, _CONNECT_FAILURES))
    if isinstance(exc, aiohttp.ConnectionTimeoutError) or isinstance(root, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(f"could not connect to {url} within {CONNECT_TIMEOUT:g}s", connected=False)
    # The aiohttp bridge reports a dropped connection as a ConnectTimeout: trust the root cause.
    if isinstance(root, _TIMEOUT_ROOTS):
        return APITimeoutError(f"request to {url} timed out ({detail})", connected=connected)
    return APIConnectionError(f"connection to {url} failed: {detail}", connected=connected)


class HTTPTransport:
    """The default transport: ``AsyncOpenAI``'s URL, authentication, headers and aiohttp pool, posted directly.

    ``AsyncOpenAI.post`` costs about 1 ms of client CPU per request in building pydantic
    options, httpx2 requests and headers, more than parsing a response with full logprobs
    (see docs/performance.md), so completions are posted through the same pool with the
    headers it computed once. The pool is made on the event loop of the first request
    (aiohttp sessions belong to one loop); the client keeps one transport per loop.
    """

    __slots__ = ("_api_key", "_base_url", "_client", "_headers", "_max_connections", "_redact", "_session", "_url")

    def __init__(self, *, base_url: str, api_key: str, max_connections: int) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._max_connections = max_connections
        self._redact = redactor(api_key)
        self._url = URL(base_url.rstrip("/") + COMPLETIONS_PATH)
        self._session: aiohttp.ClientSession | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._headers: CIMultiDict[str] | None = None

    @property
    def url(self) -> str:
        """The completions endpoint this transport posts to."""
        return str(self._url)

    def _open(self) -> tuple[aiohttp.ClientSession, CIMultiDict[str]]:
        if self._session is None or self._headers is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._client = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self._base_url,
                max_retries=0,
                http_client=_http_client(self._session, self._base_url),
            )
            headers = {**self._client.default_headers, **self._client.auth_headers, "Content-Type": "application/json"}
            self._headers = CIMultiDict({k: v for k, v in headers.items() if isinstance(v, str)})
            self._url = URL(str(self._client.base_url).rstrip("/") + COMPLETIONS_PATH)
        return self._session, self._headers

    async def post_completions(self, body: bytes, *, timeout: float) -> Reply:
        """POST a JSON ``body`` to ``/completions``; the whole exchange must finish within ``timeout`` seconds."""
        session, headers = self._open()
        try:
            async with session.post(
                self._url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, CONNECT_TIMEOUT)),
            ) as response:
                content = await response.read()
                status, response_headers = response.status, response.headers
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise _connection_error(exc, str(self._url), self._redact) from None
        except asyncio.TimeoutError:
            raise APITimeoutError(f"no complete response from {self._url} within {timeout:g}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _connection_error(exc, str(self._url), self._redact) from None
        if status >= 400:
            raise error_from_response(status, response_headers, content, url=str(self._url), redact=self._redact)
        return Reply(content, self._redact(_request_id(response_headers)), response_headers)

    async def aclose(self) -> None:
        """Close the connection pool."""
        client, session = self._client, self._session
        self._client = self._session = self._headers = None
        if client is not None:
            await client.close()
        if session is not None and not session.closed:
            await session.close()

    def __repr__(self) -> str:
        return f"HTTPTransport(url={str(self._url)!r})"


class OpenAITransport(HTTPTransport):
    """Every request through ``AsyncOpenAI.post`` (about 1 ms more client CPU per request than
    :class:`HTTPTransport`; the same pool, headers and errors). Chosen by default when the
    environment sets ``FW_ROLLOUTS_TRANSPORT=openai``."""

    __slots__ = ()

    async def post_completions(self, body: bytes, *, timeout: float) -> Reply:
        """POST ``body`` through ``AsyncOpenAI.post``."""
        self._open()
        assert self._client is not None
        try:
            response = await asyncio.wait_for(
                self._client.post(
                    COMPLETIONS_PATH,
                    content=body,
                    cast_to=httpx2.Response,
                    options={"headers": {"Content-Type": "application/json"}},
                ),
                timeout,
            )
        except asyncio.TimeoutError:
            raise APITimeoutError(f"no complete response from {self._url} within {timeout:g}s") from None
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        except (openai.APIConnectionError, httpx2.HTTPError, OSError) as exc:
            raise _connection_error(exc, str(self._url), self._redact) from None
        return Reply(response.content, self._redact(_request_id(response.headers)), response.headers)

    def _status_error(self, exc: openai.APIStatusError) -> APIStatusError:
        response = exc.response
        try:
            content = response.content
        except httpx2.ResponseNotRead:
            content = b""
        return error_from_response(
            response.status_code, response.headers, content, url=str(self._url), redact=self._redact
        )

    def __repr__(self) -> str:
        return f"OpenAITransport(url={str(self._url)!r})"


def default_transport(*, base_url: str, api_key: str, max_connections: int) -> HTTPTransport:
    """The transport a client makes for itself: :class:`HTTPTransport`, or :class:`OpenAITransport`
    when ``FW_ROLLOUTS_TRANSPORT=openai``."""
    cls = OpenAITransport if os.environ.get("FW_ROLLOUTS_TRANSPORT", "").lower() == "openai" else HTTPTransport
    return cls(base_url=base_url, api_key=api_key, max_connections=max_connections)


def _http_client(session: aiohttp.ClientSession, base_url: str) -> httpx2.AsyncClient:
    """openai's aiohttp-backed HTTP client, on ``session`` so that both paths share one pool."""
    try:
        from openai._vendor.httpx_aiohttp import AiohttpTransport
    except ImportError:  # an openai without its vendored bridge: a pool of its own
        return openai.DefaultAioHttpClient(timeout=httpx2.Timeout(None))
    # The bridge builds a TLS context up front (30 ms of imports and certificates per client): share one
    # per process, and for a plain-HTTP server give it a bare context with no certificates (it would
    # refuse any TLS connection, which a plain-HTTP base URL never makes).
    verify = _tls_context() if base_url.startswith("https:") else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return httpx2.AsyncClient(transport=AiohttpTransport(client=session, verify=verify), timeout=httpx2.Timeout(None))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return httpx2.create_ssl_context()
