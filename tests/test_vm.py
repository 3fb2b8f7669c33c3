"""`inv vm`: the exact QEMU command per board and system, and that it really reaches each firmware's prompt
under software emulation (TCG) on this machine; disk preparation, KVM decision, the VM state file."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from crossnix_boards import UBOOT_ARM64, UBOOT_RISCV64, UEFI_ARM64, UEFI_X86_64

from crossnix_tasks import qemu, vm, vmstate
from crossnix_tasks.boards import Media, QemuMachine
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.inventory import Target
from crossnix_tasks.plugins import Plugins
from tests.conftest import run_cli

MiB = 1024 * 1024
TCG = qemu.Accel.tcg("test")


# The command line, pinned ------------------------------------------------------------------------------


def test_argv_x86_64_uefi_with_ssh_forward() -> None:
    disk = qemu.Disk(Path("/nix/store/abc-image/nixos.raw"))
    argv = qemu.qemu_argv(UEFI_X86_64, disk=disk, accel=TCG, ssh_port=40022, vars_file=Path("/s/vms/x/vars.fd"))
    assert argv == [
        "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "1024", "-smp", "2",
        "-display", "none", "-monitor", "none", "-serial", "mon:stdio",
        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "-drive", "if=pflash,format=raw,unit=1,file=/s/vms/x/vars.fd",
        "-drive", "file=/nix/store/abc-image/nixos.raw,format=raw,if=none,id=hd0,snapshot=on",
        "-device", "virtio-blk-pci,drive=hd0",
        "-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22",
        "-device", "virtio-net-pci,netdev=net0",
    ]


def test_argv_x86_64_under_kvm_uses_the_probed_cpu() -> None:
    argv = qemu.qemu_argv(UEFI_X86_64, disk=None, accel=qemu.Accel("kvm", "ok", cpu="host"),
                          vars_file=Path("/v.fd"), memory_mib=2048, cpus=4)
    assert argv[:11] == ["qemu-system-x86_64", "-machine", "q35", "-cpu", "host", "-accel", "kvm",
                         "-m", "2048", "-smp", "4"]
    assert argv[-2:] == ["-nic", "none"]


def test_argv_aarch64_uefi() -> None:
    disk = qemu.Disk(Path("/img/efi.raw"))
    assert qemu.qemu_argv(UEFI_ARM64, disk=disk, accel=TCG, vars_file=Path("/v/AAVMF.fd")) == [
        "qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a72", "-accel", "tcg", "-m", "1024", "-smp", "2",
        "-display", "none", "-monitor", "none", "-serial", "mon:stdio",
        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd",
        "-drive", "if=pflash,format=raw,unit=1,file=/v/AAVMF.fd",
        "-drive", "file=/img/efi.raw,format=raw,if=none,id=hd0,snapshot=on", "-device", "virtio-blk-pci,drive=hd0",
        "-nic", "none",
    ]


def test_argv_aarch64_sd_card_through_uboot() -> None:
    disk = qemu.Disk(Path("/s/vms/pi/disk.img"), media=Media.SD_CARD)
    assert qemu.qemu_argv(UBOOT_ARM64, disk=disk, accel=TCG, ssh_port=2222) == [
        "qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a72", "-accel", "tcg", "-m", "1024", "-smp", "2",
        "-display", "none", "-monitor", "none", "-serial", "mon:stdio",
        "-bios", "/usr/lib/u-boot/qemu_arm64/u-boot.bin",
        "-drive", "file=/s/vms/pi/disk.img,format=raw,if=none,id=hd0,snapshot=on", "-device", "virtio-blk-pci,drive=hd0",
        "-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22", "-device", "virtio-net-pci,netdev=net0",
    ]


def test_argv_riscv64_opensbi_uboot_uses_mmio_devices() -> None:
    disk = qemu.Disk(Path("/d.img"), media=Media.SD_CARD)
    assert qemu.qemu_argv(UBOOT_RISCV64, disk=disk, accel=TCG, ssh_port=2223) == [
        "qemu-system-riscv64", "-machine", "virt", "-accel", "tcg", "-m", "1024", "-smp", "2",
        "-display", "none", "-monitor", "none", "-serial", "mon:stdio",
        "-bios", "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.elf",
        "-kernel", "/usr/lib/u-boot/qemu-riscv64_smode/uboot.elf",
        "-drive", "file=/d.img,format=raw,if=none,id=hd0,snapshot=on", "-device", "virtio-blk-device,drive=hd0",
        # riscv64 virt does not create a PCI NIC from -nic on QEMU 7.2: an explicit MMIO device
        "-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2223-:22", "-device", "virtio-net-device,netdev=net0",
    ]


def test_argv_qcow2_iso_headless_serial_and_commas_in_paths() -> None:
    qcow = qemu.qemu_argv(UEFI_X86_64, disk=qemu.Disk(Path("/a,b/vm.qcow2"), "qcow2", Media.QCOW2), accel=TCG,
                          vars_file=Path("/v,x.fd"), serial=qemu.serial_file(Path("/log,1")))
    assert "file=/a,,b/vm.qcow2,format=qcow2,if=none,id=hd0,snapshot=on" in qcow  # a comma cannot add an option
    assert "if=pflash,format=raw,unit=1,file=/v,,x.fd" in qcow
    assert qcow[qcow.index("-serial") + 1] == "file:/log,1"  # -serial file: takes the rest verbatim
    iso = qemu.qemu_argv(UEFI_ARM64, disk=qemu.Disk(Path("/n.iso"), media=Media.ISO), accel=TCG, vars_file=Path("/v"))
    assert "file=/n.iso,format=raw,if=none,id=hd0,snapshot=on,readonly=on" in iso
    with pytest.raises(CrossnixError, match="line break"):
        qemu.qemu_option_value("/a\nb")


def test_every_builtin_board_system_has_a_machine_with_firmware_packages(builtin_plugins: Plugins) -> None:
    for board in builtin_plugins.boards.values():
        for system in board.systems:
            machine = vm.machine_for(board, system)
            assert machine.firmware_packages, (board.name, system)
            assert qemu.firmware_files(machine)


def test_missing_firmware_names_the_debian_packages() -> None:
    machine = QemuMachine(binary="qemu-system-aarch64", machine="virt", firmware=("-bios", "/nonexistent/u-boot.bin"),
                          disk_device="virtio-blk-pci", console="ttyAMA0", firmware_packages=("u-boot-qemu",))
    with pytest.raises(CrossnixError, match=r"missing /nonexistent/u-boot\.bin") as e:
        qemu.require_firmware(machine)
    assert e.value.hint == "on Debian/Ubuntu: apt-get install qemu-system-arm u-boot-qemu"


# KVM decision ------------------------------------------------------------------------------------------


def test_foreign_architectures_always_use_tcg(tmp_path: Path) -> None:
    foreign = "riscv64-linux" if qemu.host_system() != "riscv64-linux" else "x86_64-linux"
    assert "software emulation (TCG)" in (qemu.kvm_static_reason(foreign) or "")
    native = qemu.host_system() or "x86_64-linux"
    assert "does not exist" in (qemu.kvm_static_reason(native, tmp_path / "kvm") or "")
    accel = asyncio.run(qemu.choose_accel(UBOOT_RISCV64 if foreign == "riscv64-linux" else UEFI_X86_64, foreign))
    assert accel.kind == "tcg"
    assert asyncio.run(qemu.choose_accel(UEFI_X86_64, native, allow_kvm=False)) == qemu.Accel.tcg(
        "KVM disabled with --no-kvm")


@pytest.mark.skipif(qemu.host_system() != "x86_64-linux" or not Path("/dev/kvm").exists(), reason="needs x86_64 with /dev/kvm")
def test_kvm_probe_runs_the_real_firmware_and_explains_its_decision() -> None:
    if not shutil.which("qemu-system-x86_64") or qemu.missing_firmware(UEFI_X86_64):
        pytest.skip("qemu-system-x86 or ovmf is not installed")
    accel = asyncio.run(qemu.choose_accel(UEFI_X86_64, "x86_64-linux"))
    if accel.kind == "tcg":  # e.g. nested KVM that aborts on MSR writes (test-rig.md §9): the reason says which
        assert "KVM present but unusable here" in accel.reason and "-cpu host" in accel.reason
    else:
        assert accel.reason.startswith("KVM usable")


# Reaching the firmware prompt under TCG -------------------------------------------------------------------

PROMPTS = [
    pytest.param("generic-uefi", "x86_64-linux", "Shell>", id="x86_64-ovmf"),
    pytest.param("generic-uefi", "aarch64-linux", "Shell>", id="aarch64-aavmf"),
    pytest.param("rpi4", "aarch64-linux", "Hit any key to stop autoboot", id="aarch64-uboot"),
    pytest.param("hifive-unmatched", "riscv64-linux", "Hit any key to stop autoboot", id="riscv64-opensbi-uboot"),
]


def _require_qemu(machine: QemuMachine) -> None:
    if not shutil.which(machine.binary):
        pytest.skip(f"{machine.binary} is not installed (scripts/setup-system.sh installs it)")
    missing = qemu.missing_firmware(machine)
    if missing:
        pytest.skip(f"firmware missing: {', '.join(missing)} (packages: {', '.join(machine.firmware_packages)})")


def blank_disk(path: Path, size: int = 16 * MiB) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("board_name", "system", "prompt"), PROMPTS)
def test_crossnix_qemu_command_reaches_the_firmware_prompt(
    builtin_plugins: Plugins, tmp_path: Path, board_name: str, system: str, prompt: str
) -> None:
    board = builtin_plugins.boards[board_name]
    _require_qemu(vm.machine_for(board, system))
    disk = qemu.Disk(blank_disk(tmp_path / "blank.img"), media=vm.variant_media(board, None))
    # UEFI firmware tries network boot before its shell when a NIC exists, so those run without the forward.
    port = None if prompt == "Shell>" else vm.free_port()
    plan = asyncio.run(vm.plan_vm("t", board, system, disk=disk, workdir=tmp_path / "w", ssh_port=port,
                                  allow_kvm=False))
    assert plan.accel.kind == "tcg"
    log = tmp_path / "console.log"
    argv = plan.argv(serial=qemu.serial_file(log))
    marker, _ = asyncio.run(vm.run_until(argv, log, [prompt], 90))
    assert marker == prompt
    if plan.vars_file is not None:
        assert plan.vars_file.parent == tmp_path / "w"  # a private copy of the variable store
    assert blank_disk(tmp_path / "again.img").read_bytes() == (tmp_path / "blank.img").read_bytes()  # snapshot=on


@pytest.mark.slow
def test_ssh_forward_listens_on_loopback_while_the_vm_runs(builtin_plugins: Plugins, tmp_path: Path) -> None:
    board = builtin_plugins.boards["hifive-unmatched"]
    _require_qemu(vm.machine_for(board, "riscv64-linux"))
    port = vm.free_port()
    disk = qemu.Disk(blank_disk(tmp_path / "blank.img"), media=Media.SD_CARD)
    plan = asyncio.run(vm.plan_vm("t", board, "riscv64-linux", disk=disk, workdir=tmp_path, ssh_port=port,
                                  allow_kvm=False))
    log = tmp_path / "console.log"

    async def connect_while_running() -> bool:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return True
        return False

    async def both() -> tuple[tuple[str, str], bool]:
        return await asyncio.gather(vm.run_until(plan.argv(serial=qemu.serial_file(log)), log, ["=> "], 60),
                                    connect_while_running())

    (marker, _), connected = asyncio.run(both())
    assert connected and marker == "=> "


def test_qemu_exiting_early_is_reported_with_its_error(tmp_path: Path) -> None:
    argv = ["qemu-system-riscv64", "-machine", "virt", "-display", "none", "-serial", qemu.serial_file(tmp_path / "l"),
            "-kernel", "/nonexistent-kernel"]
    if not shutil.which(argv[0]):
        pytest.skip("qemu-system-misc is not installed")
    with pytest.raises(CrossnixError, match="QEMU exited with status 1 before the console showed 'login:'") as e:
        asyncio.run(vm.run_until(argv, tmp_path / "l", ["login:"], 30))
    assert "nonexistent-kernel" in e.value.message


def test_console_log_path_with_a_comma_is_where_qemu_writes(builtin_plugins: Plugins, tmp_path: Path) -> None:
    """`-serial file:PATH` takes PATH verbatim: a doubled comma named another file and --expect never saw output."""
    board = builtin_plugins.boards["hifive-unmatched"]
    _require_qemu(vm.machine_for(board, "riscv64-linux"))
    workdir = tmp_path / "fleet,a"
    plan = asyncio.run(vm.plan_vm("t", board, "riscv64-linux", disk=None, workdir=workdir, ssh_port=None,
                                  allow_kvm=False))
    log = workdir / "console.log"
    marker, _ = asyncio.run(vm.run_until(plan.argv(serial=qemu.serial_file(log)), log, ["OpenSBI"], 60))
    assert marker == "OpenSBI"
    assert [p.name for p in workdir.iterdir() if "console" in p.name] == ["console.log"]


# A hand-made sd-card image through the task ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sd_image_zst(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The NixOS sd-image layout (MBR, FAT-typed p1, bootable ext4 NIXOS_SD p2 with extlinux.conf), zstd."""
    for tool in ("sfdisk", "mkfs.ext4", "zstd"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    root = tmp_path_factory.mktemp("sd")
    conf = root / "files" / "boot" / "extlinux"
    conf.mkdir(parents=True)
    (conf / "extlinux.conf").write_text(
        "DEFAULT nixos\nMENU TITLE crossnix test\nLABEL nixos\n  MENU LABEL crossnix hand-made disk\n"
        "  LINUX ../nixos/missing-Image\n  APPEND console=ttyS0\n"
    )
    img = blank_disk(root / "sd.img", 24 * MiB)
    subprocess.run(["sfdisk", "-q", str(img)], input=b"label: dos\nstart=2048, size=4096, type=c\n"
                   b"start=6144, type=83, bootable\n", check=True, capture_output=True)
    subprocess.run(["mkfs.ext4", "-q", "-L", "NIXOS_SD", "-d", str(root / "files"), "-E", f"offset={6144 * 512}",
                    str(img), f"{(24 * MiB - 6144 * 512) // 1024}k"], check=True, capture_output=True)
    subprocess.run(["zstd", "-q", str(img), "-o", str(root / "sd.img.zst")], check=True, capture_output=True)
    return root / "sd.img.zst"


@pytest.mark.slow
@pytest.mark.parametrize("board_name", ["rpi4", "hifive-unmatched"])
def test_inv_vm_boots_a_zstd_sd_image_into_uboot_extlinux(
    builtin_plugins: Plugins, project_dir: Path, sd_image_zst: Path, board_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    board = builtin_plugins.boards[board_name]
    _require_qemu(vm.machine_for(board, board.default_system))
    code = run_cli("vm", "--board", board_name, "--image", str(sd_image_zst), "--no-kvm",
                   "--expect", "crossnix hand-made disk", "--timeout", "60")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Found /boot/extlinux/extlinux.conf" in out
    assert "the console showed 'crossnix hand-made disk'" in out
    arch = board.default_system.split("-")[0]
    unpacked = project_dir / ".crossnix" / "vms" / f"{board_name}-{arch}" / "disk.img"
    assert unpacked.stat().st_size == 24 * MiB
    assert unpacked.stat().st_blocks * 512 < 24 * MiB  # sparse


def test_inv_vm_print_command(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    disk = blank_disk(project_dir / "x.img")
    assert run_cli("vm", "--board", "rpi4", "--image", str(disk), "--port", "40123", "--no-kvm", "--print-command") == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("qemu-system-aarch64 -machine virt -cpu cortex-a72 -accel tcg ")
    assert f"file={disk},format=raw,if=none,id=hd0,snapshot=on" in out
    assert "hostfwd=tcp:127.0.0.1:40123-:22" in out


def test_inv_vm_needs_exactly_one_subject(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("vm") == 1
    assert "exactly one of --target NAME or --board BOARD" in capsys.readouterr().err
    assert run_cli("vm", "--board", "rpi4", "--system", "riscv64-linux", "--firmware-only") == 1
    assert "supports aarch64-linux, not 'riscv64-linux'" in capsys.readouterr().err


# Disks ----------------------------------------------------------------------------------------------------


def test_prepare_disk_uses_raw_and_qcow2_in_place_and_unpacks_zstd_once(sd_image_zst: Path, tmp_path: Path) -> None:
    raw = blank_disk(tmp_path / "raw.img")
    assert vm.prepare_disk(raw, Media.DISK, tmp_path / "w") == qemu.Disk(raw, "raw", Media.DISK)
    assert not (tmp_path / "w").exists()
    if shutil.which("qemu-img"):
        qcow = tmp_path / "vm.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow), "16M"], check=True)
        assert vm.prepare_disk(qcow, Media.QCOW2, tmp_path / "w") == qemu.Disk(qcow, "qcow2", Media.QCOW2)
    disk = vm.prepare_disk(sd_image_zst, Media.SD_CARD, tmp_path / "w")
    assert disk == qemu.Disk(tmp_path / "w" / "disk.img", "raw", Media.SD_CARD)
    first = disk.path.stat().st_mtime_ns
    assert vm.prepare_disk(sd_image_zst, Media.SD_CARD, tmp_path / "w").path.stat().st_mtime_ns == first  # reused
    copy = vm.prepare_disk(raw, Media.DISK, tmp_path / "c", private_copy=True)
    assert copy.path == tmp_path / "c" / "disk.img" and copy.path.read_bytes() == raw.read_bytes()


# The state file `inv deploy --vm` reads ----------------------------------------------------------------------


def test_vm_state_and_the_deploy_address_override(tmp_path: Path) -> None:
    target = Target(name="pi", board="rpi4", system="aarch64-linux", host="pi.lan", port=22, user="admin",
                    proxy_jump="bastion", ssh_options={"HostName": "10.0.0.5", "ServerAliveInterval": "5"})
    with pytest.raises(CrossnixError, match="no VM of pi is running") as e:
        vmstate.vm_target(target, tmp_path)
    assert e.value.hint == "start one in another terminal: inv vm --target pi"
    path = vmstate.write_state(tmp_path, vmstate.new_state("pi", 40022, Path("/img")))
    assert path == tmp_path / "vms" / "pi.json"
    data = json.loads(path.read_text())
    assert data["host"] == "127.0.0.1" and data["port"] == 40022 and data["pid"] == os.getpid()
    reached = vmstate.vm_target(target, tmp_path)
    assert (reached.host, reached.port, reached.proxy_jump) == ("127.0.0.1", 40022, None)
    assert dict(reached.ssh_options) == {"ServerAliveInterval": "5"}  # nothing that redirects the connection
    assert (reached.user, reached.name) == ("admin", "pi")
    stale = vmstate.VmState("pi", "127.0.0.1", 40022, pid=2**22 + 12345)
    vmstate.write_state(tmp_path, stale)
    assert vmstate.read_state(tmp_path, "pi") is None
    vmstate.remove_state(tmp_path, "pi")
    assert not path.exists()
