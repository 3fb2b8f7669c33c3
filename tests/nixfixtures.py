"""pytest plugin: real Nix 2.8 for crossnix's Nix backend tests (loaded from tests/conftest.py).

Fixtures
--------
real_nix         function  NIX_CONFIG for Nix as root without a daemon or binary caches (test-rig.md §1)
fake_run         function  replaces crossnix_tasks.process.run; records argv, answers from a script
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from crossnix_tasks import process
from crossnix_tasks.process import Completed

NIX_TEST_CONFIG = "\n".join(
    [
        "experimental-features = nix-command flakes",
        "build-users-group =",
        "substituters =",
    ]
)


def nix_unavailable_reason() -> str | None:
    if shutil.which("nix") is None:
        return "nix is not installed (Debian: apt-get install nix-bin)"
    return None


@pytest.fixture
def real_nix(monkeypatch: pytest.MonkeyPatch) -> str:
    reason = nix_unavailable_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("NIX_CONFIG", NIX_TEST_CONFIG)
    return NIX_TEST_CONFIG


@dataclass
class FakeRun:
    """Stands in for :func:`crossnix_tasks.process.run`: records each call, answers with ``responses``.

    ``responses`` maps an argv prefix (tuple) to stdout text, or to a callable taking the argv."""

    calls: list[tuple[str, ...]] = field(default_factory=list)
    envs: list[Mapping[str, str] | None] = field(default_factory=list)
    inputs: list[bytes | None] = field(default_factory=list)
    responses: list[tuple[tuple[str, ...], Any]] = field(default_factory=list)

    def answer(self, prefix: Sequence[str], stdout: str | Callable[[tuple[str, ...]], str]) -> None:
        self.responses.append((tuple(prefix), stdout))

    async def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Any = None,
        input: bytes | None = None,
        on_stderr_line: Callable[[str], None] | None = None,
        check: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 - mirrors process.run
    ) -> Completed:
        args = tuple(str(a) for a in argv)
        self.calls.append(args)
        self.envs.append(env)
        self.inputs.append(input)
        stdout = ""
        for prefix, response in self.responses:
            if args[: len(prefix)] == prefix:
                stdout = response(args) if callable(response) else response
                break
        return Completed(args, 0, stdout, "", stdout.encode())


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRun]:
    from crossnix_tasks import nix

    fake = FakeRun()
    monkeypatch.setattr(process, "run", fake)
    monkeypatch.setattr(nix, "_drv_outputs_suffix", "")  # the Nix 2.8 of test-rig.md: no `nix --version` call
    yield fake


# Emulation inside a user namespace (test-rig.md §8) ------------------------------------------------------

QEMU_BINFMT = {
    "aarch64-linux": "/usr/lib/binfmt.d/qemu-aarch64.conf",
    "riscv64-linux": "/usr/lib/binfmt.d/qemu-riscv64.conf",
}

# Mount a private binfmt_misc, register each conf file given before "--", then exec the rest. Values only
# travel as positional parameters.
_REGISTER = (
    "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || exit 111; "
    'while [ "$1" != "--" ]; do cat "$1" > /proc/sys/fs/binfmt_misc/register || exit 112; shift; done; '
    'shift; exec "$@"'
)


def userns_unavailable_reason(system: str = "aarch64-linux") -> str | None:
    conf = QEMU_BINFMT.get(system)
    if conf is None or not Path(conf).exists():
        return f"qemu-user-static's binfmt file for {system} is missing (apt-get install qemu-user-static)"
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private", "sh", "-c", _REGISTER,
         "sh", conf, "--", "true"],
        capture_output=True, text=True, check=False,
    )
    if probe.returncode != 0:
        return f"cannot register binfmt_misc inside a user namespace (needs Linux 6.7+): {probe.stderr.strip()}"
    return None


def in_binfmt_userns(argv: Sequence[str], systems: Sequence[str] = ("aarch64-linux",)) -> list[str]:
    """``argv`` run in a new user + mount namespace with qemu-user registered for ``systems`` (nothing global)."""
    confs = [QEMU_BINFMT[s] for s in systems]
    return ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private",
            "sh", "-c", _REGISTER, "sh", *confs, "--", *argv]


def globally_registered(system: str) -> bool:
    name = {"aarch64-linux": "qemu-aarch64", "riscv64-linux": "qemu-riscv64"}.get(system, "")
    return bool(name) and Path("/proc/sys/fs/binfmt_misc", name).exists()


# Projects on the offline nixpkgs stand-in ---------------------------------------------------------------

STANDIN = Path(__file__).resolve().parent / "standin"


def write_standin_project(
    directory: Path, boards_toml: str, *, inputs: Mapping[str, str] | None = None, extra_files: Mapping[str, str] | None = None
) -> Path:
    """A crossnix project using the offline nixpkgs stand-in (NOT nixpkgs): flake.nix with ``inputs`` (default:
    the stand-in's nixpkgs and nixos-hardware), boards.toml, hosts/common.nix. Lock it with :func:`lock_project`."""
    from crossnix_tasks import scaffold

    directory.mkdir(parents=True, exist_ok=True)
    chosen = dict(inputs if inputs is not None else scaffold.standin_overrides())
    specs = [scaffold.InputSpec(name, url) for name, url in chosen.items()]
    (directory / "flake.nix").write_text(scaffold.render_flake(specs))
    (directory / "boards.toml").write_text(boards_toml)
    (directory / "hosts").mkdir(exist_ok=True)
    (directory / "hosts" / "common.nix").write_text(scaffold.COMMON_NIX)
    for name, text in (extra_files or {}).items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


async def lock_project(directory: Path) -> None:
    from crossnix_tasks import nix

    await nix.flake_lock(f"path:{directory}")


# A static busybox of another architecture, for emulated stand-in builds (test-rig.md §8) ------------------

TEST_CACHE = Path(os.environ.get("CROSSNIX_TEST_CACHE", "/var/tmp/crossnix-test-cache"))
DEBIAN_ARCH = {"aarch64-linux": "arm64", "riscv64-linux": "riscv64"}


def fetch_busybox(system: str = "aarch64-linux") -> Path:
    """``<cache>/busybox`` holding ``<system>/busybox`` from Debian's busybox-static, fetched once with
    ``apt-get download`` into private apt directories (no ``dpkg --add-architecture``, nothing installed).
    Returns the directory for ``CROSSNIX_STANDIN_BUSYBOX_DIR``; raises RuntimeError when it cannot."""
    root = TEST_CACHE / "busybox"
    binary = root / system / "busybox"
    if binary.is_file():
        return root
    arch = DEBIAN_ARCH[system]
    with tempfile.TemporaryDirectory(prefix="crossnix-apt-") as tmp:
        work = Path(tmp)
        for sub in ("lists/partial", "cache/archives/partial"):
            (work / sub).mkdir(parents=True)
        options = [
            "-o", f"Dir::State::Lists={work / 'lists'}", "-o", f"Dir::Cache={work / 'cache'}",
            "-o", f"APT::Architectures::={arch}", "-o", f"APT::Architecture={arch}", "-o", "Debug::NoLocking=1",
        ]
        for step in (["update", "-qq"], ["download", "busybox-static"]):
            done = subprocess.run(["apt-get", *options, *step], cwd=work, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"apt-get {step[0]} failed: {done.stderr.strip()[-500:]}")
        debs = list(work.glob("busybox-static_*.deb"))
        if not debs:
            raise RuntimeError("apt-get download busybox-static produced no .deb")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(work / "x")], check=True, capture_output=True)
        binary.parent.mkdir(parents=True, exist_ok=True)
        scratch = binary.with_suffix(".tmp")
        shutil.copyfile(work / "x" / "bin" / "busybox", scratch)
        scratch.chmod(0o755)
        scratch.rename(binary)
    return root
