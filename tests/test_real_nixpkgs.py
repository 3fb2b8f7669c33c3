"""Every board's toplevel and default image, evaluated against REAL nixpkgs (and nixos-hardware for rpi4) with
the same code path as everything else: crossnix_tasks.build.evaluate -> nixexpr/eval.nix.

Needs checkouts, so it is skipped unless they are given:

    CROSSNIX_NIXPKGS=/src/nixpkgs CROSSNIX_NIXOS_HARDWARE=/src/nixos-hardware \\
        python -m pytest -q -m real_nixpkgs tests/test_real_nixpkgs.py

Only derivations are instantiated (nothing is built); a cross target's toplevel must be a derivation of the
build machine's system.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from crossnix_tasks import build, nix, probe
from crossnix_tasks.evaluator import TargetRequest
from crossnix_tasks.project import Project
from tests.nixfixtures import NIX_TEST_CONFIG

pytestmark = [pytest.mark.real_nixpkgs, pytest.mark.usefixtures("real_nix")]

NIXPKGS = os.environ.get("CROSSNIX_NIXPKGS")
NIXOS_HARDWARE = os.environ.get("CROSSNIX_NIXOS_HARDWARE")

CASES = [
    ("rpi4", "aarch64-linux"),
    ("hifive-unmatched", "riscv64-linux"),
    ("generic-uefi", "x86_64-linux"),
    ("generic-uefi", "aarch64-linux"),
    ("generic-uefi", "riscv64-linux"),
]


def _flake(inputs: dict[str, str]) -> str:
    lines = "\n".join(f'    {name}.url = "path:{path}";' for name, path in inputs.items())
    return f"{{\n  inputs = {{\n{lines}\n  }};\n  outputs = inputs: {{ }};\n}}\n"


@pytest.fixture(scope="module")
def real_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    if not NIXPKGS:
        pytest.skip("set CROSSNIX_NIXPKGS to a nixpkgs checkout (25.05 or later) to evaluate against real nixpkgs")
    directory = tmp_path_factory.mktemp("real-nixpkgs")
    inputs = {"nixpkgs": str(Path(NIXPKGS).resolve())}
    if NIXOS_HARDWARE:
        inputs["nixos-hardware"] = str(Path(NIXOS_HARDWARE).resolve())
    (directory / "flake.nix").write_text(_flake(inputs))
    targets = "\n".join(
        f'[targets.{board}-{system.split("-")[0]}]\nboard = "{board}"\nsystem = "{system}"\n' for board, system in CASES
    )
    (directory / "boards.toml").write_text(textwrap.dedent("""
        [defaults]
        build = "cross"
        authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8hZ crossnix@test"]
        """) + targets)
    subprocess.run(
        ["nix", "flake", "lock", f"path:{directory}"],
        env={**os.environ, "NIX_CONFIG": NIX_TEST_CONFIG}, check=True, capture_output=True, timeout=1800,
    )
    return Project(inventory_path=directory / "boards.toml")


@pytest.mark.parametrize(("board", "system"), CASES)
async def test_toplevel_and_default_image_evaluate(real_project: Project, board: str, system: str) -> None:
    if board == "rpi4" and not NIXOS_HARDWARE:
        pytest.skip("set CROSSNIX_NIXOS_HARDWARE to a nixos-hardware checkout for the rpi4 board")
    target = real_project.inventory.targets[f"{board}-{system.split('-')[0]}"]
    variant = build.choose_variant(real_project, target)
    plan = await build.evaluate(real_project, [TargetRequest(target, toplevel=True, image=variant)])
    toplevel = plan.toplevels[target.name]
    image = plan.images[target.name]
    assert toplevel.endswith(".drv") and image.drv_path.endswith(".drv")
    assert image.file_path  # passthru.filePath resolved
    derivation = (await nix.show_derivation([toplevel]))[toplevel]
    # cross: the toplevel is built on this machine
    assert derivation["system"] == probe.local_system()
