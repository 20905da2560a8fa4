"""examples/langchain_chain.py runs offline on the sample Feast repo and shows the effect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_example_runs_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGSMITH", "LANGCHAIN"))}
    env.pop("ASAHI_CHAT_MODEL", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "langchain_chain.py"), "--users", "100"],
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
    assert "customer" in lines["runnable | llm"]
    assert "customer" in lines["runnable | template | llm"]
    assert lines["scored enrichments"] == "1"
    stats = json.loads(lines["monitor"])
    assert stats["held_out"] > 0
    assert stats["quality_with_features"] > stats["quality_without_features"]
