"""Trusting a server: :func:`verify_logprobs` probes it with a few short requests and reports whether its
logprobs are sane, as a :class:`LogprobsReport` of named :class:`LogprobsCheck` s.

Servers that answer 200 with wrong or missing logprobs exist (a template or model mismatch behind echo,
arrays off by one, temperature 0 that is not greedy); nothing else in a reply says so. Four requests,
each through the client's public API with ``use_cache=False`` (a probe must see the server, not the
cache) and a few tokens each:

* ``greedy``: the prompt at temperature 0, no echo;
* ``seeded`` twice: the prompt at temperature 1 with one seed, no echo, both at once;
* ``echo``: the prompt followed by the greedy text, echoed, one token generated (and dropped).

The checks are pure functions of the replies' :class:`Logprobs` (tested on hand-made cases):

1. ``well_formed``: every generated position has a finite logprob <= 0 and as many alternatives as
   asked for (the legacy format may add the sampled token: N+1), whose probabilities sum to at most
   1 + tolerance, and the chosen token's logprob equals its own entry among them.
2. ``echo``: the echoed positions spell the prompt (or their ``text_offset`` s cover it) and their
   number is ``usage.prompt_tokens``, or one fewer when the server counts a BOS it does not echo; the
   first echoed position has no context and its value is never compared.
3. ``greedy``: at temperature 0 every generated token is the top alternative (ties within tolerance).
4. ``consistency``: each generated token's logprob equals the echoed logprob of the same text at the
   same place, within tolerance (compared only where the echo's tokens are the generated ones).
5. ``determinism``: the same request twice gives the same logprobs wherever the context is the same.
   A different text under the same seed is reported but is no failure: sampling need not be
   reproducible for logprobs to be right, and the cache keeps the first sample anyway. Logprobs that
   change between identical requests are a failure.

A check that could not run (the server ignores echo, a reply had no logprobs to check) has
``passed=None`` and makes the report not ok, saying why.
"""

from __future__ import annotations

import asyncio
import html
import math
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

from ._columns import LOGPROB_TOLERANCE
from ._exceptions import BadRequestError, FwRolloutsError, InvalidTypeError, ResponseError, ServerError, ValidationError
from ._logprobs import Logprobs
from ._models import FwResponse

if TYPE_CHECKING:
    from ._client import AsyncFireworks, Prompt

__all__ = [
    "DEFAULT_PROBE_TOKENS",
    "DEFAULT_TOLERANCE",
    "DEFAULT_VERIFY_PROMPT",
    "LogprobsCheck",
    "LogprobsReport",
    "check_consistency",
    "check_determinism",
    "check_echo",
    "check_greedy",
    "check_well_formed",
    "verify_logprobs",
]

DEFAULT_TOLERANCE: Final = 0.1
"""Largest difference in nats between two logprobs that should be equal (and the slack of the other bounds).

The same logprob computed while decoding and while scoring an echo runs through different kernels and
batch shapes, in low precision (bf16, fp8) on GPU servers, so exact equality is too much to ask; a
server scoring under another model or template is off by a nat or more.
"""

DEFAULT_PROBE_TOKENS: Final = 12
"""Tokens each generating probe asks for (``max_tokens=`` overrides it)."""

DEFAULT_VERIFY_PROMPT: Final = "Write one sentence about the café on the corner of the square."
"""The probe's prompt when none is given: short, with one non-ASCII character so that the report can tell
whether the server's ``text_offset`` counts characters or UTF-8 bytes."""

SEED: Final = 1234
"""The seed of both ``seeded`` probes."""

_RESERVED: Final = ("temperature", "echo", "use_cache", "seed", "n_samples", "samples_per_request")
"""Options each probe sets itself."""

_SHOWN: Final = 3
"""Problems quoted in a finding (all of them are in ``details``, up to :data:`_KEPT`)."""

_KEPT: Final = 20

_CAUGHT: Final = (ResponseError, BadRequestError, ServerError)
"""Probe failures that are findings about the server's logprobs or echo; any other error (no key, no such
model, no connection, rate limited for good) is the caller's to see, raised as it is."""


@dataclass(frozen=True, slots=True)
class LogprobsCheck:
    """One named finding of :func:`verify_logprobs`."""

    name: str
    """``well_formed``, ``echo``, ``greedy``, ``consistency`` or ``determinism``."""
    passed: bool | None
    """True or False; None when the check could not be made (the finding says why)."""
    finding: str
    """One line for a human, with the numbers."""
    details: Mapping[str, Any]
    """The raw figures (read-only; plain numbers, strings, tuples)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (LogprobsCheck, (self.name, self.passed, self.finding, dict(self.details)))

    @property
    def status(self) -> str:
        """``"pass"``, ``"FAIL"`` or ``"not checked"``."""
        return "pass" if self.passed else "not checked" if self.passed is None else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON-serialisable)."""
        return {"name": self.name, "passed": self.passed, "finding": self.finding, "details": _plain(self.details)}


@dataclass(frozen=True, slots=True)
class LogprobsReport:
    """What :meth:`AsyncFireworks.verify_logprobs` found about a server's logprobs: ``ok`` and each check."""

    checks: tuple[LogprobsCheck, ...]
    """Every check, in order (see the module docs of ``fw_rollouts._verify``)."""
    server: str
    """The base URL probed."""
    model: str
    """The model probed (as sent)."""
    prompt: str
    """The exact prompt string the probes started from."""
    tolerance: float
    """The tolerance the checks used, in nats."""

    @property
    def ok(self) -> bool:
        """True only when every check passed; a check that could not run makes it False."""
        return all(check.passed is True for check in self.checks)

    def check(self, name: str) -> LogprobsCheck:
        """The check called ``name``; KeyError if there is none."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON-serialisable)."""
        return {
            "ok": self.ok,
            "server": self.server,
            "model": self.model,
            "prompt": self.prompt,
            "tolerance": self.tolerance,
            "checks": [check.to_dict() for check in self.checks],
        }

    def _headline(self) -> str:
        passed = sum(check.passed is True for check in self.checks)
        verdict = "ok" if self.ok else "NOT OK"
        return f"logprobs of {self.model} at {self.server}: {verdict} ({passed} of {len(self.checks)} checks passed)"

    def __str__(self) -> str:
        width = max((len(check.name) for check in self.checks), default=0)
        rows = [f"  {check.status:<11} {check.name:<{width}}  {check.finding}" for check in self.checks]
        return "\n".join([self._headline(), *rows])

    def _repr_html_(self) -> str:
        colours = {"pass": "#1a7f37", "FAIL": "#cf222e", "not checked": "#9a6700"}
        rows = "".join(
            f'<tr><td style="color:{colours[c.status]};font-weight:bold">{c.status}</td>'
            f"<td><code>{html.escape(c.name)}</code></td><td>{html.escape(c.finding)}</td></tr>"
            for c in self.checks
        )
        return (
            f"<div><p><b>{html.escape(self._headline())}</b></p>"
            f"<table><tr><th>result</th><th>check</th><th>finding</th></tr>{rows}</table></div>"
        )

    def __repr__(self) -> str:
        statuses = ", ".join(f"{check.name}={check.status}" for check in self.checks)
        return f"LogprobsReport(ok={self.ok}, model={self.model!r}, server={self.server!r}, {statuses})"


# -- the probes ---------------------------------------------------------------------------------------------


async def verify_logprobs(
    client: AsyncFireworks,
    prompt: Prompt | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    raw: bool | None = None,
    **options: Any,
) -> LogprobsReport:
    """Probe ``client``'s server with four short requests and report whether its logprobs are sane.

    ``prompt`` (default :data:`DEFAULT_VERIFY_PROMPT`) is rendered as :meth:`AsyncFireworks.generate`
    would render it (``raw=`` and ``options`` as there); every probe then sends that exact string.
    ``options`` are sampling overrides (``logprobs=3``, ``top_logprobs=...``, ``max_tokens=`` the
    probe length); temperature, echo, seed and caching are each probe's own. Bad arguments raise before
    any request. Replies the client refuses (no logprobs, impossible values) and requests the server
    refuses (400) are findings; an error that says nothing about logprobs (bad key, unknown model, no
    connection) is raised.
    """
    tolerance = _check_tolerance(tolerance)
    for name in _RESERVED:
        if name in options:
            raise ValidationError(name, options[name], "not an option of verify_logprobs: each probe sets its own")
    max_tokens = options.pop("max_tokens", DEFAULT_PROBE_TOKENS)
    # Rendered once: every probe sends this exact string (raw), so all of them score the same tokens.
    text = client.render(DEFAULT_VERIFY_PROMPT if prompt is None else prompt, raw=raw, **options)
    settings = client.settings.for_call({**options, "max_tokens": max_tokens}, where="verify_logprobs")
    if not settings.logprobs:
        raise ValidationError("logprobs", settings.logprobs, "1 to 5: verify_logprobs needs logprobs on")
    if not settings.max_tokens:
        raise ValidationError("max_tokens", settings.max_tokens, "at least 1: the probes must generate")
    requested = settings.top_logprobs if settings.top_logprobs is not None else settings.logprobs
    if not requested:
        raise ValidationError("top_logprobs", requested, "1 to 5: the checks compare tokens with their alternatives")
    # One choice per request whatever the client's default: each probe is one sample of its own request.
    probe: dict[str, Any] = {
        **options, "raw": True, "use_cache": False, "progress_bar": False, "samples_per_request": 1,
    }  # fmt: skip

    def generate(prompt_text: str, **sampling: Any) -> Awaitable[FwResponse | FwRolloutsError]:
        return _sample(client.generate(prompt_text, **probe, **sampling))

    greedy, seeded, seeded_again = await _all(
        generate(text, temperature=0.0, echo=False, max_tokens=max_tokens),
        generate(text, seed=SEED, temperature=1.0, echo=False, max_tokens=max_tokens),
        generate(text, seed=SEED, temperature=1.0, echo=False, max_tokens=max_tokens),
    )
    generated = greedy.full if isinstance(greedy, FwResponse) else ""
    (echo,) = await _all(generate(text + generated, temperature=0.0, echo=True, max_tokens=1))

    runs = {"greedy": greedy, "seeded": seeded, "seeded again": seeded_again}
    checks = (
        _well_formed(runs, requested, tolerance),
        _echo(echo, text + generated),
        _greedy(greedy, requested, tolerance),
        _consistency(greedy, echo, text, tolerance),
        _determinism(seeded, seeded_again, tolerance),
    )
    return LogprobsReport(
        checks=checks, server=_public_url(settings.resolved_base_url), model=settings.model, prompt=text,
        tolerance=tolerance,
    )  # fmt: skip


async def _sample(call: Awaitable[Any]) -> FwResponse | FwRolloutsError:
    """The one sample of a probe, or the error that is a finding."""
    try:
        rollouts = await call
    except _CAUGHT as exc:
        return exc
    response: FwResponse = rollouts[0]
    return response


async def _all(*probes: Awaitable[FwResponse | FwRolloutsError]) -> list[FwResponse | FwRolloutsError]:
    # Every probe ends before an error is raised: none is left running behind the caller's back.
    results = await asyncio.gather(*probes, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, FwRolloutsError):
            raise result
        if isinstance(result, FwRolloutsError) and not isinstance(result, _CAUGHT):
            raise result
    return list(results)  # type: ignore[arg-type]  # only samples and caught errors are left


def _check_tolerance(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError("tolerance", value, "a number of nats >= 0")
    if not (math.isfinite(value) and value >= 0):
        raise ValidationError("tolerance", value, "a finite number of nats >= 0")
    return float(value)


def _public_url(url: str) -> str:
    """``url`` without any user or password in it."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _unusable(name: str, probe: str, error: FwRolloutsError, *, primary: bool) -> LogprobsCheck:
    """The check ``name`` when the reply of ``probe`` is an error: failed if the reply is what it checks."""
    what = "refused the" if isinstance(error, (BadRequestError, ServerError)) else "gave an unusable reply to the"
    finding = f"the server {what} {probe} probe: {type(error).__name__}: {error.message}"
    if not primary:
        finding = "could not check: " + finding
    return LogprobsCheck(name, False if primary else None, finding, {"probe": probe, "error": type(error).__name__})


def _well_formed(
    runs: Mapping[str, FwResponse | FwRolloutsError], requested: int, tolerance: float
) -> LogprobsCheck:
    for probe, run in runs.items():
        if isinstance(run, FwRolloutsError):
            return _unusable("well_formed", probe, run, primary=True)
    return check_well_formed(
        {probe: _generation(run) for probe, run in runs.items() if isinstance(run, FwResponse)}, requested, tolerance
    )


def _echo(echo: FwResponse | FwRolloutsError, prompt: str) -> LogprobsCheck:
    if isinstance(echo, FwRolloutsError):
        return _unusable("echo", "echo", echo, primary=not isinstance(echo, BadRequestError))
    return check_echo(_logprobs(echo), prompt, echo.usage.prompt_tokens)


def _greedy(greedy: FwResponse | FwRolloutsError, requested: int, tolerance: float) -> LogprobsCheck:
    if isinstance(greedy, FwRolloutsError):
        return _unusable("greedy", "greedy", greedy, primary=False)
    return check_greedy(_generation(greedy), requested, tolerance)


def _consistency(
    greedy: FwResponse | FwRolloutsError, echo: FwResponse | FwRolloutsError, prompt: str, tolerance: float
) -> LogprobsCheck:
    if isinstance(greedy, FwRolloutsError):
        return _unusable("consistency", "greedy", greedy, primary=False)
    if isinstance(echo, FwRolloutsError):
        return _unusable("consistency", "echo", echo, primary=False)
    return check_consistency(_generation(greedy), greedy.full, _logprobs(echo), prompt, tolerance)


def _determinism(
    first: FwResponse | FwRolloutsError, second: FwResponse | FwRolloutsError, tolerance: float
) -> LogprobsCheck:
    for probe, run in (("seeded", first), ("seeded again", second)):
        if isinstance(run, FwRolloutsError):
            return _unusable("determinism", probe, run, primary=False)
    assert isinstance(first, FwResponse) and isinstance(second, FwResponse)
    return check_determinism(_generation(first), _generation(second), tolerance)


def _logprobs(response: FwResponse) -> Logprobs:
    return response.logprobs if response.logprobs is not None else Logprobs()


def _generation(response: FwResponse) -> Logprobs:
    return _logprobs(response).get_generation_logprobs()


# -- the checks (pure) --------------------------------------------------------------------------------------


def _num(x: float) -> str:
    """A logprob or difference for a finding: three significant digits, 0 as 0."""
    return "0" if x == 0 else f"{x:.3g}"


def _quote(problems: Sequence[str]) -> str:
    shown = "; ".join(problems[:_SHOWN])
    return shown + (f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else "")


def check_well_formed(runs: Mapping[str, Logprobs], requested: int, tolerance: float) -> LogprobsCheck:
    """Check 1 over the generated positions of each named run: logprobs finite and <= 0, ``requested``
    alternatives (or one more that holds the chosen token), their probabilities summing to at most
    1 + ``tolerance``, and the chosen token's logprob equal to its own entry among them."""
    problems: list[str] = []
    positions = 0
    counts: list[int] = []
    mass_max = 0.0
    entry_gap = 0.0
    for probe, lp in runs.items():
        tops = lp.top_logprobs
        for i, (token, value) in enumerate(zip(lp.tokens, lp.token_logprobs, strict=True)):
            positions += 1
            where = f"{probe}[{i}] {token!r}"
            if value is None:
                problems.append(f"{where} has no logprob")
                continue
            if not math.isfinite(value) or value > LOGPROB_TOLERANCE:
                problems.append(f"{where} has logprob {value!r}")
            top = tops[i]
            if not top:
                problems.append(f"{where} has no alternatives ({requested} asked for)")
                continue
            counts.append(len(top))
            if len(top) != requested and not (len(top) == requested + 1 and token in top):
                problems.append(f"{where} has {len(top)} alternatives where {requested} were asked for")
            mass = sum(math.exp(v) for v in top.values() if math.isfinite(v))
            mass_max = max(mass_max, mass)
            if mass > 1 + tolerance:
                problems.append(f"{where}: its alternatives hold probability {mass:.3f} > 1")
            own = top.get(token)
            if own is not None and math.isfinite(value):
                gap = abs(own - value)
                entry_gap = max(entry_gap, gap)
                if gap > tolerance:
                    problems.append(f"{where} has logprob {_num(value)} but {_num(own)} among its alternatives")
    details = {
        "positions": positions,
        "requested": requested,
        "alternatives_min": min(counts, default=None),
        "alternatives_max": max(counts, default=None),
        "max_top_mass": mass_max if counts else None,
        "max_chosen_vs_entry": entry_gap,
        "problems": tuple(problems[:_KEPT]),
    }
    if not positions:
        return LogprobsCheck("well_formed", None, "could not check: the probes generated no tokens", details)
    if problems:
        finding = f"{len(problems)} problems in {positions} generated positions: {_quote(problems)}"
        return LogprobsCheck("well_formed", False, finding, details)
    shape = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
    finding = (
        f"{positions} generated positions: finite logprobs <= 0, {shape} alternatives each ({requested} asked for), "
        f"top mass at most {mass_max:.3f}, chosen token = its alternative entry (max |diff| {_num(entry_gap)})"
    )
    return LogprobsCheck("well_formed", True, finding, details)


def _spells(tokens: Sequence[str], text: str) -> int | None:
    """How many leading tokens (0 or 1) lie ahead of ``text`` when the rest spell it exactly, else None."""
    if "".join(tokens) == text:
        return 0
    if len(tokens) > 1 and "".join(tokens[1:]) == text:
        return 1
    return None


def _byte_piece(token: str) -> bool:
    """A token text that stands for part of a character (servers show these as U+FFFD or ``bytes:...``)."""
    return "\ufffd" in token or token.startswith("bytes:")


def _offsets_cover(tokens: Sequence[str], offsets: Sequence[int], text: str) -> tuple[int, str] | None:
    """(leading tokens, unit) when ``offsets`` slice ``text`` into the tokens, byte pieces let through (the
    reading that leaves the fewest of them empty), else None."""
    found: list[tuple[int, int, str]] = []
    for lead in (0, 1):
        toks, offs = tokens[lead:], list(offsets[lead:])
        if not toks:
            continue
        base = offs[0]
        offs = [o - base for o in offs]
        for unit, whole in (("characters", text), ("bytes", text.encode("utf-8"))):
            ends = [*offs[1:], len(whole)]
            if any(b < a for a, b in zip(offs, ends, strict=True)):
                continue
            pieces = [whole[a:b] for a, b in zip(offs, ends, strict=True)]
            wanted = [t if unit == "characters" else t.encode("utf-8") for t in toks]
            if all(p == w or _byte_piece(t) for p, w, t in zip(pieces, wanted, toks, strict=True)):
                found.append((sum(not p for p in pieces), lead, unit))
    if not found:
        return None
    _, lead, unit = min(found)
    return lead, unit


def _offset_unit(tokens: Sequence[str], offsets: Sequence[int], lead: int, end: int | None) -> str:
    """Whether ``offsets`` count characters or UTF-8 bytes, for tokens that spell their text after ``lead``;
    ``end`` is the offset of the position after them (the first generated token), if there is one."""
    toks, offs = tokens[lead:], list(offsets[lead:])
    if not toks:
        return "unknown"
    base = offs[0]
    chars = bytes_ = 0
    by_chars, by_bytes = [], []
    for t in toks:
        by_chars.append(chars)
        by_bytes.append(bytes_)
        chars += len(t)
        bytes_ += len(t.encode("utf-8"))
    shifted = [o - base for o in offs]
    if end is not None:
        shifted.append(end - base)
        by_chars.append(chars)
        by_bytes.append(bytes_)
    if shifted == by_chars and shifted == by_bytes:
        return "characters or bytes (no non-ASCII text to tell them apart)"
    if shifted == by_chars:
        return "characters"
    if shifted == by_bytes:
        return "bytes"
    return "neither characters nor bytes"


def check_echo(echoed: Logprobs, prompt: str, prompt_tokens: int) -> LogprobsCheck:
    """Check 2: the echoed positions of ``echoed`` spell ``prompt`` (or their offsets cover it), one per
    prompt token: as many as ``prompt_tokens`` (the reply's ``usage.prompt_tokens``, 0 if not sent), or
    one fewer for a BOS the server counts and does not echo. The first position's value is never read."""
    k = echoed.num_prompt_tokens
    tokens = echoed.tokens[:k]
    values = echoed.token_logprobs[:k]
    offsets = echoed.text_offset[:k]
    details: dict[str, Any] = {"echoed": k, "usage_prompt_tokens": prompt_tokens}
    if not k:
        return LogprobsCheck(
            "echo", None, "could not check: the server returned no echoed prompt positions (does it ignore echo?)",
            details,
        )  # fmt: skip
    problems: list[str] = []
    notes: list[str] = []
    lead = _spells(tokens, prompt)
    if lead is not None:
        spelled = "spell the prompt"
        every = echoed.text_offset
        unit = _offset_unit(tokens, offsets, lead, every[k] if len(every) > k else None)
    else:
        covered = _offsets_cover(tokens, offsets, prompt)
        if covered is None:
            joined = "".join(tokens)
            at = next(
                (i for i, (a, b) in enumerate(zip(joined, prompt, strict=False)) if a != b),
                min(len(joined), len(prompt)),
            )
            problems.append(
                f"the {k} echoed tokens do not spell the prompt (they differ from character {at}: "
                f"{joined[at:at + 20]!r} vs {prompt[at:at + 20]!r})"
            )
            spelled, unit, lead = "do not spell the prompt", "unknown", 0
        else:
            lead, unit = covered
            spelled = f"cover the prompt by text_offset ({unit}; some tokens are byte pieces)"
    details.update({"leading_bos": bool(lead), "text_offset_unit": unit})
    if lead:
        bos = tokens[0]
        double = prompt.startswith(bos)
        also = ", which starts with one: a double BOS" if double else ""
        notes.append(f"echoes a BOS {bos!r} ahead of the prompt{also}")
        details["double_bos"] = double
    hidden = False
    if not prompt_tokens:
        notes.append("usage.prompt_tokens not reported: the count is not checked")
    elif k == prompt_tokens - 1 and not lead:
        hidden = True
        notes.append("the server counts a BOS it does not echo")
    elif k != prompt_tokens:
        problems.append(f"{k} echoed positions for usage.prompt_tokens = {prompt_tokens}")
    details["hidden_bos"] = hidden
    missing = [i for i in range(1, k) if values[i] is None]
    if missing:
        problems.append(f"{len(missing)} echoed positions after the first have no logprob (first: {missing[0]})")
    details["problems"] = tuple(problems)
    if problems:
        return LogprobsCheck("echo", False, "; ".join(problems), details)
    finding = f"{k} echoed positions {spelled} (usage.prompt_tokens {prompt_tokens}); text_offset counts {unit}"
    return LogprobsCheck("echo", True, "; ".join([finding, *notes]), details)


def check_greedy(generated: Logprobs, requested: int, tolerance: float) -> LogprobsCheck:
    """Check 3: at temperature 0 each generated token is the top alternative of its position, or within
    ``tolerance`` of it (a tie).

    A token among ``requested`` + 1 alternatives is one the server added because it was not among the top
    ``requested`` (the legacy format's rule): not the top one, whatever logprob it reports."""
    problems: list[str] = []
    checked = 0
    for i, (token, top) in enumerate(zip(generated.tokens, generated.top_logprobs, strict=True)):
        if not top:
            continue
        checked += 1
        best_token, best = max(top.items(), key=lambda item: item[1])
        own = top.get(token)
        if own is None:
            problems.append(f"token {i} {token!r} is not among its alternatives (top: {best_token!r} {_num(best)})")
        elif len(top) == requested + 1:
            problems.append(f"token {i} {token!r} came as alternative {requested + 1}, outside the top {requested}")
        elif own < best - tolerance:
            problems.append(f"token {i} {token!r} {_num(own)} is below the top alternative {best_token!r} {_num(best)}")
    details = {"tokens": len(generated), "checked": checked, "problems": tuple(problems[:_KEPT])}
    if not checked:
        return LogprobsCheck("greedy", None, "could not check: no generated token came with alternatives", details)
    if problems:
        finding = (
            f"at temperature 0, {len(problems)} of {checked} tokens were not the top alternative: {_quote(problems)}"
        )
        return LogprobsCheck("greedy", False, finding, details)
    return LogprobsCheck("greedy", True, f"at temperature 0 all {checked} tokens were the top alternative", details)


def _echo_starts(tokens: Sequence[str], text: str) -> dict[int, int]:
    """Echoed position of the token starting at each character of ``text``, for tokens that spell it from the
    start, after none or one leading token (a BOS, which takes no characters), whichever spells more of it;
    up to where they no longer do."""
    best: dict[int, int] = {}
    for lead in (0, 1):
        starts: dict[int, int] = {}
        pos = 0
        for i in range(lead, len(tokens)):
            token = tokens[i]
            if not token or not text.startswith(token, pos):
                break
            starts[pos] = i
            pos += len(token)
        if len(starts) > len(best):
            best = starts
    return best


def check_consistency(
    generated: Logprobs, generated_text: str, echoed: Logprobs, prompt: str, tolerance: float
) -> LogprobsCheck:
    """Check 4: each generated token (``generated``, spelling ``generated_text`` after ``prompt``) has the
    logprob the echo of ``prompt + generated_text`` (``echoed``) gives the same token at the same place.

    Only tokens the echo has at the same character with the same text are compared: the server's
    tokenizer may split the text differently (at the boundary with the prompt most of all)."""
    k = echoed.num_prompt_tokens
    details: dict[str, Any] = {"generated": len(generated), "compared": 0, "max_abs_diff": None}
    if not k:
        return LogprobsCheck("consistency", None, "could not check: the echo returned no prompt positions", details)
    if not len(generated):
        return LogprobsCheck("consistency", None, "could not check: the greedy probe generated no tokens", details)
    text = prompt + generated_text
    echo_tokens = echoed.tokens[:k]
    echo_values = echoed.token_logprobs[:k]
    starts = _echo_starts(echo_tokens, text)
    compared = 0
    worst: tuple[float, int, str, float, float] | None = None
    unmatched: list[int] = []
    pos = len(prompt)
    for i, (token, value) in enumerate(zip(generated.tokens, generated.token_logprobs, strict=True)):
        if not text.startswith(token, pos):
            break  # the tokens no longer spell the text (a cut stop sequence): no place to compare at
        j = starts.get(pos)
        there = echo_values[j] if j is not None and j > 0 and echo_tokens[j] == token else None
        if there is not None and value is not None:
            diff = abs(value - there)
            compared += 1
            if worst is None or diff > worst[0]:
                worst = (diff, i, token, value, there)
        else:
            unmatched.append(i)
        pos += len(token)
    details.update({"compared": compared, "unmatched": tuple(unmatched)})
    if worst is None:
        return LogprobsCheck(
            "consistency", None,
            "could not check: the echo split the generated text into other tokens everywhere", details,
        )  # fmt: skip
    diff, i, token, value, echoed_value = worst
    details.update({"max_abs_diff": diff, "worst_token": i})
    skipped = f", {len(unmatched)} retokenised differently (not compared)" if unmatched else ""
    if diff > tolerance:
        finding = (
            f"a generated token's logprob differs from the echo's for the same text by up to {_num(diff)} "
            f"(> {_num(tolerance)}): token {i} {token!r} generated {_num(value)}, echoed {_num(echoed_value)} "
            f"({compared} of {len(generated)} tokens compared{skipped})"
        )
        return LogprobsCheck("consistency", False, finding, details)
    finding = (
        f"{compared} of {len(generated)} generated tokens match the echo's logprobs for the same text "
        f"(max |diff| {_num(diff)} <= {_num(tolerance)}{skipped})"
    )
    return LogprobsCheck("consistency", True, finding, details)


def _diffs(a: Mapping[str, float] | None, b: Mapping[str, float] | None) -> Iterable[float]:
    if a and b:
        for token, value in a.items():
            other = b.get(token)
            if other is not None:
                yield abs(value - other)


def check_determinism(first: Logprobs, second: Logprobs, tolerance: float) -> LogprobsCheck:
    """Check 5: two replies to the same seeded request give the same logprobs wherever their context is the
    same: at each position up to and including the first where their tokens differ (the chosen token's
    where it is the same one, and every alternative both list). Different texts are reported, not failed."""
    n = min(len(first), len(second))
    same = first.tokens == second.tokens
    diverge = next((i for i in range(n) if first.tokens[i] != second.tokens[i]), n)
    diff = 0.0
    compared = 0
    for i in range(min(diverge + 1, n)):
        here = list(_diffs(first.top_logprobs[i], second.top_logprobs[i]))
        a, b = first.token_logprobs[i], second.token_logprobs[i]
        if i < diverge and a is not None and b is not None:
            here.append(abs(a - b))
        if here:
            compared += 1
            diff = max(diff, *here)
    details = {"same_text": same, "diverged_at": None if same else diverge, "compared": compared, "max_abs_diff": diff}
    if not compared:
        return LogprobsCheck("determinism", None, "could not check: the seeded probes share no position", details)
    text = (
        "the same seed gave the same text"
        if same
        else f"the same seed gave different texts from token {diverge} (sampling is not reproducible here; "
        "that is no logprob fault)"
    )
    if diff > tolerance:
        finding = (
            f"the same request twice gave logprobs that differ by up to {_num(diff)} (> {_num(tolerance)}) "
            f"in the same context ({compared} positions); {text}"
        )
        return LogprobsCheck("determinism", False, finding, details)
    finding = f"{text}; logprobs agree at the {compared} positions of shared context (max |diff| {_num(diff)})"
    return LogprobsCheck("determinism", True, finding, details)


def _plain(value: Any) -> Any:
    """``value`` with read-only mappings and tuples as dicts and lists (for JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
