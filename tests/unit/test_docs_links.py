"""Links in the README (read on GitHub) and in the docs sources point somewhere real."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _load_site_pages() -> Any:
    """docs/site_pages.py, the mkdocs hook (not an installed module)."""
    spec = importlib.util.spec_from_file_location("site_pages", ROOT / "docs" / "site_pages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docs_site = _load_site_pages()

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _headings(text: str) -> set[str]:
    return {
        docs_site.github_slug(line.lstrip("#"))
        for line, prose in docs_site._lines_outside_fences(text)
        if prose and line.startswith("#")
    }


def test_every_relative_link_and_anchor_of_the_readme_resolves() -> None:
    readme = (ROOT / "README.md").read_text()
    anchors = _headings(readme)
    broken = []
    for target in LINK.findall(readme):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        if path:
            file = ROOT / path
            if not file.exists() or (anchor and anchor not in _headings(file.read_text())):
                broken.append(target)
        elif anchor not in anchors:
            broken.append(target)
    assert broken == []


def test_the_site_rewrites_readme_links_to_its_own_pages() -> None:
    pages = docs_site.build_pages()
    assert set(docs_site.PAGES) | set(docs_site.API_PAGES) == set(pages)
    every_source = {part for parts in docs_site.PAGES.values() for part in parts}
    on_disk = {f"{p.parent.name}/{p.name}" for p in (ROOT / "docs").glob("*/*.md")}
    assert on_disk <= every_source, "a docs source that no site page shows"
    for page, text in pages.items():
        assert "](docs/" not in text, page


README_WORD_BUDGET = 1_500
"""Issue 21: a README a newcomer reads in ten minutes; everything else is on the site."""


def test_the_readme_stays_within_its_word_budget() -> None:
    words = len((ROOT / "README.md").read_text().split())  # code blocks included
    assert words <= README_WORD_BUDGET, (
        f"README.md has {words} words (budget {README_WORD_BUDGET}): move detail into the "
        "docs/sections or docs/readme pages of the site"
    )
