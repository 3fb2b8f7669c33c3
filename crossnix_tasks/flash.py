"""Writing an image to an SD card, USB stick or disk, and refusing every destination that could hurt.

What ``inv flash`` does, in order:

1. :func:`inspect_destination` decides whether ``--device`` may be written. It reads the whole block-device
   forest (``lsblk --json``), the mount table (``findmnt --json``), ``/proc/swaps`` and sysfs ``removable``, and
   refuses, showing what it found: a partition instead of a whole device, anything that is not a disk or loop
   device, a device holding the running system (``/``, ``/boot``, ``/nix``, swap, ... on it or on anything
   stacked on it), a mounted device, a read-only one (an SD card's lock switch), an empty reader, a disk that is
   neither removable nor hot-pluggable (unless ``--non-removable``), and a regular file (unless ``--to-file``).
   Before collecting those facts a block device is opened read-write with ``O_EXCL`` and held until the end, so
   nothing can mount it meanwhile and what was checked and confirmed is what gets written.
2. :func:`confirmation_question` is the question (device, model, size) asked unless ``--yes``.
3. :func:`write_image` streams the image (zstd, xz, gzip or raw; detected from the magic bytes, not the name)
   to the destination in 4 MiB blocks with a progress bar, ``fsync``s, drops the cached pages and reads back
   exactly the bytes written through the same descriptor, comparing SHA-256 digests.

The refusals are pure functions of the collected facts (:class:`DeviceFacts`), so tests can exercise each one
with the facts of a real machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import stat
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from crossnix_tasks import process
from crossnix_tasks.errors import CrossnixError

CHUNK = 4 * 1024 * 1024
LSBLK_COLUMNS = "NAME,KNAME,PATH,MAJ:MIN,TYPE,SIZE,RM,HOTPLUG,RO,MODEL,VENDOR,SERIAL,TRAN,FSTYPE,LABEL,MOUNTPOINTS"
# Mount points whose backing device is "the running system": never written, whatever the flags say.
SYSTEM_MOUNTS = frozenset(
    {"/", "/boot", "/boot/efi", "/boot/firmware", "/efi", "/nix", "/nix/store", "/usr", "/var", "/home", "/etc"}
)
WHOLE_DEVICE_TYPES = frozenset({"disk", "loop"})
_BLKFLSBUF = 0x1261  # <linux/fs.h>: flush the buffer cache of a block device
_BLKRRPART = 0x125F  # <linux/fs.h>: re-read the partition table

ProgressCallback = Callable[[str, int, int | None], None]  # (phase, bytes done, total or None)


class FlashRefused(CrossnixError):
    """The destination is not something crossnix will overwrite; the message shows what was found."""

    exit_code = 3


# Facts about the machine -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockNode:
    """One node of ``lsblk``'s forest: a disk, a partition, a device-mapper volume stacked on it, ..."""

    path: str
    kname: str
    majmin: str
    type: str
    size: int
    removable: bool
    hotplug: bool
    readonly: bool
    model: str = ""
    vendor: str = ""
    serial: str = ""
    transport: str = ""
    fstype: str = ""
    label: str = ""
    mountpoints: tuple[str, ...] = ()
    children: tuple[BlockNode, ...] = ()

    def walk(self) -> Iterator[BlockNode]:
        yield self
        for child in self.children:
            yield from child.walk()

    def mounts(self) -> list[tuple[str, str]]:
        """(device, mount point) of this node and everything on it."""
        return [(node.path, point) for node in self.walk() for point in node.mountpoints]


@dataclass(frozen=True)
class DeviceFacts:
    """Everything the refusal rules look at, collected once."""

    forest: tuple[BlockNode, ...]
    system_majmins: dict[str, str] = field(default_factory=dict)  # maj:min -> "/ (mounted from /dev/vda1)"
    swap_paths: frozenset[str] = frozenset()

    def find(self, majmin: str) -> tuple[BlockNode, BlockNode | None] | None:
        """The node with ``majmin`` and its top-level (whole) device."""
        for root in self.forest:
            for node in root.walk():
                if node.majmin == majmin:
                    return node, root
        return None


@dataclass(frozen=True)
class Destination:
    """A checked destination: a whole block device, or a regular file when ``--to-file`` was given."""

    path: Path
    is_block: bool
    size: int | None  # bytes; None for a regular file
    node: BlockNode | None = None

    def describe(self) -> str:
        if self.node is None:
            return f"{self.path} (regular file)"
        return f"{self.path} ({describe_node(self.node)})"


def _int(value: Any) -> int:
    return int(value) if value not in (None, "") else 0


def _flag(value: Any) -> bool:
    return value in (True, 1, "1", "true")


def _text(value: Any) -> str:
    return str(value).strip() if value is not None else ""


def parse_lsblk(payload: str, sysfs: Path = Path("/sys/class/block")) -> tuple[BlockNode, ...]:
    """``lsblk --json --bytes -o LSBLK_COLUMNS`` output as nodes. ``removable`` is read from sysfs (the same
    flag lsblk's RM shows) when sysfs has it."""

    def node(raw: dict[str, Any]) -> BlockNode:
        kname = _text(raw.get("kname") or raw.get("name"))
        removable = _flag(raw.get("rm"))
        sysfs_flag = sysfs / kname / "removable"
        with contextlib.suppress(OSError, ValueError):
            removable = sysfs_flag.read_text().strip() == "1"
        return BlockNode(
            path=_text(raw.get("path")) or f"/dev/{kname}",
            kname=kname,
            majmin=_text(raw.get("maj:min")),
            type=_text(raw.get("type")),
            size=_int(raw.get("size")),
            removable=removable,
            hotplug=_flag(raw.get("hotplug")),
            readonly=_flag(raw.get("ro")),
            model=_text(raw.get("model")),
            vendor=_text(raw.get("vendor")),
            serial=_text(raw.get("serial")),
            transport=_text(raw.get("tran")),
            fstype=_text(raw.get("fstype")),
            label=_text(raw.get("label")),
            mountpoints=tuple(p for p in raw.get("mountpoints") or () if p),
            children=tuple(node(child) for child in raw.get("children") or ()),
        )

    return tuple(node(raw) for raw in json.loads(payload).get("blockdevices", []))


def parse_findmnt(payload: str) -> dict[str, str]:
    """``findmnt --json --list -o TARGET,SOURCE,MAJ:MIN`` → maj:min of each system mount's device → reason."""
    found: dict[str, str] = {}
    for entry in json.loads(payload).get("filesystems", []):
        target = entry.get("target")
        majmin = _text(entry.get("maj:min"))
        if target in SYSTEM_MOUNTS and majmin and not majmin.startswith("0:"):
            found.setdefault(majmin, f"{target} is mounted from {entry.get('source')}")
    return found


def parse_swaps(text: str) -> frozenset[str]:
    """Device paths of active swap areas from ``/proc/swaps``."""
    return frozenset(line.split()[0] for line in text.splitlines()[1:] if line.startswith("/dev/"))


def read_swaps() -> str:
    try:
        return Path("/proc/swaps").read_text()
    except OSError:
        return ""


async def collect_facts() -> DeviceFacts:
    lsblk = await process.run(["lsblk", "--json", "--bytes", "--output", LSBLK_COLUMNS])
    findmnt = await process.run(["findmnt", "--json", "--list", "--output", "TARGET,SOURCE,MAJ:MIN"])
    return DeviceFacts(
        forest=parse_lsblk(lsblk.stdout),
        system_majmins=parse_findmnt(findmnt.stdout),
        swap_paths=parse_swaps(read_swaps()),
    )


# The rules ------------------------------------------------------------------------------------------------


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def describe_node(node: BlockNode) -> str:
    model = " ".join(part for part in (node.vendor, node.model) if part) or "no model name"
    flags = [
        node.type,
        human_size(node.size),
        "removable" if node.removable else "not removable",
        "hot-pluggable" if node.hotplug else "not hot-pluggable",
    ]
    if node.transport:
        flags.append(f"via {node.transport}")
    if node.readonly:
        flags.append("read-only")
    return f"{model}, " + ", ".join(flags)


def describe_tree(root: BlockNode) -> str:
    """What was found, one line per node, for refusal messages."""
    lines = []

    def add(node: BlockNode, depth: int) -> None:
        extra = [node.fstype, f"label {node.label}" if node.label else ""]
        where = f"mounted at {', '.join(node.mountpoints)}" if node.mountpoints else "not mounted"
        detail = ", ".join(x for x in (*extra, where) if x)
        head = describe_node(node) if depth == 0 else f"{node.type}, {human_size(node.size)}"
        lines.append(f"  {'  ' * depth}{node.path}: {head}; {detail}")
        for child in node.children:
            add(child, depth + 1)

    add(root, 0)
    return "found:\n" + "\n".join(lines)


def check_block_device(
    path: Path, majmin: str, facts: DeviceFacts, *, allow_non_removable: bool
) -> tuple[BlockNode, int]:
    """The lsblk node for ``path`` if crossnix may overwrite it, else :class:`FlashRefused`."""
    located = facts.find(majmin)
    if located is None:
        raise FlashRefused(f"{path} (block device {majmin}) is not listed by lsblk; refusing to write to it")
    node, root = located
    assert root is not None
    if node.type == "part" or node is not root:
        raise FlashRefused(
            f"{path} is a {node.type} on {root.path}, not a whole device; an image carries its own partition "
            f"table and must be written to the whole device\n{describe_tree(root)}",
            hint=f"check that {root.path} is the card, then use --device {root.path}",
        )
    if node.type not in WHOLE_DEVICE_TYPES:
        raise FlashRefused(f"{path} is a {node.type!r} device, not a disk\n{describe_tree(root)}")
    system = [
        facts.system_majmins[n.majmin] for n in node.walk() if n.majmin in facts.system_majmins
    ] + [f"{n.path} is active swap" for n in node.walk() if n.path in facts.swap_paths or "[SWAP]" in n.mountpoints]
    if system:
        raise FlashRefused(
            f"{path} holds the running system ({'; '.join(system)}); crossnix never writes to it\n"
            f"{describe_tree(node)}",
            hint="pick the SD card or USB stick: `lsblk -o PATH,SIZE,RM,MODEL` before and after inserting it",
        )
    mounts = node.mounts()
    if mounts:
        listing = ", ".join(f"{device} on {point}" for device, point in mounts)
        raise FlashRefused(
            f"{path} is mounted ({listing})\n{describe_tree(node)}",
            hint="unmount it first: " + "; ".join(f"umount {device}" for device in dict.fromkeys(d for d, _ in mounts)),
        )
    if node.readonly:
        raise FlashRefused(
            f"{path} is read-only\n{describe_tree(node)}",
            hint="an SD card's lock switch makes it read-only: slide it to unlocked and re-insert the card",
        )
    if node.size == 0:
        raise FlashRefused(f"{path} has no medium (size 0)\n{describe_tree(node)}", hint="insert the card")
    if not (node.removable or node.hotplug) and not allow_non_removable:
        raise FlashRefused(
            f"{path} is neither removable nor hot-pluggable (an internal disk?)\n{describe_tree(node)}",
            hint="if this really is the disk to overwrite (a loop device, an internal NVMe), pass --non-removable",
        )
    return node, node.size


def classify_path(device: Path, *, to_file: bool, image: Path | None) -> Destination | str:
    """A regular-file destination, or the ``maj:min`` of a block device still to be checked; refusals raise."""
    try:
        info = device.stat()
    except FileNotFoundError:
        if to_file:
            return Destination(path=device, is_block=False, size=None)
        raise FlashRefused(
            f"{device} does not exist", hint="list devices with `lsblk -o PATH,SIZE,RM,MODEL`"
        ) from None
    if stat.S_ISREG(info.st_mode):
        if not to_file:
            raise FlashRefused(
                f"{device} is a regular file ({human_size(info.st_size)}), not a block device",
                hint="to write the image into a file (tests, preparing images), pass --to-file",
            )
        if device.resolve().is_relative_to("/nix/store"):
            raise FlashRefused(f"{device} is in the Nix store, which is read-only")
        if image is not None and image.exists() and os.path.samefile(image, device):
            raise FlashRefused(f"{device} is the image itself")
        return Destination(path=device, is_block=False, size=None)
    if not stat.S_ISBLK(info.st_mode):
        kind = (
            "directory"
            if stat.S_ISDIR(info.st_mode)
            else "character device"
            if stat.S_ISCHR(info.st_mode)
            else "special file"
        )
        raise FlashRefused(f"{device} is a {kind}, not a block device", hint="pass the whole device, e.g. /dev/sdb")
    return f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"


def _majmin(info: os.stat_result) -> str:
    return f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"


def _claim(path: Path, majmin: str) -> tuple[int | None, OSError | None]:
    """Open the block device read-write with ``O_EXCL``: the kernel then refuses every mount (and every other
    exclusive user) of it and its partitions until the descriptor is closed, and a device removed meanwhile
    leaves the descriptor dead instead of pointing at whatever takes its name. Everything ``inv flash`` does
    to the device (write, read-back, host key) goes through this one descriptor. The open's failure is
    returned, not raised: the rules explain a mounted or read-only device better than ``EBUSY``/``EROFS``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        return None, exc
    info = os.fstat(fd)
    if not stat.S_ISBLK(info.st_mode) or _majmin(info) != majmin:
        os.close(fd)
        raise FlashRefused(f"{path} changed while it was being checked (was {majmin}, now {_majmin(info)}); "
                           "nothing was written")
    return fd, None


@dataclass
class _Held:
    """A checked destination and, for a block device, the exclusive descriptor it is held by."""

    destination: Destination
    fd: int | None = None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


async def _inspect_and_hold(
    device: Path, *, to_file: bool, allow_non_removable: bool, image: Path | None, facts: DeviceFacts | None
) -> _Held:
    classified = classify_path(device, to_file=to_file, image=image)
    if isinstance(classified, Destination):
        return _Held(classified)
    # claimed first, then checked: what the rules (and the confirmation question) describe is what gets written
    fd, failure = _claim(device, classified)
    try:
        facts = facts if facts is not None else await collect_facts()
        node, size = check_block_device(device, classified, facts, allow_non_removable=allow_non_removable)
        if failure is not None:
            raise FlashRefused(
                f"cannot open {device} exclusively: {failure.strerror} (something holds it: a mount, swap, LVM, "
                f"RAID, dm-crypt or another program)\n{describe_tree(node)}"
            )
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    return _Held(Destination(path=Path(node.path), is_block=True, size=size, node=node), fd)


async def inspect_destination(
    device: Path,
    *,
    to_file: bool = False,
    allow_non_removable: bool = False,
    image: Path | None = None,
    facts: DeviceFacts | None = None,
) -> Destination:
    """Decide whether ``device`` may be overwritten; every refusal is a :class:`FlashRefused`."""
    held = await _inspect_and_hold(
        device, to_file=to_file, allow_non_removable=allow_non_removable, image=image, facts=facts
    )
    held.close()
    return held.destination


def _check_fits(info: ImageInfo, destination: Destination) -> None:
    if info.size is not None and destination.size is not None and info.size > destination.size:
        raise FlashRefused(
            f"the image needs {human_size(info.size)} but {destination.describe()} holds "
            f"{human_size(destination.size)}"
        )


def confirmation_question(image: Path, destination: Destination, image_size: int | None) -> str:
    size = f" ({human_size(image_size)})" if image_size is not None else ""
    return (
        f"Write {image.name}{size} to {destination.describe()}?\n"
        f"Everything on {destination.path} will be lost."
    )


# Images ---------------------------------------------------------------------------------------------------

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b"
QCOW_MAGIC = b"QFI\xfb"


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    compression: str  # "zstd" | "xz" | "gzip" | "raw"
    stored_size: int  # bytes on disk
    size: int | None  # bytes once decompressed, when known


def is_qcow2(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == QCOW_MAGIC
    except OSError as exc:
        raise CrossnixError(f"cannot read image {path}: {exc.strerror or exc}") from None


def image_info(path: Path) -> ImageInfo:
    try:
        with path.open("rb") as f:
            head = f.read(32)
        stored = path.stat().st_size
    except OSError as exc:
        raise CrossnixError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if head.startswith(QCOW_MAGIC):
        raise CrossnixError(
            f"{path} is a qcow2 virtual-machine disk, not a raw image",
            hint="build a raw variant (`inv boards` lists them), or convert: qemu-img convert -O raw IN OUT",
        )
    if head.startswith(ZSTD_MAGIC):
        content = zstandard.frame_content_size(head)
        return ImageInfo(path, "zstd", stored, content if content >= 0 else None)
    if head.startswith(XZ_MAGIC):
        return ImageInfo(path, "xz", stored, None)
    if head.startswith(GZIP_MAGIC):
        return ImageInfo(path, "gzip", stored, None)
    if stored == 0:
        raise CrossnixError(f"{path} is empty")
    return ImageInfo(path, "raw", stored, stored)


class _Counting(io.RawIOBase):
    """A read-only file wrapper counting the bytes read (the compressed side, for the progress bar)."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        self.count += n
        return n


def image_blocks(info: ImageInfo) -> Iterator[tuple[bytes, int]]:
    """The decompressed image in blocks, each with the count of compressed bytes consumed so far."""
    with info.path.open("rb") as raw:
        counting = _Counting(raw)
        source = cast(IO[bytes], counting)
        stream: IO[bytes]
        if info.compression == "zstd":
            stream = cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True))
        elif info.compression == "xz":
            stream = cast(IO[bytes], lzma.LZMAFile(source))  # noqa: SIM115 (closed by `with stream` below)
        elif info.compression == "gzip":
            stream = cast(IO[bytes], gzip.GzipFile(fileobj=source, mode="rb"))
        else:
            stream = source
        with stream:
            while True:
                try:
                    block = stream.read(CHUNK)
                except (zstandard.ZstdError, lzma.LZMAError, OSError, EOFError) as exc:
                    raise CrossnixError(f"{info.path} is damaged: cannot decompress ({exc})") from None
                if not block:
                    return
                yield block, counting.count


_HOLE = 64 * 1024
_ZEROS = bytes(_HOLE)


def expand_image(info: ImageInfo, dest: Path, *, progress: ProgressCallback | None = None) -> int:
    """Decompress (or copy) the image into ``dest`` as a sparse raw file (zero blocks become holes).

    Written beside ``dest`` and renamed, so an interrupted run never leaves a half image under the real name.
    Returns the size in bytes.
    """
    report = progress or (lambda phase, done, total: None)
    tmp = dest.with_name(f".{dest.name}.partial")
    size = 0
    try:
        # 0600: crossnix may write a private host key into this copy
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            for block, consumed in image_blocks(info):
                for offset in range(0, len(block), _HOLE):
                    piece = block[offset : offset + _HOLE]
                    if piece == _ZEROS[: len(piece)]:
                        out.seek(len(piece), os.SEEK_CUR)
                    else:
                        out.write(piece)
                size += len(block)
                report("unpacking", consumed, info.stored_size)
            out.truncate(size)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return size


# Writing and verifying ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteResult:
    bytes_written: int
    sha256: str
    verified: bool


def _open_file(destination: Destination) -> int:
    try:
        # 0600: a first-boot image may get a private host key written into it (crossnix_tasks/hostkeys.py)
        return os.open(destination.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise FlashRefused(f"cannot open {destination.path} for writing: {exc.strerror}") from None


def _drop_cache(fd: int, is_block: bool) -> None:
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    if is_block:
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, _BLKFLSBUF)


def write_image(
    info: ImageInfo,
    destination: Destination,
    *,
    progress: ProgressCallback | None = None,
    verify: bool = True,
    reread: bool = True,
    fd: int | None = None,
) -> WriteResult:
    """Stream ``info`` to ``destination``, fsync, and (``verify``) read it back comparing SHA-256; ``reread``
    asks the kernel to read the new partition table of a block device.

    ``fd`` is the destination already open read-write (the exclusive claim :func:`flash` holds; left open);
    without it a block device is opened with ``O_EXCL`` and a regular file created or truncated."""
    report = progress or (lambda phase, done, total: None)
    _check_fits(info, destination)
    own = fd is None
    if fd is None:
        if destination.is_block:
            fd, failure = _claim(destination.path, destination.node.majmin if destination.node else "")
            if fd is None:
                raise FlashRefused(f"cannot open {destination.path} for writing: {failure and failure.strerror}")
        else:
            fd = _open_file(destination)
    digest = hashlib.sha256()
    written = 0
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        for block, consumed in image_blocks(info):
            view = memoryview(block)
            while view:
                try:
                    n = os.write(fd, view)
                except OSError as exc:
                    raise CrossnixError(
                        f"writing {destination.path} failed after {human_size(written)}: {exc.strerror}"
                    ) from None
                view = view[n:]
                written += n
            digest.update(block)
            report("writing", consumed, info.stored_size)
        report("syncing", info.stored_size, info.stored_size)
        os.fsync(fd)
        expected = digest.hexdigest()
        if not verify:
            return WriteResult(written, expected, verified=False)
        actual = read_back_sha256(fd, written, destination.is_block, report, name=destination.path)
    finally:
        if own:
            os.close(fd)
    if actual != expected:
        raise CrossnixError(
            f"verification failed: {destination.path} reads back sha256 {actual}, the image is {expected}",
            hint="the card may be failing or counterfeit (smaller than it claims); try another one",
        )
    if destination.is_block and reread:
        reread_partitions(destination.path)
    return WriteResult(written, expected, verified=True)


def read_back_sha256(fd: int, length: int, is_block: bool, report: ProgressCallback, *, name: Path) -> str:
    """SHA-256 of the first ``length`` bytes behind ``fd``, read from the medium rather than the page cache
    (written pages are synced, then dropped: ``POSIX_FADV_DONTNEED`` and, for a block device, ``BLKFLSBUF``)."""
    digest = hashlib.sha256()
    _drop_cache(fd, is_block)
    done = 0
    while done < length:
        block = os.pread(fd, min(CHUNK, length - done), done)
        if not block:
            break
        digest.update(block)
        done += len(block)
        report("verifying", done, length)
    if done < length:
        raise CrossnixError(f"verification failed: {name} ends after {done} bytes, {length} were written")
    return digest.hexdigest()


def reread_partitions(path: Path) -> None:
    """Ask the kernel to read the new partition table (best effort; udev then creates the partition nodes)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, _BLKRRPART)
    finally:
        os.close(fd)


# The whole job --------------------------------------------------------------------------------------------

Confirm = Callable[[str], bool]
AfterWrite = Callable[[Destination], Awaitable[None]]


async def flash(
    image: Path,
    device: Path,
    *,
    confirm: Confirm | None,
    to_file: bool = False,
    allow_non_removable: bool = False,
    progress: ProgressCallback | None = None,
    facts: DeviceFacts | None = None,
    after_write: AfterWrite | None = None,
) -> tuple[Destination, WriteResult]:
    """Check ``device``, ask ``confirm`` (None: the user passed ``--yes``), write ``image`` and verify it.

    A block device is held open with ``O_EXCL`` from before the checks until after ``after_write``: nothing
    can mount it (nor an auto-mounter its new partitions) in between, and what was checked and confirmed is
    what is written. ``after_write`` runs once the image is verified, while the device is still held and
    before the kernel re-reads its partition table (e.g. writing the pinned host key into the root file
    system; tools opening it without ``O_EXCL``, such as debugfs, still can)."""
    info = image_info(image)
    held = await _inspect_and_hold(
        device, to_file=to_file, allow_non_removable=allow_non_removable, image=image, facts=facts
    )
    destination = held.destination
    written = False
    try:
        _check_fits(info, destination)
        if confirm is not None and not confirm(confirmation_question(image, destination, info.size)):
            raise FlashRefused(f"not confirmed; {destination.path} was not touched")
        if held.fd is None:
            held.fd = _open_file(destination)
        written = True
        result = await asyncio.to_thread(
            write_image, info, destination, progress=progress, reread=False, fd=held.fd
        )
        if after_write is not None:
            await after_write(destination)
    finally:
        held.close()
        if destination.is_block and written:
            reread_partitions(destination.path)
    return destination, result
