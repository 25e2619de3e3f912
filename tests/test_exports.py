"""The public API: ``fw_rollouts.__all__`` is sorted, complete and documented, and every public class and
function lives at ``fw_rollouts.<name>`` (its reprs, tracebacks and pickles say so).

Every check reads what ``fw_rollouts/__init__.py`` exports now; none holds a list of names.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import itertools
import pickle
import re
import traceback
import types
import typing
from pathlib import Path
from typing import Any

import pytest

import fw_rollouts
from fw_rollouts import FwResponse, FwRollouts, Logprobs, TokenLogprob, Usage

PACKAGE_DIR = Path(fw_rollouts.__file__).parent
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

EXPORTED_DUNDERS = {"__version__"}
"""Underscore names that are part of the API nonetheless."""

EXPORTS = list(fw_rollouts.__all__)
CLASSES_AND_FUNCTIONS = [
    name for name in EXPORTS if isinstance(getattr(fw_rollouts, name, None), (type, types.FunctionType))
]
CLASSES = [name for name in CLASSES_AND_FUNCTIONS if isinstance(getattr(fw_rollouts, name), type)]
EXCEPTIONS = [name for name in CLASSES if issubclass(getattr(fw_rollouts, name), BaseException)]


def ruff_sort_key(name: str) -> tuple[int, list[Any]]:
    """Ruff's RUF022 ("isort-style") order: SCREAMING_SNAKE_CASE, then CamelCase, then the rest, each naturally."""
    kind = 0 if len(name) > 1 and name.isupper() else 1 if name[:1].isupper() else 2
    return kind, [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


# -- __all__ ------------------------------------------------------------------------------------------------


def test_all_is_sorted_as_ruff_sorts_it() -> None:
    assert len(set(EXPORTS)) == len(EXPORTS), "duplicates in __all__"
    assert sorted(EXPORTS, key=ruff_sort_key) == EXPORTS


def test_ruff_sort_key_orders_by_kind_then_naturally() -> None:
    names = ["resolve_model", "Usage", "MODEL_ALIASES", "__version__", "APIError", "AccountError", "MAX_10", "MAX_9"]
    assert sorted(names, key=ruff_sort_key) == [
        "MAX_9", "MAX_10", "MODEL_ALIASES", "APIError", "AccountError", "Usage", "__version__", "resolve_model",
    ]  # fmt: skip


def test_all_is_exactly_the_public_namespace() -> None:
    # dir(), not vars(): the package imports a name's module when the name is first asked for.
    public = {
        name
        for name in dir(fw_rollouts)
        if (not name.startswith("_") or name in EXPORTED_DUNDERS)
        and not isinstance(getattr(fw_rollouts, name), types.ModuleType)
    }
    assert sorted(public - set(EXPORTS)) == [], "public but missing from __all__"
    assert sorted(set(EXPORTS) - public) == [], "in __all__ but not defined (or a module)"


# -- docstrings ---------------------------------------------------------------------------------------------


def assigned_names(stmt: ast.stmt) -> list[str]:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
    return [target.id for target in targets if isinstance(target, ast.Name)]


def attribute_docstring(path: Path, name: str, depth: int = 0) -> str | None:
    """The string literal right after ``name``'s top-level assignment, following ``from .x import name``."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    for stmt, after in itertools.pairwise([*body, ast.Pass()]):
        if name in assigned_names(stmt):
            literal = after.value if isinstance(after, ast.Expr) else None
            return literal.value if isinstance(literal, ast.Constant) and isinstance(literal.value, str) else None
    # The package's imports of lazily loaded names sit in an `if TYPE_CHECKING:` block.
    imports = [*body, *(inner for stmt in body if isinstance(stmt, ast.If) for inner in stmt.body)]
    sources = [
        stmt.module
        for stmt in imports
        if isinstance(stmt, ast.ImportFrom) and stmt.level == 1 and stmt.module
        if any((alias.asname or alias.name) == name for alias in stmt.names)
    ]
    if not sources or depth > 4:
        return None
    module = PACKAGE_DIR.joinpath(*sources[0].split("."))
    return attribute_docstring(
        module / "__init__.py" if module.is_dir() else module.with_suffix(".py"), name, depth + 1
    )


@pytest.mark.parametrize("name", EXPORTS)
def test_every_export_has_a_docstring(name: str) -> None:
    obj = getattr(fw_rollouts, name)
    if isinstance(obj, type):
        doc = obj.__dict__.get("__doc__")  # not inherited, and not dataclass's made-up "Name(field, ...)"
        assert doc and not doc.startswith(f"{obj.__name__}("), f"class {name} has no docstring"
    elif isinstance(obj, types.FunctionType):
        assert obj.__doc__, f"function {name} has no docstring"
    else:  # a value: its __doc__ is its type's, so the docstring is the literal after its assignment
        assert attribute_docstring(PACKAGE_DIR / "__init__.py", name), f"{name} has no attribute docstring"


def test_attribute_docstring_reader(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text('A = 1\n"""About A."""\nB: int = 2\nC = 3\n"""About C."""\n', encoding="utf-8")
    assert [attribute_docstring(source, n) for n in ("A", "B", "C", "D")] == ["About A.", None, "About C.", None]


# -- module, pickling, reprs --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLASSES_AND_FUNCTIONS)
def test_every_class_and_function_lives_at_the_package(name: str) -> None:
    obj = getattr(fw_rollouts, name)
    assert obj.__module__ == "fw_rollouts"
    assert obj.__qualname__ == name  # so pickle's lookup of fw_rollouts.<qualname> finds it
    assert pickle.loads(pickle.dumps(obj)) is obj


@pytest.mark.parametrize("name", CLASSES)
def test_type_hints_of_every_class_resolve(name: str) -> None:
    # get_type_hints reads names from sys.modules[cls.__module__], now the package namespace.
    hints = typing.get_type_hints(getattr(fw_rollouts, name))
    assert all(not isinstance(hint, (str, typing.ForwardRef)) for hint in hints.values())


def test_type_hints_name_the_real_types() -> None:
    assert typing.get_type_hints(FwResponse)["logprobs"] == Logprobs | None
    assert typing.get_type_hints(FwRollouts)["prompt"] == str | list[dict[str, Any]]
    assert typing.get_type_hints(fw_rollouts.FwRolloutsError)["rollouts"] == FwRollouts | None


def test_reprs_name_the_package() -> None:
    assert repr(fw_rollouts.AsyncFireworks) == "<class 'fw_rollouts.AsyncFireworks'>"
    assert repr(Usage(1, 2, 3)) == "Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3, cached_tokens=None)"
    assert repr(TokenLogprob("a", -0.5, None, 0, None)) == (
        "TokenLogprob(token='a', logprob=-0.5, top_logprobs=None, text_offset=0, token_id=None)"
    )


def test_traceback_names_the_package() -> None:
    error = fw_rollouts.ValidationError("n_samples", 0, "a positive integer")
    assert traceback.format_exception_only(type(error), error) == [
        "fw_rollouts.ValidationError: invalid n_samples=0: a positive integer\n"
    ]


def sample_logprobs() -> Logprobs:
    return Logprobs(
        ["Hi", " there"], [None, -0.25], [None, {" there": -0.25, "!": -2.0}], [0, 2],
        token_ids=[17, 42], num_prompt_tokens=1, prompt_length=2, echo=True,
    )  # fmt: skip


def sample_response() -> FwResponse:
    return FwResponse(
        " there", content=" there", finish_reason="stop", usage=Usage(1, 1, 2, cached_tokens=0), seed=3,
        model="m", logprobs=sample_logprobs(), echo=True, prompt="Hi",
    )  # fmt: skip


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(sample_logprobs(), id="Logprobs"),
        pytest.param(next(iter(sample_logprobs())), id="TokenLogprob"),
        pytest.param(Usage(5, 7, 12, cached_tokens=3), id="Usage"),
        pytest.param(sample_response(), id="FwResponse"),
        pytest.param(
            FwRollouts("Hi", 1, 0.7, None, 8, "m", [sample_response()], settings={"temperature": 0.7}),
            id="FwRollouts",
        ),
    ],
)
def test_values_pickle(value: object) -> None:
    copy = pickle.loads(pickle.dumps(value))
    assert type(copy) is type(value) and copy == value


# Values for the constructor parameters of the exception classes; a new required parameter needs one here.
EXCEPTION_ARGUMENTS: dict[str, object] = {
    "message": "it went wrong",
    "argument": "n_samples",
    "value": 0,
    "allowed": "a positive integer",
    "status_code": 503,
    "request_id": "req-1",
    "retry_after": 1.5,
    "url": "http://127.0.0.1:1/v1/completions",
    "attempts": 3,
    "connected": False,
}


@pytest.mark.parametrize("name", EXCEPTIONS)
def test_exceptions_pickle(name: str) -> None:
    cls = getattr(fw_rollouts, name)
    arguments: dict[str, object] = {}
    for parameter in inspect.signature(cls).parameters.values():
        if parameter.name in EXCEPTION_ARGUMENTS:
            arguments[parameter.name] = EXCEPTION_ARGUMENTS[parameter.name]
        elif parameter.default is parameter.empty and parameter.kind in (
            parameter.POSITIONAL_OR_KEYWORD,
            parameter.KEYWORD_ONLY,
        ):
            pytest.fail(f"add a value for {name}'s parameter {parameter.name!r} to EXCEPTION_ARGUMENTS")
    error = cls(**arguments)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert (str(copy), repr(copy), copy.args) == (str(error), repr(error), error.args)
    assert vars(copy) == vars(error)


# -- the version --------------------------------------------------------------------------------------------


def test_version_is_the_installed_distributions() -> None:
    try:
        installed = importlib.metadata.version("fw_rollouts")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("fw_rollouts is imported from source, not installed")
    assert installed == fw_rollouts.__version__


def test_pyproject_reads_the_version_from_the_package() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    if not PYPROJECT.is_file():
        pytest.skip("not run from a source checkout")
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert "version" not in config["project"] and "version" in config["project"]["dynamic"]
    assert config["tool"]["hatch"]["version"]["path"] == "src/fw_rollouts/_version.py"
