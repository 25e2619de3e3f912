"""The simulator's HTTP/1.1 server (a plain ``asyncio.Protocol``) and the public ``FireworksSimulator``.

One protocol instance per connection parses requests straight out of its buffer and answers in the
same callback when there is no delay, so a request costs no task, no thread and no copy beyond the
body. Delayed replies (``latency``, ``Fault.slow``) use ``loop.call_later``; later pipelined requests
wait in the buffer so replies keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time
import urllib.parse
import uuid
import weakref
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, cast

from ._config import LOGPROBS_FAULTS, AnswersMode, BosMode, Config, LogprobsFault, OffsetBase, model_names
from ._engine import GENERATION_PATHS, Engine
from ._errors import nested_error
from ._faults import Fault, FaultPlan
from ._memo import Memo
from ._render import is_finish_event
from ._reply import Reply, decode_body, dumps, status_phrase

__all__ = ["FireworksSimulator", "RecordedRequest", "http_url", "simulator_on_loop"]

_log = logging.getLogger("fw_rollouts.testing")

_MAX_HEAD: Final = 64 * 1024
_MAX_BODY: Final = 32 * 1024 * 1024
_LINGER_RST: Final = struct.pack("ii", 1, 0)
_HUGE_CHUNK: Final = 64 * 1024
_PADDING: Final = b"a" * _HUGE_CHUNK
_UNDECODED: Final = object()  # a body not decoded yet (replayed replies decode it only to record it)

#: Key of a replayed reply: method, path, Authorization and X-Request-ID headers, body.
_ReplayKey = tuple[str, str, str | None, str | None, bytes]


@dataclass(frozen=True)
class RecordedRequest:
    """One request the simulator received and what it did with it."""

    #: HTTP method.
    method: str
    #: Request path without the query string.
    path: str
    #: The JSON body if it decoded to an object, else None.
    body: dict[str, Any] | None
    #: Request headers, names lower-cased, ``authorization`` replaced by ``"REDACTED"``.
    headers: dict[str, str]
    #: Status line sent; 0 when no response was sent (connection reset, or the client left first).
    status: int
    #: ``Fault.label`` of the fault applied, if any.
    fault: str | None
    #: For a ``Fault.huge`` reply: bytes of its body written before it ended (all of them, unless the client
    #: closed the connection first). None for every other reply.
    body_bytes: int | None = None


def _head(status: int, headers: list[tuple[str, str]], framing: str, keep_alive: bool) -> bytes:
    parts = [f"HTTP/1.1 {status} {status_phrase(status, 'Unknown')}\r\n"]
    parts.extend(f"{k}: {v}\r\n" for k, v in headers)
    parts.append(framing)
    if not keep_alive:
        parts.append("connection: close\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def _own_error(status: int, message: str) -> Reply:
    """An error no engine rule produced (unparseable HTTP, a simulator bug), under a fresh request id."""
    rid = str(uuid.uuid4())
    headers = [("content-type", "application/json"), ("x-request-id", rid)]
    return Reply(status, dumps(nested_error(status, message, rid)), rid, headers)


def http_url(host: str, port: int) -> str:
    """``http://host:port`` (an IPv6 host in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_LAST_CHUNK: Final = b"0\r\n\r\n"


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path", "version")

    def __init__(self, method: str, path: str, version: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers
        self.body = body
        # HTTP/1.0 clients get one response per connection (no keep-alive negotiation to get wrong).
        self.keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"


class _Job:
    """A request whose reply is decided but not yet written (delayed by ``latency`` or ``Fault.slow``)."""

    __slots__ = ("cached", "fault", "memo_key", "obj", "reply", "req")

    def __init__(
        self,
        req: _Request,
        obj: object,
        reply: Reply | None,
        fault: Fault | None,
        memo_key: _ReplayKey | None,
        cached: bytes | None,
    ) -> None:
        self.req = req
        self.obj = obj  # the decoded body, or _UNDECODED
        self.reply = reply  # None: Fault.reset (unless cached)
        self.fault = fault
        self.memo_key = memo_key  # where to memoise the reply once rendered
        self.cached = cached  # replayed response bytes


class _HugeBody:
    """A ``Fault.huge`` body being written as the client reads it: prefix, padding, then the real reply."""

    __slots__ = ("chunked", "fault", "obj", "padding", "parts", "req", "sent")

    def __init__(self, req: _Request, obj: object, fault: Fault, reply_body: bytes) -> None:
        prefix = b'{"x_padding":"'
        tail = b'",' + reply_body[1:] if reply_body.startswith(b"{") else b'"}'
        self.req = req
        self.obj = obj
        self.fault = fault
        self.chunked = fault.chunked
        self.padding = max(0, fault.nbytes - len(prefix) - len(tail))
        self.parts = [prefix, tail]  # the padding goes between them
        self.sent = 0

    @property
    def total(self) -> int:
        return sum(map(len, self.parts)) + self.padding

    def next_chunk(self) -> bytes | None:
        """The next piece of the body (at most 64 KiB), or None when it has all been written."""
        if len(self.parts) == 2:
            return self.parts.pop(0)
        if self.padding:
            size = min(self.padding, _HUGE_CHUNK)
            self.padding -= size
            return _PADDING if size == _HUGE_CHUNK else _PADDING[:size]
        return self.parts.pop(0) if self.parts else None


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _decode_chunked(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``start``; None until it is complete."""
    out = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        except ValueError:
            raise _BadRequest(400, "invalid chunk size") from None
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)
            if end < 0:
                return None
            return bytes(out), end + 4
        if len(buf) < eol + 2 + size + 2:
            return None
        out += buf[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2
        if len(out) > _MAX_BODY:
            raise _BadRequest(413, "request body too large")


class _Core:
    """State shared by every connection of one simulator."""

    def __init__(self, cfg: Config, record: bool, replay_bytes: int) -> None:
        self.cfg = cfg
        self.engine = Engine(cfg)
        self.faults = FaultPlan()
        self.record_enabled = record
        self.lock = threading.Lock()
        self.records: list[RecordedRequest] = []
        self.counts: Counter[int | str] = Counter()
        self.conns: set[_Connection] = set()
        self.replay_bytes = replay_bytes
        #: Complete responses by request, replayed byte for byte (None when the option is off).
        self.replay: Memo[_ReplayKey, bytes] | None = Memo(replay_bytes) if replay_bytes > 0 else None

    def record(
        self,
        req: _Request,
        obj: object,
        status: int,
        fault: Fault | None,
        key: int | str,
        body_bytes: int | None = None,
    ) -> None:
        with self.lock:
            self.counts[key] += 1
            if self.record_enabled:
                if obj is _UNDECODED:
                    obj = decode_body(req.body)
                headers = dict(req.headers)
                if "authorization" in headers:
                    headers["authorization"] = "REDACTED"
                body = obj if isinstance(obj, dict) else None
                label = fault.label if fault is not None else None
                self.records.append(RecordedRequest(req.method, req.path, body, headers, status, label, body_bytes))


class _Connection(asyncio.Protocol):
    """One client connection: parse, answer, keep alive."""

    def __init__(self, core: _Core, loop: asyncio.AbstractEventLoop) -> None:
        self.core = core
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head: tuple[str, str, str, dict[str, str], int, int] | None = None  # parsed, awaiting body
        self.continued = False
        self.busy = False
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        self.job: _Job | None = None
        self.huge: _HugeBody | None = None  # a Fault.huge body being written
        self.paused = False  # the transport's buffer is full: write no more until resume_writing

    # -- asyncio callbacks --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport, so no isinstance check).
        self.transport = cast(asyncio.Transport, transport)
        self.core.conns.add(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._drain()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.huge is not None:
            # Not from inside this callback: the transport's write loop that calls it would close the
            # connection a second time if the body ended (and we closed it) here.
            self.loop.call_soon(self._pump)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.core.conns.discard(self)
        if self.huge is not None:
            huge = self.huge
            self.huge = None
            self.core.record(huge.req, huge.obj, 200, huge.fault, "client_closed", huge.sent)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.job is not None:
            job = self.job
            self.job = None
            self.core.record(job.req, job.obj, 0, job.fault, "client_closed")

    # -- parsing ------------------------------------------------------------------------------------

    def _parse(self) -> _Request | None:
        buf = self.buf
        if self.head is None:
            while buf[:2] == b"\r\n":  # tolerated between pipelined requests (RFC 9112 §2.2)
                del buf[:2]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise _BadRequest(431, "request header too large")
                return None
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                raise _BadRequest(400, "malformed request line")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    raise _BadRequest(400, "malformed header line")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                length = -1
            else:
                try:
                    length = int(headers.get("content-length", "0"))
                except ValueError:
                    raise _BadRequest(400, "invalid content-length") from None
                if length < 0:
                    raise _BadRequest(400, "invalid content-length")
                if length > _MAX_BODY:
                    raise _BadRequest(413, "request body too large")
            path = parts[1].split("?", 1)[0]
            self.head = (parts[0], path, parts[2], headers, end + 4, length)
            self.continued = False
        method, path, version, headers, start, length = self.head
        if length < 0:
            decoded = _decode_chunked(buf, start)
            if decoded is None:
                self._maybe_continue(headers)
                return None
            body, consumed = decoded
        else:
            consumed = start + length
            if len(buf) < consumed:
                self._maybe_continue(headers)
                return None
            body = bytes(buf[start:consumed])
        del buf[:consumed]
        self.head = None
        return _Request(method, path, version, headers, body)

    def _maybe_continue(self, headers: dict[str, str]) -> None:
        # curl waits for this before sending bodies over 1 KiB.
        if not self.continued and headers.get("expect", "").lower() == "100-continue" and self.transport:
            self.continued = True
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- answering ----------------------------------------------------------------------------------

    def _drain(self) -> None:
        while not self.busy and not self.closed and self.buf:
            try:
                req = self._parse()
            except _BadRequest as e:
                self._bad_request(e)
                return
            if req is None:
                return
            self._dispatch(req)

    def _bad_request(self, e: _BadRequest) -> None:
        """Answer a request that cannot be parsed as HTTP, then close (the stream is out of sync)."""
        assert self.transport is not None
        reply = _own_error(e.status, str(e))
        with self.core.lock:  # counted before the client can see the answer
            self.core.counts[e.status] += 1
        self.transport.write(self._serialize(reply, False))
        self.transport.close()
        self.closed = True

    def _dispatch(self, req: _Request) -> None:
        core = self.core
        fault = core.faults.take() if req.method == "POST" and req.path in GENERATION_PATHS else None
        replay = core.replay
        memo_key: _ReplayKey | None = None
        # Faults are decided first, so a replayed request is faulted like any other; the key holds the
        # Authorization header, so a reply is only replayed to a request that would have got it.
        if replay is not None and fault is None and req.keep_alive:
            headers = req.headers
            memo_key = (req.method, req.path, headers.get("authorization"), headers.get("x-request-id"), req.body)
            cached = replay.get(memo_key)
            if cached is not None:
                if core.cfg.latency > 0:
                    self._later(_Job(req, _UNDECODED, None, None, None, cached), core.cfg.latency)
                    return
                core.record(req, _UNDECODED, 200, None, 200)
                t = self.transport
                assert t is not None
                t.write(cached)
                return
        reply: Reply | None
        if fault is not None and fault.kind in ("status", "malformed", "reset", "body"):
            obj = decode_body(req.body)
            rid = req.headers.get("x-request-id") or str(uuid.uuid4())
            reply = None if fault.kind == "reset" else fault.reply(rid)
        else:
            try:
                reply, obj = core.engine.handle(req.method, req.path, req.headers, req.body)
            except Exception as e:  # a simulator bug must not look like a network fault to the client
                _log.exception("simulator failed on %s %s", req.method, req.path)
                obj = decode_body(req.body)
                reply = _own_error(500, f"simulator error: {e!r}")
        delay = core.cfg.latency + (fault.seconds if fault is not None else 0.0)
        job = _Job(req, obj, reply, fault, memo_key, None)
        if delay > 0:
            self._later(job, delay)
        else:
            self._deliver(job)

    def _later(self, job: _Job, delay: float) -> None:
        self.busy = True
        self.job = job
        self.timer = self.loop.call_later(delay, self._deliver_later)

    def _deliver_later(self) -> None:
        job = self.job
        self.timer = None
        self.job = None
        if job is None or self.closed:
            return
        self._deliver(job)
        self.busy = self.huge is not None  # a huge body is still being written
        if self.buf:
            self._drain()

    def _deliver(self, job: _Job) -> None:
        req, obj, reply, fault = job.req, job.obj, job.reply, job.fault
        t = self.transport
        assert t is not None
        if job.cached is not None:  # a replayed reply whose latency has passed
            self.core.record(req, obj, 200, None, 200)
            t.write(job.cached)
            return
        if reply is None:  # Fault.reset
            # Recorded before acting, so a test that sees the outcome also sees the record.
            self.core.record(req, obj, 0, fault, "reset")
            sock = t.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            t.abort()
            self.closed = True
            return
        if fault is not None and fault.kind == "huge" and reply.events is None and reply.status == 200:
            self._start_huge(_HugeBody(req, obj, fault, reply.body), reply)
            return
        data, keep_alive, key = self._render(req, reply, fault)
        self.core.record(req, obj, reply.status, fault, key)
        replay = self.core.replay
        if job.memo_key is not None and replay is not None and reply.status == 200 and keep_alive:
            replay.put(job.memo_key, data, len(data) + len(req.body) + 200)
        t.write(data)
        if not keep_alive:
            t.close()
            self.closed = True

    def _start_huge(self, huge: _HugeBody, reply: Reply) -> None:
        """Send the head of a ``Fault.huge`` reply, then its body as fast as the client reads it."""
        assert self.transport is not None
        framing = "transfer-encoding: chunked\r\n" if huge.chunked else f"content-length: {huge.total}\r\n"
        self.busy = True  # nothing pipelined behind it is answered: the connection closes after it
        self.huge = huge
        self.transport.write(_head(200, reply.headers, framing, False))
        self._pump()

    def _pump(self) -> None:
        """Write the huge body until the transport's buffer is full (resume_writing calls back) or it ends."""
        huge, t = self.huge, self.transport
        if huge is None or t is None:
            return
        # is_closing: once the client has gone the transport drops writes without pausing us, and
        # connection_lost (which records the reply) is only scheduled.
        while not self.paused and not self.closed and not t.is_closing():
            chunk = huge.next_chunk()
            if chunk is None:
                if huge.chunked:
                    t.write(_LAST_CHUNK)
                self.huge = None
                self.core.record(huge.req, huge.obj, 200, huge.fault, 200, huge.sent)
                t.close()
                self.closed = True
                return
            t.write(_chunk(chunk) if huge.chunked else chunk)
            huge.sent += len(chunk)

    def _render(self, req: _Request, reply: Reply, fault: Fault | None) -> tuple[bytes, bool, int | str]:
        """Bytes to send, whether the connection stays open, and the ``status_counts`` key."""
        kind = fault.kind if fault is not None else None
        status = reply.status
        # Without chunked encoding (HTTP/1.0) the end of a stream is the end of the connection.
        keep_alive = req.keep_alive and (reply.events is None or req.version == "HTTP/1.1")
        if kind == "truncated":
            if reply.events is not None:
                events = list(reply.events)
                last = max(0, len(events) - 2)  # the last data event before [DONE]
                events[last] = events[last][: max(8, len(events[last]) // 2)] + b"\n\n"
                reply = Reply(status, b"", reply.request_id, reply.headers, events)
            else:
                reply = Reply(status, reply.body[: len(reply.body) // 2], reply.request_id, reply.headers)
        elif kind == "reset_mid_body" or (kind == "stream_cut" and reply.events is None):
            data = self._serialize(reply, keep_alive, req.version)
            head_len = data.index(b"\r\n\r\n") + 4
            return data[: head_len + max(1, (len(data) - head_len) // 2)], False, "reset_mid_body"
        elif kind == "stream_cut" and reply.events is not None:
            assert fault is not None
            partial = [e for e in reply.events if not is_finish_event(e)]
            partial = partial[: max(1, len(partial) // 2)]
            keep_alive = keep_alive and not fault.abort
            head = _head(status, reply.headers, "transfer-encoding: chunked\r\n", keep_alive)
            data = head + b"".join(_chunk(e) for e in partial)
            if fault.abort:
                return data, False, "stream_cut"
            return data + _LAST_CHUNK, keep_alive, status
        return self._serialize(reply, keep_alive, req.version), keep_alive, status

    @staticmethod
    def _serialize(reply: Reply, keep_alive: bool, version: str = "HTTP/1.1") -> bytes:
        if reply.events is None:
            return _head(reply.status, reply.headers, f"content-length: {len(reply.body)}\r\n", keep_alive) + reply.body
        if version != "HTTP/1.1":
            return _head(reply.status, reply.headers, "", False) + b"".join(reply.events)
        chunks = b"".join(_chunk(e) for e in reply.events)
        return _head(reply.status, reply.headers, "transfer-encoding: chunked\r\n", keep_alive) + chunks + _LAST_CHUNK


_ON_CALLERS_LOOP: Final[weakref.WeakSet[FireworksSimulator]] = weakref.WeakSet()
"""Simulators serving on an event loop of their caller's (started with ``astart``), for :func:`simulator_on_loop`."""


def simulator_on_loop(loop: asyncio.AbstractEventLoop, url: str) -> FireworksSimulator | None:
    """The simulator started with ``astart()`` on ``loop`` that ``url`` points at (same port, and the same host or
    both this machine's loopback), if there is one.

    The sync client asks this before blocking a thread whose loop is running: a simulator serving on that loop
    could not answer while the thread waits (``fw_rollouts._sync`` looks this module up only when it was imported).
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    for sim in list(_ON_CALLERS_LOOP):
        if sim._loop is loop and sim._port == port and _same_host(host, sim._host):
            return sim
    return None


def _same_host(client: str, server: str) -> bool:
    return client == server or (_is_loopback(client) and (_is_loopback(server) or server in ("0.0.0.0", "::", "")))


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FireworksSimulator:
    """A simulated Fireworks inference server on real loopback HTTP, for offline tests.

    ``with FireworksSimulator() as sim:`` runs it on a daemon thread with its own event loop;
    ``async with FireworksSimulator() as sim:`` runs it on the current loop instead (then the loop must
    not be blocked while a client waits for it). ``start()``/``stop()`` and ``astart()``/``astop()`` do
    the same without a ``with`` block. See ``docs/testing.md`` for the behaviour it simulates.

    Args:
        host: Interface to listen on.
        port: Port to listen on; 0 picks a free one.
        api_key: The only Bearer key accepted; None accepts any non-empty key.
        latency: Seconds added before every response.
        known_models: Accept only these model names (others get the Fireworks 404); None accepts any
            well-formed ``accounts/<acct>/models/<id>`` or ``accounts/<acct>/deployments/<id>``.
        bos: ``"none"``: no implicit BOS. ``"count"``: an implicit BOS is counted in
            ``usage.prompt_tokens`` but not echoed (like llama.cpp). ``"echo"``: it is counted and
            echoed as the first logprob token (zero width: ``choices[].text`` still starts with the
            prompt).
        echo_text: Whether ``echo`` prepends the prompt to ``choices[].text`` (unverified on Fireworks).
        stop_included: Whether returned text keeps the matched stop sequence (older Fireworks docs said
            so; the current spec says not).
        default_max_tokens: ``max_tokens`` when the request omits it (Fireworks: 16).
        context_length: Context window; longer requests are truncated or rejected as Fireworks does.
        text_offset_base: Where ``text_offset`` of completion tokens starts without echo:
            ``"completion"`` (0, like the Fireworks fixtures) or ``"prompt"`` (``len(prompt)``, like
            llama.cpp). With ``echo_last`` (a partial echo), ``"completion"`` counts every offset from the
            first echoed token and ``"prompt"`` from the start of the prompt (the two readings a real
            server may have).
        refuse_max_tokens_zero: Answer ``max_tokens=0`` with a 422 naming ``max_tokens`` (a server whose
            minimum is 1), instead of echoing without generating.
        record: Keep a :class:`RecordedRequest` per request in :attr:`requests` (turn off for long runs).
        strict_fields: Answer body fields outside the Fireworks schema with its 400 "extra fields not
            permitted" error; False ignores them (for OpenRouter-style clients that send ``provider``,
            ``reasoning``, ``top_a`` ...).
        replay_cache_mb: When > 0, memoise the complete bytes of each successful (200) response, keyed by
            method, path, ``Authorization`` and ``X-Request-ID`` headers and the exact body bytes, up to
            this many megabytes (oldest out first); an identical request then gets the same bytes back
            (same ``id`` and ``created``) without any work. Faults are still drawn first. For benchmarks.
            Not with rate limits or their headers (a replayed reply would skip them).
        requests_per_minute: Enforce Fireworks' request limit on a rolling minute of ``clock``: a completions or
            chat request whose choices (each counts, as ``n > 1`` does on Fireworks) would take the last
            minute's count over it gets a 429 with Fireworks' usage-limit body and ``x-ratelimit-over-limit:
            yes``, and counts for nothing. None: no limit.
        prompt_tokens_per_minute: The same for prompt tokens (as ``usage.prompt_tokens`` reports them).
        generated_tokens_per_minute: The same for generated tokens (a request is refused if what it generates
            would go over).
        ratelimit_headers: Send the older documented headers with each completions and chat reply, per minute:
            ``x-ratelimit-limit-{requests,tokens-prompt,tokens-generated}`` and ``x-ratelimit-remaining-*`` for
            each limit set (``x-ratelimit-over-limit`` is always sent).
        rate_window: Seconds over which the limits count (Fireworks: a minute, 60, the default); shorter only so
            that a test can watch a rate-limited client over several windows in seconds.
        clock: The time the limits count on, in seconds (default :func:`time.monotonic`); pass a virtual
            clock's ``now`` to run a rate-limited client on virtual time.
        answers: ``"boxed"`` makes the toy model answer: after ``\\boxed{`` it writes one of a few
            candidate answers (from a distribution that the finished sentences before it decide) and
            ``}``, and an answer segment ends with `` \\boxed{<answer>}``. None (the default): word soup.
        logprobs_fault: Answer every completions and chat request with a 200 whose logprobs are wrong in one
            way (None: honest): ``"missing"`` (``logprobs`` null), ``"shifted"`` (each generated position
            carries the next one's logprobs), ``"not-greedy"`` (temperature 0 picks the second candidate),
            ``"echo-drift"`` (echo scored by another model), ``"echo-short"`` (echo leaves out the middle
            prompt position), ``"no-echo"`` (echo ignored), ``"noisy"`` (every logprob lowered by an amount
            that changes per request) or ``"processed"`` (generated tokens report their sampling logprob).
            What ``AsyncFireworks.verify_logprobs`` must catch.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = "sim-key",
        latency: float = 0.0,
        known_models: Iterable[str] | None = None,
        bos: BosMode = "none",
        echo_text: bool = True,
        stop_included: bool = False,
        default_max_tokens: int = 16,
        context_length: int = 131_072,
        text_offset_base: OffsetBase = "completion",
        refuse_max_tokens_zero: bool = False,
        record: bool = True,
        strict_fields: bool = True,
        replay_cache_mb: int = 0,
        requests_per_minute: float | None = None,
        prompt_tokens_per_minute: float | None = None,
        generated_tokens_per_minute: float | None = None,
        ratelimit_headers: bool = False,
        clock: Callable[[], float] = time.monotonic,
        answers: AnswersMode = None,
        logprobs_fault: LogprobsFault | None = None,
        rate_window: float = 60.0,
    ) -> None:
        if bos not in ("none", "count", "echo"):
            raise ValueError(f"bos must be 'none', 'count' or 'echo', not {bos!r}")
        if text_offset_base not in ("completion", "prompt"):
            raise ValueError(f"text_offset_base must be 'completion' or 'prompt', not {text_offset_base!r}")
        if logprobs_fault is not None and logprobs_fault not in LOGPROBS_FAULTS:
            allowed = ", ".join(LOGPROBS_FAULTS)
            raise ValueError(f"logprobs_fault must be None or one of {allowed}, not {logprobs_fault!r}")
        if latency < 0 or default_max_tokens < 0 or context_length < 1:
            raise ValueError("latency and default_max_tokens must be >= 0 and context_length >= 1")
        if api_key == "":
            raise ValueError("api_key must be a non-empty string or None")
        if answers not in (None, "boxed"):
            raise ValueError(f"answers must be None or 'boxed', not {answers!r}")
        if replay_cache_mb < 0:
            raise ValueError("replay_cache_mb must be >= 0")
        if isinstance(rate_window, bool) or not isinstance(rate_window, (int, float)) or not 0 < rate_window < 1e9:
            raise ValueError(f"rate_window must be a number of seconds > 0, not {rate_window!r}")
        limits = {
            "requests_per_minute": requests_per_minute,
            "prompt_tokens_per_minute": prompt_tokens_per_minute,
            "generated_tokens_per_minute": generated_tokens_per_minute,
        }
        for name, limit in limits.items():
            if limit is not None and not (isinstance(limit, (int, float)) and limit > 0):
                raise ValueError(f"{name} must be a number > 0 or None, not {limit!r}")
        if replay_cache_mb > 0 and (ratelimit_headers or any(v is not None for v in limits.values())):
            raise ValueError("replay_cache_mb cannot be combined with rate limits or ratelimit_headers")
        cfg = Config(
            api_key=api_key,
            latency=float(latency),
            known_models=model_names(known_models),
            bos=bos,
            echo_text=echo_text,
            stop_included=stop_included,
            default_max_tokens=default_max_tokens,
            context_length=context_length,
            text_offset_base=text_offset_base,
            refuse_max_tokens_zero=bool(refuse_max_tokens_zero),
            strict_fields=strict_fields,
            requests_per_minute=requests_per_minute,
            prompt_tokens_per_minute=prompt_tokens_per_minute,
            generated_tokens_per_minute=generated_tokens_per_minute,
            ratelimit_headers=bool(ratelimit_headers),
            rate_window=float(rate_window),
            clock=clock,
            answers=answers,
            logprobs_fault=logprobs_fault,
        )
        self._core = _Core(cfg, record, int(replay_cache_mb * 1024 * 1024))
        self._host = host
        self._requested_port = port
        self._reuse_port = False  # set by the CLI's --workers
        self._port: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closer: AsyncGenerator[None, None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    async def _open(self) -> None:
        from ._model import _get_tables

        _get_tables()  # build the model's tables before the first request, not during it
        loop = asyncio.get_running_loop()
        core = self._core
        server = await loop.create_server(
            lambda: _Connection(core, loop),
            self._host,
            self._requested_port,
            backlog=4096,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )
        self._server = server
        self._loop = loop
        self._port = server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        _ON_CALLERS_LOOP.discard(self)
        server = self._server
        self._server = None
        if server is None:
            return
        server.close()
        for conn in list(self._core.conns):
            if conn.transport is not None:
                conn.transport.abort()
        await server.wait_closed()
        self._loop = None

    def start(self) -> FireworksSimulator:
        """Start serving on a background thread; returns self once the port is bound."""
        if self._server is not None or self._thread is not None:
            raise RuntimeError("simulator already started")
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._open())
            except BaseException as e:
                errors.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._close())
                loop.close()

        thread = threading.Thread(target=run, name="fw-rollouts-simulator", daemon=True)
        thread.start()
        ready.wait()
        if errors:
            thread.join()
            raise errors[0]
        self._thread = thread
        return self

    def stop(self) -> None:
        """Stop the background thread (drops open connections); a no-op when not started."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = None
        self._port = None

    async def astart(self) -> FireworksSimulator:
        """Start serving on the running event loop; returns self once the port is bound.

        The loop must not be blocked while a client waits for an answer: the sync client refuses to call
        this simulator from that loop (a ``ConfigurationError`` instead of a wait until the timeout). Left
        running, it stops when the loop shuts down (``asyncio.run`` returning), with no socket left open.
        """
        if self._server is not None or self._thread is not None:
            raise RuntimeError("simulator already started")
        await self._open()
        _ON_CALLERS_LOOP.add(self)
        self._closer = self._close_at_shutdown()
        await self._closer.__anext__()
        return self

    async def _close_at_shutdown(self) -> AsyncGenerator[None, None]:
        # An async generator the loop closes when it shuts down its generators (asyncio.run does).
        try:
            yield
        finally:
            await self._close()
            self._port = None

    async def astop(self) -> None:
        """Stop serving on the running event loop (drops open connections)."""
        if self._thread is not None:
            raise RuntimeError("this simulator runs on a thread: use stop()")
        closer, self._closer = self._closer, None
        if closer is not None:
            await closer.aclose()  # closes the server in its finally
        await self._close()
        self._port = None

    def __enter__(self) -> FireworksSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FireworksSimulator:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()

    # -- introspection ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The interface the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (raises RuntimeError before start)."""
        if self._port is None:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` (no path)."""
        return http_url(self._host, self.port)

    @property
    def base_url(self) -> str:
        """The Fireworks-style base URL: ``http://127.0.0.1:<port>/inference/v1``."""
        return self.url + "/inference/v1"

    @property
    def api_key(self) -> str:
        """A key the server accepts (``"sim-key"`` by default; any key works when built with None)."""
        return self._core.cfg.api_key or "sim-any-key"

    @property
    def faults(self) -> FaultPlan:
        """The fault plan: ``push`` scripted faults, switch on ``random`` faults, ``clear``."""
        return self._core.faults

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        with self._core.lock:
            return list(self._core.records)

    @property
    def status_counts(self) -> Counter[int | str]:
        """A snapshot of how many responses went out per status.

        Complete responses count under their status code (faults included, e.g. 429, or 200 for a
        truncated body); responses that never completed count under a string: ``"reset"``,
        ``"reset_mid_body"``, ``"stream_cut"`` (with ``abort=True``), ``"client_closed"`` (the client
        left before a delayed reply, or in the middle of a ``Fault.huge`` body).
        """
        with self._core.lock:
            return Counter(self._core.counts)

    def limits_counts(self) -> dict[str, int]:
        """Since the start or :meth:`reset`, while a rate limit was in force: ``admitted``, the requests let through,
        and ``refused``, those answered 429 for going over a limit (a fault's 429 is not counted here)."""
        limits = self._core.engine.limits
        return {"admitted": limits.admitted, "refused": limits.refused}

    def limits_used(self) -> dict[str, int]:
        """What the requests let through in the last minute (``rate_window``) of ``clock`` used, as the rate limits
        count it: ``requests`` (choices), ``prompt_tokens`` and ``generated_tokens``."""
        return self._core.engine.limits.used()

    def reset(self) -> None:
        """Forget recorded requests and counts, clear all faults, empty the replay memo and the rate limits' minute."""
        core = self._core
        with core.lock:
            core.records.clear()
            core.counts.clear()
        core.faults.clear()
        core.engine.limits.reset()
        if core.replay is not None:
            core.replay = Memo(core.replay_bytes)  # swapped, not cleared: the server thread may be using it

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "not started"
        return f"FireworksSimulator({where})"
