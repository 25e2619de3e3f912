"""``fw-rollouts generate``: sample completions of one prompt, a file of prompts or stdin, as JSON Lines.

Every option of the client is a flag (made from the option table, see ``_flags``). The prompts run as
one study (``generate_many``: one budget, one progress bar). ``--output`` is plain JSON Lines, one
line per sample, written whole at the end: resuming is the cache's job, so a re-run rewrites the same
lines without sending anything, and never appends a duplicate. ``--study-file`` also writes the
library's own study file (``generate_many(output=...)``), which resumes even without the cache.
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from ._errors import FAILED, CommandError, say
from ._flags import Formatter, add_option_flags, flag_of, options_from_args
from ._io import Source, check_output, count, json_lines, logprobs_json, read_source, write_lines

__all__ = ["register", "run"]

NAME: Final = "generate"

DESCRIPTION: Final = """\
Sample completions with full token logprobs and write them as JSON Lines, one line per sample.

Prompts come from the command line (one prompt), from --file PATH, or from stdin (--file -).
A text file holds one prompt per line. A JSON Lines file holds one object per line:
{"prompt": "..."} or {"messages": [{"role": "user", "content": "..."}]}, with optional
"n_samples", "seed", "id" (copied to the output) and per-prompt options ("temperature",
"max_tokens", "stop", ...). All the prompts run as one study: one rate budget, one progress bar.

Each output line holds: item (the prompt's index), id (if its input line had one), seed, prompt,
text, reasoning, content, finish_reason, completed_reasoning, usage, model, logprobs (the
generated tokens: tokens, token_logprobs, top_logprobs, text_offset, token_ids) and
prompt_logprobs (the prompt's tokens, with --echo; null without).

Samples are cached in --cache-dir: running the same command again sends nothing and writes the
same lines; after an interruption or a failure it fetches only the missing samples. --output is
written whole at the end, so a re-run replaces it and never repeats a line.

Needs FIREWORKS_API_KEY (or --api-key). FIREWORKS_BASE_URL (or --base-url) points it at any
OpenAI-compatible completions server, such as fw-rollouts serve-fake.
"""

EPILOG: Final = """\
examples:
  fw-rollouts generate -m qwen-15b "What is 2+2?" -n 5
  fw-rollouts generate -m qwen-15b --file prompts.txt -n 10 --max-tokens 512 -o samples.jsonl
  fw-rollouts generate -m llama-v3p1-8b --raw --stop "." --max-tokens 16 "The capital of France is"
  fw-rollouts generate -m qwen-15b "What is 10*5? <think>The user wants" --temperature 1.0
  cat prompts.jsonl | fw-rollouts generate -m qwen-15b --file - > samples.jsonl
"""

# What an input line may hold besides per-prompt options.
_ITEM_KEYS: Final = ("prompt", "messages", "prompt_ids", "n_samples", "seed", "affinity", "id")


def register(sub: Any) -> argparse.ArgumentParser:
    """Add ``generate`` (alias ``sample``, its earlier name) to the subcommands."""
    parser: argparse.ArgumentParser = sub.add_parser(
        NAME,
        aliases=["sample"],
        usage="%(prog)s -m MODEL [options] PROMPT\n       %(prog)s -m MODEL [options] --file PATH",
        help="sample completions with logprobs, as JSON Lines (one prompt, a file, or stdin)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    parser.add_argument("prompt", nargs="?", help="the prompt: one user message (--raw sends it verbatim)")
    source = parser.add_argument_group("input and output")
    source.add_argument("-f", "--file", metavar="PATH",
                        help="prompts from a file (text: one per line; or JSON Lines), - for stdin")  # fmt: skip
    source.add_argument("--format", choices=("auto", "text", "jsonl"), default="auto",
                        help="how to read --file (default: auto: JSON Lines for .jsonl, or when the first line "
                             "is a JSON object)")  # fmt: skip
    source.add_argument("-n", "--n-samples", type=int, default=1, metavar="N",
                        help="samples per prompt, seeds SEED, SEED+1, ... (default: 1)")  # fmt: skip
    source.add_argument("--seed", type=int, default=0, metavar="SEED", help="the first seed (default: 0)")
    source.add_argument("-o", "--output", metavar="PATH",
                        help="write the JSON Lines to PATH, replacing it whole (default: stdout)")  # fmt: skip
    source.add_argument("--study-file", metavar="PATH",
                        help="also write the library's study file (.jsonl or .parquet) as samples arrive: it "
                             "resumes even with --no-cache; read it with fw_rollouts.load_study")  # fmt: skip
    source.add_argument("--shard", metavar="I/N",
                        help="run shard I of N only (0 <= I < N; items split by a stable hash of what each sends), "
                             "or 'slurm': I and N from the job array (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN, "
                             "SLURM_ARRAY_TASK_COUNT); combine the shards' --study-file with fw-rollouts "
                             "merge")  # fmt: skip
    source.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary on stderr")
    names = add_option_flags(parser)
    parser.set_defaults(run=run, option_names=names, terms={"output": "--study-file"})
    return parser


def _options_of_line(number: int, data: dict[str, Any], source: Source) -> tuple[dict[str, Any], Any]:
    """The study item of an input line, and its ``id``; a field the line may not hold is an error naming it."""
    from .._options import CALL_OPTIONS, CLIENT_OPTIONS
    from .._suggest import did_you_mean

    per_line = sorted(CALL_OPTIONS - {"progress_bar"})
    for key in data:
        if key in _ITEM_KEYS or key in per_line:
            continue
        if key in CLIENT_OPTIONS or key == "progress_bar":
            raise CommandError(f"{source.where(number)}: {key!r} applies to the whole run, not to one prompt: "
                               f"pass {flag_of(key)} instead")  # fmt: skip
        raise CommandError(
            f"{source.where(number)}: unknown field {key!r}{did_you_mean(key, [*_ITEM_KEYS, *per_line])}; a line "
            "holds 'prompt' or 'messages', and optionally 'n_samples', 'seed', 'id' and per-prompt options such "
            "as 'temperature'"
        )
    item = {k: v for k, v in data.items() if k != "id"}
    return item, data.get("id")


def _items(args: argparse.Namespace) -> tuple[list[Any], list[Any], Source | None, list[int]]:
    """The study's items, each one's ``id`` (None where it has none), the input and each item's line number."""
    if args.file is not None and args.prompt is not None:
        raise CommandError("give a prompt or --file, not both")
    if args.file is None:
        if args.prompt is None:
            raise CommandError("give a prompt, or --file PATH with one prompt per line (--file - reads stdin)")
        if args.prompt.startswith("@"):
            import os

            if os.path.isfile(args.prompt[1:]):
                raise CommandError(f"the prompt is {args.prompt!r}: to read prompts from that file, pass "
                                   f"--file {args.prompt[1:]}")  # fmt: skip
        return [args.prompt], [None], None, [0]
    source = read_source(args.file)
    items: list[Any]
    if source.is_jsonl(args.format):
        lines = json_lines(source)
        pairs = [_options_of_line(number, data, source) for number, data in lines]
        items, ids, numbers = [p[0] for p in pairs], [p[1] for p in pairs], [n for n, _ in lines]
    else:
        lines_text = source.lines()
        items, ids, numbers = [line for _, line in lines_text], [None] * len(lines_text), [n for n, _ in lines_text]
    if not items:
        raise CommandError(f"{source.name} holds no prompts")
    return items, ids, source, numbers


def _located(message: str, source: Source | None, numbers: list[int]) -> str:
    """The library's ``items[3]: ...`` as ``line 4 of prompts.jsonl: ...`` (or nothing, for the one prompt)."""
    import re

    def where(match: re.Match[str]) -> str:
        index = int(match.group(1))
        if source is None:
            return "the prompt"
        return source.where(numbers[index]) if index < len(numbers) else match.group(0)

    located = re.sub(r"\bitems\[(\d+)\]", where, message)
    return located[len("the prompt: ") :] if located.startswith("the prompt: ") else located


def _line(item: int, given_id: Any, rollouts: Any, response: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"item": item}
    if given_id is not None:
        line["id"] = given_id
    line.update(
        seed=response.seed,
        prompt=rollouts.prompt,
        text=response.full,
        reasoning=response.reasoning,
        content=response.content,
        finish_reason=response.finish_reason,
        completed_reasoning=response.completed_reasoning,
        usage=response.usage.to_dict(),
        model=response.model,
        logprobs=logprobs_json(response.get_generation_logprobs()),
        prompt_logprobs=logprobs_json(response.get_prompt_logprobs()),
    )
    return line


_SLURM: Final = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_COUNT")


def parse_shard(text: str | None, environ: Any = None) -> tuple[int, int] | None:
    """``--shard``'s ``I/N`` (or ``slurm``: from the job array's variables in ``environ``) as ``(I, N)``."""
    import os
    import re

    if text is None:
        return None
    if text.strip().lower() == "slurm":
        env = os.environ if environ is None else environ
        missing = [name for name in _SLURM if not env.get(name, "").strip().isdigit()]
        if missing:
            raise CommandError(f"--shard slurm: {', '.join(missing)} not set (or not a number): run it in a job "
                               "array (sbatch --array=0-N-1), or pass --shard I/N")  # fmt: skip
        task, low, high, count = (int(env[name]) for name in _SLURM)
        if high - low + 1 != count:
            raise CommandError(
                f"--shard slurm: the job array is not one range of consecutive task ids ({low}..{high} holds "
                f"{count} tasks): use --array=0-{count - 1}, or pass --shard I/N"
            )
        return task - low, count
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise CommandError(f"--shard {text}: give I/N (shard I of N, 0 <= I < N, such as 0/4) or 'slurm'")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise CommandError(f"--shard {text}: I must be in 0..N-1 and N at least 1 (such as 0/{max(count, 1)})")
    return index, count


def run(args: argparse.Namespace) -> int:
    """Run ``generate``: read the prompts, sample them as one study, write the lines; the exit status."""
    shard = parse_shard(args.shard)
    items, ids, source, numbers = _items(args)
    check_output(args.output, source)
    options = options_from_args(args, args.option_names)
    if args.quiet:
        options["progress_bar"] = False
    if args.study_file is not None and not args.study_file.rstrip("/").lower().endswith((".jsonl", ".parquet")):
        raise CommandError(f"--study-file {args.study_file}: must end in .jsonl (JSON Lines) or .parquet "
                           "(a directory of Parquet parts)")  # fmt: skip
    from .._exceptions import ConfigurationError, ValidationError
    from .._sync import Fireworks

    with Fireworks(**options) as client:
        try:
            results = client.generate_many(
                items, n_samples=args.n_samples, seed=args.seed, on_error="return", output=args.study_file,
                shard=shard,
            )  # fmt: skip
            indices = (
                list(range(len(items)))
                if shard is None
                else client.shard_indices(items, args.n_samples, shard=shard, seed=args.seed)
            )
        except (ValidationError, ConfigurationError) as exc:  # an item refused before anything was sent
            raise CommandError(_located(str(exc), source, numbers)) from exc
        usage = client.usage
    lines = [_line(i, ids[i], rollouts, r) for i, rollouts in zip(indices, results, strict=True) for r in rollouts]
    write_lines(lines, args.output)
    wanted = sum(r.num_responses for r in results)
    where = args.output or "stdout"
    if not args.quiet:
        of = "" if shard is None else f" (shard {shard[0]} of {shard[1]}, of {count(len(items), 'prompt')})"
        say(f"{count(len(lines), 'sample')} of {count(len(results), 'prompt')}{of} -> {where} ({usage.cached_samples} "
            f"from the cache, {count(usage.requests, 'request')} sent)")  # fmt: skip
    if len(lines) < wanted:
        errors = [error for rollouts in results for error in rollouts.errors.values()]
        first = str(errors[0]) if errors else "the run stopped"
        kept = f"; the {len(lines)} that came back are in {where} and the cache" if lines else ""
        raise CommandError(
            f"{first} ({wanted - len(lines)} of {wanted} samples failed{kept}: run the command again to fetch "
            "what is missing)",
            FAILED,
        ) from (errors[0] if errors else None)
    return 0
