"""A target whose configuration does not evaluate, or whose system fails to build, fails alone: the others are
built in the same shared build and deployed (real Nix, offline nixpkgs stand-in, real loopback sshd targets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nixfixtures import write_standin_project
from tests.rig.fleet import Fleet

pytestmark = [pytest.mark.rig, pytest.mark.usefixtures("real_nix")]

BROKEN_EVAL = '{ ... }: { networking.hostName = throw "crossnix-test: this configuration is broken"; }\n'
# The stand-in links environment.etc sources into the system: a derivation that fails breaks the build.
BROKEN_BUILD = """{ pkgs, ... }: {
  environment.etc."broken".source = pkgs.runCommand "crossnix-test-fails" { } "echo crossnix-test: build step failed >&2; exit 1";
}
"""


def test_one_broken_evaluation_and_one_failed_build_fail_alone(rig_fleet: Fleet, tmp_path: Path) -> None:
    names = ["good", "noeval", "nobuild"]
    rig_fleet.start_many(names)
    lines = [
        "[defaults]",
        'board = "generic-uefi"',
        'system = "x86_64-linux"',
        'host = "127.0.0.1"',
        f'identity_file = "{rig_fleet.client_key}"',
        f'known_hosts = "{rig_fleet.known_hosts}"',
        "[defaults.deploy]",
        "confirm_timeout = 5",
    ]
    modules = {"good": [], "noeval": ["hosts/noeval.nix"], "nobuild": ["hosts/nobuild.nix"]}
    for name in names:
        lines += [f"[targets.{name}]", f"port = {rig_fleet.target(name).port}", f"modules = {json.dumps(modules[name])}"]
    project = write_standin_project(
        tmp_path / "p", "\n".join(lines) + "\n",
        extra_files={"hosts/noeval.nix": BROKEN_EVAL, "hosts/nobuild.nix": BROKEN_BUILD},
    )
    subprocess.run(["nix", "flake", "lock", f"path:{project}"], check=True, capture_output=True)
    env = {**os.environ, "CROSSNIX_INVENTORY": str(project / "boards.toml"), "HOME": str(project / "home")}
    env.pop("SSH_AUTH_SOCK", None)
    done = subprocess.run(
        [sys.executable, "-m", "crossnix_tasks", "deploy", "--all", "--json"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    report = {t["target"]: t for t in json.loads(done.stdout)["targets"]}
    assert {name: report[name]["result"] for name in names} == {"good": "ok", "noeval": "failed", "nobuild": "failed"}
    assert report["noeval"]["stage"] == report["nobuild"]["stage"] == "build"
    assert report["noeval"]["message"] == "build failed: error: crossnix-test: this configuration is broken"
    assert report["nobuild"]["message"].startswith("build failed: error: builder for ")
    assert "this configuration is broken" in "\n".join(report["noeval"]["log_tail"])
    assert "crossnix-test: build step failed" in "\n".join(report["nobuild"]["log_tail"])
    assert rig_fleet.current_system("good") == report["good"]["toplevel"]
    for name in ("noeval", "nobuild"):
        assert rig_fleet.current_system(name) is None
        assert rig_fleet.profile_generations(name) == []
