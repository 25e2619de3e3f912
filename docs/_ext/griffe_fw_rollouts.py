"""A griffe extension for the documentation site: fw_rollouts' docstrings as mkdocstrings renders them.

The docstrings are written for ``help()`` and Sphinx-style readers: ``:class:`X``` roles, ``::`` before a
literal block, and sync twins made at run time (``generate = blocking(AsyncFireworks.generate)``). Static
analysis sees none of that as Markdown or as functions, so, once the package is loaded:

- each role becomes a cross-reference to the object it names when the site documents it (an optional
  autoref: plain code when it does not), so no docstring needs rewriting for the site;
- a paragraph's closing ``::`` becomes ``:`` (the indented block after it is already a Markdown code block);
- a doctest (``>>>`` lines and their output, up to a blank line) becomes a fenced ``pycon`` block;
- a class attribute ``name = blocking(Cls.name)`` becomes the function it is at run time: ``Cls.name``'s
  parameters and return type, not async, documented as "Blocking ``Cls.name``" and its docstring;
- a method decorated ``@same_options_as(Cls.__init__)`` gets ``Cls.__init__``'s parameters, as ``help()``
  shows them.

Loaded by mkdocs.yml (``plugins.mkdocstrings.handlers.python.options.extensions``); the source is untouched.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

__all__ = ["FwRolloutsDocstrings"]

# ``:role:`target``` or ``:role:`~target``` (shown by its last part) or ``:role:`title <target>```.
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|exc|mod|obj):`(~?)(?:([^`<>]+?)\s*<([^`<>]+)>|([^`<>]+))`")
_LITERAL_MARK = re.compile(r"(?m)(\S?)( ?)::$")
# A run of lines from a ">>>" line to the next blank line (or the end), at the margin.
_DOCTEST = re.compile(r"(?m)^>>> .*(?:\n(?!\s*$).*)*\n?")
_BLOCKING = re.compile(r"^blocking\((\w+)\.(\w+)\)$")
_SAME_OPTIONS = re.compile(r"^same_options_as\((\w+)\.(\w+)\)$")


class FwRolloutsDocstrings(griffe.Extension):
    """Rewrite the package's docstrings into the Markdown mkdocstrings renders (see the module docstring)."""

    def __init__(self, package: str = "fw_rollouts") -> None:
        super().__init__()
        self.package = package

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite every docstring of ``pkg`` once it is fully loaded (imports and aliases resolvable)."""
        if pkg.path != self.package:
            return
        objects = list(_walk(pkg))
        for obj in objects:
            if obj.docstring is not None:
                obj.docstring.value = _markdown(obj, obj.docstring.value)
        for obj in objects:
            if isinstance(obj, griffe.Class):
                _materialise_twins(obj, loader)


def _walk(obj: griffe.Object) -> Any:
    yield obj
    for member in list(obj.members.values()):
        if not member.is_alias:
            yield from _walk(member)  # type: ignore[arg-type]


def _markdown(scope: griffe.Object, text: str) -> str:
    text = _ROLE.sub(_role_replacer(scope), text)
    text = _LITERAL_MARK.sub(lambda match: f"{match[1]}:" if match[1] and not match[2] else match[1], text)
    return _DOCTEST.sub(lambda match: f"```pycon\n{match[0].rstrip()}\n```\n", text)


def _role_replacer(scope: griffe.Object) -> Any:
    def replace(match: re.Match[str]) -> str:
        short, title, titled, target = match[1], match[2], match[3], match[4]
        if titled is not None:  # an explicit title reads as prose, not as code
            return _reference(scope, titled.strip(), shown=html.escape(title))
        target = target.strip()
        shown = target.lstrip(".").rsplit(".", 1)[-1] if short else target
        return _reference(scope, target, shown=f"<code>{html.escape(shown)}</code>")

    return replace


def _reference(scope: griffe.Object, target: str, *, shown: str) -> str:
    identifier = _resolve(scope, target)
    if identifier is None:
        return shown
    return f'<autoref identifier="{html.escape(identifier)}" optional>{shown}</autoref>'


def _resolve(scope: griffe.Object, target: str) -> str | None:
    """The full path ``target`` names, seen from ``scope`` (Sphinx's rules, as far as they are used here)."""
    if target.startswith("."):
        module = scope if isinstance(scope, griffe.Module) else scope.module
        package = module.path if module.is_package else module.path.rsplit(".", 1)[0]
        return package + target
    head, _, rest = target.partition(".")
    if target.startswith(scope.package.path + "."):
        return target
    try:
        path = scope.resolve(head)
    except Exception:  # griffe's NameResolutionError, or a name only a run would know
        return None
    return f"{path}.{rest}" if rest else path


def _member(cls: griffe.Class, owner: str, name: str, loader: griffe.GriffeLoader) -> griffe.Function | None:
    """``owner.name`` as ``cls``'s module sees it, if it is a function."""
    try:
        path = cls.module.resolve(owner)
        target = loader.modules_collection.get_member(f"{path}.{name}")
    except Exception:
        return None
    while target.is_alias:
        target = target.final_target
    return target if isinstance(target, griffe.Function) else None


def _parameters(source: griffe.Function) -> griffe.Parameters:
    return griffe.Parameters(
        *(
            griffe.Parameter(
                p.name, annotation=p.annotation, kind=p.kind, default=p.default, docstring=p.docstring
            )
            for p in source.parameters
        )
    )


def _materialise_twins(cls: griffe.Class, loader: griffe.GriffeLoader) -> None:
    for name, member in list(cls.members.items()):
        if member.is_alias:
            continue
        if isinstance(member, griffe.Attribute) and member.value is not None:
            found = _BLOCKING.match(str(member.value))
            source = found and _member(cls, found[1], found[2], loader)
            if not found or source is None:
                continue
            twin = griffe.Function(
                name,
                lineno=member.lineno,
                endlineno=member.endlineno,
                parameters=_parameters(source),
                returns=source.returns,
                parent=cls,
            )
            twin.labels = set(source.labels) - {"async"}
            text = (source.docstring.value if source.docstring else "").strip()
            intro = _markdown(cls, f"Blocking :meth:`{found[1]}.{found[2]}`.")
            twin.docstring = griffe.Docstring(f"{intro}\n\n{text}".strip(), parent=twin)
            cls.set_member(name, twin)
        elif isinstance(member, griffe.Function):
            for decorator in member.decorators:
                found = _SAME_OPTIONS.match(str(decorator.value))
                source = found and _member(cls, found[1], found[2], loader)
                if found and source is not None:
                    member.parameters = _parameters(source)
                    for parameter in member.parameters:
                        parameter.function = member
