"""crossnix_tasks.localfleet: the demo's loopback targets (real sshd, private /nix each)."""

from __future__ import annotations

import os

import asyncssh
import pytest

from crossnix_tasks.localfleet import LocalFleet, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


def alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


async def test_targets_have_private_nix_and_stop_cleanly() -> None:
    fleet = LocalFleet(trusted_public_keys=["k-1:AAAA"])
    root = fleet.root
    async with fleet:
        a, b = await fleet.start(["a", "b"])
        assert a.port != b.port and a.pid and b.pid
        for t in (a, b):
            async with asyncssh.connect(
                t.host, t.port, username="root", client_keys=[str(fleet.client_key)],
                known_hosts=str(fleet.known_hosts), config=None, agent_path=None, connect_timeout=5,
            ) as conn:
                result = await conn.run("cat /etc/nix/nix.conf; ls -A /nix/store | wc -l; readlink /proc/self/ns/mnt")
                lines = result.stdout.splitlines()
                assert "trusted-public-keys = k-1:AAAA" in lines and lines[-2] == "0"
                assert lines[-1] == t.mntns != os.readlink("/proc/self/ns/mnt")
        pids = [a.pid, b.pid]
    assert not any(alive(pid) for pid in pids if pid)
    assert not root.exists()
