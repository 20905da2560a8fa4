"""The package surface: lazy heavy imports, every export resolves, the README is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import asahi_features

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("feast", "tecton_client", "langchain_core", "llama_index", "tiktoken", "httpx")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_loads_no_heavy_dependency() -> None:
    assert _loaded_after("import asahi_features") == []


def test_core_classes_load_no_heavy_dependency() -> None:
    code = (
        "from asahi_features import FeatureEnricher, FeatureMonitor, GuardedClient, "
        "LocalFeatureStore, load_config, FeastClient, TectonClient, HttpFeatureStore"
    )
    assert _loaded_after(code) == []


def test_every_export_resolves() -> None:
    for name in asahi_features.__all__:
        assert getattr(asahi_features, name) is not None
    assert set(asahi_features.__all__) <= set(dir(asahi_features))


def test_all_is_every_lazy_export_and_type_checkers_see_them(tmp_path: Path) -> None:
    assert set(asahi_features.__all__) == {*asahi_features._EXPORTS, "__version__"}
    user_code = tmp_path / "user_code.py"
    user_code.write_text(
        "from asahi_features import FeastClient, GuardedClient\n"
        "def guard(client: FeastClient) -> GuardedClient:\n"
        "    return GuardedClient(client)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(user_code)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        asahi_features.nope  # noqa: B018


def test_adapters_live_in_their_subpackages_and_the_root_says_where() -> None:
    with pytest.raises(AttributeError, match=r"from asahi_features\.langchain import"):
        asahi_features.FeatureEnrichmentRunnable  # noqa: B018
    with pytest.raises(AttributeError, match=r"from asahi_features\.sample_repo import"):
        asahi_features.build_sample_repo  # noqa: B018
    assert not {"FeatureEnrichmentRunnable", "FeatureContextPostprocessor"} & set(
        asahi_features.__all__
    )


def test_type_checking_imports_and_runtime_exports_are_the_same_list() -> None:
    import ast

    tree = ast.parse((ROOT / "src" / "asahi_features" / "__init__.py").read_text())
    seen = {
        (f"asahi_features.{node.module}", alias.asname or alias.name)
        for block in tree.body
        if isinstance(block, ast.If)
        for node in block.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    assert seen == {(module, name) for name, module in asahi_features._EXPORTS.items()}


def test_readme_is_built_from_its_sources() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "build_readme.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_quick_start_runs(tmp_path: Path) -> None:
    """The five quick-start snippets of the README run as they are."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]
    assert len(blocks) == 5
    for block in blocks:
        proc = subprocess.run(
            [sys.executable, "-c", block],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, block + "\n" + proc.stderr


MODULE_LINES = 500
"""DESIGN.md: a module growing past about 500 lines is asking to be split by job."""


def test_no_module_grows_past_500_lines_without_a_reason_in_its_docstring() -> None:
    import ast

    package = Path(asahi_features.__file__).parent
    unexplained = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines <= MODULE_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if "on purpose" not in docstring:  # "One module on purpose (...): <the reason>"
            unexplained.append(f"{path.relative_to(package)} ({lines} lines)")
    assert not unexplained, (
        f"modules over {MODULE_LINES} lines without 'One module on purpose (...): <why>' "
        f"in their docstring: split them by job, or state why they stay whole: {unexplained}"
    )
