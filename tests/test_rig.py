"""Proof that the test rig is real: sshd targets, private Nix stores, signatures,
activation, host keys, refusal/timeouts, sudo via PAM, and the simulated fleet."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import asyncssh
import pytest

from tests.rig.fakesystem import (
    Behaviour,
    FakeSystemSpec,
    SigningKey,
    build_fake_system,
    build_fake_systems,
    host_nix_env,
    sign_paths,
    write_fake_flake,
)
from tests.rig.fleet import Fleet, iter_processes_in, rig_unavailable_reason
from tests.rig.simfleet import BASIC_COMMANDS, SimFleet, SimReply, SimRequest

pytest_plugins = ["tests.rig.fixtures"]

pytestmark = pytest.mark.skipif(rig_unavailable_reason() is not None, reason=str(rig_unavailable_reason()))


def _nonce() -> str:
    return secrets.token_hex(4)


def nix_copy(fleet: Fleet, alias: str, paths: Sequence[str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nix", "copy", *extra, "--to", f"ssh-ng://{alias}", *paths],
                          env=fleet.nix_env(), capture_output=True, text=True, timeout=120, check=False)


def cmdlines_in(mntns: str) -> list[str]:
    out = []
    for pid in iter_processes_in(mntns):
        with contextlib.suppress(OSError):
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    return out


# ---------------------------------------------------------------------------
# fake systems
# ---------------------------------------------------------------------------


def test_fake_systems_batch_build_is_fast_and_shaped_like_a_toplevel() -> None:
    n = _nonce()
    # deliberately unsorted labels: Nix 2.8 prints --json results sorted, not in request order
    behaviours: list[Behaviour] = ["ok", "ok", "fail", "hang"]
    specs = [FakeSystemSpec(f"fs{x}", behaviour=b, nonce=n) for x, b in zip("dacb", behaviours, strict=True)]
    t0 = time.monotonic()
    paths = build_fake_systems(specs)
    elapsed = time.monotonic() - t0
    assert elapsed < 5, elapsed  # typically ~0.15 s for the batch
    assert len(set(paths)) == 4
    for spec, p in zip(specs, paths, strict=False):
        top = Path(p)
        assert top.name.endswith(f"nixos-system-{spec.label}-fake")
        for f in ("nixos-version", "system", "kernel", "initrd", "init", "activate", "kernel-params"):
            assert (top / f).exists(), f
        assert os.access(top / "bin" / "switch-to-configuration", os.X_OK)
        assert (top / "sw").is_symlink()
        assert f"baked={spec.behaviour}" in (top / "bin" / "switch-to-configuration").read_text()
    assert build_fake_system("fsd", nonce=n) == paths[0]  # cached, same derivation
    with pytest.raises(ValueError):
        FakeSystemSpec("bad label; rm -rf /")


def test_fake_flake_exposes_the_same_toplevels(tmp_path: Path) -> None:
    n = _nonce()
    specs = [FakeSystemSpec("web1", nonce=n), FakeSystemSpec("db1", behaviour="fail", nonce=n)]
    flake = write_fake_flake(tmp_path / "flake", specs)
    r = subprocess.run(["nix", "build", "--no-link", "--json",
                        f"path:{flake}#nixosConfigurations.db1.config.system.build.toplevel"],
                       env=host_nix_env(), capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["outputs"]["out"] == build_fake_systems(specs)[1]


# ---------------------------------------------------------------------------
# real sshd targets
# ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_asyncssh_login_verified_against_known_hosts(rig_fleet: Fleet) -> None:
    a = rig_fleet.start("a")
    assert f"[127.0.0.1]:{a.port} {a.host_key}" in rig_fleet.known_hosts.read_text()
    async with await rig_fleet.connect("a") as conn:
        r = await conn.run("readlink /proc/self/ns/mnt; findmnt -n -o SOURCE /nix; "
                           "nix path-info --all | wc -l; echo $HOME; ls -A /tmp | wc -l", check=True)
    mntns, nix_src, n_paths, home, n_tmp = str(r.stdout).split("\n")[:5]
    assert mntns == a.mntns and mntns != os.readlink("/proc/self/ns/mnt")
    assert nix_src.endswith(f"[{a.state_dir}/nix]")
    assert (n_paths, home, n_tmp) == ("0", "/root", "0")  # empty store, private home and /tmp
    # no known_hosts entry -> refused
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await rig_fleet.connect("a", known_hosts=asyncssh.import_known_hosts(""))


def test_private_run_and_tmp_and_run_in(rig_fleet: Fleet) -> None:
    rig_fleet.start_many(["a", "b"])
    assert rig_fleet.run_in("a", ["sh", "-c", "echo x > /tmp/only-a && touch /run/only-a"]).returncode == 0
    assert (rig_fleet.target("a").state_dir / "tmp" / "only-a").exists()
    assert not Path("/tmp/only-a").exists() and not Path("/run/only-a").exists()
    r = rig_fleet.ssh_run("b", "ls /tmp/only-a /run/only-a")
    assert r.returncode != 0
    assert rig_fleet.ssh_run("a", ["cat", "/tmp/only-a"]).stdout == "x\n"
    rig_fleet.stop("a")  # run_in still works on a stopped target (fresh namespace)
    assert rig_fleet.run_in("a", ["cat", "/tmp/only-a"]).stdout == "x\n"


def test_nix_copy_lands_in_that_target_only(rig_fleet: Fleet) -> None:
    rig_fleet.start_many(["a", "b"])
    top = build_fake_system("copy1", nonce=_nonce())
    r = nix_copy(rig_fleet, "a", [top], "--no-check-sigs")
    assert r.returncode == 0, r.stderr
    assert rig_fleet.has_path("a", top)
    assert top in rig_fleet.store_entries("a")
    assert rig_fleet.store_entries("b") == set()
    assert not rig_fleet.has_path("b", top)
    q = subprocess.run(["nix", "path-info", "--store", "ssh-ng://b", top], env=rig_fleet.nix_env(),
                       capture_output=True, text=True, timeout=60, check=False)
    assert q.returncode != 0


def test_require_sigs_unsigned_fails_signed_succeeds(rig_fleet: Fleet, rig_signing_key: SigningKey) -> None:
    rig_fleet.start("trusting", trusted_public_keys=[rig_signing_key.public_key])
    rig_fleet.start("untrusting")  # require-sigs, but trusts no key
    assert rig_fleet.target("trusting").require_sigs
    top = build_fake_system("sig1", nonce=_nonce())  # unique: the host store keeps signatures
    r = nix_copy(rig_fleet, "trusting", [top])
    assert r.returncode != 0
    assert "lacks a valid signature" in r.stderr
    assert not rig_fleet.has_path("trusting", top)
    sign_paths(rig_signing_key, [top])
    r = nix_copy(rig_fleet, "trusting", [top])
    assert r.returncode == 0, r.stderr
    assert rig_fleet.has_path("trusting", top)
    r = nix_copy(rig_fleet, "untrusting", [top])
    assert r.returncode != 0 and "lacks a valid signature" in r.stderr


def test_switch_over_ssh_updates_current_system_generations_and_log(rig_fleet: Fleet) -> None:
    rig_fleet.start_many(["a", "b"], require_sigs=False)
    n = _nonce()
    p1, p2 = build_fake_systems([FakeSystemSpec("gen1", nonce=n), FakeSystemSpec("gen2", nonce=n)])
    assert nix_copy(rig_fleet, "a", [p1, p2]).returncode == 0  # require-sigs=false target

    def deploy(path: str, goal: str) -> subprocess.CompletedProcess[str]:
        return rig_fleet.ssh_run("a", f"nix-env -p /nix/var/nix/profiles/system --set {path} && "
                                      f"/nix/var/nix/profiles/system/bin/switch-to-configuration {goal}")

    r = deploy(p1, "switch")
    assert r.returncode == 0, r.stderr
    assert rig_fleet.current_system("a") == p1
    assert [(g.number, g.path, g.current) for g in rig_fleet.profile_generations("a")] == [(1, p1, True)]
    r = deploy(p2, "boot")  # boot: new generation, boot default, but NOT activated
    assert r.returncode == 0, r.stderr
    assert rig_fleet.current_system("a") == p1
    assert [(g.number, g.current) for g in rig_fleet.profile_generations("a")] == [(1, False), (2, True)]
    assert [(x.label, x.goal) for x in rig_fleet.activation_log("a")] == [("gen1", "switch"), ("gen2", "boot")]
    rig_fleet.reboot("a")
    assert rig_fleet.current_system("a") == p2 == rig_fleet.booted_system("a")
    assert rig_fleet.ssh_run("a", "readlink /run/current-system").stdout.strip() == p2
    # the other target is untouched
    assert rig_fleet.current_system("b") is None
    assert rig_fleet.profile_generations("b") == []
    assert rig_fleet.activation_log("b") == []


@pytest.mark.asyncio
async def test_activation_fail_and_hang(rig_fleet: Fleet) -> None:
    rig_fleet.start("a", require_sigs=False)
    n = _nonce()
    good, bad = build_fake_systems([FakeSystemSpec("good", nonce=n),
                                    FakeSystemSpec("bad", behaviour="fail", nonce=n)])
    rig_fleet.preinstall("a", good)  # pre-existing generation, no SSH involved
    assert rig_fleet.current_system("a") == good
    assert nix_copy(rig_fleet, "a", [bad]).returncode == 0
    r = rig_fleet.ssh_run("a", f"{bad}/bin/switch-to-configuration switch")
    assert r.returncode == 1 and "behaviour=fail" in r.stderr
    assert rig_fleet.current_system("a") == good
    assert [x.label for x in rig_fleet.activation_log("a")] == ["good", "bad"]
    # flip at run time: the good system now hangs
    rig_fleet.set_activation_behaviour("a", "hang", label="good", hang_seconds=300)
    async with await rig_fleet.connect("a") as conn:
        with pytest.raises(asyncio.TimeoutError):
            await conn.run(f"{good}/bin/switch-to-configuration test", timeout=1)
    mntns = rig_fleet.target("a").mntns
    assert mntns is not None
    assert any(c.startswith("sleep 300") for c in cmdlines_in(mntns))
    rig_fleet.stop("a")  # kills sshd AND everything in its namespace (the sleeping activation)
    assert list(iter_processes_in(mntns)) == []
    rig_fleet.set_activation_behaviour("a", None, label="good")
    assert rig_fleet.run_in("a", [f"{good}/bin/switch-to-configuration", "dry-activate"]).returncode == 0


@pytest.mark.asyncio
async def test_rotated_host_key_is_refused(rig_fleet: Fleet) -> None:
    old = rig_fleet.start("a")
    new = rig_fleet.rotate_host_key("a")
    assert new.host_key != old.host_key and new.known_host_key == old.host_key and new.port == old.port
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await rig_fleet.connect("a")
    r = rig_fleet.ssh_run("a", "true")
    assert r.returncode == 255 and "Host key verification failed" in r.stderr
    rig_fleet.trust_host_key("a")
    async with await rig_fleet.connect("a") as conn:
        assert (await conn.run("true")).exit_status == 0


@pytest.mark.asyncio
async def test_stopped_target_refuses_and_blackhole_times_out(rig_fleet: Fleet) -> None:
    rig_fleet.start("a", require_sigs=False)
    top = build_fake_system("persist", nonce=_nonce())
    assert nix_copy(rig_fleet, "a", [top]).returncode == 0
    rig_fleet.stop("a")
    with pytest.raises(ConnectionRefusedError):
        await rig_fleet.connect("a")
    r = rig_fleet.ssh_run("a", "true")
    assert r.returncode == 255 and "Connection refused" in r.stderr
    ghost = rig_fleet.unreachable("ghost")
    assert not ghost.running
    with pytest.raises(ConnectionRefusedError):
        await rig_fleet.connect("ghost")
    rig_fleet.blackhole("hole")
    t0 = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await rig_fleet.connect("hole", connect_timeout=0.5)
    assert time.monotonic() - t0 < 5
    ssh = await asyncio.create_subprocess_exec(
        *rig_fleet.ssh_argv("hole")[:-1], "-o", "ConnectTimeout=1", "hole", "true",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(ssh.communicate(), 30)
    assert ssh.returncode == 255 and b"timed out during banner exchange" in err
    # restart keeps host key, port and store
    rig_fleet.restart("a")
    async with await rig_fleet.connect("a") as conn:
        res = await conn.run(f"nix-store --check-validity {top}")
        assert res.exit_status == 0


@pytest.mark.slow
def test_sudo_user_password_checked_by_pam_and_cleaned_up() -> None:
    user = f"cxd{secrets.token_hex(3)}"
    with Fleet() as fleet:
        fleet.start("s", user=user, sudo_password="right-pw")
        sudoers = Path(f"/etc/sudoers.d/crossnix-rig-{user}")
        assert sudoers.exists()
        r = fleet.ssh_run("s", ["id", "-un"])
        assert r.stdout.strip() == user
        r = fleet.ssh_run("s", ["sudo", "-S", "-v"], input="wrong-pw\n")
        assert r.returncode != 0 and "incorrect password" in r.stderr
        r = fleet.ssh_run("s", ["sudo", "-S", "-p", "", "id", "-u"], input="right-pw\n")
        assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr
        assert fleet.ssh_run("s", ["sudo", "-n", "true"]).returncode != 0  # password really required
        root = fleet.root
    assert not sudoers.exists()
    assert subprocess.run(["getent", "passwd", user], capture_output=True, check=False).returncode != 0
    assert not root.exists()


# ---------------------------------------------------------------------------
# simulated fleet
# ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sim_fleet_of_200_answers(rig_sim_fleet: Callable[..., Awaitable[SimFleet]]) -> None:
    def activate(req: SimRequest) -> SimReply:
        req.state["current"] = req.match.group(1)
        return SimReply(0, "activated\n")

    sim = await rig_sim_fleet(200, handlers={**BASIC_COMMANDS, r"fake-activate (\S+)": activate})
    hosts = {t.host for t in sim.targets.values()}
    assert len(hosts) == 200 and all(h.startswith("127.") for h in hosts)
    sem = asyncio.Semaphore(50)

    async def one(name: str) -> tuple[str, int | None, int | None]:
        async with sem, await sim.connect(name) as conn:
            h = await conn.run("hostname")
            a = await conn.run(f"fake-activate /gen/{name}")
            u = await conn.run("nix-store --version")
        return str(h.stdout).strip(), a.exit_status, u.exit_status

    t0 = time.monotonic()
    results = await asyncio.gather(*(one(n) for n in sim.targets))
    assert time.monotonic() - t0 < 30
    assert [r[0] for r in results] == list(sim.targets)
    assert all(r[1] == 0 and r[2] == 127 for r in results)
    assert all(t.state["current"] == f"/gen/{t.name}" for t in sim.targets.values())
    assert sim.stats.connections_total == 200 and sim.stats.peak_connections <= 50
    await sim.stop_target("sim007")
    with pytest.raises(ConnectionRefusedError):
        await sim.connect("sim007")
