"""The exception tree written in ``_exceptions``' docstring and in docs/usage.md is the real one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import fw_rollouts
from fw_rollouts import FwRolloutsError
from fw_rollouts import _exceptions as exceptions_module

DOCS = Path(__file__).resolve().parents[1] / "docs"
_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z]\w*Error)\b")


def parse_tree(text: str) -> dict[str, str | None]:
    """Class name -> parent name, from a box-drawn tree (each level indents by four characters)."""
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        depth = len(match["indent"]) // 4
        del stack[depth:]
        parents[match["name"]] = stack[-1] if stack else None
        stack.append(match["name"])
    return parents


def actual_tree() -> dict[str, str | None]:
    tree: dict[str, str | None] = {}
    for name in fw_rollouts.__all__:
        cls = getattr(fw_rollouts, name)
        if isinstance(cls, type) and issubclass(cls, FwRolloutsError):
            ours = [base for base in cls.__bases__ if issubclass(base, FwRolloutsError)]
            tree[name] = ours[0].__name__ if ours else None
    return tree


def tree_block(text: str, start: str) -> str:
    """The lines of the tree that begins at the line ``start``."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip() == start)
    block = []
    for line in lines[first:]:
        if not line.strip() or line.strip().startswith("```"):
            break
        block.append(line)
    return "\n".join(block)


def dedent_tree(block: str) -> str:
    lines = block.splitlines()
    margin = len(lines[0]) - len(lines[0].lstrip())
    return "\n".join(line[margin:] for line in lines)


@pytest.mark.parametrize("where", ["docstring", "docs/usage.md"])
def test_documented_tree_matches_the_classes(where: str) -> None:
    text = (exceptions_module.__doc__ or "") if where == "docstring" else (DOCS / "usage.md").read_text("utf-8")
    documented = parse_tree(dedent_tree(tree_block(text, "FwRolloutsError")))
    assert documented == actual_tree()


def test_the_tree_parser_sees_depth() -> None:
    tree = "A0Error\n├── B1Error\n│   └── C2Error\n└── D1Error\n    └── E2Error"
    assert parse_tree(tree) == {"A0Error": None, "B1Error": "A0Error", "C2Error": "B1Error", "D1Error": "A0Error",
                                "E2Error": "D1Error"}  # fmt: skip
