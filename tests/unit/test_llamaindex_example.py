"""The LlamaIndex examples run offline on the sample Feast repo.

examples/llamaindex_query_engine.py shows the feature block in the prompt, no crossing
between concurrent users, and recorded scores. examples/llamaindex_agent.py shows the
agent's own LLM calls carrying the block, the workflow Context identity and the tool,
40 concurrent runs that never cross, and the holdout holding with the monitor attached
only through instrumentation."""

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


def test_agent_example_runs_offline(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "llamaindex_agent.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    turn2 = out.split("=== messages the model received on turn 2 ===", 1)[1].split("turns whose")[0]
    assert "[Context from user profile]" in turn2 and "user: And something cheaper?" in turn2
    assert "turns whose LLM call carried the block: 2/2" in out
    assert "=== AgentWorkflow with the identity in its Context ===\nenriched: True" in out
    assert "arguments the model sees: ['question']" in out
    assert "tool answer, first line: [Context from user profile]" in out
    assert "40 concurrent runs; runs mixing users: []" in out
    assert "held-out users enriched anyway: []" in out
    assert "other users left un-enriched: []" in out
    assert "'query_str': None, 'feature_context': None" in out
