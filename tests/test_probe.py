"""crossnix_tasks.probe: can this machine build for another system? Real Nix, real qemu-user in a user namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crossnix_tasks import probe
from crossnix_tasks.errors import CrossnixError
from tests.nixfixtures import NIX_TEST_CONFIG, FakeRun, globally_registered, in_binfmt_userns, userns_unavailable_reason

REPO = Path(__file__).resolve().parent.parent


def test_exit42_elf_runs_natively(tmp_path: Path) -> None:
    exe = tmp_path / "probe"
    exe.write_bytes(probe.exit42_elf(probe.local_system()))
    exe.chmod(0o755)
    assert subprocess.run([str(exe)], check=False).returncode == 42
    assert len(exe.read_bytes()) < 200


@pytest.mark.parametrize("system,qemu", [("aarch64-linux", "qemu-aarch64-static"), ("riscv64-linux", "qemu-riscv64-static")])
def test_exit42_elf_under_qemu_user(tmp_path: Path, system: str, qemu: str) -> None:
    if shutil.which(qemu) is None:
        pytest.skip(f"{qemu} missing (apt-get install qemu-user-static)")
    exe = tmp_path / "probe"
    exe.write_bytes(probe.exit42_elf(system))
    exe.chmod(0o755)
    assert subprocess.run([qemu, str(exe)], check=False).returncode == 42


def test_unknown_system() -> None:
    with pytest.raises(CrossnixError):
        probe.exit42_elf("mips-linux")


async def test_platform_refused(real_nix: str) -> None:
    result = await probe.probe_system("aarch64-linux", use_cache=False)
    assert (result.ok, result.reason) == (False, "platform"), result
    assert "not in `extra-platforms`" in result.explain()


async def test_platform_accepted_but_no_binfmt(real_nix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if globally_registered("aarch64-linux"):
        pytest.skip("this machine has a global binfmt_misc registration for aarch64")
    monkeypatch.setenv("NIX_CONFIG", NIX_TEST_CONFIG + "\nextra-platforms = aarch64-linux")
    result = await probe.probe_system("aarch64-linux", use_cache=False)
    assert (result.ok, result.reason) == (False, "exec"), result
    with pytest.raises(CrossnixError) as info:
        probe._cache["aarch64-linux"] = result
        await probe.require_buildable("aarch64-linux")
    probe._cache.clear()
    hint = info.value.hint or ""
    assert 'boot.binfmt.emulatedSystems = [ "aarch64-linux" ];' in hint
    assert "extra-platforms = aarch64-linux" in hint and "qemu-user-static" in hint


def test_emulation_in_a_user_namespace(real_nix: str) -> None:
    reason = userns_unavailable_reason("aarch64-linux")
    if reason:
        pytest.skip(reason)
    code = (
        "import asyncio; from crossnix_tasks import probe; "
        "r = asyncio.run(probe.probe_system('aarch64-linux')); print(r.ok, r.reason)"
    )
    env = {**os.environ, "NIX_CONFIG": NIX_TEST_CONFIG + "\nextra-platforms = aarch64-linux"}
    done = subprocess.run(
        in_binfmt_userns([sys.executable, "-c", code]), env=env, cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]


async def test_same_system_needs_no_probe(fake_run: FakeRun) -> None:
    await probe.require_buildable(probe.local_system())
    assert fake_run.calls == []
