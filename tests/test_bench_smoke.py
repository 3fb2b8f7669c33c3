"""The benchmarks keep working: each runs at a tiny size and prints its figures (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.rig.fleet import rig_unavailable_reason

BENCH = Path(__file__).resolve().parent.parent / "bench"

pytestmark = [pytest.mark.rig, pytest.mark.usefixtures("real_nix")]


@pytest.mark.parametrize(
    ("script", "args", "printed"),
    [
        ("build_overhead.py", ["--sizes", "1,2", "--repeat", "1"], "nix processes"),
        ("deploy_fleet.py", ["--targets", "3", "--parallel", "2"], "speed-up (sequential / crossnix)"),
        ("sim_orchestration.py", ["--targets", "12", "--parallel", "4"], "12 targets, --parallel 4"),
    ],
)
def test_benchmark_runs(script: str, args: list[str], printed: str) -> None:
    if script == "deploy_fleet.py" and (reason := rig_unavailable_reason()):
        pytest.skip(reason)
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300, check=False,
        cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert printed in done.stdout
