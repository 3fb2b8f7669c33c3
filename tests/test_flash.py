"""`inv flash`: real images to a regular file and a loop device, read-back verification, every refusal."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossnix_tasks import flash
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.flash import BlockNode, DeviceFacts, FlashRefused
from tests.conftest import run_cli

MiB = 1024 * 1024


def _sh(*argv: str, input: bytes | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, input=input).stdout.decode()


@pytest.fixture(scope="module")
def disk_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24 MiB disk with the sd-image layout: MBR, FAT-typed p1, bootable ext4 p2 labelled NIXOS_SD."""
    if not shutil.which("sfdisk") or not shutil.which("mkfs.ext4"):
        pytest.skip("sfdisk and mkfs.ext4 (util-linux, e2fsprogs) are needed to make a disk image")
    root = tmp_path_factory.mktemp("img")
    img = root / "disk.img"
    with img.open("wb") as f:
        f.truncate(24 * MiB)
    _sh("sfdisk", "-q", str(img), input=b"label: dos\nstart=2048, size=4096, type=c\nstart=6144, type=83, bootable\n")
    _sh("mkfs.ext4", "-q", "-L", "NIXOS_SD", "-E", f"offset={6144 * 512}", str(img), f"{(24 * MiB - 6144 * 512) // 1024}k")
    with img.open("r+b") as f:  # incompressible bytes where the FAT partition would be
        f.seek(2048 * 512)
        f.write(os.urandom(MiB))
    return img


@pytest.fixture(scope="module")
def zst_image(disk_image: Path) -> Path:
    if not shutil.which("zstd"):
        pytest.skip("zstd is not installed")
    out = disk_image.with_suffix(".img.zst")
    _sh("zstd", "-q", "-f", "-T2", str(disk_image), "-o", str(out))
    return out


def sha256(path: Path, length: int | None = None) -> str:
    with path.open("rb") as f:
        return hashlib.sha256(f.read(length) if length is not None else f.read()).hexdigest()


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


# Images -------------------------------------------------------------------------------------------------


def test_image_info_detects_compression_from_bytes_not_names(disk_image: Path, zst_image: Path, tmp_path: Path) -> None:
    raw = flash.image_info(disk_image)
    assert (raw.compression, raw.size) == ("raw", 24 * MiB)
    zst = flash.image_info(zst_image)
    assert zst.compression == "zstd"
    assert zst.size == 24 * MiB  # the zstd CLI records the content size in the frame header
    assert zst.stored_size < raw.size
    misnamed = tmp_path / "disk.img"
    shutil.copy(zst_image, misnamed)
    assert flash.image_info(misnamed).compression == "zstd"
    qcow = tmp_path / "vm.qcow2"
    qcow.write_bytes(b"QFI\xfb" + bytes(60))
    with pytest.raises(CrossnixError, match="qcow2"):
        flash.image_info(qcow)


# Writing to a regular file ------------------------------------------------------------------------------


def test_zstd_image_to_regular_file_is_byte_identical_and_verified(disk_image: Path, zst_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "card.img"
    phases: list[str] = []
    destination, result = run(  # type: ignore[misc]
        flash.flash(zst_image, out, confirm=None, to_file=True, progress=lambda p, d, t: phases.append(p))
    )
    assert not destination.is_block
    assert out.read_bytes() == disk_image.read_bytes()
    assert result.verified and result.bytes_written == 24 * MiB
    assert result.sha256 == sha256(disk_image)
    assert {"writing", "syncing", "verifying"} <= set(phases)


@pytest.mark.parametrize("tool", ["xz", "gzip"])
def test_xz_and_gzip_images_are_decompressed_too(disk_image: Path, tmp_path: Path, tool: str) -> None:
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed")
    packed = tmp_path / f"disk.{tool}"
    packed.write_bytes(subprocess.run([tool, "-c", "-1", str(disk_image)], check=True, capture_output=True).stdout)
    out = tmp_path / "card.img"
    _, result = run(flash.flash(packed, out, confirm=None, to_file=True))  # type: ignore[misc]
    assert result.sha256 == sha256(disk_image) == sha256(out)


def test_read_back_catches_a_medium_that_does_not_keep_what_was_written(zst_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "card.img"

    def corrupt_after_writing(phase: str, done: int, total: int | None) -> None:
        if phase == "syncing":  # between the last write and the read-back, flip one byte on the "medium"
            with out.open("r+b") as f:
                f.seek(5 * MiB)
                byte = f.read(1)
                f.seek(5 * MiB)
                f.write(bytes([byte[0] ^ 0xFF]))

    with pytest.raises(CrossnixError, match=r"verification failed: .* reads back sha256"):
        run(flash.flash(zst_image, out, confirm=None, to_file=True, progress=corrupt_after_writing))


def test_damaged_zstd_image_is_reported(zst_image: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.img.zst"
    data = bytearray(zst_image.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    broken.write_bytes(bytes(data))
    with pytest.raises(CrossnixError, match="damaged"):
        run(flash.flash(broken, tmp_path / "out.img", confirm=None, to_file=True))


def test_cli_flash_to_file(zst_image: Path, disk_image: Path, project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = project_dir / "out.img"
    assert run_cli("flash", "--image", str(zst_image), "--device", str(out), "--to-file", "--yes") == 0
    assert sha256(out) == sha256(disk_image)
    assert f"verified (sha256 {sha256(disk_image)})" in capsys.readouterr().out


# Refusals that need no block device ---------------------------------------------------------------------


def test_regular_file_without_to_file_is_refused_and_untouched(zst_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "precious.txt"
    out.write_text("keep me")
    with pytest.raises(FlashRefused, match=r"regular file .* not a block device") as info:
        run(flash.flash(zst_image, out, confirm=None))
    assert "--to-file" in (info.value.hint or "")
    assert out.read_text() == "keep me"


@pytest.mark.parametrize(("device", "kind"), [("/dev/null", "character device"), ("/", "directory")])
def test_non_block_devices_are_refused(zst_image: Path, device: str, kind: str) -> None:
    with pytest.raises(FlashRefused, match=f"is a {kind}, not a block device"):
        run(flash.flash(zst_image, Path(device), confirm=None, to_file=True))


def test_missing_device_is_refused(zst_image: Path, tmp_path: Path) -> None:
    with pytest.raises(FlashRefused, match="does not exist"):
        run(flash.flash(zst_image, tmp_path / "sdz", confirm=None))


def test_the_image_itself_is_refused(disk_image: Path, tmp_path: Path) -> None:
    copy = tmp_path / "x.img"
    shutil.copy(disk_image, copy)
    with pytest.raises(FlashRefused, match="the image itself"):
        run(flash.flash(copy, copy, confirm=None, to_file=True))


def test_no_confirmation_writes_nothing(zst_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "card.img"
    questions: list[str] = []

    def decline(question: str) -> bool:
        questions.append(question)
        return False

    with pytest.raises(FlashRefused, match="not confirmed"):
        run(flash.flash(zst_image, out, confirm=decline, to_file=True))
    assert not out.exists()
    assert "Everything on" in questions[0] and "24.0 MiB" in questions[0]


def test_cli_without_yes_on_a_pipe_refuses(zst_image: Path, project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = project_dir / "out.img"
    code = run_cli("flash", "--image", str(zst_image), "--device", str(out), "--to-file")
    assert code == 3
    err = capsys.readouterr().err
    assert "standard input is not a terminal" in err and "--yes" in err
    assert not out.exists()


# Refusal rules on recorded facts ------------------------------------------------------------------------


def _disk(path: str, majmin: str, *, rm: bool = True, hotplug: bool = True, size: int = 32 * 1024 * MiB,
          ro: bool = False, children: tuple[BlockNode, ...] = (), mounts: tuple[str, ...] = ()) -> BlockNode:
    return BlockNode(path=path, kname=path.rsplit("/", 1)[1], majmin=majmin, type="disk", size=size,
                     removable=rm, hotplug=hotplug, readonly=ro, model="Ultra", vendor="SanDisk", transport="usb",
                     mountpoints=mounts, children=children)


def _part(path: str, majmin: str, mounts: tuple[str, ...] = (), fstype: str = "vfat") -> BlockNode:
    return BlockNode(path=path, kname=path.rsplit("/", 1)[1], majmin=majmin, type="part", size=MiB,
                     removable=False, hotplug=False, readonly=False, fstype=fstype, mountpoints=mounts)


def test_rules_on_recorded_facts() -> None:
    root_lv = BlockNode(path="/dev/mapper/vg-root", kname="dm-0", majmin="254:0", type="lvm", size=MiB,
                        removable=False, hotplug=False, readonly=False, mountpoints=("/",))
    nvme = _disk("/dev/nvme0n1", "259:0", rm=False, hotplug=False,
                 children=(BlockNode(path="/dev/nvme0n1p2", kname="nvme0n1p2", majmin="259:2", type="part", size=MiB,
                                     removable=False, hotplug=False, readonly=False, children=(root_lv,)),))
    sdb = _disk("/dev/sdb", "8:16", children=(_part("/dev/sdb1", "8:17", ("/media/me/boot",)),))
    sdc = _disk("/dev/sdc", "8:32", ro=True)
    sdd = _disk("/dev/sdd", "8:48", size=0)
    sde = _disk("/dev/sde", "8:64", rm=False, hotplug=False)
    sdf = _disk("/dev/sdf", "8:80", children=(_part("/dev/sdf1", "8:81", ("[SWAP]",), "swap"),))
    sdg = _disk("/dev/sdg", "8:96", rm=False, hotplug=True)  # a USB SSD: not removable media, but hot-pluggable
    facts = DeviceFacts(forest=(nvme, sdb, sdc, sdd, sde, sdf, sdg),
                        system_majmins={"254:0": "/ is mounted from /dev/mapper/vg-root"})

    def check(path: str, majmin: str, allow: bool = False) -> BlockNode:
        return flash.check_block_device(Path(path), majmin, facts, allow_non_removable=allow)[0]

    # the system disk, found through LVM on a partition; no flag makes it acceptable
    for allow in (False, True):
        with pytest.raises(FlashRefused, match=r"holds the running system \(/ is mounted from /dev/mapper/vg-root\)") as e:
            check("/dev/nvme0n1", "259:0", allow)
        assert "/dev/mapper/vg-root: lvm" in e.value.message
    with pytest.raises(FlashRefused, match="is mounted \\(/dev/sdb1 on /media/me/boot\\)") as e:
        check("/dev/sdb", "8:16")
    assert e.value.hint == "unmount it first: umount /dev/sdb1"
    assert "SanDisk Ultra, disk, 32.0 GiB, removable" in e.value.message
    with pytest.raises(FlashRefused, match="is a part on /dev/sdb, not a whole device") as e:
        check("/dev/sdb1", "8:17")
    assert "--device /dev/sdb" in (e.value.hint or "")
    with pytest.raises(FlashRefused, match="read-only") as e:
        check("/dev/sdc", "8:32")
    assert "lock switch" in (e.value.hint or "")
    with pytest.raises(FlashRefused, match="no medium"):
        check("/dev/sdd", "8:48")
    with pytest.raises(FlashRefused, match="neither removable nor hot-pluggable") as e:
        check("/dev/sde", "8:64")
    assert "--non-removable" in (e.value.hint or "")
    assert check("/dev/sde", "8:64", allow=True).path == "/dev/sde"
    with pytest.raises(FlashRefused, match="active swap"):
        check("/dev/sdf", "8:80")
    assert check("/dev/sdg", "8:96").path == "/dev/sdg"
    with pytest.raises(FlashRefused, match="not listed by lsblk"):
        check("/dev/sdz", "8:240")


def test_parsers_read_real_tool_output(tmp_path: Path) -> None:
    lsblk = """{"blockdevices": [{"name": "mmcblk0", "kname": "mmcblk0", "path": "/dev/mmcblk0", "maj:min": "179:0",
      "type": "disk", "size": 31914983424, "rm": false, "hotplug": false, "ro": false, "model": null, "vendor": null,
      "serial": "0x1234", "tran": null, "fstype": null, "label": null, "mountpoints": [null],
      "children": [{"name": "mmcblk0p1", "kname": "mmcblk0p1", "path": "/dev/mmcblk0p1", "maj:min": "179:1",
      "type": "part", "size": 31457280, "rm": false, "hotplug": false, "ro": false, "fstype": "vfat",
      "label": "FIRMWARE", "mountpoints": ["/media/FIRMWARE"]}]}]}"""
    sysfs = tmp_path / "sys"
    (sysfs / "mmcblk0").mkdir(parents=True)
    (sysfs / "mmcblk0" / "removable").write_text("1\n")
    (node,) = flash.parse_lsblk(lsblk, sysfs)
    assert node.removable  # sysfs says removable although lsblk's JSON said false
    assert node.mounts() == [("/dev/mmcblk0p1", "/media/FIRMWARE")]
    assert node.children[0].label == "FIRMWARE"
    findmnt = """{"filesystems": [{"target": "/", "source": "/dev/vda1", "maj:min": "254:1"},
      {"target": "/proc", "source": "proc", "maj:min": "0:22"},
      {"target": "/nix", "source": "/dev/sda2[/nix]", "maj:min": "8:2"},
      {"target": "/media/x", "source": "/dev/sdb1", "maj:min": "8:17"}]}"""
    assert flash.parse_findmnt(findmnt) == {"254:1": "/ is mounted from /dev/vda1",
                                            "8:2": "/nix is mounted from /dev/sda2[/nix]"}
    swaps = "Filename\tType\tSize\tUsed\tPriority\n/dev/sda3  partition\t1\t0\t-2\n/swapfile file 1 0 -3\n"
    assert flash.parse_swaps(swaps) == frozenset({"/dev/sda3"})


# Real block devices -------------------------------------------------------------------------------------


def test_the_running_systems_disk_is_refused(zst_image: Path) -> None:
    source = _sh("findmnt", "-n", "-o", "SOURCE", "--target", "/").strip().split("[")[0]
    if not source.startswith("/dev/") or not Path(source).is_block_device():
        pytest.skip(f"/ is not on a block device here ({source or 'unknown'})")
    disk = _sh("lsblk", "-n", "-s", "-o", "PATH,TYPE", "-r", source).split()
    whole = [disk[i] for i in range(0, len(disk), 2) if disk[i + 1] == "disk"]
    for device in [*whole, source]:
        with pytest.raises(FlashRefused, match=r"holds the running system|not a whole device") as e:
            run(flash.flash(zst_image, Path(device), confirm=None, allow_non_removable=True))
        assert "found:" in e.value.message  # shows what it saw


def _losetup_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "loop devices need root"
    if not shutil.which("losetup") or not Path("/dev/loop-control").exists():
        return "losetup or /dev/loop-control is not available"
    return None


@contextlib.contextmanager
def loop_device(backing: Path, *, partscan: bool = False) -> Iterator[Path]:
    reason = _losetup_unavailable()
    if reason:
        pytest.skip(reason)
    argv = ["losetup", "--find", "--show", *(["--partscan"] if partscan else []), str(backing)]
    try:
        device = Path(_sh(*argv).strip())
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"losetup failed here: {exc.stderr.decode().strip()}")
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", str(device)], check=False)


def test_zstd_image_to_a_loop_device(zst_image: Path, disk_image: Path, tmp_path: Path) -> None:
    backing = tmp_path / "card.bin"
    with backing.open("wb") as f:
        f.truncate(32 * MiB)
    with loop_device(backing) as device:
        with pytest.raises(FlashRefused, match="neither removable nor hot-pluggable") as e:
            run(flash.flash(zst_image, device, confirm=None))
        assert f"{device}: no model name, loop, 32.0 MiB, not removable" in e.value.message
        questions: list[str] = []
        destination, result = run(  # type: ignore[misc]
            flash.flash(zst_image, device, confirm=lambda q: questions.append(q) or True, allow_non_removable=True)
        )
        assert destination.is_block and destination.size == 32 * MiB
        assert f"to {device} (no model name, loop, 32.0 MiB" in questions[0]
        assert result.verified and result.sha256 == sha256(disk_image)
    assert sha256(backing, 24 * MiB) == sha256(disk_image)


def test_image_larger_than_the_device_is_refused_before_writing(zst_image: Path, tmp_path: Path) -> None:
    backing = tmp_path / "small.bin"
    backing.write_bytes(b"\x55" * (8 * MiB))
    with loop_device(backing) as device, pytest.raises(FlashRefused, match=r"needs 24\.0 MiB but .* holds 8\.0 MiB"):
        run(flash.flash(zst_image, device, confirm=None, allow_non_removable=True))
    assert backing.read_bytes() == b"\x55" * (8 * MiB)


def test_mounted_loop_device_is_refused(zst_image: Path, tmp_path: Path) -> None:
    backing = tmp_path / "card.bin"
    with backing.open("wb") as f:
        f.truncate(32 * MiB)
    _sh("mkfs.ext4", "-q", "-L", "MOUNTED", str(backing))
    before = sha256(backing)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with loop_device(backing) as device:
        mounted = subprocess.run(["mount", "-o", "ro", str(device), str(mnt)], check=False, capture_output=True)
        if mounted.returncode:
            pytest.skip(f"cannot mount here: {mounted.stderr.decode().strip()}")
        try:
            with pytest.raises(FlashRefused, match=f"is mounted \\({device} on {mnt}\\)") as e:
                run(flash.flash(zst_image, device, confirm=None, allow_non_removable=True))
            assert e.value.hint == f"unmount it first: umount {device}"
            assert f"{device}: no model name, loop, 32.0 MiB" in e.value.message
            assert f"mounted at {mnt}" in e.value.message  # (FSTYPE/LABEL only where udev runs)
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
    assert sha256(backing) == before  # untouched


def test_partition_of_a_loop_device_is_refused(disk_image: Path, zst_image: Path, tmp_path: Path) -> None:
    backing = tmp_path / "card.bin"
    shutil.copy(disk_image, backing)
    with loop_device(backing, partscan=True) as device:
        part = Path(f"{device}p2")
        for _ in range(40):
            if part.exists():
                break
            time.sleep(0.05)  # devtmpfs creates the partition nodes; no udev needed
        if not part.exists():
            pytest.skip(f"the kernel created no {part} here (loop partition scanning is off); "
                        "test_rules_on_recorded_facts covers the rule")
        with pytest.raises(FlashRefused, match=f"{part} is a part on {device}, not a whole device"):
            run(flash.flash(zst_image, part, confirm=None, allow_non_removable=True))
    assert sha256(backing) == sha256(disk_image)  # untouched


def _exclusive_open_fails(device: Path) -> bool:
    try:
        os.close(os.open(device, os.O_RDONLY | os.O_EXCL))
    except OSError:
        return True
    return False


def test_the_device_is_held_from_the_checks_to_the_end(zst_image: Path, disk_image: Path, tmp_path: Path) -> None:
    """Between the checks, the confirmation, the write and the read-back nothing can claim or mount the device
    (it used to be closed after writing and read back unclaimed, and free while the user was asked)."""
    backing = tmp_path / "card.bin"
    with backing.open("wb") as f:
        f.truncate(32 * MiB)
    held: dict[str, bool] = {}

    def confirm(question: str) -> bool:
        held["confirming"] = _exclusive_open_fails(device)
        return True

    def progress(phase: str, done: int, total: int | None) -> None:
        held.setdefault(phase, _exclusive_open_fails(device))

    with loop_device(backing) as device:
        _, result = run(  # type: ignore[misc]
            flash.flash(zst_image, device, confirm=confirm, allow_non_removable=True, progress=progress)
        )
        assert result.verified
        assert not _exclusive_open_fails(device)  # released at the end
    assert held == {"confirming": True, "writing": True, "syncing": True, "verifying": True}
    assert sha256(backing, 24 * MiB) == sha256(disk_image)


def test_a_device_swapped_while_the_user_is_asked_is_not_written(zst_image: Path, tmp_path: Path) -> None:
    """The user confirms one card; the name is then given to another medium (here: the loop device detached and
    attached to another file). The other medium must stay untouched."""
    card = tmp_path / "card.bin"
    with card.open("wb") as f:
        f.truncate(32 * MiB)
    other = tmp_path / "other.bin"
    other.write_bytes(b"\x55" * (40 * MiB))

    def swap(question: str) -> bool:
        subprocess.run(["losetup", "--detach", str(device)], check=False, capture_output=True)
        subprocess.run(["losetup", str(device), str(other)], check=False, capture_output=True)
        return True

    with loop_device(card) as device:
        with contextlib.suppress(CrossnixError):
            run(flash.flash(zst_image, device, confirm=swap, allow_non_removable=True))
        subprocess.run(["losetup", "--detach", str(device)], check=False, capture_output=True)
    assert other.read_bytes() == b"\x55" * (40 * MiB)


def test_confirmation_question_shows_a_model_name_that_looks_like_markup(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The model string comes from the device: it must not hide or break the question ("[/x]" raised)."""
    from crossnix_tasks import ui
    from crossnix_tasks.commands import board

    node = BlockNode(path="/dev/sdz", kname="sdz", majmin="8:240", type="disk", size=MiB, removable=True,
                     hotplug=True, readonly=False, vendor="[/x]", model="[black on black]Stick")
    question = flash.confirmation_question(Path("sd.img"), flash.Destination(Path("/dev/sdz"), True, MiB, node), MiB)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr(ui.err, "input", lambda prompt: "yes")
    assert board.ask_yes(question)
    assert "[/x] [black on black]Stick, disk, 1.0 MiB" in capsys.readouterr().err
