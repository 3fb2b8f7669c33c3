"""Ctrl-C (a real SIGINT) in the middle of `crossnix deploy`: no target is left with a profile pointing at a
system that was not activated; the activations in flight finish and are confirmed, the others never start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.nixfixtures import write_standin_project
from tests.rig.fleet import Fleet

pytestmark = [pytest.mark.rig, pytest.mark.slow, pytest.mark.usefixtures("real_nix")]

NAMES = ["i1", "i2", "i3", "i4"]


def inventory(fleet: Fleet) -> str:
    lines = [
        "[defaults]",
        'board = "generic-uefi"',
        'system = "x86_64-linux"',
        'host = "127.0.0.1"',
        f'identity_file = "{fleet.client_key}"',
        f'known_hosts = "{fleet.known_hosts}"',
        'modules = ["hosts/common.nix", "hosts/release.nix"]',
    ]
    for name in NAMES:
        lines += [f"[targets.{name}]", f"port = {fleet.target(name).port}"]
    return "\n".join(lines) + "\n"


def release(number: int) -> str:
    return f'{{ ... }}: {{ environment.etc."release".text = "{number}\\n"; }}\n'


def profile_path(fleet: Fleet, name: str) -> str | None:
    current = [g for g in fleet.profile_generations(name) if g.current]
    return current[0].path if current else None


def crossnix(project: Path, *argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CROSSNIX_INVENTORY": str(project / "boards.toml"), "HOME": str(project / "home")}
    env.pop("SSH_AUTH_SOCK", None)
    return subprocess.Popen(
        [sys.executable, "-m", "crossnix_tasks", *argv], cwd=project, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_sigint_finishes_in_flight_and_stops_the_rest(rig_fleet: Fleet, tmp_path: Path) -> None:
    rig_fleet.start_many(NAMES)
    project = write_standin_project(tmp_path / "p", inventory(rig_fleet), extra_files={"hosts/release.nix": release(1)})
    subprocess.run(["nix", "flake", "lock", f"path:{project}"], check=True, capture_output=True)
    first = crossnix(project, "deploy", "--all", "--json")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    release1 = {t["target"]: t["toplevel"] for t in json.loads(out)["targets"]}

    (project / "hosts" / "release.nix").write_text(release(2))
    for name in NAMES:
        rig_fleet.set_activation_behaviour(name, "slow", hang_seconds=2)
    proc = crossnix(project, "deploy", "--all", "--parallel", "2", "--json", "--verbose")
    assert proc.stderr is not None
    activating: set[str] = set()
    lines: list[str] = []
    deadline = time.monotonic() + 240
    while len(activating) < 2 and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if ": activate — " in line:
            activating.add(line.split()[1].rstrip(":"))
    assert len(activating) == 2, "".join(lines)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + err
    report = json.loads(out)
    results = {t["target"]: t["result"] for t in report["targets"]}
    assert {results[n] for n in activating} == {"ok"}, results
    assert {results[n] for n in NAMES if n not in activating} == {"interrupted"}, results
    assert "interrupted: stopping targets that have not started activating" in err
    for t in report["targets"]:
        name = t["target"]
        # the invariant: the profile points at what runs, and that is the old or the confirmed new system
        assert profile_path(rig_fleet, name) == rig_fleet.current_system(name), name
        expected = t["toplevel"] if name in activating else release1[name]
        assert rig_fleet.current_system(name) == expected, name
