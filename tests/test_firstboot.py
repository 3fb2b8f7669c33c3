"""First-boot-ready images: the admin user, keys, sshd and sudo policy in the configuration; a host key crossnix
generates, writes into the flashed card or the VM's disk (never into the Nix store) and pins in known_hosts.

The end-to-end tests build real images with real Nix against the offline nixpkgs stand-in (tests/standin):
its sd-card builder makes a real MBR disk with an ext4 NIXOS_SD root, which is what the host key goes into."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from crossnix_tasks import evaluator, firstboot, hostkeys, hwconfig, nix, signing, vmstate
from crossnix_tasks.errors import ConfigError, CrossnixError
from crossnix_tasks.evaluator import TargetRequest
from crossnix_tasks.inventory import Target, inventory_from_source
from crossnix_tasks.plugins import Plugins
from crossnix_tasks.project import Project
from tests.conftest import REPO, run_cli

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1351TgNlHOqfDpYLUdPrHhN2t9sKmgET5zudsPmIhG me@laptop"
STANDIN = REPO / "tests" / "standin"
MiB = 1024 * 1024


# Settings and inventory ------------------------------------------------------------------------------------


def test_settings_for_root_and_for_an_admin_user() -> None:
    root = Target(name="pi", board="rpi4", system="aarch64-linux", authorized_keys=(KEY,))
    assert firstboot.first_boot_settings(root, "fleet-1:AAAA") == {
        "enable": True, "adminUser": "root", "authorizedKeys": [KEY], "rootLogin": True, "passwordlessSudo": True,
        "fleetPublicKey": "fleet-1:AAAA"}
    admin = Target(name="pi", board="rpi4", system="aarch64-linux", user="admin", authorized_keys=(KEY,),
                   root_login=False, passwordless_sudo=False)
    assert firstboot.first_boot_settings(admin) == {
        "enable": True, "adminUser": "admin", "authorizedKeys": [KEY], "rootLogin": False, "passwordlessSudo": False,
        "fleetPublicKey": None}
    assert firstboot.first_boot_settings(Target(name="x", board="rpi4", system="aarch64-linux"))["enable"] is False


def test_inventory_fields_and_key_validation(builtin_plugins: Plugins, tmp_path: Path) -> None:
    path = tmp_path / "boards.toml"
    source = f"""
[defaults]
authorized_keys = ["{KEY}"]
[targets.a]
board = "rpi4"
[targets.b]
board = "rpi4"
user = "admin"
pin_host_key = false
[targets.c]
board = "rpi4"
user = "admin"
root_login = true
passwordless_sudo = false
"""
    targets = inventory_from_source(path, source, builtin_plugins.boards).targets
    assert (targets["a"].root_login, targets["a"].pin_host_key, targets["a"].authorized_keys) == (True, True, (KEY,))
    assert (targets["b"].root_login, targets["b"].pin_host_key) == (False, False)
    assert (targets["c"].root_login, targets["c"].passwordless_sudo) == (True, False)
    bad = 'authorized_keys = ["ssh-ed25519 AAAA\\ncommand=\\"evil\\" ssh-rsa AAAA"]'
    with pytest.raises(ConfigError, match=r"boards.toml:4: targets\.a\.authorized_keys: .* is not one OpenSSH public key"):
        inventory_from_source(path, f'[targets.a]\nboard = "rpi4"\n\n{bad}\n', builtin_plugins.boards)


# Host keys and known_hosts ------------------------------------------------------------------------------------


def test_host_key_is_generated_once_private_and_pinned(tmp_path: Path) -> None:
    key = hostkeys.ensure_host_key(tmp_path, "pi")
    assert key.public_key.startswith("ssh-ed25519 AAAA") and key.public_key.endswith("pi host key (crossnix)")
    assert stat.S_IMODE(key.private_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.private_file.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "host-keys").stat().st_mode) == 0o700
    assert hostkeys.ensure_host_key(tmp_path, "pi") == key  # stable
    known = tmp_path / "known_hosts"
    known.write_text("other.lan ssh-ed25519 AAAAother\n[pi.lan]:2222 ssh-rsa AAAAold\n")
    assert hostkeys.pin(known, ["[pi.lan]:2222"], key) == ["[pi.lan]:2222"]  # a reinstalled machine: replaced
    assert known.read_text() == f"other.lan ssh-ed25519 AAAAother\n[pi.lan]:2222 {key.key_only}\n"
    assert hostkeys.pin(known, ["[pi.lan]:2222", "[127.0.0.1]:40022"], key) == []
    hostkeys.unpin(known, ["[127.0.0.1]:40022"], key)
    assert known.read_text() == f"other.lan ssh-ed25519 AAAAother\n[pi.lan]:2222 {key.key_only}\n"
    assert firstboot.known_hosts_names(Target(name="pi", board="rpi4", system="aarch64-linux", host="pi.lan")) == [
        "pi.lan"]


def _sd_disk(path: Path, *, ext4: bool = True) -> Path:
    with path.open("wb") as f:
        f.truncate(24 * MiB)
    subprocess.run(["sfdisk", "-q", str(path)], input=b"label: dos\nstart=2048, size=4096, type=c\n"
                   b"start=6144, type=83, bootable\n", check=True, capture_output=True)
    if ext4:
        subprocess.run(["mkfs.ext4", "-q", "-L", "NIXOS_SD", "-E", f"offset={6144 * 512}", str(path),
                        f"{(24 * MiB - 6144 * 512) // 1024}k"], check=True, capture_output=True)
    return path


def _debugfs(disk: Path, offset: int, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, f"{disk}?offset={offset}"], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def e2fs() -> None:
    for tool in ("sfdisk", "mkfs.ext4", "debugfs"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (util-linux, e2fsprogs)")


@pytest.mark.usefixtures("e2fs")
def test_inject_writes_the_key_into_the_root_file_system_and_reads_it_back(tmp_path: Path) -> None:
    disk = _sd_disk(tmp_path / "sd.img")
    disk.chmod(0o644)
    key = hostkeys.ensure_host_key(tmp_path / "state", "pi")
    part = asyncio.run(hostkeys.inject(disk, key))
    assert (part.number, part.offset, part.ext_label) == (2, 6144 * 512, "NIXOS_SD")
    assert _debugfs(disk, part.offset, f"cat {hostkeys.GUEST_KEY}").encode() == key.private_file.read_bytes()
    listing = _debugfs(disk, part.offset, "ls -l /etc/ssh")
    assert "100600 (1)      0      0" in listing and "100644 (1)      0      0" in listing
    assert stat.S_IMODE(disk.stat().st_mode) == 0o600  # the image now holds a secret
    asyncio.run(hostkeys.inject(disk, key))  # idempotent


@pytest.mark.usefixtures("e2fs")
def test_a_disk_without_an_ext4_root_is_refused_with_the_way_out(tmp_path: Path) -> None:
    disk = _sd_disk(tmp_path / "iso-like.img", ext4=False)
    with pytest.raises(CrossnixError, match="cannot find the root file system") as e:
        asyncio.run(hostkeys.inject(disk, hostkeys.ensure_host_key(tmp_path, "pi")))
    assert "pin_host_key = false" in (e.value.hint or "")


# End to end with real Nix and the offline nixpkgs stand-in -------------------------------------------------------

INVENTORY = f"""\
# first-boot test fleet
[defaults]
authorized_keys = ["{KEY}"]

[targets.pi]
board = "rpi4"
host = "pi.lan"
user = "admin"     # deploys through sudo

[targets.rootpi]
board = "rpi4"
host = "10.0.0.7"
port = 2222

[targets.plain]
board = "rpi4"
authorized_keys = []
"""


@pytest.fixture
def standin_project(project_dir: Path, real_nix: str) -> Path:
    (project_dir / "flake.nix").write_text(
        "{\n"
        f'  inputs.nixpkgs.url = "path:{STANDIN / "nixpkgs"}";\n'
        f'  inputs.nixos-hardware.url = "path:{STANDIN / "nixos-hardware"}";\n'
        "  outputs = { self, ... }: { };\n}\n"
    )
    subprocess.run(["nix", "flake", "lock", f"path:{project_dir}"], check=True, capture_output=True)
    (project_dir / "boards.toml").write_text(INVENTORY)
    return project_dir


def _config(project: Path, target: str, attr: str) -> Any:
    proj = Project(project / "boards.toml")
    spec = evaluator.build_spec(proj, [TargetRequest(proj.inventory.targets[target])], build_system="x86_64-linux")
    with evaluator.spec_file(spec) as path:
        return asyncio.run(nix.eval_json(evaluator.EVAL_NIX, f"targets.{target}.config.{attr}",
                                         argstr={"specFile": str(path)}))


@pytest.mark.slow
def test_configuration_has_admin_user_keys_sshd_and_sudo_policy(standin_project: Path) -> None:
    assert _config(standin_project, "pi", "users.users.admin.isNormalUser") is True
    assert _config(standin_project, "pi", "users.users.admin.extraGroups") == ["wheel"]
    assert _config(standin_project, "pi", "users.users.admin.openssh.authorizedKeys.keys") == [KEY]
    assert _config(standin_project, "pi", "security.sudo.wheelNeedsPassword") is False
    assert _config(standin_project, "pi", "services.openssh.enable") is True
    assert _config(standin_project, "pi", "services.openssh.settings") == {
        "PasswordAuthentication": False, "KbdInteractiveAuthentication": False, "PermitRootLogin": "no"}
    assert _config(standin_project, "rootpi", "users.users.root.openssh.authorizedKeys.keys") == [KEY]
    assert _config(standin_project, "rootpi", "services.openssh.settings.PermitRootLogin") == "prohibit-password"
    # a target without authorized_keys: the module changes nothing
    assert _config(standin_project, "plain", "users.users") == {}
    assert _config(standin_project, "plain", "services.openssh.enable") is False
    assert _config(standin_project, "plain", "services.openssh.settings") == {}


def _store_paths_of(image_store_path: str) -> list[str]:
    done = subprocess.run(["nix-store", "-qR", image_store_path], capture_output=True, text=True, check=True)
    return done.stdout.split()


def _grep_store(paths: list[str], needle: bytes) -> list[str]:
    hits = []
    for path in paths:
        for root, _, files in os.walk(path):
            for name in files:
                full = Path(root) / name
                if not full.is_symlink() and needle in full.read_bytes():
                    hits.append(str(full))
    return hits


@pytest.mark.slow
@pytest.mark.usefixtures("e2fs")
def test_flash_target_builds_writes_injects_and_pins(standin_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    card = standin_project / "card.img"
    assert run_cli("flash", "--target", "pi", "--device", str(card), "--to-file", "--yes") == 0
    out = capsys.readouterr().out
    assert "written to partition 2 (/etc/ssh/ssh_host_ed25519_key)" in out and "verified (sha256 " in out
    state = standin_project / ".crossnix"
    key = hostkeys.read_host_key(state, "pi")
    assert key is not None
    assert (state / "known_hosts").read_text() == f"pi.lan {key.key_only}\n"
    parts = asyncio.run(hostkeys.partitions(card))
    root = next(p for p in parts if p.ext_label == "NIXOS_SD")
    assert _debugfs(card, root.offset, f"cat {hostkeys.GUEST_KEY}").encode() == key.private_file.read_bytes()
    assert stat.S_IMODE(card.stat().st_mode) == 0o600
    # what went into the Nix store: the image and the system in it carry the admin user, never the private key
    placed = next((standin_project / "out" / "pi").glob("*.img.zst"))
    assert placed.resolve().is_relative_to("/nix/store")
    in_store = zstandard.ZstdDecompressor().decompressobj().decompress(placed.read_bytes())
    secret_line = key.private_file.read_text().splitlines()[1].encode()  # base64 of the private key
    assert secret_line not in in_store and key.key_only.split()[1].encode() not in in_store
    match = re.search(rb"/nix/store/[a-z0-9]{32}-nixos-system-pi-[^/\0\s]*", in_store)
    assert match, "the image holds the system it boots"
    system = match.group().decode()
    assert _grep_store(_store_paths_of(system), secret_line) == []
    config = json.loads(Path(system, "standin-config.json").read_text())
    assert config["users"]["admin"]["authorizedKeys"] == [KEY] and config["opensshEnabled"] is True
    fleet_key = signing.read_public_key(state)  # created before the image was built
    assert fleet_key and config["nixSettings"]["trusted-public-keys"] == [fleet_key]
    # a second flash of the same target reuses the key: the pin does not change
    assert run_cli("flash", "--target", "pi", "--device", str(card), "--to-file", "--yes") == 0
    assert (state / "known_hosts").read_text() == f"pi.lan {key.key_only}\n"
    # port != 22 is pinned as [host]:port
    assert run_cli("flash", "--target", "rootpi", "--device", str(standin_project / "r.img"), "--to-file", "--yes") == 0
    assert "[10.0.0.7]:2222 ssh-ed25519 " in (state / "known_hosts").read_text()


@pytest.mark.slow
@pytest.mark.usefixtures("e2fs")
def test_vm_target_pins_the_forwarded_port_while_it_runs_and_cleans_up(standin_project: Path) -> None:
    if not shutil.which("qemu-system-aarch64") or not Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin").exists():
        pytest.skip("qemu-system-arm or u-boot-qemu is not installed")
    env = {**os.environ, "CROSSNIX_INVENTORY": str(standin_project / "boards.toml")}
    proc = subprocess.Popen([sys.executable, "-m", "crossnix_tasks", "vm", "--target", "pi", "--no-kvm"],
                            cwd=standin_project, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    state_dir = standin_project / ".crossnix"
    try:
        deadline = time.monotonic() + 60
        state = None
        while state is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            state = vmstate.read_state(state_dir, "pi")
        assert state is not None, proc.stderr.read().decode() if proc.poll() is not None else "no state file"
        key = hostkeys.read_host_key(state_dir, "pi")
        assert key is not None
        assert f"[127.0.0.1]:{state.port} {key.key_only}" in (state_dir / "known_hosts").read_text()
        target = Project(standin_project / "boards.toml").inventory.targets["pi"]
        reached = vmstate.vm_target(target, state_dir)
        assert (reached.host, reached.port, reached.user) == ("127.0.0.1", state.port, "admin")
        disk = state_dir / "vms" / "pi" / "disk.img"
        assert stat.S_IMODE(disk.stat().st_mode) == 0o600
        assert stat.S_IMODE(disk.parent.stat().st_mode) == 0o700
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C outside QEMU's raw terminal does
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert vmstate.read_state(state_dir, "pi") is None
    assert not (state_dir / "vms" / "pi.json").exists()
    assert "[127.0.0.1]" not in (state_dir / "known_hosts").read_text()


@pytest.mark.slow
def test_hwconfig_output_evaluates_with_the_board_modules(standin_project: Path) -> None:
    """nixos-generate-config mounts / by UUID, the rpi4 image by label: wired through hosts/NAME/hardware.nix the
    board's mount wins and the rest of the generated file applies (wired directly, NixOS reports a conflict)."""
    from tests.test_hwconfig import STAND_IN

    generated = subprocess.run(["sh", "-c", STAND_IN, "stand-in", "--show-hardware-config"],
                               capture_output=True, text=True, check=True).stdout
    target = Project(standin_project / "boards.toml").inventory.targets["pi"]
    hwconfig.write_file(standin_project, target, generated, force=False)
    hwconfig.write_wrapper(standin_project, "pi")
    assert hwconfig.wire(standin_project / "boards.toml", "pi", lambda source: None)
    assert _config(standin_project, "pi", 'fileSystems."/".device') == "/dev/disk/by-label/NIXOS_SD"
    assert "MARKER" in _config(standin_project, "pi", "boot.initrd.availableKernelModules")
    assert _config(standin_project, "pi", "networking.useDHCP") is True


@pytest.mark.usefixtures("e2fs")
def test_host_key_goes_onto_a_flashed_block_device_while_it_is_claimed(tmp_path: Path) -> None:
    """The same step `inv flash --target` runs: after the verified write, with the device held O_EXCL (no
    auto-mounter can mount the new partitions meanwhile), before the partition table is re-read."""
    from crossnix_tasks import flash
    from tests.test_flash import loop_device

    image = _sd_disk(tmp_path / "sd.img")
    packed = tmp_path / "sd.img.zst"
    packed.write_bytes(zstandard.ZstdCompressor().compress(image.read_bytes()))
    backing = tmp_path / "card.bin"
    with backing.open("wb") as f:
        f.truncate(32 * MiB)
    key = hostkeys.ensure_host_key(tmp_path / "state", "pi")
    claimed: list[bool] = []

    async def pin_it(destination: flash.Destination) -> None:
        try:  # a second exclusive open fails while flash holds the claim
            os.close(os.open(destination.path, os.O_RDONLY | os.O_EXCL))
            claimed.append(False)
        except OSError:
            claimed.append(True)
        await firstboot.install_host_key(destination.path, key, tmp_path / "known_hosts", ["pi.lan"])

    with loop_device(backing) as device:
        asyncio.run(flash.flash(packed, device, confirm=None, allow_non_removable=True, after_write=pin_it))
    assert claimed == [True]
    assert _debugfs(backing, 6144 * 512, f"cat {hostkeys.GUEST_KEY}").encode() == key.private_file.read_bytes()
    assert (tmp_path / "known_hosts").read_text() == f"pi.lan {key.key_only}\n"
