"""The httpx2 side of :mod:`._transport`: openai's HTTP client on our aiohttp pool, and reading its replies.

Kept apart so that :mod:`._transport` can be imported without httpx2 and openai: this module is imported
when a transport opens its pool on the first request (openai and httpx2 take most of a second to import).
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx2
import openai

from ._transport import collect, too_large

if TYPE_CHECKING:
    import aiohttp

__all__ = ["http_client", "read_httpx"]


async def read_httpx(response: httpx2.Response, cap: int | None) -> bytes:
    """The body of the unread response openai returns (closed by the caller), at most ``cap`` bytes: beyond
    that the reply is refused (:class:`~fw_rollouts.MalformedResponseError`), as the aiohttp path does."""
    if cap is None:
        return await response.aread()
    length = response.headers.get("Content-Length")
    declared = int(length) if length is not None and length.strip().isdigit() else None
    if declared is not None and declared > cap:
        raise too_large(cap, declared=declared)
    data, over = await collect(response.aiter_bytes(), cap)  # decoded bytes
    if over is not None:
        raise too_large(cap, read=over)
    return data


class _TruncatedStream(httpx2.AsyncByteStream):
    """At most ``limit`` bytes of ``inner``; the rest is never read."""

    def __init__(self, inner: httpx2.AsyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        left = self._limit
        async for chunk in self._inner:
            if len(chunk) >= left:
                yield chunk[:left]
                break
            left -= len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _LimitedErrorBodies(httpx2.AsyncBaseTransport):
    """openai reads an error reply's body itself: let it see only the first ``limit`` bytes."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        if response.status_code < 400 or not isinstance(response.stream, httpx2.AsyncByteStream):
            return response
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_TruncatedStream(response.stream, self._limit),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def http_client(session: aiohttp.ClientSession, base_url: str, error_limit: int) -> httpx2.AsyncClient:
    """openai's aiohttp-backed HTTP client, on ``session`` so that both paths share one pool."""
    try:
        from openai._vendor.httpx_aiohttp import AiohttpTransport
    except ImportError:  # an openai without its vendored bridge: a pool of its own
        return openai.DefaultAioHttpClient(timeout=httpx2.Timeout(None))
    # The bridge builds a TLS context up front (30 ms of imports and certificates per client): share one
    # per process, and for a plain-HTTP server give it a bare context with no certificates (it would
    # refuse any TLS connection, which a plain-HTTP base URL never makes).
    verify = _tls_context() if base_url.startswith("https:") else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    transport = _LimitedErrorBodies(AiohttpTransport(client=session, verify=verify), error_limit)
    return httpx2.AsyncClient(transport=transport, timeout=httpx2.Timeout(None))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return httpx2.create_ssl_context()
