"""examples/llamaindex_query_engine.py runs offline on the sample Feast repo and shows the
feature block in the prompt, no crossing between concurrent users, and recorded scores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_example_runs_offline(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "llamaindex_query_engine.py")],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    prompt = out.split("=== prompt received by the LLM (MockLLM echoes it) ===", 1)[1]
    assert "[Context from user profile]" in prompt.split("reason:", 1)[0]
    assert "reason: enriched" in out
    assert "- Customer tier:" in out.split("=== chat engine: feature lines in the prompt ===")[1]
    assert "prompts mixing users: []" in out
    assert "recorded 20 quality scores (0 unmatched)" in out
    assert "total_enrichments: 22" in out
