"""A system built by crossnix on the offline nixpkgs stand-in (NOT nixpkgs) deploys to a test-rig target like
the rig's own fake systems: copied with crossnix's `nix copy`, switched, logged in the rig's activation log."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from crossnix_tasks import build, nix
from crossnix_tasks.project import Project
from tests.nixfixtures import lock_project, write_standin_project
from tests.rig.fleet import SYSTEM_PROFILE, Fleet

pytestmark = pytest.mark.usefixtures("real_nix")


async def test_standin_toplevel_deploys_to_a_rig_target(rig_fleet: Fleet, tmp_path: Path) -> None:
    write_standin_project(tmp_path / "p", '[targets.rigpi]\nboard = "rpi4"\nhost = "rigpi"\n')
    await lock_project(tmp_path / "p")
    project = Project(inventory_path=tmp_path / "p" / "boards.toml")
    toplevel = (await build.build_toplevels(project, list(project.inventory.targets.values())))["rigpi"]

    target = await rig_fleet.astart("rigpi")
    ssh_opts = rig_fleet.nix_env()["NIX_SSHOPTS"]
    await nix.copy([toplevel], to=target.store_uri, no_check_sigs=True, ssh_opts=ssh_opts)
    assert rig_fleet.has_path("rigpi", toplevel)
    for argv in (["nix-env", "-p", SYSTEM_PROFILE, "--set", toplevel], [f"{SYSTEM_PROFILE}/bin/switch-to-configuration", "switch"]):
        done = await rig_fleet.arun_in("rigpi", argv)
        assert done.returncode == 0, done.stderr
    assert rig_fleet.current_system("rigpi") == toplevel
    assert [(r.label, r.goal) for r in rig_fleet.activation_log("rigpi")] == [("rigpi", "switch")]


async def test_remote_strategy_builds_on_the_build_host(
    rig_fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = """
[targets.far]
board = "generic-uefi"
system = "x86_64-linux"
build = "remote"
build_host = "rigbuilder"
"""
    write_standin_project(tmp_path / "p", toml, extra_files={"boards.toml": toml})
    await lock_project(tmp_path / "p")
    project = Project(inventory_path=tmp_path / "p" / "boards.toml")
    await rig_fleet.astart("rigbuilder")
    monkeypatch.setenv("NIX_SSHOPTS", rig_fleet.nix_env()["NIX_SSHOPTS"])
    toplevel = (await build.build_toplevels(project, list(project.inventory.targets.values())))["far"]
    # built in the build host's store, then copied back here
    assert rig_fleet.has_path("rigbuilder", toplevel)
    assert (Path(toplevel) / "bin" / "switch-to-configuration").is_file()


async def test_remote_strategy_hands_the_build_to_nix_remote_builders(
    rig_fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The builder accepts the unsigned inputs Nix's build hook copies to it (a builder trusts its clients).
    builder = await rig_fleet.astart("rigfarm", require_sigs=False)
    toml = f"""
[targets.farmed]
board = "generic-uefi"
system = "x86_64-linux"
build = "remote"
builders = "ssh-ng://{builder.alias} x86_64-linux - 1"
modules = ["hosts/this-run.nix"]
"""
    # A system no earlier run built: Nix builds nothing that is already in this machine's store.
    this_run = f'{{ ... }}: {{ environment.etc."crossnix-test-run".text = "{time.time_ns()}"; }}\n'
    write_standin_project(tmp_path / "p", toml, extra_files={"hosts/this-run.nix": this_run})
    await lock_project(tmp_path / "p")
    project = Project(inventory_path=tmp_path / "p" / "boards.toml")
    # Nix's build hook runs `ssh` as this user: the fleet's ssh_config holds the alias, key and host key.
    monkeypatch.setenv("NIX_SSHOPTS", rig_fleet.nix_env()["NIX_SSHOPTS"])
    toplevel = (await build.build_toplevels(project, list(project.inventory.targets.values())))["farmed"]
    # built on the builder although this machine could have built it (build = "remote"), then copied back
    assert rig_fleet.has_path("rigfarm", toplevel)
    assert (Path(toplevel) / "bin" / "switch-to-configuration").is_file()
