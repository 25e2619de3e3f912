"""The client's options as command-line flags, made from the option table, and option names in CLI terms.

Every option of :data:`fw_rollouts._options.OPTIONS` becomes one flag: ``max_tokens`` is
``--max-tokens``, its default is the table's (4096) and its help is the table's doc line. A
flag's type follows the option's annotation: numbers (``none`` for "not sent" where the option
allows None), toggles (``--echo`` / ``--no-echo``), repeatable strings (``--stop``) and JSON
objects (``--logit-bias '{"50256": -100}'``). :func:`cli_terms` rewrites the library's wording
(``pass api_key=...``, ``raw=True``) into the flags a user of the command types.

Importing this module imports the option table and nothing heavier (no HTTP client): the
parser of ``fw-rollouts --help`` is built from it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from .._options import OPTIONS, REQUIRED, Option

__all__ = [
    "GROUPS",
    "Formatter",
    "Parser",
    "Toggle",
    "add_option_flags",
    "cli_terms",
    "flag_of",
    "options_from_args",
]

# How a flag differs from ``--`` + the option's name with dashes, where it does.
_FLAG_NAMES: Final[Mapping[str, str]] = {"use_cache": "--cache"}
_METAVARS: Final[Mapping[str, str]] = {
    "model": "MODEL", "api_key": "KEY", "base_url": "URL", "cache_dir": "DIR", "chat_template": "TEMPLATE",
    "stop": "TEXT", "user": "ID", "prompt_cache_key": "KEY", "logprobs_format": "FORMAT",
    "context_length_exceeded_behavior": "WHAT", "service_tier": "TIER",
}  # fmt: skip
# Names that are not options but that messages of the commands' calls may quote.
_EXTRA_FLAGS: Final[Mapping[str, str]] = {"n_samples": "--n-samples", "seed": "--seed"}

GROUPS: Final[tuple[tuple[str, Callable[[Option], bool]], ...]] = (
    ("what to sample", lambda o: o.sent and o.shapes_output and o.scope == "call" and o.default is not None),
    ("Fireworks fields, not sent unless set", lambda o: o.sent and o.scope == "call" and o.default is None),
    ("prompt, cache and progress", lambda o: o.scope == "call" and not o.sent),
    ("client", lambda o: o.scope == "client"),
)
"""Help sections of the option flags: a title and which options it holds (every option is in exactly one)."""


def flag_of(name: str) -> str:
    """The flag of option (or call argument) ``name``: ``max_tokens`` -> ``--max-tokens``."""
    return _FLAG_NAMES.get(name) or _EXTRA_FLAGS.get(name) or "--" + name.replace("_", "-")


def _negative(name: str) -> str:
    return "--no-" + flag_of(name)[2:]


class Toggle(argparse.Action):
    """``--x`` sets True, ``--no-x`` False (argparse's BooleanOptionalAction, whose help text varies by version)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        names = [s for flag in option_strings for s in (flag, "--no-" + flag[2:])]
        super().__init__(names, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        setattr(namespace, self.dest, not (option_string or "").startswith("--no-"))

    def format_usage(self) -> str:
        """``--x | --no-x`` in the usage line."""
        return " | ".join(self.option_strings)


def _number(kind: Callable[[str], Any], none: bool) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if none and text.strip().lower() == "none":
            return None
        return kind(text)

    parse.__name__ = kind.__name__ + (" or none" if none else "")  # argparse's "invalid float value: 'x'"
    return parse


def _json_object(text: str) -> dict[str, Any]:
    import json

    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r} (give an object, such as '{{\"key\": 1}}')") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class _Kind:
    """How an option's values look on the command line."""

    type: Callable[[str], Any]
    metavar: str | None
    toggle: bool = False
    repeat: bool = False


def _kind(option: Option) -> _Kind:
    annotation = option.annotation
    optional = "None" in annotation
    if annotation in ("bool", "bool | None"):
        return _Kind(str, None, toggle=True)
    if annotation.startswith("float"):
        return _Kind(_number(float, optional and option.default is not None), _METAVARS.get(option.name, "X"))
    if annotation.startswith("int"):
        return _Kind(_number(int, optional and option.default is not None), _METAVARS.get(option.name, "N"))
    if annotation.startswith("Mapping"):
        return _Kind(_json_object, "JSON")
    metavar = _METAVARS.get(option.name, "TEXT")
    if "Sequence[str]" in annotation:
        return _Kind(str, metavar, repeat=True)
    if "ChatTemplate" in annotation:
        return _Kind(_template, metavar)
    return _Kind(str, metavar)


def _template(text: str) -> str:
    """A chat template: the text given, or with ``@PATH`` the file's."""
    if not text.startswith("@"):
        return text
    try:
        with open(text[1:], encoding="utf-8") as file:
            return file.read()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read the template {text[1:]!r}: {exc.strerror or exc}") from None


class Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line (naming ``--help``), not the usage and then the error."""

    def error(self, message: str) -> NoReturn:
        """Exit with status 2 and ``PROG: error: message (see PROG --help)``; a mistyped flag gets "did you mean"."""
        if message.startswith("unrecognized arguments: "):
            from .._suggest import did_you_mean

            # argparse reports a subcommand's unknown flags from the top parser: look in every parser below it too.
            parsers, flags = [self], []
            while parsers:
                parser = parsers.pop()
                for action in parser._actions:
                    flags += [s for s in action.option_strings if s.startswith("--")]
                    if isinstance(action, argparse._SubParsersAction):
                        parsers += list(action.choices.values())
            typed = [w.split("=", 1)[0] for w in message.split()[2:] if w.startswith("--")]
            message += "".join(did_you_mean(w, flags).replace(" (", " (for " + w + ", ", 1) for w in typed)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; option help wrapped without breaking ``--max-tokens`` at its dash."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


# Where the table's doc line speaks of Python values a command line cannot give.
_CLI_DOCS: Final[Mapping[str, str]] = {
    "chat_template": "A built-in template name (deepseek-r1-distill, llama3.1, llama3.1-hf, harmony), a Jinja "
    "template string, or @PATH to read one from a file.",
    "stop": "A stop sequence; repeat the flag for up to 4.",
}


def _plain(text: str, itself: str = "") -> str:
    """A doc line as plain help text: option names as flags (but ``itself``, the option's own field), no
    Markdown backticks, ``%`` kept for argparse."""
    if itself:
        text = text.replace(f"`{itself}`", itself)
    return cli_terms(text, bare=False).replace("`", "").replace("%", "%%")


def _help(option: Option, kind: _Kind) -> str:
    text = _CLI_DOCS.get(option.name) or _plain(option.doc, option.name)
    if kind.repeat:
        return text
    if "default" in option.doc.lower():  # the doc line says it (FIREWORKS_API_KEY, FIREWORKS_BASE_URL)
        return text
    if kind.toggle:
        if option.default is None:
            return text + " (default: not sent)"
        return text + f" (default: {flag_of(option.name) if option.default else _negative(option.name)})"
    if option.default is None:
        return text + (" (default: not sent)" if option.sent else " (default: none)")
    return text + f" (default: {option.default})"


def add_option_flags(
    parser: argparse.ArgumentParser,
    *,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> tuple[str, ...]:
    """Add a flag for each option of the table (``only`` those, if given; never those in ``skip``), in help
    sections; ``defaults`` replaces the table's default of some. Returns the options added, in table order."""
    wanted = None if only is None else frozenset(only)
    skipped = frozenset(skip)
    changed = defaults or {}
    added = []
    for title, belongs in GROUPS:
        group = None
        for option in OPTIONS:
            if not belongs(option) or option.name in skipped or (wanted is not None and option.name not in wanted):
                continue
            if group is None:
                group = parser.add_argument_group(f"options: {title}")
            added.append(option.name)
            kind = _kind(option)
            default = changed.get(option.name, option.default)
            if option.default is REQUIRED:
                group.add_argument("-m", flag_of(option.name), dest=option.name, required=True,
                                   metavar=kind.metavar, help=_plain(option.doc) + " Required.")  # fmt: skip
            elif kind.toggle:
                group.add_argument(flag_of(option.name), dest=option.name, action=Toggle, default=default,
                                   help=_help(option, kind))  # fmt: skip
            elif kind.repeat:
                group.add_argument(flag_of(option.name), dest=option.name, action="append", type=kind.type,
                                   metavar=kind.metavar, default=None, help=_help(option, kind))  # fmt: skip
            else:
                group.add_argument(flag_of(option.name), dest=option.name, type=kind.type, metavar=kind.metavar,
                                   default=default, help=_help(option, kind))  # fmt: skip
            if option.name == "cache_dir":
                group.add_argument("--cache-url", dest="cache", metavar="URL", default=None,
                                   help="a Redis cache (redis://host:port/db) many machines share, instead of "
                                        "--cache-dir")  # fmt: skip
    order = {option.name: i for i, option in enumerate(OPTIONS)}
    return tuple(sorted(added, key=order.__getitem__))


def options_from_args(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The keyword arguments of the client for the option flags ``names`` (as :func:`add_option_flags` returned)."""
    options = {name: getattr(args, name) for name in names}
    if getattr(args, "cache", None) is not None:
        options["cache"] = args.cache
    return options


# -- the library's wording in CLI terms ----------------------------------------------------------------------------

_TOGGLES: Final = frozenset(o.name for o in OPTIONS if o.annotation in ("bool", "bool | None"))
_NAMES: Final = tuple(sorted({*(o.name for o in OPTIONS), *_EXTRA_FLAGS}, key=len, reverse=True))
_ASSIGNED = re.compile(r"(?<![\w.\[])(" + "|".join(_NAMES) + r")=(True|False|\.\.\.)?")
_QUOTED = re.compile(r"`(" + "|".join(_NAMES) + r")`")
# Snake-case names are never English: these are replaced wherever they stand alone.
_BARE = re.compile(r"(?<![\w.\['\"-])(" + "|".join(n for n in _NAMES if "_" in n) + r")(?![\w(='\"-])")


def _assigned(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    if value == "True" and name in _TOGGLES:
        return flag_of(name)
    if value == "False" and name in _TOGGLES:
        return _negative(name)
    if value == "...":
        return flag_of(name) + " ..."
    return flag_of(name) + " " + (value or "")


def cli_terms(text: str, extra: Mapping[str, str] | None = None, *, bare: bool = True) -> str:
    """``text`` (a doc line or an error message) with option names as the command's flags.

    ``pass api_key=... or set`` -> ``pass --api-key ... or set``; ``invalid temperature=5`` ->
    ``invalid --temperature 5``; ``Pass raw=True`` -> ``Pass --raw``; `` `max_tokens` `` and a bare
    ``echo_once`` -> ``--max-tokens``, ``--echo-once``. ``extra`` maps other argument names of the
    command (``output`` -> ``--study-file``), replaced where they are assigned (``output='x'``).
    ``bare=False`` leaves unquoted names alone (a doc line's `` `logprobs: true, top_logprobs: N` ``
    speaks of the request body's fields).
    """
    text = _ASSIGNED.sub(_assigned, text)
    text = _QUOTED.sub(lambda m: flag_of(m.group(1)), text)
    if bare:
        text = _BARE.sub(lambda m: flag_of(m.group(1)), text)
    for name, flag in (extra or {}).items():
        text = re.sub(r"(?<![\w.\[])" + re.escape(name) + r"=", flag + " ", text)
    return text
