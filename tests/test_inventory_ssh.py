"""Inventory keys for SSH to targets: host_key_check and ask_sudo_password."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossnix_tasks.errors import ConfigError
from crossnix_tasks.inventory import load_inventory
from crossnix_tasks.plugins import Plugins


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "boards.toml"
    path.write_text(text)
    return path


def test_ssh_keys_default_and_override(tmp_path: Path, builtin_plugins: Plugins) -> None:
    path = write(
        tmp_path,
        '[defaults]\nhost_key_check = "accept-new"\n\n'
        '[targets.a]\nboard = "rpi4"\nhost = "a.lan"\n\n'
        '[targets.b]\nboard = "rpi4"\nhost = "b.lan"\nuser = "deploy"\nhost_key_check = "strict"\nask_sudo_password = true\n\n'
        '[targets.c]\nboard = "rpi4"\nhost = "c.lan"\n',
    )
    inv = load_inventory(path, builtin_plugins.boards)
    assert (inv.targets["a"].host_key_check, inv.targets["a"].ask_sudo_password) == ("accept-new", False)
    assert (inv.targets["b"].host_key_check, inv.targets["b"].ask_sudo_password) == ("strict", True)
    path = write(tmp_path, '[targets.c]\nboard = "rpi4"\nhost = "c.lan"\n')
    assert load_inventory(path, builtin_plugins.boards).targets["c"].host_key_check == "strict"


def test_unknown_host_key_policy_is_reported(tmp_path: Path, builtin_plugins: Plugins) -> None:
    path = write(tmp_path, '[targets.a]\nboard = "rpi4"\nhost = "a.lan"\nhost_key_check = "no"\n')
    with pytest.raises(ConfigError) as exc:
        load_inventory(path, builtin_plugins.boards)
    assert "boards.toml:4: targets.a.host_key_check" in exc.value.message
