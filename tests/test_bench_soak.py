"""`bench/soak.py` in miniature (a few agents for a few seconds): it runs, drives every kind of
request, and ends with its JSON line; `make soak` is the real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[1] / "bench" / "soak.py"


def test_the_soak_runs_small_and_reports() -> None:
    argv = ["--agents", "4", "--seconds", "6", "--apply-every", "1", "--sample-every", "0.5"]
    done = subprocess.run(
        [sys.executable, str(SOAK), *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["agents"] == 4 and figures["applies"] >= 2
    assert figures["server_errors"] == 0 and figures["missing_updates"] == 0
    # feed answers, check-ins, denial reports and entry adds, sign-outs
    assert {"200", "201", "204"} <= set(figures["answers_by_status"])
    assert figures["rss_first_mb"] > 0 and figures["fds_first"] > 0
    assert "resident memory" in done.stdout and "open descriptors" in done.stdout
