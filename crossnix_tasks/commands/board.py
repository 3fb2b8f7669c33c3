"""Tasks for the path from a new board to the fleet: flash, vm, hwconfig, doctor."""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from invoke.context import Context
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from crossnix_tasks import build, firstboot, hostkeys, nixview, qemu, signing, ssh, ui, vmstate
from crossnix_tasks import doctor as doctor_module
from crossnix_tasks import flash as flashing
from crossnix_tasks import hwconfig as hwconfig_module
from crossnix_tasks import vm as vm_module
from crossnix_tasks.boards import Board
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.inventory import Target, inventory_from_source
from crossnix_tasks.project import Project
from crossnix_tasks.remote import Remote, check_sudo
from crossnix_tasks.selection import select
from crossnix_tasks.taskutil import crossnix_task


def ask_yes(question: str) -> bool:
    """The confirmation prompt of ``inv flash``: only a typed ``yes`` on a terminal counts."""
    if not sys.stdin.isatty():
        raise flashing.FlashRefused(
            f"{question}\nno confirmation: standard input is not a terminal",
            hint="check the device above, then run again with --yes",
        )
    ui.err.print(question, soft_wrap=True, markup=False)  # holds the device's model string: never markup
    return ui.err.input("Type 'yes' to write: ").strip() == "yes"


@contextmanager
def byte_progress() -> Iterator[flashing.ProgressCallback]:
    """A rich progress bar fed by (phase, done, total) callbacks from the writing thread."""
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=ui.err, transient=False) as progress:
        tasks: dict[str, object] = {}

        def report(phase: str, done: int, total: int | None) -> None:
            task_id = tasks.get(phase)
            if task_id is None:
                task_id = tasks[phase] = progress.add_task(phase, total=total)
            progress.update(task_id, completed=done, total=total)  # type: ignore[arg-type]

        yield report


@crossnix_task(
    auto_shortflags=False,
    help={
        "target": "write this target's image (built unless --image is given) with its pinned host key",
        "variant": "image variant to build for --target (default: the target's or its board's)",
        "image": "image file to write (zstd, xz, gzip or raw)",
        "device": "whole block device to overwrite, e.g. /dev/sdb or /dev/mmcblk0",
        "yes": "do not ask for confirmation",
        "to_file": "allow a regular file as --device (tests, preparing images)",
        "non_removable": "allow a device that is neither removable nor hot-pluggable (loop device, internal disk)",
    },
)
async def flash(
    c: Context,
    project: Project,
    target: str | None = None,
    variant: str | None = None,
    image: str | None = None,
    device: str | None = None,
    yes: bool = False,
    to_file: bool = False,
    non_removable: bool = False,
) -> None:
    """Write an image to an SD card or USB stick, fsync it and verify it by reading it back.

    With --target the target's image is built and its pinned SSH host key is written into it."""
    if not device:
        raise CrossnixError("flash needs --device", hint="`lsblk -o PATH,SIZE,RM,MODEL` lists the devices")
    if not image and not target:
        raise CrossnixError("flash needs --target NAME or --image FILE")
    chosen = _one_target(project, target, "flash") if target else None
    image_path = Path(image) if image else await _build_image(project, chosen, variant)
    pinning = _host_key_step(project, chosen) if chosen is not None else None
    with byte_progress() as report:
        destination, result = await flashing.flash(
            image_path,
            Path(device),
            confirm=None if yes else ask_yes,
            to_file=to_file,
            allow_non_removable=non_removable,
            progress=report,
            after_write=pinning,
        )
    ui.out.print(
        f"wrote {flashing.human_size(result.bytes_written)} to {destination.path}, "
        f"verified (sha256 {result.sha256})",
        markup=False,
    )


def _host_key_step(project: Project, target: Target) -> flashing.AfterWrite | None:
    """After writing: the target's pinned host key into the root file system, and into known_hosts."""
    state_dir = project.inventory.state_dir
    key = firstboot.prepare_host_key(state_dir, target)
    if key is None:
        return None
    assert key is not None

    async def install(destination: flashing.Destination) -> None:
        names = firstboot.known_hosts_names(target)
        try:
            part, replaced = await firstboot.install_host_key(destination.path, key, state_dir / "known_hosts", names)
        except CrossnixError as exc:
            ui.warn(f"{target.name}: the host key was not written: {exc.render()}")
            return
        ui.out.print(
            f"{target.name}: host key {key.key_only.split()[0]} written to partition {part.number} "
            f"(/etc/ssh/{hostkeys.KEY_NAME}); pinned in {state_dir / 'known_hosts'} for {', '.join(names) or '-'}",
            markup=False,
        )
        for name in replaced:
            ui.warn(f"{name}: replaced its previous, different key in {state_dir / 'known_hosts'}")

    return install


def _state_dir(project: Project) -> Path:
    if project.inventory_path.exists():
        return project.inventory.state_dir
    return project.root / ".crossnix"


@dataclass(frozen=True)
class _VmSubject:
    name: str
    board: Board
    system: str
    variant: str | None
    target: Target | None


def _vm_subject(project: Project, target: str | None, board: str | None, system: str | None,
                variant: str | None) -> _VmSubject:
    if bool(target) == bool(board):
        raise CrossnixError("vm needs exactly one of --target NAME or --board BOARD")
    if target:
        matched = select(project.require_inventory(), [target])
        if len(matched) != 1:
            raise CrossnixError(f"vm boots one target at a time; {target!r} matches {len(matched)}")
        chosen = matched[0]
        if system and system != chosen.system:
            raise CrossnixError(f"target {chosen.name} is {chosen.system}; --system {system} does not apply")
        return _VmSubject(chosen.name, project.plugins.board(chosen.board), chosen.system,
                          variant or chosen.image_variant, chosen)
    assert board is not None
    found = project.plugins.board(board)
    chosen_system = system or found.default_system
    if chosen_system not in found.systems:
        raise CrossnixError(f"board {found.name!r} supports {', '.join(found.systems)}, not {chosen_system!r}")
    return _VmSubject(f"{found.name}-{chosen_system.split('-')[0]}", found, chosen_system, variant, None)


@crossnix_task(
    auto_shortflags=False,
    help={
        "target": "boot the image of this target (SSH forwarded for `inv deploy --on NAME --vm`)",
        "board": "boot an image of this board (with --image, or --firmware-only)",
        "system": "Nix system, for boards with several (with --board)",
        "variant": "image variant (default: the target's or the board's)",
        "image": "boot this image file instead of building one",
        "firmware_only": "boot the firmware with no disk (checks QEMU and firmware)",
        "port": "host port on 127.0.0.1 forwarded to the guest's SSH (default: a free one)",
        "memory": "guest memory in MiB (default 1024)",
        "cpus": "guest CPUs (default 2)",
        "no_kvm": "software emulation even where KVM works",
        "print_command": "print the QEMU command and exit",
        "expect": "run headless until the console shows this text (smoke tests), then stop; exit 1 if it never does",
        "timeout": "seconds to wait for --expect (default 600)",
    },
)
async def vm(
    c: Context,
    project: Project,
    target: str | None = None,
    board: str | None = None,
    system: str | None = None,
    variant: str | None = None,
    image: str | None = None,
    firmware_only: bool = False,
    port: int | None = None,
    memory: int = qemu.DEFAULT_MEMORY_MIB,
    cpus: int = qemu.DEFAULT_CPUS,
    no_kvm: bool = False,
    print_command: bool = False,
    expect: str | None = None,
    timeout: float = 600.0,  # noqa: ASYNC109 - the --timeout flag, applied with asyncio.timeout
) -> None:
    """Boot a built image in QEMU: the board's machine and firmware, serial console here, SSH on 127.0.0.1."""
    subject = _vm_subject(project, target, board, system, variant)
    state_dir = _state_dir(project)
    workdir = vm_module.workdir_for(state_dir, subject.name)
    media = vm_module.variant_media(subject.board, subject.variant)
    disk = None
    key = None
    if not firmware_only:
        built_for = subject.target
        if built_for is None and not image:
            example = build.example_target(project, subject.board.name)
            built_for = dataclasses.replace(example, system=subject.system)
        image_path = Path(image) if image else await _build_image(project, built_for, subject.variant)
        if subject.target is not None:
            key = firstboot.prepare_host_key(state_dir, subject.target)
        with byte_progress() as report:
            disk = vm_module.prepare_disk(image_path, media, workdir, private_copy=key is not None, progress=report)
        if key is not None:
            key = await _vm_host_key(disk, key)
    ssh_port = None if disk is None else (int(port) if port else vm_module.free_port())
    plan = await vm_module.plan_vm(
        subject.name, subject.board, subject.system, disk=disk, workdir=workdir, ssh_port=ssh_port,
        allow_kvm=not no_kvm,
    )
    if print_command:
        ui.out.print(shlex.join(plan.argv(memory_mib=memory, cpus=cpus)), markup=False)
        return
    ui.err.print(f"{subject.name}: {plan.machine.binary} -machine {plan.machine.machine}; {plan.accel.reason}",
                 markup=False)
    if expect is not None:
        log = workdir / "console.log"
        log.unlink(missing_ok=True)
        argv = plan.argv(serial=qemu.serial_file(log), memory_mib=memory, cpus=cpus)
        marker, _ = await vm_module.run_until(argv, log, [expect], timeout, echo=True)
        ui.out.print(f"\n{subject.name}: the console showed {marker!r}", markup=False)
        return
    if ssh_port is not None:
        user = subject.target.user if subject.target else "root"
        pinned = f" -o UserKnownHostsFile={shlex.quote(str(state_dir / 'known_hosts'))}" if key is not None else ""
        ui.err.print(f"SSH: ssh -p {ssh_port}{pinned} {user}@127.0.0.1" + (
            f"   deploy: inv deploy --on {subject.name} --vm" if subject.target else ""), markup=False)
    ui.err.print("serial console follows; quit QEMU with Ctrl-a x", markup=False)
    forwarded = [hostkeys.known_hosts_name(vmstate.LOOPBACK, ssh_port)] if ssh_port is not None else []
    if key is not None:
        hostkeys.pin(state_dir / "known_hosts", forwarded, key)
    if subject.target is not None and ssh_port is not None:
        vmstate.write_state(state_dir, vmstate.new_state(subject.name, ssh_port, disk.path if disk else None))
    try:
        status = await vm_module.run_interactive(plan.argv(memory_mib=memory, cpus=cpus))
    finally:
        if subject.target is not None:
            vmstate.remove_state(state_dir, subject.name)
        if key is not None:
            hostkeys.unpin(state_dir / "known_hosts", forwarded, key)
    if status != 0:
        raise CrossnixError(f"QEMU exited with status {status}")


async def _vm_host_key(disk: qemu.Disk, key: hostkeys.HostKey) -> hostkeys.HostKey | None:
    """The pinned host key written into the VM's private disk copy; None (with a warning) if impossible."""
    try:
        part = await hostkeys.inject(disk.path, key)
    except CrossnixError as exc:
        ui.warn(f"{key.target}: the VM boots without the pinned host key: {exc.render()}")
        return None
    ui.err.print(f"{key.target}: pinned host key written to partition {part.number} of {disk.path}", markup=False)
    return key


async def _build_image(project: Project, target: Target | None, variant: str | None) -> Path:
    """Build the target's image (or, without a target, one for the board of ``--board``: ``example-<board>``).

    The fleet signing key is created first, so the image trusts what the first deploy copies."""
    if target is None:
        raise CrossnixError("images are built for targets: pass --target NAME, or --image FILE with --board")
    inventory = project.require_inventory()
    await signing.ensure_fleet_key(inventory.state_dir, project.root)
    with nixview.build_view(ui.err) as view:
        (image,) = await build.build_images(project, [target], variant, view=view)
    ui.err.print(f"{target.name}: image {image.file_path}", markup=False)
    return image.file_path


def _flake_dir(project: Project) -> Path | None:
    """The local directory of the project's flake, or None for a remote flake reference."""
    ref = project.inventory.flake
    if ref.startswith("path:"):
        ref = ref[len("path:") :]
    elif ":" in ref.split("?")[0]:
        return None
    return (project.root / ref.split("?")[0]).resolve()


def print_checks(checks: list[doctor_module.Check]) -> None:
    scope = None
    for check in checks:
        if check.scope != scope:
            scope = check.scope
            ui.out.print(scope, style="bold", markup=False)
        colour = "green" if check.ok else ("yellow" if check.warning else "red")
        ui.out.print(f"  [{colour}]{check.status:<8}[/{colour}] {check.name:<22} ", end="")
        ui.out.print(check.detail, markup=False)
        if not check.ok and check.fix:
            ui.out.print(f"  {'':<8} {'':<22} fix: ", end="")
            ui.out.print(check.fix, markup=False)
    failed = sum(c.failed for c in checks)
    warnings = sum(not c.ok and c.warning for c in checks)
    ui.out.print(f"{len(checks)} checks: {failed} failed, {warnings} warning(s)", markup=False)


@crossnix_task(
    iterable=["on"],
    help={
        "on": "also check these targets over SSH: NAME, GLOB or @TAG; repeatable",
        "json": "print JSON",
        "connect_timeout": "seconds to wait for each target's SSH login (default 15)",
    },
)
async def doctor(
    c: Context, project: Project, on: list[str] | None = None, json: bool = False, connect_timeout: float = 15.0
) -> None:
    """Check Nix, flake inputs, build support per system, signing setup and (--on) the targets; print each fix."""
    has_inventory = project.inventory_path.exists()
    inventory = project.inventory if has_inventory else None
    all_targets = list(inventory.targets.values()) if inventory else []
    chosen = select(inventory, on) if inventory is not None and on else all_targets
    state_dir = inventory.state_dir if inventory else None
    checks = await doctor_module.local_checks(
        chosen, project.plugins.boards, flake_dir=_flake_dir(project) if inventory else None, state_dir=state_dir
    )
    if on:
        if inventory is None:
            project.require_inventory()
        assert state_dir is not None
        env = ssh.SshEnv(state_dir=state_dir, connect_timeout=connect_timeout)
        checks += await doctor_module.all_target_checks(chosen, env, signing.read_public_key(state_dir))
    if json:
        ui.print_json([dataclasses.asdict(check) | {"status": check.status} for check in checks])
    else:
        print_checks(checks)
    failed = [check for check in checks if check.failed]
    if failed:
        raise CrossnixError(f"{len(failed)} check(s) failed: " + ", ".join(f"{c.scope}: {c.name}" for c in failed))


def _one_target(project: Project, name: str | None, task_name: str) -> Target:
    if not name:
        raise CrossnixError(f"{task_name} needs --target NAME")
    matched = select(project.require_inventory(), [name])
    if len(matched) != 1:
        raise CrossnixError(f"{task_name} works on one target at a time; {name!r} matches {len(matched)}")
    return matched[0]


async def _sudo_password(target: Target) -> str | None:
    if target.user == "root" or not target.ask_sudo_password:
        return None
    prompt = f"sudo password for {target.user} on {target.name}: "
    return await asyncio.to_thread(getpass.getpass, prompt)


@crossnix_task(
    help={"target": "the target to read the hardware of (must be reachable over SSH)",
          "force": "replace an existing, different hosts/NAME/hardware-configuration.nix"}
)
async def hwconfig(c: Context, project: Project, target: str | None = None, force: bool = False) -> None:
    """Generate the target's hardware-configuration.nix on it and wire it into its modules in boards.toml."""
    chosen = _one_target(project, target, "hwconfig")
    env = ssh.SshEnv(state_dir=project.inventory.state_dir)
    password = await _sudo_password(chosen)
    conn = await ssh.connect(chosen, env)
    try:
        session = Remote(chosen, conn, sudo_password=password)
        if password is not None:
            await check_sudo(session, password)
        text = await hwconfig_module.generate(session)
    finally:
        conn.close()
    await hwconfig_module.check_parses(text)
    path, written = hwconfig_module.write_file(project.root, chosen, text, force=force)
    wrapper = hwconfig_module.write_wrapper(project.root, chosen.name)
    wired = hwconfig_module.wire(
        project.inventory_path,
        chosen.name,
        lambda source: inventory_from_source(project.inventory_path, source, project.plugins.boards),
    )
    ui.out.print(f"{path}: {'written' if written else 'unchanged'}", markup=False)
    if wrapper:
        ui.out.print(
            f"{project.root / hwconfig_module.relative_path(chosen.name)}: written (imports it with its "
            "fileSystems at mkDefault priority, so the board's mounts win)",
            markup=False,
        )
    ui.out.print(
        f"{project.inventory_path}: "
        + (f"added {hwconfig_module.relative_path(chosen.name)!r} to targets.{chosen.name}.modules" if wired
           else f"targets.{chosen.name}.modules already lists it"),
        markup=False,
    )
