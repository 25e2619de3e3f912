"""Everything the simulator does with a request except I/O: routing, auth, prompts, generation.

The HTTP layer (``_server``) hands over a method, a path, lower-cased headers and the raw body and gets a
:class:`~._reply.Reply` back; faults (``_faults``) decorate or replace that reply. The :class:`Engine` routes
and authenticates, then composes the parts, each in its own module: validation (``_validate``), the toy model
(``_model``) and the bodies (``_render``). Keeping these modules free of sockets makes each rule
unit-testable.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

from ._config import Config
from ._errors import ApiError
from ._faults import USAGE_LIMIT_MESSAGE
from ._limits import RateLimits
from ._memo import Memo
from ._misreport import DRIFT_SUFFIX, noise_of, reported_echo, reported_generation, reported_request
from ._model import Generation, Prompt, Step, bos_token_for, generate, walk_prompt
from ._render import Choice, render_body, render_events
from ._reply import Reply, decode_body, dumps
from ._tokenizer import decode_id, tokenize
from ._validate import CompletionRequest, PromptInput, validate

__all__ = [
    "CHAT_PATHS",
    "COMPLETIONS_PATHS",
    "DEFAULT_MODELS",
    "GENERATION_PATHS",
    "MODELS_PATHS",
    "Engine",
]

COMPLETIONS_PATHS: Final = frozenset({"/inference/v1/completions", "/v1/completions", "/completions"})
CHAT_PATHS: Final = frozenset({"/inference/v1/chat/completions", "/v1/chat/completions", "/chat/completions"})
#: The endpoints that generate (and that faults apply to).
GENERATION_PATHS: Final = COMPLETIONS_PATHS | CHAT_PATHS
MODELS_PATHS: Final = frozenset({"/inference/v1/models", "/v1/models", "/models"})

#: Models listed by ``GET /models`` when the simulator accepts any model.
DEFAULT_MODELS: Final = (
    "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b",
    "accounts/fireworks/models/llama-v3p1-8b-instruct",
    "accounts/fireworks/models/gpt-oss-20b",
)

_MASK64: Final = (1 << 64) - 1


class Engine:
    """Request handling shared by every connection of one simulator (holds memo caches)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        # Bounded by tokens held (about 100 bytes each), not entries: one prompt may be 100k tokens.
        self._prompts: Memo[tuple[str, PromptInput, bool], Prompt] = Memo(1_000_000)
        self._gens: Memo[tuple[object, ...], Generation] = Memo(1_000_000)
        self.limits = RateLimits(
            cfg.requests_per_minute,
            cfg.prompt_tokens_per_minute,
            cfg.generated_tokens_per_minute,
            clock=cfg.clock,
            headers=cfg.ratelimit_headers,
            window=cfg.rate_window,
        )
        self._replies = 0  # requests answered under a logprobs fault (``noisy`` lowers each reply by its own amount)

    # -- routing ------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple[Reply, object]:
        """Answer one request; also returns the decoded JSON body (None if absent or unparseable)."""
        request_id = headers.get("x-request-id") or str(uuid.uuid4())
        obj = decode_body(body)
        try:
            if path in COMPLETIONS_PATHS:
                return self.completion(self._json_post(method, headers, obj, body, request_id), request_id), obj
            if path in CHAT_PATHS:
                return self.chat(self._json_post(method, headers, obj, body, request_id), request_id), obj
            if path in MODELS_PATHS:
                if method != "GET":
                    raise self._method_not_allowed("GET", request_id)
                self._auth(headers, request_id)
                return Reply(200, dumps(self._models_body()), request_id, self._headers(request_id)), obj
            raise ApiError.nested(404, f"Not found: {method} {path}", request_id)
        except ApiError as e:
            return self.error_reply(e, request_id), obj

    def _json_post(self, method: str, headers: Mapping[str, str], obj: object, body: bytes, request_id: str) -> object:
        """The checks every POST endpoint makes, in the service's order: method, key, then a JSON body."""
        if method != "POST":
            raise self._method_not_allowed("POST", request_id)
        self._auth(headers, request_id)
        if obj is None:
            msg = "Request body must be a JSON object" if not body else "Request body is not valid JSON"
            raise ApiError.nested(400, msg, request_id)
        return obj

    def _method_not_allowed(self, allow: str, request_id: str) -> ApiError:
        return ApiError.nested(405, "Method Not Allowed", request_id, headers=[("allow", allow)])

    def _auth(self, headers: Mapping[str, str], request_id: str) -> None:
        auth = headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError.nested(401, "Missing or malformed Authorization header", request_id)
        if self.cfg.api_key is not None and key != self.cfg.api_key:
            raise ApiError.nested(401, "The API key you provided is invalid.", request_id)

    def _headers(self, request_id: str, content_type: str = "application/json") -> list[tuple[str, str]]:
        return [("content-type", content_type), ("x-request-id", request_id), ("x-ratelimit-over-limit", "no")]

    def error_reply(self, e: ApiError, request_id: str) -> Reply:
        """Render an :class:`~._errors.ApiError` as a reply."""
        return Reply(e.status, dumps(e.body), request_id, self._headers(request_id) + e.headers)

    def _models_body(self) -> dict[str, Any]:
        names = sorted(self.cfg.known_models) if self.cfg.known_models is not None else DEFAULT_MODELS
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": 1_700_000_000,
                    "owned_by": name.split("/")[1] if name.count("/") >= 2 else "fireworks",
                    "kind": "HF_BASE_MODEL",
                    "supports_chat": True,
                    "supports_image_input": False,
                    "supports_tools": False,
                    "context_length": self.cfg.context_length,
                }
                for name in names
            ],
        }

    # -- completions --------------------------------------------------------------------------------

    def completion(self, obj: object, request_id: str) -> Reply:
        """Answer a decoded completions body (auth already checked)."""
        return self._answer(validate(self.cfg, obj, request_id), request_id)

    def chat(self, obj: object, request_id: str) -> Reply:
        """Answer a decoded chat completions body (auth already checked)."""
        return self._answer(validate(self.cfg, obj, request_id, chat=True), request_id)

    def _answer(self, req: CompletionRequest, request_id: str) -> Reply:
        req = reported_request(self.cfg.logprobs_fault, req)
        choices, prompt_tokens, completion_tokens = self._choices(req, request_id)
        limit_headers: list[tuple[str, str]] = []
        if self.limits.enabled:
            # Each choice counts as a request, as Fireworks counts n > 1.
            admitted, limit_headers = self.limits.admit(len(choices), prompt_tokens, completion_tokens)
            if not admitted:
                return self._over_limit(request_id, limit_headers)
        echo_text = self.cfg.echo_text
        if req.stream:
            headers = self._headers(request_id, "text/event-stream") + limit_headers
            headers.append(("cache-control", "no-cache"))
            events = render_events(req, choices, prompt_tokens, completion_tokens, echo_text)
            return Reply(200, b"", request_id, headers, events)
        headers = self._headers(request_id) + limit_headers
        headers.append(("fireworks-prompt-tokens", str(prompt_tokens)))
        return Reply(200, render_body(req, choices, prompt_tokens, completion_tokens, echo_text), request_id, headers)

    def _over_limit(self, request_id: str, limit_headers: list[tuple[str, str]]) -> Reply:
        """Fireworks' 429 for a request over a per-minute limit: ``error`` a string, the message beside it."""
        body = dumps({"error": "Too Many Requests", "message": USAGE_LIMIT_MESSAGE})
        headers = [
            ("content-type", "application/json"),
            ("x-request-id", request_id),
            ("x-ratelimit-over-limit", "yes"),
            *limit_headers,
        ]
        return Reply(429, body, request_id, headers)

    def prompt(self, model: str, item: PromptInput, implicit_bos: bool = True) -> Prompt:
        """Tokenise and score a prompt (memoised per model, prompt and BOS mode).

        ``implicit_bos=False`` ignores the ``bos`` option (a rendered chat prompt holds its own BOS).
        """
        key = (model, item, implicit_bos)
        p = self._prompts.get(key)
        if p is not None:
            return p
        if isinstance(item, str):
            text = item
            texts, ids = tokenize(text)
        else:
            ids = item
            texts = tuple(decode_id(t) for t in ids)
            text = "".join(texts)
        bos = self.cfg.bos if implicit_bos else "none"
        if bos != "none":
            bos_text, bos_id = bos_token_for(model)
            texts, ids = (bos_text, *texts), (bos_id, *ids)
        p = walk_prompt(model, texts, ids, text, bos_hidden=bos == "count", answers=self.cfg.answers == "boxed")
        self._prompts.put(key, p, len(ids))
        return p

    def _generate(self, req: CompletionRequest, prompt: Prompt, j: int, max_tokens: int) -> Generation:
        seed_key = ((req.seed & _MASK64) * 0x9E3779B97F4A7C15 ^ (j + 1) * 0xBF58476D1CE4E5B9) & _MASK64
        seed_key ^= prompt.end_state.h ^ (req.params_hash << 17)
        key = (seed_key, prompt.end_state.h, req.sampling.key, max_tokens, req.stops, req.ignore_eos)
        g = self._gens.get(key)
        if g is None:
            g = generate(
                prompt,
                seed_key=seed_key,
                sampling=req.sampling,
                max_tokens=max_tokens,
                stops=req.stops,
                stop_included=self.cfg.stop_included,
                ignore_eos=req.ignore_eos,
                greedy_rank=1 if self.cfg.logprobs_fault == "not-greedy" else 0,
            )
            self._gens.put(key, g, len(g.steps))
        return g

    def _max_tokens(self, req: CompletionRequest, prompt: Prompt, request_id: str) -> int:
        ctx = self.cfg.context_length
        mt = self.cfg.default_max_tokens if req.max_tokens is None else req.max_tokens
        p = len(prompt.ids)
        if p > ctx or (req.ctx_error and p + mt > ctx):
            raise ApiError.nested(
                400,
                f"The prompt is too long: {p} prompt tokens plus max_tokens={mt} exceeds the model's "
                f"maximum context length of {ctx} tokens.",
                request_id,
                "prompt",
            )
        return min(mt, ctx - p)

    def _choices(self, req: CompletionRequest, request_id: str) -> tuple[list[Choice], int, int]:
        """Each prompt's choices (``n`` generations each, with what echo shows) and the token counts."""
        choices: list[Choice] = []
        prompt_tokens = completion_tokens = 0
        cfg = self.cfg
        fault = cfg.logprobs_fault
        noise = 0.0
        if fault is not None:
            noise = noise_of(self._replies)
            self._replies += 1
        for pi, item in enumerate(req.prompts):
            prompt = self.prompt(req.model, item, not req.chat)
            max_tokens = self._max_tokens(req, prompt, request_id)
            prompt_tokens += len(prompt.ids)
            shown = prompt.steps[1:] if prompt.bos_hidden else prompt.steps
            if req.echo_last is None:
                echo_steps: list[Step] = []
            elif req.echo_last < 0 or req.echo_last >= len(shown):
                echo_steps = shown
            else:
                echo_steps = shown[len(shown) - req.echo_last :] if req.echo_last else []
            first_null = bool(echo_steps) and echo_steps[0] is shown[0]
            zero_width = cfg.bos == "echo" and first_null and not req.chat
            if fault is not None and echo_steps:
                drifted = None
                if fault == "echo-drift":
                    other = self.prompt(req.model + DRIFT_SUFFIX, item, not req.chat)
                    other_shown = other.steps[1:] if other.bos_hidden else other.steps
                    drifted = other_shown[len(other_shown) - len(echo_steps) :]
                echo_steps = reported_echo(fault, echo_steps, drifted, noise)
            echo_text = "".join(st.text for st in (echo_steps[1:] if zero_width else echo_steps))
            if req.echo_last is not None:
                # Offsets count from the first echoed token, or (text_offset_base="prompt") from the prompt's start.
                offset0 = len(prompt.text) if cfg.text_offset_base == "prompt" else len(echo_text)
            else:
                offset0 = len(prompt.text) if cfg.text_offset_base == "prompt" else 0
            for j in range(req.n):
                gen = self._generate(req, prompt, j, max_tokens)
                completion_tokens += len(gen.steps)
                if fault is not None:
                    gen = reported_generation(fault, gen, noise)
                choices.append(
                    Choice(pi * req.n + j, prompt, gen, echo_steps, echo_text, first_null, zero_width, offset0)
                )
        return choices, prompt_tokens, completion_tokens
