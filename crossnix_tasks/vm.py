"""``inv vm``: boot a built image (or just a board's firmware) in QEMU.

The pieces, each small: :func:`prepare_disk` turns the image into something QEMU reads (a qcow2 or raw file is
used in place; a zstd/xz/gzip image is unpacked once into ``<state_dir>/vms/<name>/disk.img``, sparse, and
reused while the image is unchanged; a private copy is made when crossnix must write into it, e.g. a pinned
host key); :func:`plan_vm` picks the board's QEMU machine for the system, the acceleration and the SSH port;
:func:`run_interactive` and :func:`run_until` run it. The disk is always attached with ``snapshot=on``, so the
guest's writes vanish when QEMU exits and every boot starts from the image.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from crossnix_tasks import flash, process, qemu
from crossnix_tasks.boards import Board, Media, QemuMachine
from crossnix_tasks.errors import CrossnixError


@dataclass(frozen=True)
class VmPlan:
    name: str
    machine: QemuMachine
    system: str
    disk: qemu.Disk | None
    accel: qemu.Accel
    ssh_port: int | None
    workdir: Path
    vars_file: Path | None = None

    def argv(self, *, serial: str = qemu.INTERACTIVE_SERIAL, memory_mib: int = qemu.DEFAULT_MEMORY_MIB,
             cpus: int = qemu.DEFAULT_CPUS) -> list[str]:
        return qemu.qemu_argv(
            self.machine,
            disk=self.disk,
            accel=self.accel,
            ssh_port=self.ssh_port,
            vars_file=self.vars_file,
            memory_mib=memory_mib,
            cpus=cpus,
            serial=serial,
        )


def machine_for(board: Board, system: str) -> QemuMachine:
    machine = board.qemu.get(system)
    if machine is None:
        known = ", ".join(board.qemu) or "none"
        raise CrossnixError(
            f"board {board.name!r} declares no QEMU machine for {system} (it has: {known})",
            hint="a board plugin sets Board.qemu = {system: QemuMachine(...)}",
        )
    return machine


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (QEMU reports it if someone takes it in between)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stamp(image: Path) -> str:
    info = image.stat()
    return json.dumps({"image": str(image.resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns})


def prepare_disk(
    image: Path,
    media: Media,
    workdir: Path,
    *,
    private_copy: bool = False,
    progress: flash.ProgressCallback | None = None,
) -> qemu.Disk:
    """A disk QEMU can boot from ``image``: the image itself (raw, qcow2), or a raw copy in ``workdir`` when it is
    compressed or ``private_copy`` asks for one crossnix may write into. The copy is reused while the image is
    unchanged (writes crossnix makes to it are idempotent; the guest's own go to QEMU's snapshot overlay)."""
    if flash.is_qcow2(image):
        if private_copy:
            raise CrossnixError(f"{image} is qcow2; crossnix can only write into raw images")
        return qemu.Disk(image, "qcow2", media)
    info = flash.image_info(image)
    if info.compression == "raw" and not private_copy:
        return qemu.Disk(image, "raw", media)
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    workdir.chmod(0o700)  # the copy may hold the target's private host key
    disk = workdir / "disk.img"
    stamp = workdir / "disk.stamp"
    wanted = _stamp(image)
    if not (disk.exists() and stamp.exists() and stamp.read_text() == wanted):
        stamp.unlink(missing_ok=True)
        flash.expand_image(info, disk, progress=progress)
        stamp.write_text(wanted)
    return qemu.Disk(disk, "raw", media)


def workdir_for(state_dir: Path, name: str) -> Path:
    return state_dir / "vms" / name


async def plan_vm(
    name: str,
    board: Board,
    system: str,
    *,
    disk: qemu.Disk | None,
    workdir: Path,
    ssh_port: int | None,
    allow_kvm: bool = True,
) -> VmPlan:
    machine = machine_for(board, system)
    qemu.require_firmware(machine)
    accel = await qemu.choose_accel(machine, system, allow_kvm=allow_kvm)
    vars_file = _prepare_workdir(machine, workdir)
    return VmPlan(name, machine, system, disk, accel, ssh_port, workdir, vars_file)


def _prepare_workdir(machine: QemuMachine, workdir: Path) -> Path | None:
    """Create the VM's work directory; a fresh copy of the UEFI variable store in it, if the firmware has one."""
    workdir.mkdir(parents=True, exist_ok=True)
    return qemu.copy_vars(machine, workdir)


def variant_media(board: Board, variant: str | None) -> Media:
    """How the variant's image is attached (an unknown variant name is checked by the build)."""
    chosen = board.variant(variant or board.default_variant)
    return chosen.media if chosen else Media.DISK


async def run_interactive(argv: Sequence[str]) -> int:
    """QEMU with its serial console on this terminal until the guest powers off or Ctrl-a x."""
    return await process.run_foreground(argv)


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


async def run_until(
    argv: Sequence[str],
    console_log: Path,
    markers: Sequence[str],
    seconds: float,
    *,
    echo: bool = False,
    poll: float = 0.05,
) -> tuple[str, str]:
    """Run QEMU headless (its serial console going to ``console_log``) until the console shows one of
    ``markers`` (at most ``seconds``); returns (marker, console text). QEMU is stopped in every case."""
    task = asyncio.create_task(process.run(argv, check=False))
    seen = b""
    try:
        async with asyncio.timeout(seconds):
            while True:
                chunk = _read_from(console_log, len(seen))
                if chunk:
                    seen += chunk
                    if echo:
                        print(chunk.decode(errors="replace"), end="", flush=True)
                    text = seen.decode(errors="replace")
                    for marker in markers:
                        if marker in text:
                            return marker, text
                if task.done():
                    done = task.result()
                    raise CrossnixError(
                        f"QEMU exited with status {done.returncode} before the console showed "
                        f"{' or '.join(map(repr, markers))}\n{process.stderr_tail(done.stderr)}\n"
                        f"console:\n{_tail(seen)}"
                    )
                await asyncio.sleep(poll)
    except TimeoutError:
        raise CrossnixError(
            f"the console did not show {' or '.join(map(repr, markers))} within {seconds:g} s\n"
            f"console (last lines):\n{_tail(seen)}"
        ) from None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, process.ProcessFailed):
            await task


def _tail(data: bytes, lines: int = 15) -> str:
    text = data.decode(errors="replace").replace("\r", "")
    return "\n".join("  " + line for line in text.splitlines()[-lines:])


def image_digest(path: Path) -> str:
    """A short identifier of an image path (for work directories of images given with --image)."""
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
