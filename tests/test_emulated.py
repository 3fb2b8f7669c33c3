"""An emulated build for real: qemu-user registered with binfmt_misc inside a user namespace (nothing global),
Nix building the stand-in's aarch64-linux derivations with Debian's arm64 busybox as their shell
(test-rig.md §8; the offline nixpkgs stand-in, NOT nixpkgs)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nixfixtures import (
    NIX_TEST_CONFIG,
    fetch_busybox,
    in_binfmt_userns,
    lock_project,
    userns_unavailable_reason,
    write_standin_project,
)

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("real_nix")


@pytest.fixture(scope="module")
def arm64_busybox() -> Path:
    reason = userns_unavailable_reason("aarch64-linux")
    if reason:
        pytest.skip(reason)
    try:
        return fetch_busybox("aarch64-linux")
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot fetch Debian's arm64 busybox-static: {exc}")


def crossnix(argv: list[str], project: Path, busybox: Path, *, userns: bool) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "NIX_CONFIG": NIX_TEST_CONFIG + "\nextra-platforms = aarch64-linux",
        "CROSSNIX_INVENTORY": str(project / "boards.toml"),
        "CROSSNIX_STANDIN_BUSYBOX_DIR": str(busybox),
    }
    command = [sys.executable, "-m", "crossnix_tasks", *argv]
    return subprocess.run(
        in_binfmt_userns(command) if userns else command,
        env=env, cwd=project, capture_output=True, text=True, check=False, timeout=300,
    )


def test_emulated_build_runs_aarch64_code(arm64_busybox: Path, tmp_path: Path) -> None:
    name = f"emu-{secrets.token_hex(3)}"  # a new toplevel every run: a real build, not a cached path
    project = write_standin_project(tmp_path / "p", f'[targets.{name}]\nboard = "rpi4"\nbuild = "emulated"\n')
    asyncio.run(lock_project(project))

    refused = crossnix(["build", "--on", name], project, arm64_busybox, userns=False)
    assert refused.returncode == 1
    assert "cannot run aarch64-linux programs (no binfmt_misc handler)" in refused.stderr
    assert "qemu-user-static" in refused.stderr and "extra-platforms = aarch64-linux" in refused.stderr

    done = crossnix(["build", "--on", name, "--json", "--plain"], project, arm64_busybox, userns=True)
    assert done.returncode == 0, done.stderr
    assert "checking that this machine can build aarch64-linux (emulated)" in done.stderr
    toplevel = Path(json.loads(done.stdout)[0]["toplevel"])
    assert (toplevel / "system").read_text() == "aarch64-linux"
    assert json.loads((toplevel / "standin-config.json").read_text())["buildSystem"] == "aarch64-linux"
    # built by Nix as an aarch64-linux derivation whose shell is the arm64 busybox, run by qemu-user
    env = {"NIX_CONFIG": NIX_TEST_CONFIG, "PATH": "/usr/bin:/bin"}
    info = json.loads(subprocess.run(["nix", "path-info", "--json", str(toplevel)], capture_output=True, text=True,
                                     check=True, env=env).stdout)
    drv = json.loads(subprocess.run(["nix", "show-derivation", info[0]["deriver"]], capture_output=True, text=True,
                                    check=True, env=env).stdout)
    derivation = next(iter(drv.values()))
    assert derivation["system"] == "aarch64-linux"
    assert derivation["builder"].endswith("-standin-bootstrap-aarch64-linux/busybox")
