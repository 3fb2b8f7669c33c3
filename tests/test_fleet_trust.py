"""The fleet signing key: created once (0600, outside the store), signs closures, trusted by every target."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest

from crossnix_tasks import evaluator, nix, signing
from crossnix_tasks.evaluator import TargetRequest
from crossnix_tasks.project import Project
from tests.nixfixtures import lock_project, write_standin_project

INVENTORY = """\
[targets.plain]
board = "generic-uefi"
system = "x86_64-linux"
host = "plain.lan"
"""


@pytest.mark.usefixtures("real_nix")
async def test_key_is_created_once_with_private_modes(tmp_path: Path) -> None:
    state = tmp_path / ".crossnix"
    assert signing.read_public_key(state) is None
    key = await signing.ensure_fleet_key(state, tmp_path / "my fleet")
    secret, public = signing.key_paths(state)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    assert key.public_key == public.read_text().strip() == signing.read_public_key(state)
    assert key.name.startswith("crossnix-my-fleet-") and key.public_key.startswith(key.name + ":")
    assert not str(secret.resolve()).startswith("/nix/store")
    again = await signing.ensure_fleet_key(state, tmp_path / "my fleet")
    assert again == key
    # a lost public half is derived again from the secret
    public.unlink()
    assert (await signing.ensure_fleet_key(state, tmp_path)).public_key == key.public_key


def _config(project_dir: Path, attr: str) -> Any:
    project = Project(project_dir / "boards.toml")
    target = project.inventory.targets["plain"]
    spec = evaluator.build_spec(project, [TargetRequest(target)], build_system="x86_64-linux")
    with evaluator.spec_file(spec) as path:
        return asyncio.run(nix.eval_json(evaluator.EVAL_NIX, f"targets.plain.config.{attr}",
                                         argstr={"specFile": str(path)}))


@pytest.mark.slow
def test_every_target_trusts_the_fleet_key(tmp_path: Path, real_nix: str) -> None:
    project_dir = write_standin_project(tmp_path / "proj", INVENTORY)
    asyncio.run(lock_project(project_dir))
    project = Project(project_dir / "boards.toml")
    target = project.inventory.targets["plain"]
    assert signing.settings(project, target) == {"fleetTrust": {"publicKeys": []}}
    assert _config(project_dir, "nix.settings").get("trusted-public-keys", []) == []
    key = asyncio.run(signing.ensure_fleet_key(project.inventory.state_dir, project_dir))
    assert evaluator.settings_for(project, target)["fleetTrust"] == {"publicKeys": [key.public_key]}
    assert _config(project_dir, "nix.settings.trusted-public-keys") == [key.public_key]
