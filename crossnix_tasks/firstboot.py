"""First-boot-ready images: the settings of ``nixexpr/modules/first-boot.nix`` and the host key step.

The module (admin user, authorized keys, sshd, sudo / root login) gets ``crossnix.settings.firstBoot`` from
:func:`settings`. Only public material is passed: the private host key never goes through Nix (see
:mod:`crossnix_tasks.hostkeys`). :func:`prepare_host_key` and :func:`install_host_key` are what ``inv flash`` and
``inv vm`` call after an image of a target exists outside the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossnix_tasks import hostkeys, signing
from crossnix_tasks.inventory import Target
from crossnix_tasks.project import Project


def first_boot_settings(target: Target, fleet_public_key: str | None = None) -> dict[str, Any]:
    """``crossnix.settings.firstBoot`` for ``target`` (JSON data; public keys only)."""
    return {
        "enable": bool(target.authorized_keys),
        "adminUser": target.user,
        "authorizedKeys": list(target.authorized_keys),
        "rootLogin": target.root_login or target.user == "root",
        "passwordlessSudo": target.passwordless_sudo,
        "fleetPublicKey": fleet_public_key,
    }


def settings(project: Project, target: Target) -> dict[str, Any]:
    """The settings provider listed in ``evaluator.SETTINGS_PROVIDERS``."""
    fleet_key = signing.read_public_key(project.inventory.state_dir)
    return {"firstBoot": first_boot_settings(target, fleet_key)}


def known_hosts_names(target: Target) -> list[str]:
    """Names the target is reached under, for its pinned known_hosts line."""
    if not target.host:
        return []
    return [hostkeys.known_hosts_name(target.host, target.port)]


def prepare_host_key(state_dir: Path, target: Target) -> hostkeys.HostKey | None:
    """The target's host key to write into its image (generated the first time), or None if not pinned."""
    if not target.pin_host_key:
        return None
    return hostkeys.ensure_host_key(state_dir, target.name)


async def install_host_key(
    disk: Path, key: hostkeys.HostKey, known_hosts: Path, names: Sequence[str]
) -> tuple[hostkeys.Partition, list[str]]:
    """Write ``key`` into ``disk`` (raw image or block device) and pin it for ``names``; returns the partition
    written and the names whose previous, different key was replaced."""
    part = await hostkeys.inject(disk, key)
    replaced = hostkeys.pin(known_hosts, names, key) if names else []
    return part, replaced
