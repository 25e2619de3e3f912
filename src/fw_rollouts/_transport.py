"""The transport: the only module that builds the HTTP/openai client and touches the wire.

:class:`Transport` is the seam: anything with ``post_completions(body, timeout=..., headers=...)``
and ``aclose()`` can be passed to a client as ``transport=``. :class:`HTTPTransport`, the
default, is an ``openai.AsyncOpenAI`` client (with its own retries off: the retry policy is
the only retry layer) on its aiohttp-backed HTTP client, which supplies the URL, headers and
connection pool; the reply bytes are parsed by us, never into pydantic models.
:class:`OpenAITransport` sends every request through ``AsyncOpenAI.post`` instead.

Every failure leaves this module as an exception of our own tree, built complete: the
status, request id, the service's message and any Retry-After the server sent, with the
API key redacted from every field before the error exists.

A reply body larger than ``max_response_bytes`` is refused as it streams in: a declared
``Content-Length`` over the cap is refused before a byte of the body is read, any other body
as soon as the bytes read (after decompression) pass it, and the connection is closed rather
than drained. Error bodies are read only up to :data:`ERROR_BODY_LIMIT` (they are a message,
not data).

aiohttp, openai and httpx2 (a second of imports together) are imported when a transport opens its pool on the
first request (on a worker thread: the event loop goes on meanwhile), not with this module: ``import
fw_rollouts`` and building a client stay cheap, and a command that sends nothing never pays for them. The
httpx2 pieces openai's client is built from are in :mod:`._httpx_bridge`.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import importlib
import json
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    MalformedResponseError,
    status_error_class,
)
from ._options import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES
from ._redact import redactor, scrub_error

if TYPE_CHECKING:
    import aiohttp
    import httpx2
    import openai
    from multidict import CIMultiDict
    from yarl import URL

__all__ = [
    "ERROR_BODY_LIMIT",
    "OWN_HEADERS",
    "HTTPTransport",
    "OpenAITransport",
    "Reply",
    "Transport",
    "collect",
    "default_transport",
    "error_from_response",
    "load_http_libraries",
    "parse_retry_after",
    "too_large",
]

COMPLETIONS_PATH = "/completions"
ERROR_BODY_LIMIT = 1024 * 1024
"""Bytes of an error reply's body read at most (or ``max_response_bytes`` if smaller); the rest is not read."""
_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"  # openai's switch for a response it returns unread
OWN_HEADERS: Final = frozenset(
    {"authorization", "content-type", "content-length", "transfer-encoding", "host", _RAW_RESPONSE_HEADER.lower()}
)
"""Request headers a transport sets itself, which extra headers given per request never replace (lower-cased)."""


def _extra_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's extra headers without any that would replace one of :data:`OWN_HEADERS`."""
    return {name: value for name, value in headers.items() if name.lower() not in OWN_HEADERS}


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

    async def post_completions(
        self, body: bytes, *, timeout: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """POST ``body`` to the completions endpoint; the exchange must finish within ``timeout`` seconds.

        ``headers`` are extra request headers for this request only (``x-session-affinity``, say); they
        never replace the ones the transport sets itself (:data:`OWN_HEADERS`).
        """
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def parse_retry_after(headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asks us to wait, from ``retry-after-ms``, or ``Retry-After`` as
    seconds or an HTTP date; None when absent or unreadable. Never negative."""
    lowered = {k.lower(): v for k, v in headers.items()}
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
    """Our exception for an HTTP error response (pure: no I/O); ``redact`` cleans every field of it."""
    clean = redact if redact is not None else _unchanged
    # Scrubbed as text and again once parsed (a key echoed JSON-escaped, "\\u0066w-...", is only the key
    # once decoded), both before any message is cut to length, which could leave part of a key behind.
    text = clean(content.decode("utf-8", "replace") if isinstance(content, bytes) else (content or ""))
    body: Any
    try:
        body = clean(json.loads(text)) if text.strip() else None
    except (ValueError, RecursionError):  # not JSON, or nested past what the parser will follow: kept as text
        body = text
    try:
        message, code, param, error_type = _error_message(body, status)
    except Exception:  # a hostile shape (a "loc" that is a number...): the body as text is message enough
        message, code, param, error_type = _error_message(text, status)
    cls = status_error_class(status)
    error = cls(
        message,
        status_code=status,
        request_id=_request_id(headers, body),
        body=body,
        code=code,
        param=param,
        error_type=error_type,
        retry_after=parse_retry_after(headers, now=now),
        should_retry=_should_retry_header(headers),
        url=url,
    )
    return error if redact is None else scrub_error(error, redact)  # headers too: the request id


def _unchanged(value: Any) -> Any:
    return value


@functools.cache
def _failure_kinds() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeouts, connect failures): the exception classes a failed exchange is classified by.

    A connect failure is one before any byte reached the server: refused, unreachable, name not
    resolved, connect timeout. Built on first use: the classes belong to the HTTP libraries, which
    a transport imports only when it opens its pool (so they are loaded by the time anything fails).
    """
    import aiohttp
    import httpx2

    timeouts = (asyncio.TimeoutError, TimeoutError, httpx2.TimeoutException)
    connect = (
        aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, ConnectionRefusedError, httpx2.ConnectError
    )
    return timeouts, connect


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes (``__cause__``, else ``__context__``), outermost first."""
    chain = [exc]
    while len(chain) < 32:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if nxt is None or nxt in chain:
            break
        chain.append(nxt)
    return chain


def _connection_error(
    exc: BaseException, url: str, redact: Callable[[Any], Any], connect_timeout: float
) -> APIConnectionError:
    import aiohttp

    timeouts, connect_failures = _failure_kinds()
    root = _causes(exc)[-1]
    detail = redact(f"{type(root).__name__}: {root}" if str(root) else type(root).__name__)
    connected = not (isinstance(exc, connect_failures) or isinstance(root, connect_failures))
    # Anywhere in the chain: the openai path wraps aiohttp's error twice (in httpx2's, then in openai's).
    if any(isinstance(e, aiohttp.ConnectionTimeoutError) for e in _causes(exc)):
        return APITimeoutError(
            f"could not connect to {url} within {connect_timeout:g}s (connect_timeout)", connected=False
        )
    # The aiohttp bridge reports a dropped connection as a ConnectTimeout: trust the root cause.
    if isinstance(root, timeouts):
        return APITimeoutError(f"request to {url} timed out ({detail})", connected=connected)
    return APIConnectionError(f"connection to {url} failed: {detail}", connected=connected)


class HTTPTransport:
    """The default transport: ``AsyncOpenAI``'s URL, authentication, headers and aiohttp pool, posted directly.

    ``AsyncOpenAI.post`` costs about 1 ms of client CPU per request in building pydantic
    options, httpx2 requests and headers, more than parsing a response with full logprobs
    (see docs/performance.md), so completions are posted through the same pool with the
    headers it computed once. The pool is made on the event loop of the first request
    (aiohttp sessions belong to one loop); the client keeps one transport per loop.
    ``connect_timeout`` bounds establishing a connection (within each request's ``timeout``);
    ``max_response_bytes`` (None: no cap) the reply body, refused as it streams in.
    """

    __slots__ = (
        "_api_key",
        "_base_url",
        "_client",
        "_connect_timeout",
        "_headers",
        "_max_connections",
        "_max_response_bytes",
        "_redact",
        "_session",
        "_url",
    )

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        max_connections: int,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._max_response_bytes = max_response_bytes
        self._redact = redactor(api_key)
        self._url: str | URL = base_url.rstrip("/") + COMPLETIONS_PATH  # a yarl URL once open
        self._session: aiohttp.ClientSession | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._headers: CIMultiDict[str] | None = None

    @property
    def url(self) -> str:
        """The completions endpoint this transport posts to."""
        return str(self._url)

    def _open(self) -> tuple[aiohttp.ClientSession, CIMultiDict[str]]:
        if self._session is None or self._headers is None:
            import aiohttp
            import openai
            from multidict import CIMultiDict
            from yarl import URL

            from ._httpx_bridge import http_client

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._client = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self._base_url,
                max_retries=0,
                http_client=http_client(self._session, self._base_url, self._error_limit),
            )
            headers = {**self._client.default_headers, **self._client.auth_headers, "Content-Type": "application/json"}
            self._headers = CIMultiDict({k: v for k, v in headers.items() if isinstance(v, str)})
            self._url = URL(str(self._client.base_url).rstrip("/") + COMPLETIONS_PATH)
        return self._session, self._headers

    @property
    def _error_limit(self) -> int:
        cap = self._max_response_bytes
        return ERROR_BODY_LIMIT if cap is None else min(cap, ERROR_BODY_LIMIT)

    async def post_completions(
        self, body: bytes, *, timeout: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """POST a JSON ``body`` to ``/completions``; the whole exchange must finish within ``timeout`` seconds.

        ``headers`` are added to this request's (never replacing :data:`OWN_HEADERS`)."""
        if self._session is None:
            await load_http_libraries()
        import aiohttp  # loaded just above on the first request: from then on a dictionary look-up

        session, own = self._open()
        if headers:
            extra = _extra_headers(headers)
            if extra:
                own = own.copy()
                own.update(extra)
        connect = min(timeout, self._connect_timeout)
        try:
            async with session.post(
                self._url,
                data=body,
                headers=own,
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=connect),
            ) as response:
                status, response_headers = response.status, response.headers
                if status >= 400:
                    content = await _read_aiohttp(response, self._error_limit, truncate=True)
                else:
                    content = await _read_aiohttp(response, self._max_response_bytes)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise _connection_error(exc, str(self._url), self._redact, connect) from None
        except asyncio.TimeoutError:
            raise APITimeoutError(f"no complete response from {self._url} within {timeout:g}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _connection_error(exc, str(self._url), self._redact, connect) from None
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
    :class:`HTTPTransport`; the same pool, headers, limits and errors). Chosen by default when the
    environment sets ``FW_ROLLOUTS_TRANSPORT=openai``.

    The reply is asked for unread (openai's streamed raw response) so that its body is read here,
    under ``max_response_bytes``; an error body, which openai reads itself, stops at
    :data:`ERROR_BODY_LIMIT` bytes on the wire.
    """

    __slots__ = ()

    async def post_completions(
        self, body: bytes, *, timeout: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """POST ``body`` through ``AsyncOpenAI.post``, with ``headers`` added (never replacing :data:`OWN_HEADERS`)."""
        if self._session is None:
            await load_http_libraries()
        import httpx2
        import openai

        from ._httpx_bridge import read_httpx

        self._open()
        client = self._client
        assert client is not None
        connect = min(timeout, self._connect_timeout)
        extra = _extra_headers(headers) if headers else {}
        options: Any = {
            "headers": {**extra, "Content-Type": "application/json", _RAW_RESPONSE_HEADER: "stream"},
            "timeout": httpx2.Timeout(None, connect=connect),
        }

        async def exchange() -> tuple[bytes, httpx2.Headers]:
            response = await client.post(COMPLETIONS_PATH, content=body, cast_to=httpx2.Response, options=options)
            try:
                return await read_httpx(response, self._max_response_bytes), response.headers
            finally:
                await response.aclose()

        try:
            content, response_headers = await asyncio.wait_for(exchange(), timeout)
        except asyncio.TimeoutError:
            raise APITimeoutError(f"no complete response from {self._url} within {timeout:g}s") from None
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        except (openai.APIConnectionError, httpx2.HTTPError, OSError) as exc:
            raise _connection_error(exc, str(self._url), self._redact, connect) from None
        return Reply(content, self._redact(_request_id(response_headers)), response_headers)

    def _status_error(self, exc: openai.APIStatusError) -> APIStatusError:
        import httpx2

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


# -- reading bodies under a cap ----------------------------------------------------------------------------


def too_large(cap: int, *, declared: int | None = None, read: int | None = None) -> MalformedResponseError:
    """The error for a reply body over ``max_response_bytes=cap``: as it declared, or as read so far."""
    seen = f"it declared {declared:,} bytes (Content-Length)" if declared is not None else f"{read:,} bytes read"
    return MalformedResponseError(
        f"response body is larger than max_response_bytes={cap:,} ({cap / 2**20:g} MiB): {seen}, the rest was not "
        "read; raise max_response_bytes (None: no cap) if replies this large are expected"
    )


def _plain(headers: Mapping[str, str]) -> bool:
    """No Content-Encoding: the declared length is the length of the body as we get it."""
    return headers.get("Content-Encoding", "identity").strip().lower() in ("", "identity")


async def _read_aiohttp(response: aiohttp.ClientResponse, cap: int | None, *, truncate: bool = False) -> bytes:
    """The body, at most ``cap`` bytes: beyond that the connection is closed and the reply refused
    (:class:`MalformedResponseError`), or with ``truncate`` the first ``cap`` bytes kept."""
    if cap is None:
        return await response.read()
    declared = response.content_length
    if declared is not None and declared <= cap and _plain(response.headers):
        return await response.read()  # every ordinary reply: one read of a length known to fit
    if declared is not None and declared > cap and not truncate:
        response.close()
        raise too_large(cap, declared=declared)
    # Decompressed: the cap is on what we would hold.
    data, over = await collect(response.content.iter_any(), cap)
    if over is not None:
        response.close()
        if not truncate:
            raise too_large(cap, read=over)
    return data[:cap]


async def collect(chunks: AsyncIterator[bytes], cap: int) -> tuple[bytes, int | None]:
    """The bytes of ``chunks`` until more than ``cap`` have come (then the count read so far, and no more read)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(parts), size
    return b"".join(parts), None


_HTTP_LIBRARIES: Final = ("aiohttp", "multidict", "yarl", "httpx2", "openai", "fw_rollouts._httpx_bridge")


async def load_http_libraries() -> None:
    """Import the HTTP libraries a transport's pool is built from, on a worker thread the first time: openai
    takes most of a second to import, which would stall every other task of the event loop for as long."""
    if all(name in sys.modules for name in _HTTP_LIBRARIES):
        return
    await asyncio.to_thread(lambda: [importlib.import_module(name) for name in _HTTP_LIBRARIES])


def default_transport(
    *,
    base_url: str,
    api_key: str,
    max_connections: int,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
) -> HTTPTransport:
    """The transport a client makes for itself: :class:`HTTPTransport`, or :class:`OpenAITransport`
    when ``FW_ROLLOUTS_TRANSPORT=openai``."""
    cls = OpenAITransport if os.environ.get("FW_ROLLOUTS_TRANSPORT", "").lower() == "openai" else HTTPTransport
    return cls(
        base_url=base_url,
        api_key=api_key,
        max_connections=max_connections,
        connect_timeout=connect_timeout,
        max_response_bytes=max_response_bytes,
    )
