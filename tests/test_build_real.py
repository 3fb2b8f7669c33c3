"""Evaluating and building with real Nix 2.8 against the offline nixpkgs stand-in (tests/standin, NOT nixpkgs):
the same crossnix code path that runs against real nixpkgs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from crossnix_tasks import build, nix, process
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.nix import NixError
from crossnix_tasks.project import Project
from tests.nixfixtures import NIX_TEST_CONFIG, STANDIN, lock_project, write_standin_project

pytestmark = pytest.mark.usefixtures("real_nix")

FLEET = """
[defaults]
build = "cross"
modules = ["hosts/common.nix"]

[targets.kitchen-pi]
board = "rpi4"
tags = ["home"]

[targets.garage]
board = "hifive-unmatched"

[targets.nas]
board = "generic-uefi"
system = "x86_64-linux"
modules = ["hosts/nas.nix"]

[targets.arm-box]
board = "generic-uefi"
system = "aarch64-linux"
"""

NAS = """
{ pkgs, crossnix, ... }:
{
  environment.etc."crossnix-target".text = crossnix.targetName + " " + crossnix.strategy;
  environment.systemPackages = [ pkgs.hello ];
  users.users.admin.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8hZ admin@laptop" ];
}
"""


@pytest.fixture
async def fleet(tmp_path: Path) -> Project:
    write_standin_project(tmp_path / "fleet", FLEET, extra_files={"hosts/nas.nix": NAS})
    await lock_project(tmp_path / "fleet")
    await nix.drv_outputs_suffix()  # `nix --version`, asked once per process, before the counted commands
    return Project(inventory_path=tmp_path / "fleet" / "boards.toml")


def partition_table(compressed: Path, scratch: Path) -> dict:
    scratch.write_bytes(subprocess.run(["zstd", "-dc", str(compressed)], capture_output=True, check=True).stdout)
    table = subprocess.run(["sfdisk", "-J", str(scratch)], capture_output=True, text=True, check=True)
    return json.loads(table.stdout)["partitiontable"]


def nix_show(path: str) -> dict:
    done = subprocess.run(["nix", "show-derivation", path], capture_output=True, text=True, check=True,
                          env={"NIX_CONFIG": NIX_TEST_CONFIG, "PATH": "/usr/bin:/bin"})
    return next(iter(json.loads(done.stdout).values()))


async def test_toplevels_of_every_board(fleet: Project) -> None:
    targets = list(fleet.inventory.targets.values())
    with process.observe() as started:
        toplevels = await build.build_toplevels(fleet, targets)
    # one evaluation and one build for the whole selection
    assert [argv[:2] for argv in started] == [("nix", "eval"), ("nix", "build")]
    expected_system = {"kitchen-pi": "aarch64-linux", "garage": "riscv64-linux", "nas": "x86_64-linux",
                       "arm-box": "aarch64-linux"}
    for name, path in toplevels.items():
        top = Path(path)
        assert (top / "bin" / "switch-to-configuration").is_file()
        assert (top / "nixos-version").read_text().strip().endswith("offline-standin")
        assert (top / "system").read_text() == expected_system[name]
        config = json.loads((top / "standin-config.json").read_text())
        assert config["hostName"] == name
        # cross: built on this machine, for the board
        assert config["buildSystem"] == "x86_64-linux"
    nas = Path(toplevels["nas"])
    assert (nas / "etc" / "crossnix-target").read_text() == "nas cross"
    assert (nas / "sw" / "bin" / "hello").exists()
    assert json.loads((nas / "standin-config.json").read_text())["users"]["admin"]["authorizedKeys"] == [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8hZ admin@laptop"
    ]
    # the board modules are in: extlinux for the Pi, systemd-boot for the UEFI machine
    pi = json.loads((Path(toplevels["kitchen-pi"]) / "standin-config.json").read_text())
    assert pi["bootLoader"]["extlinux"] and not pi["bootLoader"]["grub"]
    assert json.loads((nas / "standin-config.json").read_text())["bootLoader"]["systemdBoot"]


async def test_images_are_placed_with_size_and_sha256(fleet: Project, tmp_path: Path) -> None:
    targets = [fleet.inventory.targets[n] for n in ("kitchen-pi", "garage", "arm-box")]
    out = tmp_path / "images"
    with process.observe() as started:
        images = await build.build_images(fleet, targets, out_dir=out)
    assert [argv[:2] for argv in started] == [("nix", "eval"), ("nix", "build")]
    by_target = {i.target: i for i in images}
    assert {(i.target, i.variant) for i in images} == {("kitchen-pi", "sd-card"), ("garage", "sd-card"), ("arm-box", "efi-disk")}
    for image in images:
        assert image.placed_path.parent == out / image.target
        assert image.placed_path.is_symlink() and image.placed_path.resolve() == image.file_path.resolve()
        data = image.file_path.read_bytes()
        assert image.size == len(data) and image.sha256 == hashlib.sha256(data).hexdigest()
        assert str(image.file_path).startswith(image.store_path + "/")
        # the placed link goes through a GC root under out/.gcroots
        assert ".gcroots" in str(image.placed_path.readlink())
    assert by_target["kitchen-pi"].file_path.name.endswith("-aarch64-linux.img.zst")
    assert by_target["arm-box"].file_path.name.endswith(".raw")
    # the Pi image really has the FAT firmware and the bootable root (sd-image.nix layout)
    parts = partition_table(by_target["kitchen-pi"].file_path, tmp_path / "pi.img")["partitions"]
    assert [p["type"] for p in parts] == ["b", "83"] and parts[1].get("bootable")
    # the hifive board's postBuildCommands turned it into GPT with SPL at sector 34 and the ITB at 2082
    gpt = partition_table(by_target["garage"].file_path, tmp_path / "hf.img")
    assert gpt["label"] == "gpt" and [p["start"] for p in gpt["partitions"]][:2] == [34, 2082]


async def test_rebuilding_replaces_the_placed_image_and_prunes_roots(fleet: Project, tmp_path: Path) -> None:
    target = fleet.inventory.targets["nas"]
    out = tmp_path / "out"
    first = (await build.build_images(fleet, [target], out_dir=out))[0]
    copied = (await build.build_images(fleet, [target], "iso", out_dir=out, copy=True))[0]
    assert not copied.placed_path.is_symlink() and copied.placed_path.read_bytes() == copied.file_path.read_bytes()
    assert first.placed_path.exists()  # another variant stays
    again = (await build.build_images(fleet, [target], out_dir=out))[0]
    assert again.placed_path == first.placed_path
    assert len(list((out / ".gcroots").iterdir())) == 1  # the first build's root is gone with its link


async def test_emulated_without_binfmt_stops_with_the_fix(fleet: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from crossnix_tasks import probe

    monkeypatch.setattr(probe, "_cache", {})
    target = replace(fleet.inventory.targets["kitchen-pi"], build="emulated")
    with pytest.raises(CrossnixError) as info:
        await build.build_toplevels(fleet, [target])
    assert "cannot build aarch64-linux derivations" in info.value.message
    assert 'boot.binfmt.emulatedSystems = [ "aarch64-linux" ];' in (info.value.hint or "")
    assert "platform mismatch" not in info.value.message


async def test_known_failures_come_with_hints(tmp_path: Path) -> None:
    failing = """
    { pkgs, ... }:
    {
      environment.systemPackages = [
        (pkgs.runCommand "broken-tool" { } "echo compiling broken-tool; echo 'error: cannot find -lfoo' >&2; exit 1")
      ];
    }
    """
    arm_only = """
    { pkgs, ... }:
    {
      environment.systemPackages = [ (pkgs.standinDerivation { name = "needs-arm"; system = "aarch64-linux"; script = "echo > $out"; }) ];
    }
    """
    direct = """
    { modulesPath, ... }: { imports = [ "${modulesPath}/image/repart.nix" ]; image.repart.name = "x"; }
    """
    toml = textwrap.dedent("""
        [targets.fails]
        board = "generic-uefi"
        system = "x86_64-linux"
        modules = ["failing.nix"]
        [targets.armtool]
        board = "generic-uefi"
        system = "x86_64-linux"
        modules = ["arm-only.nix"]
        [targets.direct]
        board = "generic-uefi"
        system = "x86_64-linux"
        modules = ["direct.nix"]
        [targets.pi]
        board = "rpi4"
        """)
    files = {"failing.nix": failing, "arm-only.nix": arm_only, "direct.nix": direct}
    write_standin_project(tmp_path / "p", toml, extra_files=files)
    await lock_project(tmp_path / "p")
    project = Project(inventory_path=tmp_path / "p" / "boards.toml")
    t = project.inventory.targets

    with pytest.raises(NixError) as info:
        await build.build_toplevels(project, [t["fails"]])
    assert "last lines of the build of broken-tool" in info.value.message
    assert "| error: cannot find -lfoo" in info.value.message

    with pytest.raises(NixError) as info:
        await build.build_toplevels(project, [t["armtool"]])
    assert info.value.known == ["platform-mismatch"]
    assert "boot.binfmt.emulatedSystems" in (info.value.hint or "")

    with pytest.raises(NixError) as info:
        await build.build_images(project, [t["direct"]], out_dir=tmp_path / "o")
    assert "imports an image builder directly" in info.value.message
    assert "image.modules.<variant>" in (info.value.hint or "")

    # a project flake without nixos-hardware: the rpi4 board module says what to add
    write_standin_project(tmp_path / "q", toml, extra_files=files, inputs={"nixpkgs": f"path:{STANDIN / 'nixpkgs'}"})
    await lock_project(tmp_path / "q")
    bare = Project(inventory_path=tmp_path / "q" / "boards.toml")
    with pytest.raises(NixError) as info:
        await build.build_toplevels(bare, [bare.inventory.targets["pi"]])
    assert info.value.known == ["missing-flake-input"]
    assert "inputs.nixos-hardware.url" in (info.value.hint or "")


FOREIGN = """
{
  inputs.nixpkgs.url = "path:@STANDIN@/nixpkgs";
  outputs = { self, nixpkgs }: {
    nixosConfigurations.kitchen = nixpkgs.lib.nixosSystem {
      modules = [ ./configuration.nix ];
      specialArgs.inputs = { own = "kept"; };
    };
  };
}
"""
FOREIGN_CONFIG = """
{ inputs, ... }:
{
  nixpkgs.hostPlatform = "x86_64-linux";
  networking.hostName = "from-the-flake";
  environment.etc.own-input.text = inputs.own;
  system.stateVersion = "25.05";
}
"""


async def test_any_flakes_configuration_is_extended_and_cross_compiled(tmp_path: Path) -> None:
    foreign = tmp_path / "infra"
    foreign.mkdir()
    (foreign / "flake.nix").write_text(FOREIGN.replace("@STANDIN@", str(STANDIN)))
    (foreign / "configuration.nix").write_text(FOREIGN_CONFIG)
    await lock_project(foreign)
    toml = f"""
[targets.kitchen]
board = "rpi4"
flake = "path:{foreign}#kitchen"
"""
    write_standin_project(tmp_path / "p", toml)
    await lock_project(tmp_path / "p")
    project = Project(inventory_path=tmp_path / "p" / "boards.toml")
    top = Path((await build.build_toplevels(project, list(project.inventory.targets.values())))["kitchen"])
    config = json.loads((top / "standin-config.json").read_text())
    # crossnix's platforms (priority 90) beat the flake's plain hostPlatform; its own settings stay
    assert (config["system"], config["buildSystem"]) == ("aarch64-linux", "x86_64-linux")
    assert config["hostName"] == "from-the-flake"
    assert (top / "etc" / "own-input").read_text() == "kept"
    assert config["bootLoader"]["extlinux"]  # the rpi4 board module was added
