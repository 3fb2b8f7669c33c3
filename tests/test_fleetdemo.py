"""`inv demo`'s deploy part end to end: stand-in systems built by the local Nix, deployed to loopback targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossnix_tasks import fleetdemo
from crossnix_tasks.localfleet import unavailable_reason

pytestmark = [
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
    pytest.mark.usefixtures("real_nix"),
    pytest.mark.slow,
]


async def test_fleet_demo_deploys_rolls_back_and_cleans_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    assert await fleetdemo.run(tmp_path / "demo") is True
    out = capsys.readouterr().out
    assert "offline nixpkgs stand-in in use (tests/standin, NOT nixpkgs)" in out
    assert "done: 3/3 targets deployed" in out
    assert "garage-riscv rolled back to release 1 as intended" in out
    assert "rolled-back" in out and "the previous generation is back" in out
    # the targets are stopped: no process is left in their mount namespaces, their sshd ports are closed
    assert not any(p.name == "sshd.pid" and p.exists() and _alive(p) for p in (tmp_path / "demo").rglob("sshd.pid"))


def _alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, ValueError):
        return False
