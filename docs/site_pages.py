"""The docs site's pages, built from the same Markdown as the README (an mkdocs hook).

The README and the site share one source: ``docs/readme/*.md`` and ``docs/sections/*.md``.
For the site, each page is one or more of those files with its first heading raised to the
page title, README anchors (``#the-guard-...``) rewritten to the page that holds them, and
two generated references: the configuration keys (from the settings models) and the API
(mkdocstrings, from the docstrings). ``mkdocs build --strict`` then fails on any broken
link or anchor.
"""

from __future__ import annotations

import posixpath
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIG_REFERENCE = "CONFIG_REFERENCE"

# site page -> the source files it is made of (the first gives the page title)
PAGES: Dict[str, Sequence[str]] = {
    "index.md": ("readme/00-intro.md", "readme/01-quickstart.md", "readme/99-documentation.md"),
    "guides/guard.md": ("sections/guard.md",),
    "guides/enricher.md": ("sections/enricher.md",),
    "guides/monitor.md": ("sections/monitor.md",),
    "guides/observability.md": ("sections/observability.md",),
    "backends/feast.md": ("sections/feast.md",),
    "backends/remote.md": ("sections/backends-remote.md",),
    "backends/local.md": ("readme/10-local.md",),
    "integrations/langchain.md": ("sections/langchain.md",),
    "integrations/llama_index.md": ("sections/llama_index.md",),
    "guides/cli.md": ("readme/20-cli.md",),
    "guides/security.md": ("readme/30-security.md",),
    "guides/scaling.md": ("readme/50-scaling.md",),
    "performance.md": ("readme/40-performance.md", "sections/benchmarks.md"),
    "reliability.md": ("sections/reliability.md",),
    "development.md": ("readme/90-development.md",),
    "reference/configuration.md": (CONFIG_REFERENCE,),
}

# API reference: page -> (title, modules documented on it)
API_PAGES: Dict[str, Tuple[str, Sequence[str]]] = {
    "reference/api/core.md": (
        "Core: enricher, models, errors",
        ("asahi_features.enricher", "asahi_features.models", "asahi_features.errors"),
    ),
    "reference/api/config.md": (
        "Configuration",
        ("asahi_features.config", "asahi_features.settings"),
    ),
    "reference/api/stores.md": (
        "Feature store backends",
        (
            "asahi_features.stores.base",
            "asahi_features.stores.feast",
            "asahi_features.stores.http",
            "asahi_features.stores.tecton",
            "asahi_features.stores.local",
        ),
    ),
    "reference/api/guard.md": ("The guard", ("asahi_features.guard",)),
    "reference/api/monitor.md": ("The monitor", ("asahi_features.monitor",)),
    "reference/api/langchain.md": ("LangChain", ("asahi_features.langchain",)),
    "reference/api/llama_index.md": ("LlamaIndex", ("asahi_features.llama_index",)),
    "reference/api/telemetry.md": ("OpenTelemetry", ("asahi_features.telemetry",)),
    "reference/api/testing.md": ("Testing helpers", ("asahi_features.testing",)),
}

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ANCHOR_LINK = re.compile(r"\]\(#([^)\s]+)\)")
# a README link to a source file of the site, e.g. ](docs/sections/guard.md#the-cache)
_SOURCE_LINK = re.compile(r"\]\(docs/([^)#\s]+\.md)(?:#([^)\s]+))?\)")


def _lines_outside_fences(text: str) -> List[Tuple[str, bool]]:
    """Each line with whether it is prose (outside a fenced code block)."""
    out: List[Tuple[str, bool]] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            out.append((line, False))
            fenced = not fenced
            continue
        out.append((line, not fenced))
    return out


def github_slug(title: str) -> str:
    """The anchor GitHub gives a heading (what the README's links use)."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def toc_slug(title: str) -> str:
    """The anchor mkdocs (Python-Markdown's toc) gives a heading."""
    from markdown.extensions.toc import slugify

    return str(slugify(title.replace("`", ""), "-"))


def config_reference() -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from asahi_features.config_reference import config_reference_markdown

    return (
        "## Configuration reference\n\n"
        "Every key of the YAML file, its default and its meaning (generated from the\n"
        "settings models, so it is always what the code accepts). Unknown keys are errors\n"
        "that name the key path and list the allowed keys. Relative paths resolve against\n"
        "the configuration file's directory; secrets are never in the file, only the names\n"
        "of environment variables.\n\n" + config_reference_markdown()
    )


def source(name: str) -> str:
    """The Markdown of one source part (the README's order uses the same names)."""
    return config_reference() if name == CONFIG_REFERENCE else (DOCS / name).read_text()


def _raise_headings(text: str) -> str:
    """``## Title`` -> ``# Title`` (and every deeper level one up), outside code blocks."""
    lines = []
    for line, prose in _lines_outside_fences(text):
        match = _HEADING.match(line) if prose else None
        if match and len(match.group(1)) > 1:
            line = f"{match.group(1)[1:]} {match.group(2)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _drop_section(text: str, title: str) -> str:
    """Remove the section headed ``title`` (the README's own table of contents)."""
    lines = text.splitlines()
    out: List[str] = []
    skipping = 0
    for line in lines:
        match = _HEADING.match(line)
        if match and skipping and len(match.group(1)) <= skipping:
            skipping = 0
        if match and match.group(2) == title:
            skipping = len(match.group(1))
            continue
        if not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


def page_texts() -> Dict[str, str]:
    """Every narrative page of the site, before anchor links are rewritten."""
    texts: Dict[str, str] = {}
    for page, parts in PAGES.items():
        chunks = [_raise_headings(source(parts[0]))]
        chunks += [source(part) for part in parts[1:]]
        text = "\n".join(chunk.strip() + "\n" for chunk in chunks)
        texts[page] = _drop_section(text, "Contents")
    return texts


def anchor_index(texts: Dict[str, str]) -> Dict[str, Tuple[str, str]]:
    """README anchor -> (site page, mkdocs anchor) for every heading of every page."""
    index: Dict[str, Tuple[str, str]] = {}
    for page, text in texts.items():
        for line, prose in _lines_outside_fences(text):
            match = _HEADING.match(line) if prose else None
            if match:
                index.setdefault(github_slug(match.group(2)), (page, toc_slug(match.group(2))))
    return index


def rewrite_anchor_links(page: str, text: str, index: Dict[str, Tuple[str, str]]) -> str:
    """``](#anchor)`` -> ``](other/page.md#anchor)`` when the anchor is on another page."""

    def target(match: re.Match[str]) -> str:
        anchor = match.group(1)
        found = index.get(anchor)
        if found is None:
            return match.group(0)  # left as is: the strict build reports it
        where, slug = found
        if where == page:
            return f"](#{slug})"
        relative = posixpath.relpath(where, posixpath.dirname(page) or ".")
        return f"]({relative}#{slug})"

    def source_target(match: re.Match[str]) -> str:
        name, anchor = match.group(1), match.group(2)
        where = next((p for p, parts in PAGES.items() if name in parts), None)
        if where is None and "/" not in name and (DOCS / name).exists():
            where = name  # a page of its own (the specification)
        if where is None:
            return match.group(0)  # left as is: the strict build reports it
        relative = posixpath.relpath(where, posixpath.dirname(page) or ".")
        if anchor is None:
            return f"]({relative})"
        found = index.get(anchor)
        return f"]({relative}#{found[1] if found else anchor})"

    return _SOURCE_LINK.sub(source_target, _ANCHOR_LINK.sub(target, text))


def api_page(title: str, modules: Sequence[str]) -> str:
    blocks = [f"# {title}\n"]
    for module in modules:
        blocks.append(f"::: {module}\n")
    return "\n".join(blocks)


def build_pages() -> Dict[str, str]:
    """Every page of the site: narrative pages with working links, then the API pages."""
    texts = page_texts()
    index = anchor_index(texts)
    pages = {page: rewrite_anchor_links(page, text, index) for page, text in texts.items()}
    for page, (title, modules) in API_PAGES.items():
        pages[page] = api_page(title, modules)
    return pages


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add the generated pages (nothing is written into the repository)."""
    from mkdocs.structure.files import File

    for uri, content in build_pages().items():
        files.append(File.generated(config, uri, content=content))
    return files
