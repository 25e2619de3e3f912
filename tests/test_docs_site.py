"""The documentation site builds with ``mkdocs build --strict``, offline, with the API reference rendered from the
docstrings (mkdocs.yml; the ``docs`` extra, part of ``dev``, installs MkDocs, Material and mkdocstrings)."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fw_rollouts
import fw_rollouts.testing
from _helpers import REPO_ROOT

DOCS = REPO_ROOT / "docs"


def _api_directives() -> set[str]:
    """Every ``::: name`` of the API reference pages."""
    found: set[str] = set()
    for page in (DOCS / "api").glob("*.md"):
        found.update(re.findall(r"^::: (\S+)", page.read_text(encoding="utf-8"), re.M))
    return found


def test_every_public_name_has_its_place_in_the_api_reference() -> None:
    documented = _api_directives()
    public = [f"fw_rollouts.{name}" for name in fw_rollouts.__all__ if not name.startswith("__")]
    public += [f"fw_rollouts.testing.{name}" for name in fw_rollouts.testing.__all__]
    missing = [name for name in public if name not in documented]
    assert not missing, f"public names without a `::: name` in docs/api/*.md: {missing}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for the module exactly as CI builds it (strict: any warning fails)."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[docs]' (the dev extra has it)")
    pytest.importorskip("material", reason="mkdocs-material is not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is not installed: '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return out


def _page(site: Path, page: str) -> str:
    path = site / page / "index.html" if page else site / "index.html"
    assert path.exists(), f"{page or 'the home page'} was not built"
    return path.read_text(encoding="utf-8")


def _nav_pages() -> list[str]:
    """The pages mkdocs.yml's nav names (read as text: the file holds no YAML beyond plain nav entries there)."""
    config = (REPO_ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    return re.findall(r"^\s*- (?:[^:\n]+: )?([\w/.-]+\.md)\s*$", config, re.M)


def test_every_page_is_in_the_nav_and_built(site: Path) -> None:
    nav = _nav_pages()
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "_ext" not in p.parts)
    assert sorted(nav) == pages
    for page in nav:
        _page(site, "" if page == "index.md" else page.removesuffix(".md").removesuffix("/index"))


def test_the_async_client_page_renders_its_methods_from_the_docstrings(site: Path) -> None:
    page = _page(site, "api/async-fireworks")
    for method in ("generate", "generate_many", "iter_generate", "with_options", "score", "resample_steps"):
        assert f'id="fw_rollouts.AsyncFireworks.{method}"' in page, method
    # The docstring's text, its roles made links to the objects they name, and the signature's parameters.
    assert "Sample every item of a study under one budget and one bar" in page
    assert re.search(r'<a [^>]*href="\.\./results/#fw_rollouts\.FwRollouts"[^>]*><code>FwRollouts</code></a>', page)
    assert "on_error" in page and "samples_per_request" in page


def test_the_sync_twins_are_documented_as_the_functions_they_are(site: Path) -> None:
    # `generate = blocking(AsyncFireworks.generate)` is an attribute to static analysis: the site shows a method
    # with the async one's parameters and docstring, not async.
    page = _page(site, "api/fireworks")
    for method in ("generate", "generate_many", "score_many", "verify_logprobs"):
        heading = re.search(rf'<h3 id="fw_rollouts.Fireworks.{method}".*?</h3>', page, re.S)
        assert heading is not None, method
        assert "meth" in heading[0] and "async" not in heading[0], heading[0]
    assert "Blocking" in page and "Sample every item of a study under one budget and one bar" in page
    # The constructor carries AsyncFireworks's options (same_options_as), not (*args, **kwargs).
    signature = re.search(r'<div class="doc-signature highlight"><pre>.*?</pre>', page, re.S)
    assert signature is not None
    text = html.unescape(re.sub(r"<[^>]+>", "", signature[0]))
    assert text.startswith("Fireworks(") and "temperature: float | None = 0.7" in text and "*args" not in text, text


def test_no_docstring_markup_is_left_raw(site: Path) -> None:
    for built in (site / "api").rglob("index.html"):
        text = built.read_text(encoding="utf-8")
        prose = re.sub(r"<pre.*?</pre>|<code.*?</code>", "", text, flags=re.S)
        for raw in (":class:`", ":meth:`", ":func:`", ":attr:`", ":data:`", ":mod:`", "&gt;&gt;&gt; "):
            assert raw not in prose, f"{built.relative_to(site)} shows {html.unescape(raw)!r} as text"
    # A doctest is a code block; a Google-style Args section a parameter table.
    research = _page(site, "api/research")
    assert re.search(r"<pre>.*split_reasoning.*</pre>", research, re.S)
    testing = _page(site, "api/testing")
    assert "Parameters:" in testing
    assert re.search(r'<tr class="doc-section-item">\s*<td>\s*<code>known_models</code>', testing)


def test_the_site_fetches_nothing_from_the_network(site: Path) -> None:
    for built in site.rglob("*.html"):
        text = built.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in text and "fonts.gstatic.com" not in text, built
        for tag in re.findall(r"<(?:link|script|img)\b[^>]*>", text):
            assert not re.search(r'(?:src|href)="(?:https?:)?//', tag), f"{built.relative_to(site)}: {tag}"


def test_the_changelog_and_the_search_index_are_there(site: Path) -> None:
    changelog = _page(site, "changelog")
    first = next(line for line in (REPO_ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()[2:] if line)
    assert html.escape(re.sub(r"\[([^]]+)\]\([^)]+\)", r"\1", first).split(".")[0]) in changelog
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    assert any(doc["location"].startswith("api/async-fireworks/") for doc in index["docs"])

