"""Can this machine build derivations for another system? Ask Nix by building one, as nixos-anywhere does.

The probe derivation (``nixexpr/probe.nix``) runs a ~130-byte static executable of the target architecture,
written here, that exits with status 42. That separates the three cases test-rig.md §8 observed: Nix refuses the
platform (no ``extra-platforms``), Nix accepts it but the kernel cannot execute it (no binfmt_misc handler), and
a working emulated setup.
"""

from __future__ import annotations

import platform
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from crossnix_tasks import nix, nixhints
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.nixlog import error_summary, parse_lines

PROBE_NIX = Path(__file__).parent / "nixexpr" / "probe.nix"
EXIT_STATUS = 42
_BASE = 0x400000
_HEADER_SIZE = 64 + 56

# machine code for exit(42): (ELF e_machine, code)
_EXIT_CODE: dict[str, tuple[int, bytes]] = {
    # mov edi, 42; mov eax, 60 (exit); syscall
    "x86_64-linux": (62, bytes.fromhex("bf2a000000") + bytes.fromhex("b83c000000") + bytes.fromhex("0f05")),
    # mov x0, #42; mov x8, #93 (exit); svc #0
    "aarch64-linux": (183, struct.pack("<3I", 0xD2800540, 0xD2800BA8, 0xD4000001)),
    # li a0, 42; li a7, 93 (exit); ecall
    "riscv64-linux": (243, struct.pack("<3I", 0x02A00513, 0x05D00893, 0x00000073)),
}

_MACHINES = {"x86_64": "x86_64-linux", "amd64": "x86_64-linux", "aarch64": "aarch64-linux", "arm64": "aarch64-linux",
             "riscv64": "riscv64-linux"}


def local_system() -> str:
    """This machine's Nix system double (``x86_64-linux``, ...)."""
    machine = platform.machine().lower()
    return _MACHINES.get(machine, f"{machine}-linux")


def exit42_elf(system: str) -> bytes:
    """A minimal static ELF64 executable for ``system`` that exits with status 42."""
    try:
        machine, code = _EXIT_CODE[system]
    except KeyError:
        raise CrossnixError(f"crossnix cannot probe {system!r}: known systems are {', '.join(_EXIT_CODE)}") from None
    size = _HEADER_SIZE + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little endian, version 1, System V
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, machine, 1, _BASE + _HEADER_SIZE, 64, 0, 0, 64, 56, 1, 64, 0, 0
    )
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, size, size, 0x1000)  # PT_LOAD, R+X
    return header + program + code


@dataclass(frozen=True)
class ProbeResult:
    system: str
    ok: bool
    reason: str = ""  # "platform" (Nix refuses it), "exec" (no binfmt), "error" (anything else)
    detail: str = ""

    def fix(self) -> str:
        return nixhints.binfmt_fix(self.system)

    def explain(self) -> str:
        if self.ok:
            return f"this machine can build {self.system} derivations"
        if self.reason == "platform":
            why = f"Nix on this machine does not accept {self.system} derivations (not in `extra-platforms`)"
        elif self.reason == "exec":
            why = (
                f"Nix accepts {self.system} derivations but the kernel cannot run {self.system} programs "
                "(no binfmt_misc handler)"
            )
        else:
            why = f"a trivial {self.system} build failed: {self.detail}"
        return f"this machine cannot build {self.system} derivations: {why}"


_cache: dict[str, ProbeResult] = {}


async def probe_system(system: str, *, use_cache: bool = True) -> ProbeResult:
    """Build the probe derivation for ``system`` and classify the outcome (cached per process)."""
    if use_cache and system in _cache:
        return _cache[system]
    with tempfile.TemporaryDirectory(prefix="crossnix-probe-") as tmp:
        probe_dir = Path(tmp) / "exe"
        probe_dir.mkdir()
        exe = probe_dir / "probe"
        exe.write_bytes(exit42_elf(system))
        exe.chmod(0o755)
        done = await nix.probe_build(PROBE_NIX, system=system, probe_dir=probe_dir, nonce=f"{time.time_ns()}")
    result = classify(system, done.returncode, done.stderr)
    _cache[system] = result
    return result


def classify(system: str, returncode: int, stderr: str) -> ProbeResult:
    if returncode == 0:
        return ProbeResult(system, True)
    from crossnix_tasks.nixlog import BuildTracker

    tracker = BuildTracker()
    for event in parse_lines(stderr.splitlines()):
        tracker.feed(event)
    text = "\n".join([error_summary(tracker), *(line for b in tracker.builds.values() for line in b.log)])
    names = nixhints.known_error_names(text)
    if "platform-mismatch" in names:
        return ProbeResult(system, False, "platform", error_summary(tracker))
    if "exec-format" in names:
        return ProbeResult(system, False, "exec", text.strip())
    return ProbeResult(system, False, "error", (text or stderr).strip()[-2000:])


async def require_buildable(system: str) -> None:
    """Raise a :class:`CrossnixError` with the exact fix unless this machine can build ``system``."""
    if system == local_system():
        return
    result = await probe_system(system)
    if not result.ok:
        raise CrossnixError(
            result.explain() + " (checked by building a trivial derivation for it)",
            hint=f"to build `build = \"emulated\"` targets here, {result.fix()}; "
            "or use `build = \"cross\"` (no emulation needed) or `build = \"remote\"`",
        )
