"""Scripted and random faults the simulator injects into completions and chat completions requests."""

from __future__ import annotations

import json
import random
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, Literal

from ._errors import detail_error, flat_error, nested_error
from ._reply import Reply, dumps, status_phrase

__all__ = [
    "DEFAULT_RANDOM_KINDS",
    "USAGE_LIMIT_MESSAGE",
    "ErrorShape",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "MalformedKind",
]

FaultKind = Literal[
    "ok", "status", "reset", "reset_mid_body", "truncated", "malformed", "slow", "stream_cut", "body", "huge"
]
ErrorShape = Literal["nested", "flat", "string", "detail", "html", "empty"]
MalformedKind = Literal["html", "wrong_shape", "empty"]

USAGE_LIMIT_MESSAGE = (
    "You have exceeded your usage limits. Please try again later or contact Fireworks to explore dedicated capacity."
)
_MESSAGES = {429: USAGE_LIMIT_MESSAGE, 503: "Service Overloaded", 425: "Model is being hot-loaded, please retry"}


def _phrase(status: int) -> str:
    return status_phrase(status, "Unknown Error")


@dataclass(frozen=True)
class Fault:
    """One injected failure; build it with a constructor such as :meth:`Fault.status` or :meth:`Fault.reset`.

    A fault applies to one completions or chat completions request (``/models`` and unknown paths are never
    faulted) and replaces or damages the reply the request would have got. It is applied before
    authentication and validation, the way a gateway or rate limiter in front of the model would.
    """

    #: What happens: ``ok`` (nothing: a placeholder in a script), ``status`` (an error reply), ``reset``
    #: (connection dropped, no reply), ``reset_mid_body`` (headers and part of the body, then the connection
    #: closes), ``truncated`` (200 with a cut-off JSON body), ``malformed`` (200 with a body that is not a
    #: completion), ``slow`` (a normal reply after a delay), ``stream_cut`` (an SSE stream that stops early),
    #: ``body`` (exactly the given body) or ``huge`` (the normal reply padded to a given size, sent as the
    #: client reads it).
    kind: FaultKind
    #: HTTP status of a ``status`` or ``body`` fault.
    code: int = 0
    #: Error body shape of a ``status`` fault.
    shape: ErrorShape = "nested"
    #: ``Retry-After`` header: a string sent verbatim, or a timedelta rendered as an HTTP date from now.
    retry_after: str | timedelta | None = None
    #: ``retry-after-ms`` header, sent verbatim.
    retry_after_ms: str | None = None
    #: ``x-should-retry`` header (``true``/``false``).
    should_retry: bool | None = None
    #: Error message (defaults to one per status).
    message: str | None = None
    #: Delay of a ``slow`` fault, in seconds.
    seconds: float = 0.0
    #: Body of a ``malformed`` fault.
    malformed_kind: MalformedKind = "html"
    #: For ``stream_cut``: drop the connection instead of ending the chunked body cleanly.
    abort: bool = False
    #: The bytes a ``body`` fault answers with.
    content: bytes = b""
    #: Content-Type of a ``body`` fault.
    content_type: str = "application/json"
    #: Size in bytes of a ``huge`` fault's body.
    nbytes: int = 0
    #: For ``huge``: send the body chunked, with no Content-Length (the client learns its size only by reading).
    chunked: bool = False

    @classmethod
    def status(
        cls,
        code: int,
        *,
        shape: ErrorShape = "nested",
        retry_after: str | float | timedelta | None = None,
        retry_after_ms: str | float | None = None,
        should_retry: bool | None = None,
        message: str | None = None,
    ) -> Fault:
        """Answer with HTTP ``code`` and an error body of the given ``shape``.

        Shapes: ``nested`` ``{"error": {"message", "param", "code", "type"}, "request_id"}``, ``flat``
        ``{"message", "param", "code", "type"}``, ``string`` ``{"error": "Too Many Requests", "message"}``,
        ``detail`` (FastAPI 422 shape), ``html`` (a gateway page, text/html) and ``empty`` (no body).
        A 429 also carries ``x-ratelimit-over-limit: yes``.
        """
        if not 400 <= code <= 599:
            raise ValueError(f"fault status must be 4xx or 5xx, got {code}")
        ra = retry_after if retry_after is None or isinstance(retry_after, (str, timedelta)) else f"{retry_after:g}"
        ra_ms = None if retry_after_ms is None else str(retry_after_ms)
        return cls(
            "status",
            code=code,
            shape=shape,
            retry_after=ra,
            retry_after_ms=ra_ms,
            should_retry=should_retry,
            message=message,
        )

    @classmethod
    def ok(cls) -> Fault:
        """No fault: the request is answered normally (a placeholder that keeps a script's order)."""
        return cls("ok")

    @classmethod
    def reset(cls) -> Fault:
        """Read the request, then drop the connection without a reply (RST where the OS allows)."""
        return cls("reset")

    @classmethod
    def reset_mid_body(cls) -> Fault:
        """Send the status line, the headers (full Content-Length) and half the body, then close."""
        return cls("reset_mid_body")

    @classmethod
    def truncated(cls) -> Fault:
        """Answer 200 with a complete HTTP body that is cut-off JSON (a stream gets a cut-off event)."""
        return cls("truncated")

    @classmethod
    def malformed(cls, kind: MalformedKind = "html") -> Fault:
        """Answer 200 with an HTML page (``html``), ``{"choices": null}`` (``wrong_shape``) or nothing."""
        return cls("malformed", malformed_kind=kind)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Answer normally after ``seconds`` (a client that gives up first just closes the connection)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls("slow", seconds=float(seconds))

    @classmethod
    def stream_cut(cls, *, abort: bool = False) -> Fault:
        """End an SSE stream halfway, without ``finish_reason`` or ``[DONE]``.

        By default the chunked body ends cleanly; ``abort=True`` closes the connection instead. A
        non-streaming request gets :meth:`reset_mid_body`.
        """
        return cls("stream_cut", abort=abort)

    @classmethod
    def body(cls, content: object, *, status: int = 200, content_type: str = "application/json") -> Fault:
        """Answer with exactly ``content`` and HTTP ``status`` (200 by default), whatever the request asked.

        ``content`` may be bytes (sent verbatim), a str (sent as UTF-8) or any JSON value, encoded with
        ``json.dumps`` (so NaN and infinities go out as the ``NaN``/``Infinity`` literals some servers send).
        Pass bytes for what the encoder cannot write, such as nesting thousands of levels deep. For impossible
        replies: NaN or positive logprobs, booleans where numbers belong, repeated choice indexes, ...
        """
        if not 200 <= status <= 599:
            raise ValueError(f"fault status must be from 200 to 599, got {status}")
        if isinstance(content, bytes):
            data = content
        elif isinstance(content, str):
            data = content.encode("utf-8")
        else:
            data = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return cls("body", code=status, content=data, content_type=content_type)

    @classmethod
    def huge(cls, nbytes: int, *, chunked: bool = False) -> Fault:
        """Answer 200 with the normal reply padded to ``nbytes`` bytes, written only as fast as the client reads.

        The body is ``{"x_padding":"aaa...",`` followed by the rest of the reply the request would have got, so
        a client that reads it all gets a valid completion. It goes out with its ``Content-Length``, or chunked
        without one when ``chunked`` is true (the client then learns the size only by reading). The server
        never holds more than 64 KiB of it at once, so ``nbytes`` may be far beyond memory; ``RecordedRequest
        .body_bytes`` says how much of it was written before the client closed the connection (counted as
        ``"client_closed"`` then). A stream request gets its normal reply.
        """
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        return cls("huge", nbytes=int(nbytes), chunked=chunked)

    @property
    def label(self) -> str | None:
        """Name recorded in ``RecordedRequest.fault``: ``"status:429"``, ``"reset"``, ``"malformed:html"``…

        None for :meth:`ok`, which is not a fault.
        """
        if self.kind == "ok":
            return None
        if self.kind == "status":
            return f"status:{self.code}"
        if self.kind == "malformed":
            return f"malformed:{self.malformed_kind}"
        if self.kind == "body":
            return f"body:{self.code}"
        return self.kind

    def reply(self, request_id: str) -> Reply:
        """The reply of a ``status``, ``malformed`` or ``body`` fault."""
        if self.kind == "malformed":
            return self._malformed(request_id)
        if self.kind == "body":
            headers = [("content-type", self.content_type), ("x-request-id", request_id)]
            return Reply(self.code, self.content, request_id, headers)
        code = self.code
        message = self.message or _MESSAGES.get(code) or _phrase(code)
        headers = [("x-request-id", request_id), ("x-ratelimit-over-limit", "yes" if code == 429 else "no")]
        body: Any
        if self.shape == "nested":
            body = dumps(nested_error(code, message, request_id))
        elif self.shape == "flat":
            body = dumps(flat_error(code, message))
        elif self.shape == "string":
            body = dumps({"error": _phrase(code), "message": message})
        elif self.shape == "detail":
            body = dumps(detail_error([(["body"], message, "value_error")]))
        elif self.shape == "html":
            phrase = f"{code} {_phrase(code)}"
            body = (
                f"<html>\r\n<head><title>{phrase}</title></head>\r\n<body>\r\n<center><h1>{phrase}</h1></center>"
                "\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            ).encode()
        else:
            body = b""
        if self.shape == "html":
            headers.insert(0, ("content-type", "text/html"))
        elif self.shape != "empty":
            headers.insert(0, ("content-type", "application/json"))
        if self.retry_after is not None:
            ra = self.retry_after
            if isinstance(ra, timedelta):
                ra = format_datetime(datetime.now(timezone.utc) + ra, usegmt=True)
            headers.append(("retry-after", ra))
        if self.retry_after_ms is not None:
            headers.append(("retry-after-ms", self.retry_after_ms))
        if self.should_retry is not None:
            headers.append(("x-should-retry", "true" if self.should_retry else "false"))
        return Reply(code, body, request_id, headers)

    def _malformed(self, request_id: str) -> Reply:
        headers = [("x-request-id", request_id), ("x-ratelimit-over-limit", "no")]
        if self.malformed_kind == "html":
            return Reply(200, b"<html>upstream error</html>", request_id, [("content-type", "text/html"), *headers])
        if self.malformed_kind == "wrong_shape":
            body = dumps({"id": request_id, "object": "text_completion", "choices": None})
            return Reply(200, body, request_id, [("content-type", "application/json"), *headers])
        return Reply(200, b"", request_id, [("content-type", "application/json"), *headers])


def _default_kinds() -> tuple[Fault, ...]:
    return (
        Fault.status(429),
        Fault.status(429, shape="string", retry_after="1"),
        Fault.status(429, retry_after="0.25", shape="flat"),
        Fault.status(429, retry_after=timedelta(seconds=1)),
        Fault.status(429, retry_after_ms="100", should_retry=True),
        Fault.status(500),
        Fault.status(502, shape="html"),
        Fault.status(503),
        Fault.status(504, shape="empty"),
        Fault.status(408),
        Fault.status(425),
        Fault.reset(),
        Fault.reset_mid_body(),
        Fault.truncated(),
        Fault.malformed("html"),
        Fault.malformed("wrong_shape"),
        Fault.slow(0.05),
    )


#: The mix ``FaultPlan.random`` draws from when ``kinds`` is not given.
DEFAULT_RANDOM_KINDS: tuple[Fault, ...] = _default_kinds()

_NAMED = {
    "reset": Fault.reset(),
    "reset_mid_body": Fault.reset_mid_body(),
    "truncated": Fault.truncated(),
    "malformed": Fault.malformed(),
    "slow": Fault.slow(0.05),
    "stream_cut": Fault.stream_cut(),
}


def _as_fault(k: Fault | int | str) -> Fault:
    if isinstance(k, Fault):
        return k
    if isinstance(k, int):
        return Fault.status(k)
    if k.isdigit():
        return Fault.status(int(k))
    try:
        return _NAMED[k]
    except KeyError:
        raise ValueError(f"unknown fault kind {k!r}; expected one of {sorted(_NAMED)} or a status code") from None


class FaultPlan:
    """The faults a simulator will inject (``sim.faults``); safe to use from any thread.

    Scripted faults (:meth:`push`) apply to the next completions requests in order and take precedence;
    when none is queued, random mode (:meth:`random`) faults each request independently.
    """

    __slots__ = ("_kinds", "_lock", "_queue", "_rate", "_rng")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Fault] = deque()
        self._rate = 0.0
        self._kinds: tuple[Fault, ...] = ()
        self._rng = random.Random(0)

    def push(self, *faults: Fault) -> None:
        """Queue faults for the next completions requests, one request each, in order."""
        for f in faults:
            if not isinstance(f, Fault):
                raise TypeError(f"expected Fault, got {type(f).__name__}")
        with self._lock:
            self._queue.extend(faults)

    def random(self, rate: float, kinds: Iterable[Fault | int | str] | None = None, seed: int = 0) -> None:
        """Fault each request with probability ``rate``, picking the kind uniformly with a seeded RNG.

        ``kinds`` may hold :class:`Fault` objects, status codes (``429``) or names (``"reset"``,
        ``"reset_mid_body"``, ``"truncated"``, ``"malformed"``, ``"slow"``, ``"stream_cut"``); the default
        is :data:`DEFAULT_RANDOM_KINDS`. ``rate=0`` turns random mode off.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        chosen = DEFAULT_RANDOM_KINDS if kinds is None else tuple(_as_fault(k) for k in kinds)
        if rate > 0 and not chosen:
            raise ValueError("kinds must not be empty")
        with self._lock:
            self._rate = rate
            self._kinds = chosen
            self._rng = random.Random(seed)

    def clear(self) -> None:
        """Drop queued faults and turn random mode off."""
        with self._lock:
            self._queue.clear()
            self._rate = 0.0
            self._kinds = ()

    @property
    def pending(self) -> int:
        """Number of scripted faults not yet applied."""
        with self._lock:
            return len(self._queue)

    def take(self) -> Fault | None:
        """Return the fault for the next completions request, if any (called by the server)."""
        if not self._queue and not self._rate:
            return None  # the common case, without the lock: a push that returned before is seen here
        with self._lock:
            if self._queue:
                f = self._queue.popleft()
                return None if f.kind == "ok" else f
            if self._rate > 0.0 and self._rng.random() < self._rate:
                return self._rng.choice(self._kinds)
            return None

    def __repr__(self) -> str:
        with self._lock:
            return f"FaultPlan(pending={len(self._queue)}, rate={self._rate})"
