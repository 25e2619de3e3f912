"""``fw-rollouts score``: the log-probability of each continuation after its prompt, from a file, as JSON Lines.

One :meth:`AsyncFireworks.score_many` study (one budget, one bar, cached like every sample): a
re-run sends nothing and writes the same lines.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Final

from ._errors import FAILED, CommandError, say
from ._flags import Formatter, add_option_flags, flag_of, options_from_args
from ._io import Source, check_output, count, finite, json_lines, read_source, write_lines

__all__ = ["register", "run"]

NAME: Final = "score"

DESCRIPTION: Final = """\
Score text under a model: the log-probability of each continuation given its prompt (and, with a
suffix, of a span in the middle of a text), one request per pair with echo at temperature 0.

Pairs come from --file PATH (or stdin, --file -), either JSON Lines, one object per line:
  {"prompt": "...", "continuation": "...", "suffix": "...", "id": ...}
("messages" may stand for "prompt"; "suffix" and "id" are optional; other keys are options for that
pair, such as "raw" or "chat_template"), or tab-separated lines: prompt<TAB>continuation[<TAB>suffix]
(a first line "prompt<TAB>continuation" is a header). The prompt goes through the model's chat template
unless --raw, as with generate.

Each output line holds: item (the pair's index), id (if given), prompt, continuation, suffix,
sum_logprob, mean_logprob, num_tokens, greedy_all, tokens, token_logprobs, token_ids, top_logprobs,
greedy, unscored_token and boundary_inside_token (a token straddling the span's edge, scored as
part of the span). Scores are cached: a re-run sends nothing.
"""

EPILOG: Final = """\
examples:
  fw-rollouts score -m llama-v3p1-8b --raw --file pairs.jsonl -o scores.jsonl
  printf 'The capital of France is\\t Paris\\n' | fw-rollouts score -m llama-v3p1-8b --raw --file - --format tsv
"""

_CLIENT: Final = ("model", "raw", "chat_template", "chat_template_kwargs", "logprobs", "logprobs_format",
                  "use_cache", "progress_bar")  # fmt: skip
# Options score sets itself (fw_rollouts._scoring._FORCED), and the run-wide ones: never per pair.
_NOT_PER_PAIR: Final = ("temperature", "echo", "echo_last", "samples_per_request", "echo_once", "progress_bar",
                        "use_cache")  # fmt: skip
_PAIR_KEYS: Final = ("prompt", "prefix", "messages", "continuation", "span", "suffix", "id")


def register(sub: Any) -> argparse.ArgumentParser:
    """Add ``score`` to the subcommands."""
    from .._options import CLIENT_OPTIONS

    parser: argparse.ArgumentParser = sub.add_parser(
        NAME,
        usage="%(prog)s -m MODEL [options] --file PATH",
        help="score continuations after prompts (log-probabilities), from a file, as JSON Lines",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    io = parser.add_argument_group("input and output")
    io.add_argument("-f", "--file", metavar="PATH", required=True, help="the pairs (JSON Lines or TSV), - for stdin")
    io.add_argument("--format", choices=("auto", "jsonl", "tsv"), default="auto",
                    help="how to read --file (default: auto: JSON Lines for .jsonl, or when the first line is "
                         "a JSON object; else TSV)")  # fmt: skip
    io.add_argument("-o", "--output", metavar="PATH", help="write the JSON Lines to PATH, replacing it whole "
                                                           "(default: stdout)")  # fmt: skip
    io.add_argument("--max-tokens", type=int, default=None, metavar="N",
                    help="tokens to generate after the text, which are dropped (default: the fewest the server "
                         "accepts, 0 or 1)")  # fmt: skip
    io.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary on stderr")
    names = add_option_flags(parser, only=(*_CLIENT, *CLIENT_OPTIONS))
    parser.set_defaults(run=run, option_names=names, terms={})
    return parser


def _pair(number: int, data: dict[str, Any], source: Source, allowed: list[str]) -> tuple[dict[str, Any], Any]:
    from .._suggest import did_you_mean

    for key in data:
        if key in _PAIR_KEYS or key in allowed:
            continue
        if key in _NOT_PER_PAIR:
            raise CommandError(f"{source.where(number)}: {key!r} cannot be set per pair "
                               "(scoring sets temperature, echo and the sample count itself)")  # fmt: skip
        from .._options import CLIENT_OPTIONS

        if key in CLIENT_OPTIONS:
            raise CommandError(f"{source.where(number)}: {key!r} applies to the whole run, not to one pair: "
                               f"pass {flag_of(key)} instead")  # fmt: skip
        raise CommandError(f"{source.where(number)}: unknown field {key!r}"
                           f"{did_you_mean(key, [*_PAIR_KEYS, *allowed])}; a line holds 'prompt', 'continuation' "
                           "and optionally 'suffix' and 'id'")  # fmt: skip
    pair = {k: v for k, v in data.items() if k != "id"}
    if "messages" in pair:
        if "prompt" in pair or "prefix" in pair:
            raise CommandError(f"{source.where(number)}: has both 'messages' and 'prompt': give one")
        pair["prompt"] = pair.pop("messages")
    return pair, data.get("id")


def _pairs(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[Any], Source, list[int]]:
    from .._options import CALL_OPTIONS

    source = read_source(args.file)
    pairs: list[dict[str, Any]] = []
    ids: list[Any] = []
    numbers: list[int] = []
    if source.is_jsonl("jsonl" if args.format == "jsonl" else "text" if args.format == "tsv" else "auto"):
        allowed = sorted(CALL_OPTIONS - set(_NOT_PER_PAIR))
        for number, data in json_lines(source):
            pair, given_id = _pair(number, data, source, allowed)
            pairs.append(pair)
            ids.append(given_id)
            numbers.append(number)
    else:
        for number, line in source.lines():
            fields = line.split("\t")
            if not pairs and [f.strip().lower() for f in fields] in (["prompt", "continuation"],
                                                                      ["prompt", "continuation", "suffix"]):
                continue  # a header
            if len(fields) not in (2, 3):
                raise CommandError(f"{source.where(number)}: {len(fields)} tab-separated fields; a line is "
                                   "prompt<TAB>continuation or prompt<TAB>continuation<TAB>suffix")  # fmt: skip
            pairs.append(dict(zip(("prompt", "continuation", "suffix"), fields, strict=False)))
            ids.append(None)
            numbers.append(number)
    if not pairs:
        raise CommandError(f"{source.name} holds no pairs")
    return pairs, ids, source, numbers


def _line(item: int, given_id: Any, pair: dict[str, Any], score: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"item": item}
    if given_id is not None:
        line["id"] = given_id
    line.update(
        prompt=pair.get("prompt", pair.get("prefix")),
        continuation=pair.get("continuation", pair.get("span")),
        suffix=pair.get("suffix", ""),
        sum_logprob=finite(score.sum_logprob),
        mean_logprob=finite(score.mean_logprob),
        num_tokens=score.num_tokens,
        greedy_all=score.greedy_all,
        tokens=list(score.tokens),
        token_logprobs=list(score.token_logprobs),
        token_ids=None if score.token_ids is None else list(score.token_ids),
        top_logprobs=None if score.top_logprobs is None else list(score.top_logprobs),
        greedy=None if score.greedy is None else list(score.greedy),
        unscored_token=score.unscored_token,
        boundary_inside_token=None
        if score.boundary_inside_token is None
        else [dataclasses.asdict(b) for b in score.boundary_inside_token],
    )
    return line


def run(args: argparse.Namespace) -> int:
    """Run ``score``: read the pairs, score them as one study, write the lines; the exit status."""
    import re

    pairs, ids, source, numbers = _pairs(args)
    check_output(args.output, source)
    options = options_from_args(args, args.option_names)
    if args.quiet:
        options["progress_bar"] = False
    from .._exceptions import ConfigurationError, FwRolloutsError, ValidationError
    from .._sync import Fireworks

    with Fireworks(**options) as client:
        try:
            results = client.score_many(pairs, on_error="return", max_tokens=args.max_tokens)
        except (ValidationError, ConfigurationError) as exc:  # a pair refused before anything was sent
            message = re.sub(r"\bpairs\[(\d+)\]\.?", lambda m: source.where(numbers[int(m.group(1))]) + ": ",
                             str(exc))  # fmt: skip
            raise CommandError(message.replace(": : ", ": ")) from exc
        usage = client.usage
    lines = [_line(i, ids[i], pairs[i], s) for i, s in enumerate(results) if not isinstance(s, FwRolloutsError)]
    write_lines(lines, args.output)
    where = args.output or "stdout"
    if not args.quiet:
        say(f"{count(len(lines), 'score')} of {count(len(pairs), 'pair')} -> {where} ({usage.cached_samples} from "
            f"the cache, {count(usage.requests, 'request')} sent)")  # fmt: skip
    failed = [(i, s) for i, s in enumerate(results) if isinstance(s, FwRolloutsError)]
    if failed:
        i, error = failed[0]
        kept = f"; the others are in {where}" if lines else ""
        raise CommandError(
            f"{source.where(numbers[i])}: {error} ({len(failed)} of {len(pairs)} pairs failed{kept}: run the "
            "command again to score the rest)",
            FAILED,
        ) from error
    return 0
