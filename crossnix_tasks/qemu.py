"""The QEMU command line for booting a board's image, and whether KVM can be used for it.

:func:`qemu_argv` is a pure function of the board's :class:`~crossnix_tasks.boards.QemuMachine` for the image's
system, the disk, the acceleration decision and the SSH port forward; tests pin its output. The machine data
per board and system lives in the board plugins (``plugins/crossnix_boards/__init__.py`` for the built-in ones,
checked on Debian 12 as in shared/reference/boards.md §5):

- x86_64: ``-machine q35`` with OVMF in pflash (a writable copy of the variable store per VM);
- aarch64: ``-machine virt -cpu cortex-a72`` with AAVMF in pflash, or U-Boot as ``-bios`` for sd-card images;
- riscv64: ``-machine virt`` with OpenSBI ``fw_jump.elf`` as ``-bios`` and U-Boot S-mode as ``-kernel``.

Networking is off (``-nic none``) unless an SSH port is forwarded; then it is QEMU's user network restricted to
the forward (``restrict=on``: the guest reaches nothing but the forwarded port on 127.0.0.1).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from crossnix_tasks import process
from crossnix_tasks.boards import Media, QemuMachine
from crossnix_tasks.errors import CrossnixError

GUEST_SSH_PORT = 22
DEFAULT_MEMORY_MIB = 1024
DEFAULT_CPUS = 2
# The serial console on the terminal; Ctrl-a x quits QEMU, Ctrl-a c toggles its monitor.
INTERACTIVE_SERIAL = "mon:stdio"
# What the serial console shows once the firmware or boot loader waits for input.
FIRMWARE_PROMPTS = ("Shell>", "Hit any key to stop autoboot", "=>")
_HOST_SYSTEMS = {"x86_64": "x86_64-linux", "amd64": "x86_64-linux", "aarch64": "aarch64-linux",
                 "arm64": "aarch64-linux", "riscv64": "riscv64-linux"}


@dataclass(frozen=True)
class Accel:
    """How QEMU executes the guest: ``kvm`` (with ``cpu`` overriding the board's) or ``tcg`` emulation."""

    kind: str  # "kvm" | "tcg"
    reason: str
    cpu: str | None = None  # e.g. "host" under KVM when the probe accepted it

    @classmethod
    def tcg(cls, reason: str) -> Accel:
        return cls("tcg", reason)


@dataclass(frozen=True)
class Disk:
    path: Path
    format: str = "raw"  # "raw" | "qcow2"
    media: Media = Media.DISK
    snapshot: bool = True  # writes go to a temporary overlay; the image is never modified


def serial_file(path: Path) -> str:
    """``-serial`` value writing the console to ``path``. QEMU takes everything after ``file:`` as the path
    (no ``key=value,...`` parsing), so commas stay single here."""
    text = str(path)
    if "\n" in text or "\0" in text:
        raise CrossnixError(f"QEMU cannot take a path with a line break or NUL: {text!r}")
    return "file:" + text


def qemu_option_value(value: str | Path) -> str:
    """A value inside a QEMU ``key=value,...`` option: commas are doubled, so no path adds an option."""
    text = str(value)
    if "\n" in text or "\0" in text:
        raise CrossnixError(f"QEMU cannot take a path with a line break or NUL: {text!r}")
    return text.replace(",", ",,")


def firmware_args(machine: QemuMachine, vars_file: Path | None) -> list[str]:
    """The board's firmware arguments with ``{vars}`` replaced by the VM's writable variable store."""
    args = []
    for arg in machine.firmware:
        if "{vars}" in arg:
            if vars_file is None:
                raise CrossnixError(f"{machine.binary} {machine.machine}: firmware needs a variable store copy")
            arg = arg.replace("{vars}", qemu_option_value(vars_file))
        args.append(arg)
    return args


def net_device(machine: QemuMachine) -> str:
    """virtio-net on the same transport as the disk (riscv64 virt's PCI NIC is not created by ``-nic``)."""
    return "virtio-net-pci" if machine.disk_device.endswith("-pci") else "virtio-net-device"


def qemu_argv(
    machine: QemuMachine,
    *,
    disk: Disk | None,
    accel: Accel,
    ssh_port: int | None = None,
    vars_file: Path | None = None,
    memory_mib: int = DEFAULT_MEMORY_MIB,
    cpus: int = DEFAULT_CPUS,
    serial: str = INTERACTIVE_SERIAL,
) -> list[str]:
    """The full QEMU argv: machine, CPU, acceleration, firmware, the disk, the serial console (``serial``:
    the terminal by default, ``file:PATH`` for headless runs)."""
    argv = [machine.binary, "-machine", machine.machine]
    cpu = accel.cpu if accel.kind == "kvm" and accel.cpu else machine.cpu
    if cpu:
        argv += ["-cpu", cpu]
    argv += ["-accel", accel.kind, "-m", str(memory_mib), "-smp", str(cpus)]
    argv += ["-display", "none", "-monitor", "none", "-serial", serial]
    argv += firmware_args(machine, vars_file)
    if disk is not None:
        drive = f"file={qemu_option_value(disk.path)},format={disk.format},if=none,id=hd0"
        if disk.snapshot:
            drive += ",snapshot=on"
        if disk.media is Media.ISO:
            drive += ",readonly=on"
        argv += ["-drive", drive, "-device", f"{machine.disk_device},drive=hd0"]
    if ssh_port is None:
        argv += ["-nic", "none"]
    else:
        forward = f"hostfwd=tcp:127.0.0.1:{int(ssh_port)}-:{GUEST_SSH_PORT}"
        argv += ["-netdev", f"user,id=net0,restrict=on,{forward}", "-device", f"{net_device(machine)},netdev=net0"]
    return argv


# Firmware files ---------------------------------------------------------------------------------------------

_PATH_IN_OPTION = re.compile(r"(?:^|,)file=([^,]+)")


def firmware_files(machine: QemuMachine) -> list[str]:
    """Absolute firmware paths the machine needs on this host (``-bios``/``-kernel`` values, pflash files)."""
    files: list[str] = []
    args = list(machine.firmware)
    for i, arg in enumerate(args):
        if arg in ("-bios", "-kernel") and i + 1 < len(args) and args[i + 1].startswith("/"):
            files.append(args[i + 1])
        for match in _PATH_IN_OPTION.finditer(arg):
            if match.group(1).startswith("/"):
                files.append(match.group(1))
    if machine.vars_template:
        files.append(machine.vars_template)
    return files


def missing_firmware(machine: QemuMachine) -> list[str]:
    return [f for f in firmware_files(machine) if not os.path.isfile(f)]


def require_firmware(machine: QemuMachine) -> None:
    missing = missing_firmware(machine)
    if not shutil.which(machine.binary):
        missing.insert(0, machine.binary)
    if missing:
        packages = " ".join(machine.firmware_packages)
        raise CrossnixError(
            f"cannot boot {machine.machine} with {machine.binary}: missing {', '.join(missing)}",
            hint=f"on Debian/Ubuntu: apt-get install {qemu_package(machine.binary)} {packages}".rstrip(),
        )


def qemu_package(binary: str) -> str:
    """The Debian package shipping a ``qemu-system-*`` binary."""
    return {
        "qemu-system-x86_64": "qemu-system-x86",
        "qemu-system-aarch64": "qemu-system-arm",
        "qemu-system-riscv64": "qemu-system-misc",
    }.get(binary, "qemu-system")


def copy_vars(machine: QemuMachine, directory: Path) -> Path | None:
    """A fresh writable copy of the board's UEFI variable store in ``directory`` (None if it has none)."""
    if machine.vars_template is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{Path(machine.vars_template).stem}.vars.fd"
    shutil.copyfile(machine.vars_template, target)
    target.chmod(0o600)
    return target


# KVM --------------------------------------------------------------------------------------------------------


def host_system() -> str | None:
    return _HOST_SYSTEMS.get(platform.machine().lower())


KVM_PROBE_SECONDS = 2.0
_KVM_FAILURES = ("KVM internal error", "failed to set MSR", "kvm_", "Assertion", "error:")


def kvm_static_reason(system: str, kvm_device: Path = Path("/dev/kvm")) -> str | None:
    """Why KVM cannot be used for ``system`` without starting QEMU, or None if it is worth probing."""
    host = host_system()
    if host != system:
        return f"{system} guest on a {host or platform.machine()} host: software emulation (TCG)"
    if not kvm_device.exists():
        return f"{kvm_device} does not exist (no KVM in this kernel, or nested virtualisation is off)"
    if not os.access(kvm_device, os.R_OK | os.W_OK):
        return f"{kvm_device} is not readable and writable by this user (add yourself to the 'kvm' group)"
    return None


def kvm_probe_argv(machine: QemuMachine, cpu: str | None, vars_file: Path | None) -> list[str]:
    """The board's firmware under KVM with nothing attached; the serial console is discarded."""
    return [
        machine.binary, "-machine", machine.machine, *(["-cpu", cpu] if cpu else []), "-accel", "kvm",
        "-m", "256", "-display", "none", "-monitor", "none", "-serial", "none", "-nic", "none", "-no-reboot",
        *firmware_args(machine, vars_file),
    ]


async def probe_kvm_once(machine: QemuMachine, cpu: str | None, seconds: float = KVM_PROBE_SECONDS) -> str | None:
    """Run the board's real firmware under KVM for ``seconds``; None if it kept running quietly, else why not.

    /dev/kvm can exist and still be unusable: nested virtualisation that aborts on MSR writes (``-cpu host``),
    or hits "KVM internal error" in the firmware's first instructions. QEMU reports both on stderr within
    milliseconds, so only running the firmware tells.
    """
    with tempfile.TemporaryDirectory(prefix="crossnix-kvm-") as tmp:
        argv = kvm_probe_argv(machine, cpu, copy_vars(machine, Path(tmp)))
        try:
            done = await process.run(argv, check=False, timeout=seconds)
        except process.ProcessTimeout as exc:  # still running after `seconds`: good, unless it complained
            stderr = exc.stderr
        except process.ProcessFailed as exc:
            return exc.message
        else:
            tail = [line for line in done.stderr.splitlines() if line.strip()]
            return f"QEMU exited with status {done.returncode}" + (f": {tail[-1].strip()}" if tail else "")
    failed = [line.strip() for line in stderr.splitlines() if any(m in line for m in _KVM_FAILURES)]
    return failed[0][:200] if failed else None


async def choose_accel(machine: QemuMachine, system: str, *, allow_kvm: bool = True) -> Accel:
    """KVM when the host runs ``system`` natively and the firmware really runs under KVM, else TCG."""
    if not allow_kvm:
        return Accel.tcg("KVM disabled with --no-kvm")
    reason = kvm_static_reason(system)
    if reason:
        return Accel.tcg(reason)
    failures = []
    for cpu in dict.fromkeys(("host", machine.cpu)):
        failure = await probe_kvm_once(machine, cpu)
        if failure is None:
            return Accel("kvm", f"KVM usable (cpu {cpu or 'default'})", cpu=cpu)
        failures.append(f"-cpu {cpu or '(default)'}: {failure}")
    return Accel.tcg("KVM present but unusable here (" + "; ".join(failures) + "): software emulation")
