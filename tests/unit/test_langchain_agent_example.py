"""examples/langchain_agent.py runs offline on the sample Feast repo and shows the effect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_agent_example_runs_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGSMITH", "LANGCHAIN"))}
    env.pop("ASAHI_CHAT_MODEL", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "langchain_agent.py"), "--users", "60"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = {
        line.split("->", 1)[0].strip(): line.split("->", 1)[1].strip()
        for line in proc.stdout.splitlines()
        if "->" in line
    }
    assert "customer" in lines["middleware: Which plan should I pick?"]
    assert "customer" in lines["middleware: And for my team?"]
    assert lines["saved messages"] == "4"
    assert lines["context copies in history"] == "0"
    assert lines["tool artifact reason"] == "enriched"
    assert "customer" in lines["tool agent answer"]
    assert lines["burst enriched"] == "50/50"
    assert lines["anonymized system prompt"].endswith('[feature context removed]"')
    assert "Customer tier" not in lines["anonymized system prompt"]
