"""The stored notebooks are what their generator writes, with their outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_stored_notebooks_match_their_generator() -> None:
    run = subprocess.run(
        [sys.executable, str(NOTEBOOKS / "build_notebooks.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_stored_notebooks_carry_their_outputs() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code, path.name
        unexecuted = [i for i, c in enumerate(code) if c.get("execution_count") is None]
        assert not unexecuted, f"{path.name}: code cells {unexecuted} were stored unexecuted"
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name} was stored with an error output"


def test_the_monitoring_notebook_shows_its_plots() -> None:
    nb = json.loads((NOTEBOOKS / "03_monitoring.ipynb").read_text())
    images = [
        o
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 2, "the plots are not stored in the notebook"


def _printed(name: str) -> str:
    nb = json.loads((NOTEBOOKS / name).read_text())
    return "".join(
        "".join(o.get("text", ""))
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )


def test_the_agents_notebook_shows_context_per_call_and_no_crossing() -> None:
    printed = _printed("04_agents.ipynb")
    assert "saved messages holding the context block: 0 of 4" in printed
    assert "the model asked for: {'user_id': 'u_0002'}" in printed
    assert "u_0003's activity in the answer: True" in printed
    assert "u_0002's activity in the answer: False" in printed
    assert "LLM calls carrying the block: 2/2" in printed
    assert printed.count("20/20 runs saw only their own user's context") == 2
