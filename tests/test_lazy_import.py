"""``import fw_rollouts`` is cheap: a public name's module is imported when the name is first asked for, the HTTP
libraries when the first request is sent; what the eager package guaranteed (every name at ``fw_rollouts.<name>``,
type hints that resolve, the key kept out of every SDK logger) still holds.

Each check runs in a new interpreter, where nothing is imported yet.
"""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import fw_rollouts
from _helpers import SRC, run_python
from fw_rollouts.testing import FireworksSimulator

HEAVY = ("openai", "aiohttp", "httpx2", "yarl", "tenacity", "diskcache", "aiolimiter", "jinja2", "tqdm", "pandas",
         "numpy", "matplotlib", "redis", "ray", "pyarrow")  # fmt: skip
"""Third-party packages a plain import must not load (a second of imports together, most of it openai's)."""

BOUND = 0.6
"""Seconds a new interpreter may take to import the package: generous for a loaded CI machine (it takes about
0.1 s here; it took 1.2 s to 2.5 s when the package imported every module, and openai with them)."""


def loaded(code: str) -> dict[str, object]:
    """Run ``code`` in a new interpreter; what it then reports: the heavy packages loaded, and ``extra``."""
    script = f"""
import json, sys
extra = None
{code}
print(json.dumps({{"heavy": [m for m in {HEAVY!r} if m in sys.modules], "extra": extra}}))
"""
    process = run_python(script)
    assert process.returncode == 0, process.stderr
    result: dict[str, object] = json.loads(process.stdout.strip().splitlines()[-1])
    return result


def wall_time(code: str, tries: int = 3) -> float:
    """The fastest of ``tries`` runs of ``python -c code``, in seconds of wall time (the fastest: other work on
    the machine only ever adds time)."""
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        process = run_python(code)
        best = min(best, time.perf_counter() - start)
        assert process.returncode == 0, process.stderr
    return best


def test_import_loads_no_heavy_package() -> None:
    assert loaded("import fw_rollouts")["heavy"] == []
    # The CLI's option table: `fw-rollouts --help` imports it, and so the package.
    assert loaded("import fw_rollouts._options")["heavy"] == []


def test_import_is_fast() -> None:
    assert wall_time("import fw_rollouts") < BOUND
    assert wall_time("import fw_rollouts._options") < BOUND


def test_a_client_loads_the_http_libraries_with_its_first_request() -> None:
    with FireworksSimulator() as sim:
        result = loaded(f"""
import fw_rollouts
client = fw_rollouts.Fireworks("qwen-15b", base_url={sim.base_url!r}, api_key={sim.api_key!r},
                               use_cache=False, progress_bar=False, max_tokens=4)
before = [m for m in ("openai", "aiohttp", "tenacity", "aiolimiter") if m in sys.modules]
client.generate("Hi", n_samples=2)
extra = {{"before": before, "after": [m for m in ("openai", "aiohttp") if m in sys.modules]}}
client.close()
""")
    assert result["extra"] == {"before": [], "after": ["openai", "aiohttp"]}


def test_names_live_at_the_package_however_they_are_reached() -> None:
    # Only Fireworks is asked for; what its calls hand out (results, errors) names the package all the same.
    with FireworksSimulator() as sim:
        result = loaded(f"""
import traceback, typing
import fw_rollouts
hints = str(typing.get_type_hints(fw_rollouts.FwRolloutsError)["rollouts"])  # before anything else loads
from fw_rollouts import Fireworks
client = Fireworks("qwen-15b", base_url={sim.base_url!r}, api_key="wrong-key-123456789", use_cache=False,
                   progress_bar=False, max_retries=0)
try:
    client.generate("Hi", n_samples=2)
except Exception as error:
    last = traceback.format_exception_only(type(error), error)[-1].split(":")[0]
good = client.with_options(api_key={sim.api_key!r}).generate("Hi", n_samples=2, max_tokens=4)
extra = {{"hints": hints, "error": last, "types": [repr(type(v)) for v in (good, good[0], good[0].logprobs,
                                                                            good[0].usage, client.usage)]}}
client.close()
""")
    assert result["extra"] == {
        "hints": "fw_rollouts.FwRollouts | None",
        "error": "fw_rollouts.AuthenticationError",
        "types": [f"<class 'fw_rollouts.{name}'>" for name in ("FwRollouts", "FwResponse", "Logprobs", "Usage",
                                                                 "UsageTotals")],
    }  # fmt: skip


def test_every_sdk_logger_has_the_key_filter_however_its_module_is_imported() -> None:
    # Importing every module directly (never through a package attribute) must leave no SDK logger without the
    # filter: a module that logs to a logger missing from SDK_LOGGERS fails here.
    result = loaded("""
import logging, pkgutil, importlib
import fw_rollouts
from fw_rollouts._redact import SecretFilter
for info in pkgutil.walk_packages(fw_rollouts.__path__, "fw_rollouts."):
    if not info.name.endswith(".__main__"):  # the simulator's command would start serving
        importlib.import_module(info.name)
names = [n for n in logging.Logger.manager.loggerDict if n == "fw_rollouts" or n.startswith("fw_rollouts.")]
extra = sorted(n for n in names if not any(isinstance(f, SecretFilter) for f in logging.getLogger(n).filters))
""")
    assert result["extra"] == []


def test_the_lazy_table_is_the_type_checking_imports() -> None:
    # Type checkers and editors read the imports; the package loads by the table: they must name the same things.
    tree = ast.parse(Path(fw_rollouts.__file__).read_text(encoding="utf-8"))
    checking = "_typing.TYPE_CHECKING"
    blocks = [stmt for stmt in tree.body if isinstance(stmt, ast.If) and ast.unparse(stmt.test) == checking]
    assert len(blocks) == 1
    imported = {
        (stmt.module, alias.asname or alias.name)
        for stmt in blocks[0].body
        if isinstance(stmt, ast.ImportFrom)
        for alias in stmt.names
    }
    table = {(module, name) for module, names in fw_rollouts._LAZY.items() for name in names}
    assert sorted(imported ^ table) == [], "add the name to both the TYPE_CHECKING imports and _LAZY"
    eager = {name for names in fw_rollouts._EAGER.values() for name in names}
    assert sorted(set(fw_rollouts.__all__) ^ (eager | {name for _, name in table})) == []
    assert not eager & {name for _, name in table}


def test_first_use_from_many_threads_at_once() -> None:
    result = loaded("""
import threading
import fw_rollouts
start = threading.Barrier(8)
got = []
def use():
    start.wait()
    got.append([getattr(fw_rollouts, name).__module__ for name in fw_rollouts.__all__
                if isinstance(getattr(fw_rollouts, name), type)])
threads = [threading.Thread(target=use) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
extra = sorted({module for modules in got for module in modules}) if len(got) == 8 else got
""")
    assert result["extra"] == ["fw_rollouts"]


def test_dir_lists_names_not_loaded_yet() -> None:
    result = loaded("""
import fw_rollouts
extra = {"listed": "Fireworks" in dir(fw_rollouts), "loaded": "fw_rollouts._sync" in sys.modules}
""")
    assert result["extra"] == {"listed": True, "loaded": False}


def test_an_unknown_name_is_an_attribute_error() -> None:
    result = loaded("""
import fw_rollouts
try:
    fw_rollouts.Firewroks
except AttributeError as error:
    extra = str(error)
""")
    assert result["extra"] == "module 'fw_rollouts' has no attribute 'Firewroks'"


def test_run_python_imports_this_tree() -> None:
    process = run_python("import fw_rollouts; print(fw_rollouts.__file__)")
    assert Path(process.stdout.strip()).parent == SRC / "fw_rollouts"
